"""Reward inference speed, measured side by side in one run, per preset:

- naive: an eager loop that recomputes everything for every frame: it re-encodes the
  whole history window with the codec and recomputes the condition's cross-attention
  K/V on each of the 11 denoising passes (the released code's cost);
- torch: each frame encoded once (token ring buffer / one batched encode per episode),
  condition K/V computed once per call, frames batched;
- onnxruntime: the same loop on the exported graphs.

Two workloads: streaming (batch 1, the reward of the newest frame) and a 100-frame
episode labelled at once. Models are randomly initialised: speed does not depend on
the weights. Ratios are to the naive loop of the same run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.codec import VQGAN, CodecConfig, preprocess
from models.diffusion import DiffusionConfig, VideoDiffusion, naive_entropy_reward
from models.export import CODEC_FILE, export_codec_encoder, export_denoiser
from models.reward_model import DiffusionReward
from models.rewards import RewardStats, window_indices
from sim.record import check_writable_dir

PRESETS = ("tiny", "cpu", "paper")
STREAM_FRAMES = 5  # streaming figures average this many consecutive frames


def build_rewards(preset: str, onnx_dir: Path) -> dict[str, DiffusionReward]:
    torch.manual_seed(0)
    codec = VQGAN(CodecConfig.preset(preset)).eval()
    video = VideoDiffusion(DiffusionConfig.preset(preset, codebook_size=codec.config.codebook_size)).eval()
    export_codec_encoder(codec, onnx_dir / CODEC_FILE)
    export_denoiser(video, onnx_dir)
    stats = RewardStats(0.0, 1.0, 1)
    return {"torch": DiffusionReward(codec, video, stats),
            "onnxruntime": DiffusionReward(codec, video, stats, backend="onnxruntime", onnx_dir=onnx_dir)}


def naive_episode(reward: DiffusionReward, frames: np.ndarray) -> np.ndarray:
    """Frame by frame, everything recomputed: the baseline."""
    config = reward.video.config
    out = []
    for t in range(len(frames)):
        window = frames[window_indices(t, config.condition_frames, config.frame_skip)]
        tokens = reward.codec.encode(preprocess(window, reward.image_size)).flatten(1)
        out.append(naive_entropy_reward(reward.video, tokens[None], skip=reward.skip, seed=reward.seed))
    return torch.cat(out).numpy()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_optimised(reward: DiffusionReward, stream: np.ndarray, episode: np.ndarray) -> dict[str, float]:
    """Seconds to stream `stream` frame by frame, and to label `episode` in one call."""
    reward.label_episode(stream[:2])  # warm-up: first-call allocations and session set-up
    streaming = reward.stream()
    return {"stream": timed(lambda: [streaming.push(f, stamp_ns=i + 1) for i, f in enumerate(stream)]),
            "episode": timed(lambda: reward.label_episode(episode))}


def measure_preset(preset: str, episode_frames: int) -> dict:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        rewards = build_rewards(preset, Path(tmp))
        size = rewards["torch"].image_size
        episode = rng.integers(0, 256, (episode_frames, size, size, 3), dtype=np.uint8)
        stream = episode[:STREAM_FRAMES]
        seconds = {"naive": {"stream": timed(lambda: naive_episode(rewards["torch"], stream)),
                             "episode": timed(lambda: naive_episode(rewards["torch"], episode))}}
        for name, reward in rewards.items():
            seconds[name] = time_optimised(reward, stream, episode)
    rows = {}
    for path, by_workload in seconds.items():
        rows[path] = {
            "stream_latency_ms": 1e3 * by_workload["stream"] / STREAM_FRAMES,
            "stream_frames_per_s": STREAM_FRAMES / by_workload["stream"],
            "episode_frames_per_s": episode_frames / by_workload["episode"],
            "stream_speedup_vs_naive": seconds["naive"]["stream"] / by_workload["stream"],
            "episode_speedup_vs_naive": seconds["naive"]["episode"] / by_workload["episode"],
        }
    return rows


def run_reward_benchmark(out_dir: str | Path, presets: tuple[str, ...] = PRESETS, episode_frames: int = 100,
                         threads: int | None = None) -> dict:
    out = check_writable_dir(out_dir)
    unknown = set(presets) - set(PRESETS)
    if unknown:
        raise ValueError(f"unknown preset(s) {sorted(unknown)}; presets: {', '.join(PRESETS)}")
    if threads:
        torch.set_num_threads(threads)
    figures = {"threads": torch.get_num_threads(), "episode_frames": episode_frames, "presets": {}}
    for preset in tqdm(presets, desc="reward benchmark", unit="preset"):
        figures["presets"][preset] = measure_preset(preset, episode_frames)
    print_table(figures)
    (out / "bench_reward.json").write_text(json.dumps(figures, indent=2))
    return figures


def print_table(figures: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Entropy reward, CPU, {figures['threads']} thread(s), "
                        f"episode of {figures['episode_frames']} frames")
    for column in ("preset", "path", "stream latency ms", "stream fps", "episode fps",
                   "stream x naive", "episode x naive"):
        table.add_column(column, justify="left" if column in ("preset", "path") else "right")
    for preset, rows in figures["presets"].items():
        for path, row in rows.items():
            table.add_row(preset, path, f"{row['stream_latency_ms']:.1f}", f"{row['stream_frames_per_s']:.2f}",
                          f"{row['episode_frames_per_s']:.2f}", f"{row['stream_speedup_vs_naive']:.2f}",
                          f"{row['episode_speedup_vs_naive']:.2f}")
    Console(width=120).print(table)
