"""Conditional discrete video diffusion over VQGAN tokens, and its rewards.

VQ-Diffusion's mask-and-replace process (K codebook classes plus [MASK] = index K)
over the L = 64 tokens of the next frame, conditioned on the tokens of the k
previous frames (Diffusion Reward, Huang et al., ECCV 2024). Works on integer
token grids only; the codec is someone else's business.

Timestep convention (as VQ-Diffusion's code): t in [0, T) indexes the noised
states, x_t ~ q(x_t | x0) with cumulative keep/mask probabilities alpha_bar_t,
gamma_bar_t; "t = -1" is x0 itself. The model predicts p(x0 | x_t, t, history) and
p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t) for any s < t (s = t-1 in
training, strided s when computing rewards).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoint import check_config_keys
from models.denoiser import ConditionCache, Denoiser

LOG_FLOOR = -70.0  # log of "zero" probability; keeps 0 * (log 0 - log 0) finite in KLs


# ---------------------------------------------------------------------------- config

_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(layers=2, width=32, heads=4, mlp_ratio=2.0),  # tests
    # CPU labelling. frame_skip 3 (history t-6, t-3) separated held-out experts from random episodes
    # better than skip 1 at the same cost (docs/MEASUREMENTS.md, Reward model).
    "cpu": dict(layers=4, width=128, heads=8, mlp_ratio=2.0, frame_skip=3),
    "paper": dict(layers=16, width=128, heads=16, mlp_ratio=4.0),  # the paper's network
}


@dataclass(frozen=True)
class DiffusionConfig:
    """Sizes and training constants of the video model (defaults: the paper's).

    aux_weight: the loss is T * (L_t + aux_weight * CE_t) per token, where L_t is the
    VLB term at a uniformly sampled t and CE_t the x0 cross-entropy at that t: both
    divided by p(t) = 1/T as in VQ-Diffusion, whose configs use 5e-4 (we drop their
    extra (2 - t/T) ramp). So the x0 loss weighs 0.05 against the VLB's 1 at T = 100.
    """

    codebook_size: int
    tokens_per_frame: int = 64
    condition_frames: int = 2
    frame_skip: int = 1
    num_timesteps: int = 100
    layers: int = 16
    width: int = 128
    heads: int = 16
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    aux_weight: float = 5e-4
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        for name in ("codebook_size", "tokens_per_frame", "condition_frames", "frame_skip",
                     "num_timesteps", "layers", "width", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DiffusionConfig.{name} must be a positive int, got {value!r}")
        if self.codebook_size < 2:
            raise ValueError(f"DiffusionConfig.codebook_size must be >= 2, got {self.codebook_size}")
        if math.isqrt(self.tokens_per_frame) ** 2 != self.tokens_per_frame:
            raise ValueError(
                f"DiffusionConfig.tokens_per_frame must be a square grid, got {self.tokens_per_frame}")
        if self.num_timesteps < 2:
            raise ValueError(f"DiffusionConfig.num_timesteps must be >= 2, got {self.num_timesteps}")
        if self.width % self.heads:
            raise ValueError(f"DiffusionConfig.width ({self.width}) must divide by heads ({self.heads})")
        for name, low, high in (("mlp_ratio", 0.0, math.inf), ("dropout", -1e-12, 1.0),
                                ("aux_weight", -1e-12, math.inf), ("ema_decay", -1e-12, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low < value < high:
                raise ValueError(f"DiffusionConfig.{name} out of range: {value!r}")

    @classmethod
    def preset(cls, name: str, codebook_size: int = 1024, **overrides: Any) -> DiffusionConfig:
        if name not in _PRESETS:
            raise ValueError(f"unknown diffusion preset {name!r}; known: {sorted(_PRESETS)}")
        return cls(codebook_size=codebook_size, **{**_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        return cls(**check_config_keys(cls, data, "video model"))


# -------------------------------------------------------------------------- schedule

class MaskReplaceSchedule:
    """VQ-Diffusion mask-and-replace with the linear cumulative schedule.

    q(x_t | x0): keep x0 with alpha_bar_t, [MASK] with gamma_bar_t, else uniform over
    the K classes (beta_bar_t each). alpha_bar falls and gamma_bar rises linearly in t
    between VQ-Diffusion's endpoints. Between any s < t the process is again
    mask-and-replace, with alpha = alpha_bar_t / alpha_bar_s and
    1 - gamma = (1 - gamma_bar_t) / (1 - gamma_bar_s): that gives the per-step
    alpha_t, gamma_t (s = t-1) and the strided posteriors used by the rewards.
    """

    def __init__(self, num_classes: int, num_timesteps: int,
                 alpha_ends: tuple[float, float] = (0.99999, 0.000009),
                 gamma_ends: tuple[float, float] = (0.000009, 0.99999)) -> None:
        self.num_classes = num_classes
        self.num_timesteps = num_timesteps
        frac = torch.arange(num_timesteps, dtype=torch.float64) / (num_timesteps - 1)
        alpha_bar = alpha_ends[0] + frac * (alpha_ends[1] - alpha_ends[0])
        gamma_bar = gamma_ends[0] + frac * (gamma_ends[1] - gamma_ends[0])
        # Entry 0 is "t = -1" (x0 itself), so tables are indexed with t + 1.
        self.alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar])
        self.gamma_bar = torch.cat([torch.zeros(1, dtype=torch.float64), gamma_bar])

    def transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(alpha, gamma, beta) of q(x_t | x_s) for s < t (s = -1: from x0), float64."""
        ab, gb = self.alpha_bar.to(t.device), self.gamma_bar.to(t.device)
        alpha = ab[t + 1] / ab[s + 1]
        gamma = 1 - (1 - gb[t + 1]) / (1 - gb[s + 1])
        beta = ((1 - alpha - gamma) / self.num_classes).clamp(min=0)
        return alpha, gamma, beta

    def per_step(self) -> tuple[Tensor, Tensor, Tensor]:
        """Per-step (alpha_t, gamma_t, beta_t) for t = 0..T-1."""
        t = torch.arange(self.num_timesteps)
        return self.transition(t - 1, t)

    def q_sample(self, x0: Tensor, t: Tensor, noise: torch.Generator | RowNoise | None = None) -> Tensor:
        """x_t ~ q(x_t | x0) for tokens x0 (N, L) and timesteps t (N,)."""
        alpha, gamma, _ = self.transition(torch.full_like(t, -1), t)
        alpha, gamma = alpha.float()[:, None], gamma.float()[:, None]
        u = uniform(x0.shape, noise, x0.device)
        replace = (uniform(x0.shape, noise, x0.device) * self.num_classes).long().clamp_(max=self.num_classes - 1)
        masked = torch.full_like(x0, self.num_classes)
        return torch.where(u < alpha, x0, torch.where(u < alpha + gamma, masked, replace))

    def _likelihood(self, x_t: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        """log q(x_t | x_prev = j) for j in [0, K] as (N, K+1, L); alpha.. are (N,)."""
        k = self.num_classes
        is_mask = (x_t == k)[:, None, :]
        hit = F.one_hot(x_t.clamp(max=k - 1), k).transpose(1, 2).bool() & ~is_mask
        log = lambda p: p.clamp(min=1e-30).log().float().view(-1, 1, 1)  # noqa: E731
        classes = torch.where(is_mask, log(gamma), torch.where(hit, log(alpha + beta), log(beta)))
        mask_row = torch.where(is_mask, 0.0, LOG_FLOOR)  # [MASK] stays [MASK]
        return torch.cat([classes, mask_row.to(classes.dtype)], dim=1)

    def q_posterior(self, log_x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor | None = None) -> Tensor:
        """log p(x_s | x_t) = log sum_x0 q(x_s | x_t, x0) p(x0), as (N, K+1, L).

        log_x0: (N, K, L) log-probabilities of x0 (a log one-hot gives the true
        posterior); x_t: (N, L) tokens; t: (N,); s: (N,) with -1 <= s < t, default t-1.
        s = -1 returns p(x0) itself (plus a floored [MASK] row).
        """
        s = t - 1 if s is None else s
        k = self.num_classes
        # q(x_t | x0 = j) / q(x_t | x_s = j) for the Bayes step, all in log space.
        log_qt_x0 = self._likelihood(x_t, *self.transition(torch.full_like(t, -1), t))[:, :k]
        log_qt_xs = self._likelihood(x_t, *self.transition(s, t))
        a_s, g_s, b_s = self.transition(torch.full_like(s, -1), s)
        log = lambda p: p.clamp(min=1e-30).log().float().view(-1, 1, 1)  # noqa: E731
        log_w = log_x0 - log_qt_x0  # p(x0) / q(x_t | x0)
        log_total = torch.logsumexp(log_w, dim=1, keepdim=True)
        # sum_x0 w(x0) q(x_s = j | x0): q(x_s | x0) is linear in the one-hot of x0.
        log_m = torch.cat([torch.logaddexp(log(a_s) + log_w, log(b_s) + log_total),
                           log(g_s) + log_total], dim=1)
        logits = log_m + log_qt_xs
        return (logits - torch.logsumexp(logits, dim=1, keepdim=True)).clamp(min=LOG_FLOOR)

    @torch.no_grad()
    def q_posterior_fast(self, log_x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor | None = None) -> Tensor:
        """q_posterior computed in probability space: the same values up to float32
        rounding, ~6 passes over (N, K, L) instead of ~20. No gradient (the rewards).

        Per token the posterior over x_s = j < K is A * p(x0 = j) + B, except at
        j = x_t (when x_t is a class), plus the [MASK] entry: so it needs one exp, one
        sum and one multiply-add over the K classes, the rest is (N, L) arithmetic.
        """
        s = t - 1 if s is None else s
        k = self.num_classes
        n, length = x_t.shape
        col = lambda p: p.clamp(min=1e-30).float()[:, None]  # noqa: E731  (N,) -> (N, 1), floored as in q_posterior
        a_t, g_t, b_t = self.transition(torch.full_like(t, -1), t)  # q(x_t | x0)
        a_st, g_st, b_st = self.transition(s, t)  # q(x_t | x_s)
        a_s, g_s, b_s = self.transition(torch.full_like(s, -1), s)  # q(x_s | x0)
        is_mask = x_t == k
        v = x_t.clamp(max=k - 1)[:, None]  # (N, 1, L): the class x_t shows (any, if [MASK])
        out = torch.empty(n, k + 1, length, dtype=torch.float32, device=log_x0.device)
        p = torch.exp(log_x0, out=out[:, :k])
        p_v = p.gather(1, v).squeeze(1)
        p.scatter_(1, v, 0.0)  # the sum over j != x_t without cancellation when p(x_t) ~ 1
        p_other = p.sum(dim=1)
        # Each token scaled by q(x_t | x0 != x_t): w(j) = p(j), w(x_t) = p(x_t) * ratio.
        ratio = torch.where(is_mask, 1.0, col(b_t) / col(a_t + b_t))
        total = p_other + p_v * ratio
        q_other = torch.where(is_mask, col(g_st), col(b_st))  # q(x_t | x_s = j != x_t)
        q_hit = torch.where(is_mask, col(g_st), col(a_st + b_st))  # q(x_t | x_s = x_t)
        A = col(a_s) * q_other
        B = col(b_s) * total * q_other
        post_v = (col(a_s) * p_v * ratio + col(b_s) * total) * q_hit
        post_mask = col(g_s) * total * torch.where(is_mask, 1.0, math.exp(LOG_FLOOR))
        z = A * p_other + B * (k - 1) + post_v + post_mask
        p.mul_((A / z)[:, None]).add_((B / z)[:, None])
        p.scatter_(1, v, (post_v / z)[:, None])
        out[:, k] = post_mask / z
        return out.clamp_(min=math.exp(LOG_FLOOR)).log_()

    @staticmethod
    def kl(log_q: Tensor, log_p: Tensor) -> Tensor:
        """KL(q || p) per token over the class dim: (N, C, L) x2 -> (N, L)."""
        return (log_q.exp() * (log_q - log_p)).sum(dim=1)

    def prior_kl(self) -> float:
        """KL(q(x_{T-1} | x0) || p(x_{T-1})) per token, p = q(x_{T-1} | uniform x0).

        The same for every x0 by symmetry; sampling starts all-[MASK], the mode of
        that prior (mass gamma_bar_{T-1} = 0.99999)."""
        a, g = float(self.alpha_bar[-1]), float(self.gamma_bar[-1])
        k = self.num_classes
        b = (1 - a - g) / k
        p = a / k + b
        return (a + b) * math.log((a + b) / p) + (k - 1) * b * math.log(max(b, 1e-300) / p)


def log_one_hot(tokens: Tensor, num_classes: int) -> Tensor:
    """(N, L) tokens -> (N, num_classes, L) log one-hot, zeros floored at LOG_FLOOR."""
    one_hot = F.one_hot(tokens, num_classes).transpose(1, 2).float()
    return torch.where(one_hot > 0, 0.0, LOG_FLOOR)


def visited_timesteps(num_timesteps: int, skip: int) -> list[int]:
    """T-1, T-1-(skip+1), ... and always 0: for T = 100, skip 9 -> 99, 89, ..., 9, 0."""
    if skip < 0:
        raise ValueError(f"skip must be >= 0, got {skip}")
    steps = list(range(num_timesteps - 1, -1, -(skip + 1)))
    return steps if steps[-1] == 0 else steps + [0]


class RowNoise:
    """Uniform noise with one generator per batch row, so a row's noise depends on its own
    seed only, never on the batch it sits in: a frame scored alone (streaming) and the same
    frame scored inside its episode's batch get the same noise."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(seed)) for seed in seeds]

    def rand(self, shape: Sequence[int]) -> Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for {shape[0]} rows asked of a RowNoise with {len(self.generators)} seeds")
        return torch.stack([torch.rand(tuple(shape[1:]), generator=g, device=self.device) for g in self.generators])


def uniform(shape: Sequence[int], noise: torch.Generator | RowNoise | None, device: torch.device) -> Tensor:
    """U[0, 1) noise of this shape from a shared generator (training) or per-row seeds (rewards)."""
    if isinstance(noise, RowNoise):
        return noise.rand(shape)
    return torch.rand(tuple(shape), generator=noise, device=device)


def history_seeds(cond_tokens: Tensor, seed: int, num_samples: int = 1) -> list[int]:
    """One seed per (history, sample): a hash of the seed and the history's tokens, so the same
    frames and seed give the same noise in any batch, and different frames get independent noise."""
    rows = cond_tokens.detach().to("cpu", torch.int64).reshape(cond_tokens.shape[0], -1).numpy()
    seeds = []
    for row in rows:
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=int(seed).to_bytes(8, "little", signed=True))
        base = int.from_bytes(digest.digest(), "little") >> 1  # torch seeds are < 2**63
        seeds.extend((base + j) % 2**63 for j in range(num_samples))
    return seeds


def gumbel_argmax(log_probs: Tensor, noise: torch.Generator | RowNoise | None) -> Tensor:
    """A categorical sample per token from (N, C, L) log-probs -> (N, L)."""
    u = uniform(log_probs.shape, noise, log_probs.device)
    minus_gumbel = u.clamp_(min=1e-30).log_().neg_().clamp_(min=1e-30).log_()  # in place: (N, K+1, L) is big
    return torch.sub(log_probs, minus_gumbel, out=minus_gumbel).argmax(dim=1)


# ----------------------------------------------------------------------------- model

class VideoDiffusion(nn.Module):
    """p(next frame tokens | previous k frames' tokens) and the rewards built on it."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        self.config = config
        self.schedule = MaskReplaceSchedule(config.codebook_size, config.num_timesteps)
        self.denoiser = Denoiser(
            config.codebook_size, config.tokens_per_frame, config.condition_frames,
            config.layers, config.width, config.heads, config.mlp_ratio, config.dropout)

    # -- checks
    def _check_tokens(self, tokens: Tensor, shape: tuple[int, ...], name: str, shape_text: str) -> None:
        if not isinstance(tokens, Tensor) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor of shape {shape_text}")
        if tokens.dim() != len(shape) or any(e != -1 and e != a for e, a in zip(shape, tokens.shape)):
            raise ValueError(f"{name} must have shape {shape_text}, got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.config.codebook_size):
            raise ValueError(f"{name} ids must be in [0, {self.config.codebook_size}), got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")

    def _check_condition(self, cond_tokens: Tensor) -> None:
        c = self.config
        self._check_tokens(cond_tokens, (-1, c.condition_frames, c.tokens_per_frame), "cond_tokens",
                           f"(N, {c.condition_frames}, {c.tokens_per_frame})")

    def _check_target(self, target_tokens: Tensor, n: int) -> None:
        c = self.config
        self._check_tokens(target_tokens, (n, c.tokens_per_frame), "target_tokens",
                           f"(N={n}, {c.tokens_per_frame})")

    # -- training
    def loss(self, cond_tokens: Tensor, target_tokens: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """T * (L_t + aux_weight * CE_t) per token at one uniform t per frame.

        L_t = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t > 0, -log p(x0 | x_0)
        at t = 0; uniform t (not VQ-Diffusion's importance sampling) keeps it an
        unbiased VLB estimate with no state. logs['vlb'] adds the prior term: nats/token.
        """
        self._check_condition(cond_tokens)
        n, device = cond_tokens.shape[0], cond_tokens.device
        self._check_target(target_tokens, n)
        T, K = self.config.num_timesteps, self.config.codebook_size
        t = torch.randint(0, T, (n,), generator=generator, device=device)
        x_t = self.schedule.q_sample(target_tokens, t, generator)
        log_x0 = self.denoiser(x_t, t, self.denoiser.encode_condition(cond_tokens))
        log_p = self.schedule.q_posterior(log_x0, x_t, t)
        log_q = self.schedule.q_posterior(log_one_hot(target_tokens, K), x_t, t)
        ce = -log_x0.gather(1, target_tokens[:, None]).squeeze(1)  # (N, L)
        term = torch.where((t == 0)[:, None], ce, self.schedule.kl(log_q, log_p))
        vlb_t = T * term.mean(dim=1)
        loss = (vlb_t + self.config.aux_weight * T * ce.mean(dim=1)).mean()
        logs = {"loss": loss.item(), "vlb": vlb_t.mean().item() + self.schedule.prior_kl(),
                "x0_ce": ce.mean().item()}
        return loss, logs

    # -- the network as a reward backend (models.backends.TorchBackend wraps this)
    def encode_condition(self, cond_tokens: Tensor) -> ConditionCache:
        return self.denoiser.encode_condition(cond_tokens)

    def denoise(self, x_t: Tensor, t: Tensor, cache: ConditionCache) -> Tensor:
        return self.denoiser(x_t, t, cache)

    # -- rewards
    def entropy_reward(self, cond_tokens: Tensor, num_samples: int = 1, skip: int = 9, seed: int = 0,
                       backend: DenoiseBackend | None = None) -> Tensor:
        """The paper's reward, (N, k, L) history -> (N,) nats per frame (higher = more
        predictable): an estimate of -H(next frame | history).

        Visit t_1 = T-1 > t_2 > ... > t_n = 0 (strided by skip+1, 0 always included;
        n = 11 for T = 100, skip 9), starting from x_{t_1} = all [MASK]. At each t_i
        predict p(x0 | x_{t_i}) and Gumbel-sample x_{t_{i+1}} from the exact strided
        posterior p(x_{t_{i+1}} | x_{t_i}) = sum_x0 q(x_{t_{i+1}} | x_{t_i}, x0) p(x0 | x_{t_i});
        at t_n = 0 sample x~0 from p(x0 | x_0). The reward is, summed over the L tokens,
            log p(x~0 | x_{t_n}) - sum_{i<n} KL(q(x_{t_{i+1}} | x_{t_i}, x~0) || p(x_{t_{i+1}} | x_{t_i}))
            - KL(q(x_{T-1} | x~0) || p(x_{T-1}))
        on the sampled trajectory (the strided VLB of log p(x~0 | history), the released
        code's estimator with an exact strided posterior), averaged over num_samples
        independent chains. n denoiser passes per frame; the condition's embeddings and
        K/V are computed once per call; all N * num_samples chains run as one batch.
        Each chain's noise is seeded by `seed` and its own history (history_seeds), so
        the same frames and seed give the same reward in any batch, whichever backend
        runs the network passes (default: this module, in eval mode; see models.backends).
        """
        self._check_condition(cond_tokens)
        with eval_mode(self):
            return sample_entropy_reward(backend or self, self.schedule, cond_tokens, num_samples,
                                         visited_timesteps(self.config.num_timesteps, skip), seed)

    def likelihood_reward(self, cond_tokens: Tensor, target_tokens: Tensor, num_samples: int = 1,
                          skip: int = 9, seed: int = 0, backend: DenoiseBackend | None = None) -> Tensor:
        """Strided VLB of the observed next frame, (N,) nats per frame.

        Same visited timesteps as entropy_reward; each x_{t_i} ~ q(x_{t_i} | target)
        independently (each VLB term only needs its own marginal); sums
        -KL(q(x_{t_{i+1}} | x_{t_i}, target) || p(x_{t_{i+1}} | x_{t_i})) for i < n,
        log p(target | x_{t_n}) and the prior term, averaged over num_samples draws of the
        x_{t_i}. The target never enters the condition; its noise is seeded like entropy_reward's.
        """
        self._check_condition(cond_tokens)
        self._check_target(target_tokens, cond_tokens.shape[0])
        with eval_mode(self):
            return sample_likelihood_reward(backend or self, self.schedule, cond_tokens, target_tokens, num_samples,
                                            visited_timesteps(self.config.num_timesteps, skip), seed)


# ----------------------------------------------------------------- reward sampling

class DenoiseBackend(Protocol):
    """What the reward loops need from the network; torch tensors in and out, on the
    device of the tokens. The cache is opaque to the loops except for
    repeat_interleave(r) (each frame's cache r times in a row, for r chains per frame)."""

    def encode_condition(self, cond_tokens: Tensor) -> Any:
        """(N, k, L) history tokens -> the cache of everything the passes need from it."""

    def denoise(self, x_t: Tensor, t: Tensor, cache: Any) -> Tensor:
        """x_t (N, L) in [0, K], t (N,) -> log p(x0 | x_t, history) (N, K, L) float32."""


@torch.no_grad()
def sample_entropy_reward(backend: DenoiseBackend, schedule: MaskReplaceSchedule, cond_tokens: Tensor,
                          num_samples: int, steps: list[int], seed: int = 0) -> Tensor:
    """VideoDiffusion.entropy_reward's loop over any backend (inputs unchecked).

    All noise is drawn here, per chain from its history_seeds, in a fixed order, so
    backends that compute the same log p(x0) give the same reward."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    n, device = cond_tokens.shape[0], cond_tokens.device
    K, L, rows = schedule.num_classes, cond_tokens.shape[-1], n * num_samples
    gen = RowNoise(history_seeds(cond_tokens, seed, num_samples), device)
    cache = backend.encode_condition(cond_tokens).repeat_interleave(num_samples)
    x = torch.full((rows, L), K, dtype=torch.long, device=device)  # all [MASK]
    full = lambda value: torch.full((rows,), value, dtype=torch.long, device=device)  # noqa: E731
    trajectory: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    for i, t_value in enumerate(steps):
        t = full(t_value)
        log_x0 = backend.denoise(x, t, cache)
        if i + 1 == len(steps):  # last pass: p(x0 | x_0) is the sample's distribution
            x0 = gumbel_argmax(log_x0, gen)
            log_lik = log_x0.gather(1, x0[:, None]).squeeze(1).sum(dim=1)
            break
        s = full(steps[i + 1])
        log_p = schedule.q_posterior_fast(log_x0, x, t, s)
        trajectory.append((x, t, s, log_p))
        x = gumbel_argmax(log_p, gen)
    # The sample's VLB on its own trajectory: the KLs need x0, so they come last.
    log_x0_true = log_one_hot(x0, K)
    kl = sum(schedule.kl(schedule.q_posterior_fast(log_x0_true, x_t, t, s), log_p).sum(dim=1)
             for x_t, t, s, log_p in trajectory)
    vlb = log_lik - kl - L * schedule.prior_kl()
    return vlb.view(n, num_samples).mean(dim=1)


@torch.no_grad()
def sample_likelihood_reward(backend: DenoiseBackend, schedule: MaskReplaceSchedule, cond_tokens: Tensor,
                             target_tokens: Tensor, num_samples: int, steps: list[int], seed: int = 0) -> Tensor:
    """VideoDiffusion.likelihood_reward's loop over any backend (inputs unchecked)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    n, device = cond_tokens.shape[0], cond_tokens.device
    K, L, rows = schedule.num_classes, target_tokens.shape[1], cond_tokens.shape[0] * num_samples
    gen = RowNoise(history_seeds(torch.cat([cond_tokens, target_tokens[:, None]], 1), seed, num_samples), device)
    target = target_tokens.repeat_interleave(num_samples, dim=0)
    log_target = log_one_hot(target, K)
    vlb = torch.full((rows,), -L * schedule.prior_kl(), device=device)
    cache = backend.encode_condition(cond_tokens).repeat_interleave(num_samples)
    full = lambda value: torch.full((rows,), value, dtype=torch.long, device=device)  # noqa: E731
    for i, t_value in enumerate(steps):
        t = full(t_value)
        x_t = schedule.q_sample(target, t, gen)
        log_x0 = backend.denoise(x_t, t, cache)
        if i + 1 == len(steps):
            vlb += log_x0.gather(1, target[:, None]).squeeze(1).sum(dim=1)
            break
        s = full(steps[i + 1])
        log_p = schedule.q_posterior_fast(log_x0, x_t, t, s)
        log_q = schedule.q_posterior_fast(log_target, x_t, t, s)
        vlb -= schedule.kl(log_q, log_p).sum(dim=1)
    return vlb.view(n, num_samples).mean(dim=1)


class _RecomputedCondition:
    """A cache that is only the history tokens: every pass re-encodes them."""

    def __init__(self, cond_tokens: Tensor, repeats: int = 1) -> None:
        self.cond_tokens, self.repeats = cond_tokens, repeats

    def repeat_interleave(self, repeats: int) -> _RecomputedCondition:
        return _RecomputedCondition(self.cond_tokens, self.repeats * repeats)


class _NaiveBackend:
    """The released code's cost: condition embeddings and K/V recomputed on every pass."""

    def __init__(self, model: VideoDiffusion) -> None:
        self.model = model

    def encode_condition(self, cond_tokens: Tensor) -> _RecomputedCondition:
        return _RecomputedCondition(cond_tokens)

    def denoise(self, x_t: Tensor, t: Tensor, cache: _RecomputedCondition) -> Tensor:
        full = self.model.encode_condition(cache.cond_tokens).repeat_interleave(cache.repeats)
        return self.model.denoise(x_t, t, full)


def naive_entropy_reward(model: VideoDiffusion, cond_tokens: Tensor, num_samples: int = 1,
                         skip: int = 9, seed: int = 0) -> Tensor:
    """entropy_reward recomputing the condition embeddings and K/V on every pass
    (the released code's cost); the benchmark's baseline. Same numbers, same noise."""
    return model.entropy_reward(cond_tokens, num_samples, skip, seed, backend=_NaiveBackend(model))


class eval_mode:
    """Context: the module in eval mode (no dropout), its previous mode restored after."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.was_training = module, module.training

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)


# ------------------------------------------------------------------------------- EMA

class EMA:
    """Exponential moving average of a model's weights; the rewards use these.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates: with a fixed
    0.999, a 1000-step run's average would still hold 37% of the random initial weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[name].lerp_(value, 1.0 - decay)
            else:
                self.shadow[name].copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = float(state["decay"]), int(state.get("updates", 0))
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


# --------------------------------------------------------------------------- windows

def condition_windows(frame_tokens: Tensor, condition_frames: int,
                      frame_skip: int) -> tuple[Tensor, Tensor]:
    """An episode's (F, L) tokens -> history (F, k, L), oldest first, and target (F, L).

    Frame i is conditioned on frames i - k*skip, ..., i - skip; indices before the
    episode start repeat frame 0 (as the paper's code pads), so every frame gets one.
    """
    if frame_tokens.dim() != 2 or frame_tokens.shape[0] < 1:
        raise ValueError(f"frame_tokens must have shape (F >= 1, L), got {tuple(frame_tokens.shape)}")
    if condition_frames < 1 or frame_skip < 1:
        raise ValueError(f"condition_frames and frame_skip must be >= 1, got "
                         f"{condition_frames}, {frame_skip}")
    frames = torch.arange(frame_tokens.shape[0], device=frame_tokens.device)
    offsets = frame_skip * torch.arange(condition_frames, 0, -1, device=frame_tokens.device)
    index = (frames[:, None] - offsets[None, :]).clamp(min=0)
    return frame_tokens[index], frame_tokens
