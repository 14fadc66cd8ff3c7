"""The video diffusion model's network: a transformer over the next frame's tokens.

It predicts x0 (log-probabilities over the K codebook entries for each of the L
target tokens) from the noised tokens x_t, the timestep t and the tokens of the
k previous frames. Blocks follow VQ-Diffusion (AdaLN(t) -> self-attention ->
AdaLN(t) -> cross-attention -> AdaLN(t) -> conv MLP on the token grid), with one
change: condition tokens carry a frame-index embedding, so the model knows which
history frame a token comes from (the released code has no temporal embedding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ConditionCache:
    """Everything the denoiser needs from the condition, computed once per call.

    keys/values: one (N, heads, k*L, head_dim) pair per layer, the cross-attention
    keys and values of the condition, which are the same for every denoising pass.
    """

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def repeat_interleave(self, repeats: int) -> ConditionCache:
        """Each frame's cache `repeats` times in a row (for several samples per frame)."""
        if repeats == 1:
            return self
        rep = lambda ts: [x.repeat_interleave(repeats, dim=0) for x in ts]  # noqa: E731
        return ConditionCache(rep(self.keys), rep(self.values))


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps, (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


class AdaLayerNorm(nn.Module):
    """LayerNorm whose scale and shift come from the timestep embedding."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.to_scale_shift = nn.Linear(width, 2 * width)

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        scale, shift = self.to_scale_shift(F.silu(t_emb)).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head attention; queries from x, keys/values either from x or given."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def split_heads(self, x: Tensor) -> Tensor:
        n, length, width = x.shape
        return x.view(n, length, self.heads, width // self.heads).transpose(1, 2)

    def keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv(source).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(self, x: Tensor, k: Tensor | None = None, v: Tensor | None = None) -> Tensor:
        if k is None or v is None:
            k, v = self.keys_values(x)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(self.split_heads(self.q(x)), k, v, dropout_p=p)
        n, _, length, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(n, length, -1))


class ConvMLP(nn.Module):
    """VQ-Diffusion's MLP: two 3x3 convolutions over the token grid, so each token
    also sees its 8 neighbours."""

    def __init__(self, width: int, ratio: float, side: int, dropout: float) -> None:
        super().__init__()
        hidden = int(ratio * width)
        self.side = side
        self.conv1 = nn.Conv2d(width, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, width, 3, padding=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n, length, width = x.shape
        grid = x.transpose(1, 2).reshape(n, width, self.side, self.side)
        y = self.conv2(F.gelu(self.conv1(grid)))
        return self.dropout(y.flatten(2).transpose(1, 2))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, side: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (AdaLayerNorm(width) for _ in range(3))
        self.self_attn = Attention(width, heads, dropout)
        self.cross_attn = Attention(width, heads, dropout)
        self.mlp = ConvMLP(width, mlp_ratio, side, dropout)

    def forward(self, x: Tensor, t_emb: Tensor, cond_k: Tensor, cond_v: Tensor) -> Tensor:
        x = x + self.self_attn(self.norm1(x, t_emb))
        x = x + self.cross_attn(self.norm2(x, t_emb), cond_k, cond_v)
        return x + self.mlp(self.norm3(x, t_emb))


class GridPosition(nn.Module):
    """Learned 2D position: a row embedding plus a column embedding, (L, width)."""

    def __init__(self, side: int, width: int) -> None:
        super().__init__()
        self.side = side
        self.rows = nn.Embedding(side, width)
        self.cols = nn.Embedding(side, width)

    def forward(self) -> Tensor:
        idx = torch.arange(self.side, device=self.rows.weight.device)
        return (self.rows(idx)[:, None] + self.cols(idx)[None, :]).reshape(self.side**2, -1)


class Denoiser(nn.Module):
    """x_t (N, L) tokens in [0, K] (K = [MASK]), t (N,) -> log p(x0) (N, K, L)."""

    def __init__(
        self,
        codebook_size: int,
        tokens_per_frame: int,
        condition_frames: int,
        layers: int,
        width: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
    ) -> None:
        super().__init__()
        side = math.isqrt(tokens_per_frame)
        self.codebook_size = codebook_size
        self.tokens_per_frame = tokens_per_frame
        self.condition_frames = condition_frames
        self.width = width
        self.token_emb = nn.Embedding(codebook_size + 1, width)  # + [MASK]
        self.pos_emb = GridPosition(side, width)
        self.cond_token_emb = nn.Embedding(codebook_size, width)  # history has no [MASK]
        self.cond_pos_emb = GridPosition(side, width)
        self.cond_frame_emb = nn.Embedding(condition_frames, width)
        self.cond_norm = nn.LayerNorm(width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, side, dropout) for _ in range(layers)
        )
        self.out_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, codebook_size)

    def embed_condition(self, cond_tokens: Tensor) -> Tensor:
        """(N, k, L) history tokens, oldest frame first -> (N, k*L, width)."""
        n, k, length = cond_tokens.shape
        frames = self.cond_frame_emb.weight[:, None, :]  # (k, 1, width): which frame
        emb = self.cond_token_emb(cond_tokens) + self.cond_pos_emb()[None, None] + frames[None]
        return self.cond_norm(emb.reshape(n, k * length, self.width))

    def encode_condition(self, cond_tokens: Tensor) -> ConditionCache:
        """The condition embeddings and every layer's cross-attention K/V, once."""
        memory = self.embed_condition(cond_tokens)
        kvs = [block.cross_attn.keys_values(memory) for block in self.blocks]
        return ConditionCache([k for k, _ in kvs], [v for _, v in kvs])

    def forward(self, x_t: Tensor, t: Tensor, cache: ConditionCache) -> Tensor:
        if cache.batch_size != x_t.shape[0]:
            raise ValueError(f"cache holds {cache.batch_size} frames, x_t {x_t.shape[0]}")
        t_emb = self.time_mlp(timestep_embedding(t, self.width))
        x = self.token_emb(x_t) + self.pos_emb()[None]
        for block, k, v in zip(self.blocks, cache.keys, cache.values):
            x = block(x, t_emb, k, v)
        logits = self.head(self.out_norm(x)).float()
        return F.log_softmax(logits, dim=-1).transpose(1, 2)  # (N, K, L)
