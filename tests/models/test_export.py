"""ONNX export (models/export.py) and reward backends (models/backends.py)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import onnx
import pytest
import torch

from models.backends import OnnxRuntimeBackend, OnnxRuntimeCodec, TensorRTBackend, TorchBackend, make_backend
from models.codec import VQGAN, CodecConfig
from models.diffusion import DiffusionConfig, VideoDiffusion, condition_windows
from models.export import CONDITION_FILE, STEP_FILE, export_codec_encoder, export_denoiser, model_hash

K = 16  # codebook size of the synthetic token videos



def random_tokens(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, K, shape, generator=torch.Generator().manual_seed(seed))


def shifting_video(frames: int, seed: int) -> torch.Tensor:
    """A random 8x8 token pattern moving one cell to the right per frame."""
    pattern = random_tokens(8, 8, seed=seed)
    return torch.stack([pattern.roll(f, dims=1).flatten() for f in range(frames)])


@pytest.fixture(scope="module")
def trained() -> VideoDiffusion:
    """The tiny preset after a few steps on shifting videos, so rewards differ between histories."""
    torch.manual_seed(0)
    model = VideoDiffusion(DiffusionConfig.preset("tiny", codebook_size=K))
    cond, target = condition_windows(shifting_video(12, seed=11), 2, 1)
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        batch = torch.randint(0, len(target), (16,), generator=g)
        loss, _ = model.loss(cond[batch], target[batch], g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def onnx_dir(trained: VideoDiffusion, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("onnx")
    export_denoiser(trained, directory)
    return directory


def diverse_histories() -> tuple[torch.Tensor, torch.Tensor]:
    """Seen motion, an unseen pattern's motion, frozen frames and noise: 16 histories, targets."""
    seen, _ = condition_windows(shifting_video(6, seed=11), 2, 1)
    unseen, unseen_target = condition_windows(shifting_video(6, seed=12), 2, 1)
    frozen = random_tokens(4, 1, 64, seed=3).expand(4, 2, 64)
    cond = torch.cat([seen[2:6], unseen[2:6], frozen, random_tokens(4, 2, 64, seed=4)])
    target = torch.cat([shifting_video(6, seed=11)[2:6], unseen_target[2:6], frozen[:, 0],
                        random_tokens(4, 64, seed=5)])
    return cond, target


def agreement(reference: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    diff, std = (reference - other).abs().max().item(), reference.std().item()
    print(f"max |torch - onnxruntime| = {diff:.2e}, reward std = {std:.3f}")
    return diff, std


# ------------------------------------------------------------------------- export

def test_codec_encoder_export_gives_the_torch_tokens_for_any_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    codec = VQGAN(CodecConfig.preset("tiny")).eval()
    path = export_codec_encoder(codec, tmp_path / "codec.onnx")
    onnx.checker.check_model(str(path))
    encoder = OnnxRuntimeCodec(path, threads=1)
    for n in (1, 5):
        images = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(n)) * 2 - 1
        tokens = encoder.encode(images)
        assert tokens.shape == (n, 8, 8) and tokens.dtype == torch.int64
        assert torch.equal(tokens, codec.encode(images))


def test_denoiser_graphs_are_valid_and_one_pass_matches_torch(trained: VideoDiffusion, onnx_dir: Path) -> None:
    for name in (CONDITION_FILE, STEP_FILE):
        graph = onnx.load(str(onnx_dir / name))
        onnx.checker.check_model(graph, full_check=True)
        assert graph.opset_import[0].version >= 17
        for value in list(graph.graph.input) + list(graph.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch", (name, value.name)
    ort_backend = OnnxRuntimeBackend(onnx_dir / CONDITION_FILE, onnx_dir / STEP_FILE, threads=1)
    torch_backend = TorchBackend(trained)
    cond, x_t, t = random_tokens(3, 2, 64), random_tokens(3, 64, seed=2), torch.tensor([99, 40, 0])
    x_t[0] = K  # all [MASK]
    ort_cache = ort_backend.encode_condition(cond)
    assert ort_cache.keys.shape == (3, 2, 4, 128, 8)  # (N, layers, heads, k*L, head_dim) for tiny
    expected = torch_backend.denoise(x_t, t, torch_backend.encode_condition(cond))
    assert torch.allclose(ort_backend.denoise(x_t, t, ort_cache), expected, atol=1e-4)


def test_export_keeps_the_training_mode_and_the_hash_follows_the_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VideoDiffusion(DiffusionConfig.preset("tiny", codebook_size=K)).train()
    first, _ = export_denoiser(model, tmp_path / "a")
    assert model.training and model.denoiser.blocks[0].training
    assert model_hash(first) == hashlib.sha256(first.read_bytes()).hexdigest()
    again, _ = export_denoiser(model, tmp_path / "b")
    assert model_hash(again) == model_hash(first)  # export is deterministic: engine caches stay valid
    with torch.no_grad():
        model.denoiser.cond_norm.weight.add_(0.1)
    changed, _ = export_denoiser(model, tmp_path / "c")
    assert model_hash(changed) != model_hash(first)


# ----------------------------------------------------------------------- backends

def test_onnxruntime_entropy_rewards_match_torch_for_the_same_noise(trained: VideoDiffusion,
                                                                   onnx_dir: Path) -> None:
    cond, _ = diverse_histories()
    backend = make_backend("onnxruntime", onnx_dir=onnx_dir, threads=1)
    for num_samples in (1, 2):
        seeded = lambda be, r=num_samples: trained.entropy_reward(  # noqa: E731
            cond, num_samples=r, seed=7, backend=be)
        reference = seeded(None)
        assert torch.equal(reference, seeded(make_backend("torch", model=trained)))
        diff, std = agreement(reference, seeded(backend))
        assert std > 1.0  # diverse histories: the bound below is not vacuous
        assert diff <= 1e-3 * std


def test_onnxruntime_likelihood_rewards_match_torch_for_the_same_noise(trained: VideoDiffusion,
                                                                      onnx_dir: Path) -> None:
    cond, target = diverse_histories()
    backend = make_backend("onnxruntime", onnx_dir=onnx_dir, threads=1)
    seeded = lambda be: trained.likelihood_reward(  # noqa: E731
        cond, target, num_samples=2, seed=7, backend=be)
    diff, std = agreement(seeded(None), seeded(backend))
    assert std > 1.0 and diff <= 1e-3 * std


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_tensorrt_backend_says_tensorrt_is_missing(onnx_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        TensorRTBackend(onnx_dir / CONDITION_FILE, onnx_dir / STEP_FILE)
    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        make_backend("tensorrt", onnx_dir=onnx_dir)


def test_make_backend_errors_name_what_is_missing(trained: VideoDiffusion, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'tensorflow'.*\['onnxruntime', 'tensorrt', 'torch'\]"):
        make_backend("tensorflow", model=trained)
    with pytest.raises(ValueError, match="model="):
        make_backend("torch")
    with pytest.raises(ValueError, match="onnx_dir="):
        make_backend("onnxruntime", model=trained)
    with pytest.raises(FileNotFoundError, match="export_denoiser"):
        make_backend("onnxruntime", onnx_dir=tmp_path)
    assert isinstance(make_backend("torch", model=trained), TorchBackend)
