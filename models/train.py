"""Training entry points behind `drr train ...`: data from recorded expert episodes,
seeded, resumable from the run's checkpoint, TensorBoard logs and a progress bar.

A run directory holds one checkpoint per model (`codec.ckpt`, `video.ckpt`), rewritten
atomically every `checkpoint_every` steps; a diverging run (non-finite loss) stops with
an error and leaves the last good checkpoint in place.

Started by torchrun, a run trains data-parallel (models/distributed.py): each rank draws its
own minibatches of the schedule's batch size (global batch = batch size x ranks, same learning
rate), gradients are averaged, and rank 0 alone writes checkpoints, logs and figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from models import distributed
from models.checkpoint import Checkpoint, data_fingerprint, load_checkpoint, load_state_checked, save_checkpoint
from models.codec import (
    VQGAN,
    CodecConfig,
    CodecLoss,
    PatchDiscriminator,
    VectorQuantizer,
    foreground_mask,
    make_optimizers,
    postprocess,
    preprocess,
    static_background,
    train_codec_steps,
)
from models.data import EpisodeFrames, load_frames, select_episodes
from models.diffusion import EMA, DiffusionConfig, VideoDiffusion, condition_windows
from models.rewards import REWARD_KINDS, RewardStats, check_reward_kinds, episode_windows, history_warmup


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings per preset; presets differ in model size and budget."""

    steps: int
    batch_size: int
    lr: float
    checkpoint_every: int
    warmup: int = 0  # linear warm-up steps, then cosine decay to 0 at `steps`; 0: constant lr

    def lr_at(self, step: int) -> float:
        """The learning rate of update `step` (a function of the step alone, so resuming continues it)."""
        if not self.warmup:
            return self.lr
        ramp = min(1.0, (step + 1) / self.warmup)
        return self.lr * ramp * 0.5 * (1 + math.cos(math.pi * min(step, self.steps) / self.steps))


CODEC_SCHEDULES = {
    "tiny": Schedule(steps=60, batch_size=8, lr=1e-3, checkpoint_every=30),
    # ~11 minutes on 2 cores; the adversarial loss (disc_start 2000) joins only when trained longer.
    # 1600 steps, not 800: reach's goal marker and push's puck survive reconstruction, and held-out reach
    # AUROC rose from 0.74 to 0.81 and 0.86 with two codec seeds (docs/MEASUREMENTS.md, Reward model).
    "cpu": Schedule(steps=1600, batch_size=16, lr=4e-4, checkpoint_every=200),
    "paper": Schedule(steps=100_000, batch_size=32, lr=4.5e-5, checkpoint_every=5000),
}


VIDEO_SCHEDULES = {
    "tiny": Schedule(steps=150, batch_size=16, lr=1e-3, checkpoint_every=75, warmup=10),
    # A short run: a higher peak rate, warmed up and decayed, reaches a lower bound than 4e-4 flat.
    "cpu": Schedule(steps=1200, batch_size=32, lr=1e-3, checkpoint_every=300, warmup=100),
    "paper": Schedule(steps=200_000, batch_size=64, lr=4.5e-4, checkpoint_every=5000, warmup=5000),
}


def seed_everything(seed: int, rank: int = 0) -> torch.Generator:
    """Seeds the global RNGs alike on every rank (the same model init everywhere) and returns the
    rank's generator for minibatches and noise, seeded seed + rank so ranks draw different batches."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed + rank)


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
    return replace(base, steps=steps or base.steps)


def train_codec(data: str | Path, out: str | Path, preset: str = "cpu", *, steps: int | None = None,
                seed: int = 0, tasks: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Train (or resume) the VQGAN on the train split of the expert episodes under `data`;
    data-parallel when started by torchrun."""
    schedule = _schedule(CODEC_SCHEDULES, preset, steps)
    config = CodecConfig.preset(preset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "codec.ckpt"
    with distributed.process_group() as worker:
        show = progress and worker.is_main
        generator = seed_everything(seed, worker.rank)

        entries = select_episodes(data, tasks=tasks, split="train")
        fingerprint = data_fingerprint(e.episode_id for e in entries)
        frames = np.concatenate([e.frames for e in load_frames(entries, config.image_size, progress=show)])
        images = preprocess(frames, config.image_size)
        if len(images) < schedule.batch_size:
            raise ValueError(f"{len(images)} training frames are fewer than one batch ({schedule.batch_size})")

        model = VQGAN(config).to(worker.device)
        discriminator = PatchDiscriminator(config.disc_channels, config.disc_layers).to(worker.device)
        distributed.broadcast_weights(model, discriminator)
        optimizers = make_optimizers(model, discriminator, schedule.lr)
        step = _resume_codec(path, preset, fingerprint, model, discriminator, optimizers)
        background = static_background(images)
        loss = CodecLoss(config, background.to(worker.device))  # once, not per step
        batches = (batch.to(worker.device) for batch in random_batches(images, schedule.batch_size, generator))
        writer = SummaryWriter(str(out / "tensorboard" / "codec")) if worker.is_main else None
        bar = tqdm(total=schedule.steps, initial=step, desc=f"codec {preset}", unit="step", disable=not show)
        try:
            while step < schedule.steps:
                chunk = min(schedule.checkpoint_every, schedule.steps - step)
                try:
                    logs = data_parallel_codec_steps(model, discriminator, loss, batches, chunk, schedule.lr,
                                                     start_step=step, optimizers=optimizers, grad_clip=1.0)
                except FloatingPointError as exc:
                    where = " on some rank" if worker.parallel else ""
                    raise ValueError(f"codec training diverged{where} ({exc}); the last good checkpoint is kept: "
                                     f"{path if path.exists() else 'none yet'}") from None
                if writer:
                    for entry in logs:
                        for name, value in entry.items():
                            if name != "step":
                                writer.add_scalar(f"codec/{name}", value, entry["step"])
                step += len(logs)
                bar.update(len(logs))
                bar.set_postfix(l1=f"{logs[-1]['l1']:.3f}", codes=logs[-1]["codes_used"])
                if worker.is_main:
                    _save_codec(path, preset, config, model, discriminator, optimizers, fingerprint, step)
        finally:
            bar.close()
            if writer:
                writer.close()
        figures = distributed.broadcast_object(evaluate_codec(model, data, tasks, out, config, background)
                                               if worker.is_main else None)
    return {"checkpoint": str(path), "preset": preset, "steps": step, "train_frames": len(images),
            "train_episodes": len(entries), "world_size": worker.world_size, **figures}


def data_parallel_codec_steps(model: VQGAN, discriminator: PatchDiscriminator, loss: CodecLoss,
                              batches: Iterator[torch.Tensor], steps: int, lr: float, *, start_step: int = 0,
                              optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer] | None = None,
                              grad_clip: float | None = None) -> list[dict[str, float]]:
    """train_codec_steps on every rank at once; in a single process, exactly train_codec_steps.

    Gradients are averaged during backward. A loss that is not finite on some rank is made so on
    all, so every rank raises at the same check (a rank stopping alone would leave the others
    waiting for its gradients). Each rank restarts dead codes from its own batch, so rank 0's
    codebook and usage go to all ranks before every step and after the last.
    """
    with distributed.averaged_gradients(model, discriminator):
        logs = train_codec_steps(model, discriminator, _RanksAgreeCodecLoss(loss.config, loss.background),
                                 _codebook_from_rank0(batches, model.quantizer), steps, lr, start_step=start_step,
                                 optimizers=optimizers, grad_clip=grad_clip)
    distributed.broadcast_weights(model.quantizer)
    return logs


class _RanksAgreeCodecLoss(CodecLoss):
    """CodecLoss whose losses are non-finite on every rank when they are on any."""

    def generator_loss(self, *args, **kwargs) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs = super().generator_loss(*args, **kwargs)
        return _non_finite_if_any_rank(loss), logs

    def discriminator_loss(self, *args, **kwargs) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs = super().discriminator_loss(*args, **kwargs)
        return _non_finite_if_any_rank(loss), logs


def _non_finite_if_any_rank(loss: torch.Tensor) -> torch.Tensor:
    return loss if distributed.all_finite(loss) else loss + math.nan


def _codebook_from_rank0(batches: Iterator[torch.Tensor], quantizer: VectorQuantizer) -> Iterator[torch.Tensor]:
    for batch in batches:
        distributed.broadcast_weights(quantizer)
        yield batch


def _save_codec(path: Path, preset: str, config: CodecConfig, model: VQGAN, discriminator: PatchDiscriminator,
                optimizers, fingerprint: str, step: int) -> None:
    extra = {"discriminator": discriminator.state_dict(),
             "optimizers": [optimizer.state_dict() for optimizer in optimizers]}
    save_checkpoint(Checkpoint(kind="codec", preset=preset, config=config.to_dict(), state_dict=model.state_dict(),
                               data_fingerprint=fingerprint, step=step, extra=extra), path)


def _run_checkpoint(path: Path, kind: str, preset: str, fingerprint: str) -> Checkpoint | None:
    """The run's checkpoint to resume from, if any; refuses one trained on other data."""
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, expect_kind=kind, expect_preset=preset)
    if ckpt.data_fingerprint != fingerprint:
        raise ValueError(f"{path} was trained on other episodes (data fingerprint differs); "
                         "use a new --out directory to train on this data")
    return ckpt


def _resume_codec(path: Path, preset: str, fingerprint: str, model: VQGAN,
                  discriminator: PatchDiscriminator, optimizers) -> int:
    """Load the run's checkpoint if there is one; the step to continue from."""
    ckpt = _run_checkpoint(path, "codec", preset, fingerprint)
    if ckpt is None:
        return 0
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
                   config: CodecConfig, background: torch.Tensor, show: int = 8) -> dict:
    """Held-out reconstruction error (all pixels, and the foreground: the pixels off the training
    frames' static background, where the arm and objects are), codebook use, and a PNG of
    originals over reconstructions."""
    model.eval()
    try:
        entries = select_episodes(data, tasks=tasks, split="test")
    except ValueError:
        return {"test_l1": None, "note": "no held-out expert episodes to evaluate on"}
    frames = np.concatenate([e.frames for e in load_frames(entries, config.image_size, progress=False)])
    images = preprocess(frames, config.image_size)
    device = _device_of(model)
    tokens = torch.cat([model.encode(batch.to(device)) for batch in images.split(64)])
    reconstruction = torch.cat([model.decode(batch).cpu() for batch in tokens.split(64)])
    pick = np.linspace(0, len(frames) - 1, min(show, len(frames))).astype(int)
    grid = np.concatenate([np.concatenate(list(frames[pick]), 1),
                           np.concatenate(list(postprocess(reconstruction[pick])), 1)], 0)
    png = out / "codec_reconstructions.png"
    cv2.imwrite(str(png), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    error, mask = (reconstruction - images).abs(), foreground_mask(images, background)
    figures = {"test_l1": float(error.mean()),
               "test_foreground_l1": float((error * mask).sum() / (mask.sum() * 3).clamp_min(1.0)),
               "test_codes_used": int(tokens.unique().numel()), "test_frames": len(frames),
               "reconstructions_png": str(png)}
    (out / "codec_eval.json").write_text(json.dumps(figures, indent=2))
    return figures


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def encode_episodes(codec: VQGAN, episodes: Sequence[EpisodeFrames], batch: int = 128) -> list[torch.Tensor]:
    """Each episode's frames as (F, 64) codec tokens; every frame is encoded once."""
    codec.eval()
    size, device = codec.config.image_size, _device_of(codec)
    return [torch.cat([codec.encode(preprocess(chunk, size).to(device)).flatten(1).cpu()
                       for chunk in np.array_split(e.frames, max(1, len(e.frames) // batch + 1))
                       if len(chunk)])
            for e in episodes]


def train_video(data: str | Path, out: str | Path, codec_path: str | Path, preset: str = "cpu", *,
                steps: int | None = None, seed: int = 0, tasks: Sequence[str] | None = None,
                reward_kinds: Sequence[str] = REWARD_KINDS, progress: bool = True) -> dict:
    """Train (or resume) the conditional video diffusion model on the codec's tokens of the
    train-split expert episodes, then store the standardisation statistics of these kinds of
    reward (the checkpoint scores only those; resuming the finished run recomputes them);
    data-parallel when started by torchrun."""
    check_reward_kinds(reward_kinds)
    schedule = _schedule(VIDEO_SCHEDULES, preset, steps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "video.ckpt"
    with distributed.process_group() as worker:
        show = progress and worker.is_main
        generator = seed_everything(seed, worker.rank)
        # The loss draws its noise where the model is; on the CPU from the batch generator, as always.
        noise = (generator if worker.device.type == "cpu"
                 else torch.Generator(worker.device).manual_seed(seed + worker.rank))
        codec, codec_ckpt = load_codec(codec_path)
        codec.to(worker.device)
        config = DiffusionConfig.preset(preset, codebook_size=codec.config.codebook_size)

        entries = select_episodes(data, tasks=tasks, split="train")
        fingerprint = data_fingerprint(e.episode_id for e in entries)
        trained_tasks = sorted({e.task for e in entries})
        tokens = encode_episodes(codec, load_frames(entries, codec.config.image_size, progress=show))
        pairs = [condition_windows(t, config.condition_frames, config.frame_skip) for t in tokens]
        cond, target = torch.cat([c for c, _ in pairs]), torch.cat([t for _, t in pairs])

        model = VideoDiffusion(config).to(worker.device)
        distributed.broadcast_weights(model)
        ema = EMA(model, config.ema_decay)
        optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=0.01)
        step = _resume_video(path, preset, fingerprint, codec_ckpt, model, ema, optimizer)
        writer = SummaryWriter(str(out / "tensorboard" / "video")) if worker.is_main else None
        bar = tqdm(total=schedule.steps, initial=step, desc=f"video {preset}", unit="step", disable=not show)
        model.train()
        try:
            with distributed.averaged_gradients(model):
                while step < schedule.steps:
                    batch = torch.randint(0, len(target), (schedule.batch_size,), generator=generator)
                    loss, logs = model.loss(cond[batch].to(worker.device), target[batch].to(worker.device), noise)
                    if not distributed.all_finite(loss):  # the same answer on every rank: all stop here
                        raise ValueError(f"video training diverged at step {step} ({_loss_text(loss, worker)}); the "
                                         f"last good checkpoint is kept: {path if path.exists() else 'none yet'}")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    for group in optimizer.param_groups:
                        group["lr"] = schedule.lr_at(step)
                    optimizer.step()
                    ema.update(model)
                    step += 1
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(vlb=f"{logs['vlb']:.3f}")
                        for name, value in logs.items():
                            if writer:
                                writer.add_scalar(f"video/{name}", value, step)
                    if worker.is_main and (step % schedule.checkpoint_every == 0 or step == schedule.steps):
                        _save_video(path, preset, config, model, ema, optimizer, codec_ckpt, fingerprint, step,
                                    None, trained_tasks)
        finally:
            bar.close()
            if writer:
                writer.close()
        stats = expert_reward_stats(model, ema, tokens, show, worker, kinds=reward_kinds)
        if worker.is_main:
            _save_video(path, preset, config, model, ema, optimizer, codec_ckpt, fingerprint, step, stats,
                        trained_tasks)
    return {"checkpoint": str(path), "preset": preset, "steps": step, "train_pairs": len(target),
            "train_episodes": len(entries), "world_size": worker.world_size,
            "reward_stats": {kind: kind_stats.to_dict() for kind, kind_stats in stats.items()}}


def _loss_text(loss: torch.Tensor, worker: distributed.Worker) -> str:
    if worker.parallel:
        return f"not finite on some rank; rank {worker.rank}'s loss {loss.item()}"
    return f"loss {loss.item()}"


# Each frame costs an entropy and two likelihood calls (the second, likelihood_stay's stay term, came after
# this was measured: ~28 s per 512 frames on 2 cores without it). On a full-budget model (2638 training
# frames) 512 frames move the mean by <= 0.02 std and the std by <= 4% against 1024.
STATS_MAX_FRAMES = 512


def expert_reward_stats(model: VideoDiffusion, ema: EMA, tokens: Sequence[torch.Tensor],
                        progress: bool = True, worker: distributed.Worker | None = None,
                        max_frames: int = STATS_MAX_FRAMES,
                        kinds: Sequence[str] = REWARD_KINDS) -> dict[str, RewardStats]:
    """Mean and std of these kinds of raw reward (EMA weights) over the training expert frames the
    rewards score (past every kind's warm-up, models.reward_model), up to max_frames of them spread
    evenly over all episodes. With several ranks each scores every world_size-th chunk; each
    frame's reward is seeded by its own tokens, so the statistics are the same however the frames
    are shared."""
    config = model.config
    worker = worker or distributed.Worker(device=_device_of(model))
    rewards_model = VideoDiffusion(config).to(worker.device)
    ema.copy_to(rewards_model)
    frames = torch.cat(list(tokens)).flatten(1)
    k, skip = config.condition_frames, config.frame_skip
    entropy_histories = torch.cat([episode_windows(t, k, skip) for t in tokens])
    likelihood_histories = torch.cat([episode_windows(t, k, skip, lag=skip) for t in tokens])
    warmup = history_warmup(k, skip, lag=skip)  # both likelihood kinds', longer than the entropy's
    scored = np.flatnonzero(np.concatenate([np.arange(len(t)) >= warmup for t in tokens]))
    if not len(scored):
        raise ValueError(f"no training expert episode is longer than the reward's {warmup} warm-up frames")
    spread = np.linspace(0, len(scored) - 1, min(max_frames, len(scored))).round().astype(int)
    pick = torch.from_numpy(scored[np.unique(spread)])
    chunks = list(zip(entropy_histories[pick].split(128), likelihood_histories[pick].split(128),
                      frames[pick].split(128)))
    mine = range(worker.rank, len(chunks), worker.world_size)
    rewards = {}
    for i in tqdm(mine, desc="reward statistics", unit="chunk", disable=not progress):
        entropy_history, likelihood_history, target = (part.to(worker.device) for part in chunks[i])
        rewards[i] = {}
        if "entropy" in kinds:
            rewards[i]["entropy"] = rewards_model.entropy_reward(entropy_history).cpu()
        if {"likelihood", "likelihood_stay"} & set(kinds):
            rewards[i]["likelihood"] = rewards_model.likelihood_reward(likelihood_history, target).cpu()
        if "likelihood_stay" in kinds:  # its stay term conditions on the history ending at t, the entropy reward's
            stay = rewards_model.likelihood_reward(entropy_history, target).cpu()
            rewards[i]["likelihood_stay"] = rewards[i]["likelihood"] + stay
    for other in distributed.gather_objects(rewards):
        rewards.update(other)
    return {kind: RewardStats.from_rewards(torch.cat([rewards[i][kind] for i in range(len(chunks))]))
            for kind in kinds}


def _save_video(path: Path, preset: str, config: DiffusionConfig, model: VideoDiffusion, ema: EMA,
                optimizer: torch.optim.Optimizer, codec_ckpt: Checkpoint, fingerprint: str, step: int,
                stats: dict[str, RewardStats] | None, trained_tasks: list[str]) -> None:
    # The codec goes in without its discriminator and optimizer: the file only has to score.
    codec = Checkpoint(kind="codec", preset=codec_ckpt.preset, config=codec_ckpt.config,
                       state_dict=codec_ckpt.state_dict, data_fingerprint=codec_ckpt.data_fingerprint,
                       code_version=codec_ckpt.code_version, step=codec_ckpt.step)
    save_checkpoint(Checkpoint(kind="video", preset=preset, config=config.to_dict(), state_dict=model.state_dict(),
                               ema_state_dict=ema.state_dict()["shadow"], codec=codec.to_dict(),
                               stats={kind: s.to_dict() for kind, s in stats.items()} if stats else None,
                               data_fingerprint=fingerprint, step=step,
                               extra={"optimizer": optimizer.state_dict(), "ema_updates": ema.updates,
                                      "tasks": trained_tasks}), path)


def _resume_video(path: Path, preset: str, fingerprint: str, codec_ckpt: Checkpoint, model: VideoDiffusion,
                  ema: EMA, optimizer: torch.optim.Optimizer) -> int:
    ckpt = _run_checkpoint(path, "video", preset, fingerprint)
    if ckpt is None:
        return 0
    # Another codec's token ids mean other things: resuming would mix two vocabularies, and a finished
    # run would keep scoring with the old codec while the new one sat beside it.
    trained_with = ckpt.codec or {}
    weights = trained_with.get("state_dict", {})
    if weights.keys() != codec_ckpt.state_dict.keys() or not all(
            torch.equal(weights[name], codec_ckpt.state_dict[name]) for name in weights):
        raise ValueError(f"{path} was trained with another codec (step {trained_with.get('step')}) than "
                         f"the one given (step {codec_ckpt.step}); use a new --out directory to train on this "
                         "codec, or give the codec it was trained with")
    load_state_checked(model, ckpt.state_dict, f"video model weights in {path}")
    device = _device_of(model)
    ema.load_state_dict({"decay": ema.decay, "updates": ckpt.extra.get("ema_updates", ckpt.step),
                         "shadow": {name: value.to(device) for name, value in ckpt.ema_state_dict.items()}})
    optimizer.load_state_dict(ckpt.extra["optimizer"])
    return ckpt.step
