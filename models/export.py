"""ONNX export of the reward networks: the codec encoder and the denoiser.

The denoiser is split in two graphs so that runtimes keep the reward loop's saving:
`condition.onnx` (history tokens -> every layer's cross-attention K/V, once per
call) and `denoiser_step.onnx` (one pass, K/V as inputs, 11 times per call). The
sampling loop itself (posteriors, Gumbel noise) stays in torch, see
models.diffusion.sample_entropy_reward and models.backends.

Uses the legacy TorchScript exporter (dynamo=False): the dynamo one needs
onnxscript, which this stack does not install.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from models.codec import VQGAN
from models.denoiser import ConditionCache, Denoiser
from models.diffusion import VideoDiffusion, eval_mode

OPSET = 17
CONDITION_FILE = "condition.onnx"
STEP_FILE = "denoiser_step.onnx"
CODEC_FILE = "codec_encoder.onnx"
MANIFEST_FILE = "manifest.json"


class CodecEncoderGraph(nn.Module):
    """images (N, 3, S, S) in [-1, 1] -> tokens (N, g, g) int64, as VQGAN.encode."""

    def __init__(self, codec: VQGAN) -> None:
        super().__init__()
        self.encoder, self.codebook = codec.encoder, codec.quantizer.codebook

    def forward(self, images: Tensor) -> Tensor:
        z = self.encoder(images)
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        weight = self.codebook.weight
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ weight.t() + weight.pow(2).sum(1)
        return dist.argmin(1).view(n, h, w)


class ConditionGraph(nn.Module):
    """cond_tokens (N, k, L) -> keys, values, each (N, layers, heads, k*L, head_dim)."""

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, cond_tokens: Tensor) -> tuple[Tensor, Tensor]:
        cache = self.denoiser.encode_condition(cond_tokens)
        return torch.stack(cache.keys, dim=1), torch.stack(cache.values, dim=1)


class StepGraph(nn.Module):
    """x_t (N, L) int64, t (N,) int64, stacked keys/values -> log p(x0) (N, K, L)."""

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x_t: Tensor, t: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        return self.denoiser(x_t, t, ConditionCache(list(keys.unbind(1)), list(values.unbind(1))))


def _export(owner: nn.Module, graph: nn.Module, args: tuple[Tensor, ...], path: Path,
            inputs: list[str], outputs: list[str]) -> Path:
    """Trace `graph` (built on `owner`'s modules) with owner in eval mode, then check it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with eval_mode(owner), torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python-side shape checks; they hold for every batch size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1")  # strided K/V split: harmless
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter, chosen on purpose
        torch.onnx.export(graph, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
                          opset_version=OPSET, dynamo=False)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def export_codec_encoder(model: VQGAN, path: str | Path) -> Path:
    """The codec's encoder and quantizer as one graph: "images" (N, 3, S, S) float32
    -> "tokens" (N, g, g) int64; dynamic batch."""
    s = model.config.image_size
    images = torch.zeros(2, 3, s, s)
    return _export(model, CodecEncoderGraph(model), (images,), Path(path), ["images"], ["tokens"])


def export_denoiser(model: VideoDiffusion, directory: str | Path) -> tuple[Path, Path]:
    """Write directory/condition.onnx ("cond_tokens" (N, k, L) int64 -> "keys",
    "values" (N, layers, heads, k*L, head_dim) float32) and directory/denoiser_step.onnx
    ("x_t" (N, L) int64, "t" (N,) int64, "keys", "values" -> "log_x0" (N, K, L));
    dynamic batch. Returns (condition path, step path)."""
    c, directory = model.config, Path(directory)
    cond = torch.zeros(2, c.condition_frames, c.tokens_per_frame, dtype=torch.long)
    condition = _export(model, ConditionGraph(model.denoiser), (cond,), directory / CONDITION_FILE,
                        ["cond_tokens"], ["keys", "values"])
    with torch.no_grad():
        keys, values = ConditionGraph(model.denoiser)(cond)  # example inputs: values do not matter
    x_t = torch.full((2, c.tokens_per_frame), c.codebook_size, dtype=torch.long)
    t = torch.tensor([c.num_timesteps - 1, 0])
    step = _export(model, StepGraph(model.denoiser), (x_t, t, keys, values), directory / STEP_FILE,
                   ["x_t", "t", "keys", "values"], ["log_x0"])
    return condition, step


def model_hash(path: str | Path) -> str:
    """sha256 hex digest of an ONNX file's bytes (the engine cache key's model part)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_reward(video_checkpoint: str | Path, directory: str | Path) -> dict:
    """Every graph the reward needs, from one video checkpoint (EMA weights and its embedded
    codec), plus manifest.json naming the checkpoint, the files and their hashes."""
    import json

    from models.reward_model import DiffusionReward

    reward = DiffusionReward.load(video_checkpoint)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    codec = export_codec_encoder(reward.codec, directory / CODEC_FILE)
    condition, step = export_denoiser(reward.video, directory)
    manifest = {"checkpoint": str(video_checkpoint), "opset": OPSET,
                "files": {path.name: model_hash(path) for path in (codec, condition, step)}}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return {"directory": str(directory), **manifest}
