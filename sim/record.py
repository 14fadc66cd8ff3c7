"""Roll out a scripted policy in a task env and write one MCAP episode per rollout.

Each recorded step pairs the frame and robot state observed at time t with the
command the arm executed in response; the final frame (the outcome) is written with
a zero twist, since the arm stops when the episode ends.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from robot.episodes import EpisodeMetadata, EpisodeWriter, episode_path
from robot.types import ArmCommand
from sim.policies import Policy
from sim.registry import make_env, make_policy, parse_task_id

# MetaWorld has no calibrated camera; the paper trains on 64x64 frames of it.
METAWORLD_RECORD_SIZE = (128, 128)


@dataclass
class RecordSummary:
    task: str
    policy: str
    episodes: int = 0
    successes: int = 0
    frames: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        minutes = max(self.seconds, 1e-9) / 60.0
        return {
            "task": self.task,
            "policy": self.policy,
            "episodes": self.episodes,
            "success_rate": self.successes / max(self.episodes, 1),
            "frames": self.frames,
            "seconds": round(self.seconds, 2),
            "episodes_per_minute": round(self.episodes / minutes, 2),
            "files": self.files,
        }


def default_record_size(task_id: str, calibration=None) -> tuple[int, int]:
    """The mirror records at the calibrated camera's resolution, like the real camera node."""
    suite, _ = parse_task_id(task_id)
    if suite == "metaworld":
        return METAWORLD_RECORD_SIZE
    from calibration import load_calibration

    camera = load_calibration(calibration).camera
    return camera.height, camera.width


def check_writable_dir(out_dir: str | Path) -> Path:
    """Create out_dir if needed; fail before any work if it cannot be written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"output directory {out} cannot be created: {exc.strerror}") from None
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise OSError(f"output directory {out} is not a writable directory")
    return out


def record_episodes(task_id: str, policy_kind: str, seeds: Sequence[int], out_dir: str | Path,
                    image_size: tuple[int, int] | None = None, calibration: str | Path | None = None,
                    control_hz: float | None = None, stop_on_success: bool = True,
                    progress: bool = True) -> RecordSummary:
    """Record one rollout per seed into out_dir; returns what was written.
    control_hz: the mirror's control rate (default 10 Hz; time limits scale with it).
    stop_on_success=False runs every episode to its time limit (fixed-length videos, as the
    paper's demonstrations); an episode then counts as a success if it succeeded at any step."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("record at least 1 episode (got no seeds)")
    out = check_writable_dir(out_dir)
    size = image_size or default_record_size(task_id, calibration)
    env = make_env(task_id, image_size=size, calibration=calibration, control_hz=control_hz,
                   terminate_on_success=stop_on_success)
    policy = make_policy(policy_kind, task_id, env, seeds[0])
    summary = RecordSummary(task=task_id, policy=policy_kind)
    start = time.perf_counter()
    try:
        bar = tqdm(seeds, desc=f"{task_id} {policy_kind}", unit="ep", disable=not progress)
        for index, seed in enumerate(bar):
            path, success, frames = record_one(env, policy, task_id, policy_kind, seed, out, index)
            summary.episodes += 1
            summary.successes += int(success)
            summary.frames += frames
            summary.files.append(str(path))
            bar.set_postfix(success=f"{summary.successes}/{summary.episodes}")
    finally:
        env.close()
        summary.seconds = time.perf_counter() - start
    return summary


@dataclass
class Step:
    """What was observed at time t, and the command the arm executed in response."""

    obs: dict
    info: dict
    command: ArmCommand
    requested: ArmCommand | None


def rollout(env: gym.Env, policy: Policy, seed: int) -> Iterator[Step]:
    """One episode; the last step is the outcome frame with a zero twist (the arm stops)."""
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    while True:
        next_obs, _, terminated, truncated, next_info = env.step(policy.act(obs, info))
        yield Step(obs, info, next_info["command"], next_info["requested_command"])
        obs, info = next_obs, next_info
        if terminated or truncated:
            break
    yield Step(obs, info, ArmCommand.zero(gripper=info["command"].gripper), None)


def record_one(env: gym.Env, policy: Policy, task_id: str, policy_kind: str, seed: int,
               out: Path, index: int) -> tuple[Path, bool, int]:
    steps = rollout(env, policy, seed)
    first = next(steps)
    metadata = EpisodeMetadata(task=task_id, source=policy_kind, seed=seed,
                               calibration_id=first.info["calibration_id"],
                               policy=f"scripted-{policy_kind}",
                               control_rate_hz=float(env.unwrapped.control_rate_hz))
    height, width = first.obs["image"].shape[:2]
    path = episode_path(out, metadata, index)
    with EpisodeWriter(path, metadata, env.unwrapped.camera_intrinsics(height, width)) as writer:
        frames, success_frame = 0, None
        for step in itertools.chain([first], steps):
            writer.write_step(step.obs["image"], step.info["robot_state"], step.command, step.requested)
            if success_frame is None and step.info["success"]:
                success_frame = frames
            frames += 1
        writer.finish(success=success_frame is not None,
                      extra={} if success_frame is None else {"success_frame": str(success_frame)})
    return path, success_frame is not None, frames


def evaluate_policy(task_id: str, policy_kind: str, episodes: int, seed: int = 0,
                    image_size: tuple[int, int] = (64, 64)) -> dict:
    """Success rate and episode length of a scripted policy over seeds seed..seed+episodes-1."""
    env = make_env(task_id, image_size=image_size)
    policy = make_policy(policy_kind, task_id, env, seed)
    successes, lengths = [], []
    try:
        for index in range(episodes):
            steps = list(rollout(env, policy, seed + index))
            successes.append(bool(steps[-1].info["success"]))
            lengths.append(len(steps) - 1)  # control steps; the last entry is the outcome frame
    finally:
        env.close()
    return {"task": task_id, "policy": policy_kind, "episodes": episodes,
            "success_rate": float(np.mean(successes)), "mean_steps": float(np.mean(lengths))}
