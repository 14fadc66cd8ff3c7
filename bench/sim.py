"""Mirror speed: physics steps/s, env control steps/s, camera render fps at 64x64 and
480x640, and episodes recorded per minute (MCAP at full resolution and at 64x64)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import mujoco
import numpy as np

from sim.record import check_writable_dir, record_episodes
from sim.registry import make_env, make_policy

TASK = "sim:push"


def rate(fn, count: int) -> float:
    """Calls per second of fn over `count` calls, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return count / (time.perf_counter() - start)


def env_steps_per_s(task: str, count: int = 200) -> float:
    """Control steps/s of the task's env under a random policy, 64x64 images included."""
    env = make_env(task, image_size=(64, 64))
    policy = make_policy("random", task, env, seed=0)
    obs, info = env.reset(seed=0)

    def control_step():
        nonlocal obs, info
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            obs, info = env.reset()

    try:
        return rate(control_step, count)
    finally:
        env.close()


def measure_env(task: str = TASK) -> dict:
    env = make_env(task, image_size=(64, 64))
    env.reset(seed=0)
    sim = env.unwrapped
    figures = {
        "physics_steps_per_s": rate(lambda: mujoco.mj_step(sim.model, sim.data), 5000),
        "env_steps_per_s_64x64": env_steps_per_s(task),
        "metaworld_reach_env_steps_per_s_64x64": env_steps_per_s("metaworld:reach-v3"),
        "render_fps_64x64": rate(lambda: sim.render_camera(64, 64), 200),
        "render_fps_480x640": rate(lambda: sim.render_camera(480, 640), 50),
        "control_rate_hz": float(sim.control_rate_hz),
    }
    figures["realtime_factor_64x64"] = figures["env_steps_per_s_64x64"] / figures["control_rate_hz"]
    env.close()
    return figures


def measure_recording(task: str = TASK, episodes: int = 3) -> dict:
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in (("480x640", None), ("64x64", (64, 64))):
            out = Path(tmp) / label
            summary = record_episodes(task, "expert", range(episodes), out, image_size=size, progress=False)
            megabytes = sum(Path(f).stat().st_size for f in summary.files) / 1e6
            figures[f"episodes_per_minute_{label}"] = summary.to_dict()["episodes_per_minute"]
            figures[f"mb_per_episode_{label}"] = megabytes / episodes
            figures[f"frames_per_episode_{label}"] = summary.frames / episodes
    return figures


def run_sim_benchmark(out_dir: str | Path) -> dict:
    out = check_writable_dir(out_dir)
    figures = {"task": TASK, **measure_env(), **measure_recording()}
    figures["render_fps_ratio_64_vs_480"] = figures["render_fps_64x64"] / figures["render_fps_480x640"]
    print_table(figures)
    (out / "bench_sim.json").write_text(json.dumps(figures, indent=2))
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in figures.items()}


def print_table(figures: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MuJoCo mirror benchmark ({figures['task']})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, f"{value:,.1f}" if isinstance(value, (float, np.floating)) else str(value))
    Console(width=120).print(table)
