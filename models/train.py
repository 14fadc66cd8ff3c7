"""Training entry points behind `drr train ...`: data from recorded expert episodes,
seeded, resumable from the run's checkpoint, TensorBoard logs and a progress bar.

A run directory holds one checkpoint per model (`codec.ckpt`, `video.ckpt`), rewritten
atomically every `checkpoint_every` steps; a diverging run (non-finite loss) stops with
an error and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from models.checkpoint import Checkpoint, data_fingerprint, load_checkpoint, load_state_checked, save_checkpoint
from models.codec import (
    VQGAN,
    CodecConfig,
    CodecLoss,
    PatchDiscriminator,
    make_optimizers,
    postprocess,
    preprocess,
    train_codec_steps,
)
from models.data import load_frames, select_episodes


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings per preset; presets differ in model size and budget."""

    steps: int
    batch_size: int
    lr: float
    checkpoint_every: int


CODEC_SCHEDULES = {
    "tiny": Schedule(steps=60, batch_size=8, lr=1e-3, checkpoint_every=30),
    "cpu": Schedule(steps=3000, batch_size=16, lr=2e-4, checkpoint_every=500),
    "paper": Schedule(steps=100_000, batch_size=32, lr=4.5e-5, checkpoint_every=5000),
}


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def random_batches(images: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless seeded minibatches (with replacement across batches, none within one)."""
    while True:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield images[order[start:start + batch_size]]


def _schedule(schedules: dict[str, Schedule], preset: str, steps: int | None) -> Schedule:
    if preset not in schedules:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(schedules)}")
    base = schedules[preset]
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    return Schedule(steps or base.steps, base.batch_size, base.lr, base.checkpoint_every)


def train_codec(data: str | Path, out: str | Path, preset: str = "cpu", *, steps: int | None = None,
                seed: int = 0, tasks: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Train (or resume) the VQGAN on the train split of the expert episodes under `data`."""
    schedule = _schedule(CODEC_SCHEDULES, preset, steps)
    config = CodecConfig.preset(preset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "codec.ckpt"
    generator = seed_everything(seed)

    entries = select_episodes(data, tasks=tasks, split="train")
    fingerprint = data_fingerprint(e.episode_id for e in entries)
    frames = np.concatenate([e.frames for e in load_frames(entries, config.image_size, progress=progress)])
    images = preprocess(frames, config.image_size)
    if len(images) < schedule.batch_size:
        raise ValueError(f"{len(images)} training frames are fewer than one batch ({schedule.batch_size})")

    model, discriminator = VQGAN(config), PatchDiscriminator(config.disc_channels, config.disc_layers)
    optimizers = make_optimizers(model, discriminator, schedule.lr)
    step = _resume_codec(path, preset, fingerprint, model, discriminator, optimizers)
    loss = CodecLoss(config)
    batches = random_batches(images, schedule.batch_size, generator)
    writer = SummaryWriter(str(out / "tensorboard" / "codec"))
    bar = tqdm(total=schedule.steps, initial=step, desc=f"codec {preset}", unit="step", disable=not progress)
    try:
        while step < schedule.steps:
            chunk = min(schedule.checkpoint_every, schedule.steps - step)
            try:
                logs = train_codec_steps(model, discriminator, loss, batches, chunk, schedule.lr,
                                         start_step=step, optimizers=optimizers, grad_clip=1.0)
            except FloatingPointError as exc:
                raise ValueError(f"codec training diverged ({exc}); the last good checkpoint is kept: "
                                 f"{path if path.exists() else 'none yet'}") from None
            for entry in logs:
                for name, value in entry.items():
                    if name != "step":
                        writer.add_scalar(f"codec/{name}", value, entry["step"])
            step += len(logs)
            bar.update(len(logs))
            bar.set_postfix(l1=f"{logs[-1]['l1']:.3f}", codes=logs[-1]["codes_used"])
            _save_codec(path, preset, config, model, discriminator, optimizers, fingerprint, step)
    finally:
        bar.close()
        writer.close()
    return {"checkpoint": str(path), "preset": preset, "steps": step, "train_frames": len(images),
            "train_episodes": len(entries), **evaluate_codec(model, data, tasks, out, config)}


def _save_codec(path: Path, preset: str, config: CodecConfig, model: VQGAN, discriminator: PatchDiscriminator,
                optimizers, fingerprint: str, step: int) -> None:
    extra = {"discriminator": discriminator.state_dict(),
             "optimizers": [optimizer.state_dict() for optimizer in optimizers]}
    save_checkpoint(Checkpoint(kind="codec", preset=preset, config=config.to_dict(), state_dict=model.state_dict(),
                               data_fingerprint=fingerprint, step=step, extra=extra), path)


def _resume_codec(path: Path, preset: str, fingerprint: str, model: VQGAN,
                  discriminator: PatchDiscriminator, optimizers) -> int:
    """Load the run's checkpoint if there is one; the step to continue from."""
    if not path.exists():
        return 0
    ckpt = load_checkpoint(path, expect_kind="codec", expect_preset=preset)
    if ckpt.data_fingerprint != fingerprint:
        raise ValueError(f"{path} was trained on other episodes (data fingerprint differs); "
                         "use a new --out directory to train on this data")
    load_state_checked(model, ckpt.state_dict, f"codec weights in {path}")
    load_state_checked(discriminator, ckpt.extra["discriminator"], f"discriminator weights in {path}")
    for optimizer, state in zip(optimizers, ckpt.extra["optimizers"]):
        optimizer.load_state_dict(state)
    return ckpt.step


def load_codec(path: str | Path, preset: str | None = None) -> tuple[VQGAN, Checkpoint]:
    """A trained codec in eval mode, checked against its config."""
    ckpt = load_checkpoint(path, expect_kind="codec", expect_preset=preset)
    model = VQGAN(CodecConfig.from_dict(ckpt.config))
    load_state_checked(model, ckpt.state_dict, f"codec weights in {path}")
    return model.eval(), ckpt


@torch.no_grad()
def evaluate_codec(model: VQGAN, data: str | Path, tasks: Sequence[str] | None, out: Path,
                   config: CodecConfig, show: int = 8) -> dict:
    """Held-out reconstruction error, codebook use, and a PNG of originals over reconstructions."""
    model.eval()
    try:
        entries = select_episodes(data, tasks=tasks, split="test")
    except ValueError:
        return {"test_l1": None, "note": "no held-out expert episodes to evaluate on"}
    frames = np.concatenate([e.frames for e in load_frames(entries, config.image_size, progress=False)])
    images = preprocess(frames, config.image_size)
    tokens = torch.cat([model.encode(batch) for batch in images.split(64)])
    reconstruction = torch.cat([model.decode(batch) for batch in tokens.split(64)])
    pick = np.linspace(0, len(frames) - 1, min(show, len(frames))).astype(int)
    grid = np.concatenate([np.concatenate(list(frames[pick]), 1),
                           np.concatenate(list(postprocess(reconstruction[pick])), 1)], 0)
    png = out / "codec_reconstructions.png"
    import cv2

    cv2.imwrite(str(png), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    figures = {"test_l1": float((reconstruction - images).abs().mean()),
               "test_codes_used": int(tokens.unique().numel()), "test_frames": len(frames),
               "reconstructions_png": str(png)}
    (out / "codec_eval.json").write_text(json.dumps(figures, indent=2))
    return figures
