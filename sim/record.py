"""Roll out a scripted policy in a task env and write one MCAP episode per rollout.

Each recorded step pairs the frame and robot state observed at time t with the
command the arm executed in response; the final frame (the outcome) is written with
a zero twist, since the arm stops when the episode ends.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
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


def record_episodes(task_id: str, policy_kind: str, episodes: int, seed: int, out_dir: str | Path,
                    image_size: tuple[int, int] | None = None, calibration: str | Path | None = None,
                    progress: bool = True) -> RecordSummary:
    """Record `episodes` rollouts with seeds seed, seed+1, ...; returns what was written."""
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}")
    out = check_writable_dir(out_dir)
    size = image_size or default_record_size(task_id, calibration)
    env = make_env(task_id, image_size=size, calibration=calibration)
    policy = make_policy(policy_kind, task_id, env, seed)
    summary = RecordSummary(task=task_id, policy=policy_kind)
    start = time.perf_counter()
    try:
        bar = tqdm(range(episodes), desc=f"{task_id} {policy_kind}", unit="ep", disable=not progress)
        for index in bar:
            path, success, frames = record_one(env, policy, task_id, policy_kind, seed + index, out, index)
            summary.episodes += 1
            summary.successes += int(success)
            summary.frames += frames
            summary.files.append(str(path))
            bar.set_postfix(success=f"{summary.successes}/{summary.episodes}")
    finally:
        env.close()
        summary.seconds = time.perf_counter() - start
    return summary


def record_one(env: gym.Env, policy: Policy, task_id: str, policy_kind: str, seed: int,
               out: Path, index: int) -> tuple[Path, bool, int]:
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    metadata = EpisodeMetadata(task=task_id, source=policy_kind, seed=seed,
                               calibration_id=info["calibration_id"], policy=f"scripted-{policy_kind}",
                               control_rate_hz=float(env.unwrapped.control_rate_hz))
    height, width = obs["image"].shape[:2]
    camera = env.unwrapped.camera_intrinsics(height, width)
    path = episode_path(out, metadata, index)
    with EpisodeWriter(path, metadata, camera) as writer:
        frames, done = 0, False
        while not done:
            action = policy.act(obs, info)
            next_obs, _, terminated, truncated, next_info = env.step(action)
            writer.write_step(obs["image"], info["robot_state"], next_info["command"],
                              next_info["requested_command"])
            obs, info, frames = next_obs, next_info, frames + 1
            done = terminated or truncated
        stop = ArmCommand.zero(gripper=info["command"].gripper)
        writer.write_step(obs["image"], info["robot_state"], stop)
        writer.finish(success=bool(info["success"]))
    return path, bool(info["success"]), frames + 1
