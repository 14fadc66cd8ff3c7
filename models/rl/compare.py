"""Side by side: the evaluation success rate of several `drr train policy` runs over frames
(a reward ablation's figure: diffusion vs sparse at the same frame budget), as a table and a PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def read_run(run: str | Path) -> dict[str, Any]:
    """A run folder's settings (run.json) and evaluation rows (eval.csv) as one record."""
    run = Path(run)
    missing = [name for name in ("run.json", "eval.csv") if not (run / name).is_file()]
    if missing:
        raise ValueError(f"{run} is not a `drr train policy` run folder with evaluations: "
                         f"it lacks {', '.join(missing)}")
    settings = json.loads((run / "run.json").read_text())
    with open(run / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{run}/eval.csv holds no evaluation yet")
    return {"run": str(run), "env": settings["env"], "label": _label(settings),
            "reward": settings["reward"], "seed": settings["seed"], "alpha": settings.get("alpha"),
            "frames": [int(row["frames"]) for row in rows],
            "success_rate": [float(row["success_rate"]) for row in rows],
            "final_success_rate": float(rows[-1]["success_rate"]),
            "frames_per_s": int(rows[-1]["frames"]) / float(rows[-1]["wall_s"])}


def _label(settings: dict[str, Any]) -> str:
    """reward (kind), the novelty weight where it is not the paper's, seed: what tells runs apart."""
    from models.rl.train import PAPER_ALPHA

    label = settings["reward"] + (f" ({settings['reward_kind']})" if settings.get("reward_kind") else "")
    if settings.get("alpha") is not None and settings["alpha"] != PAPER_ALPHA:
        label += f", alpha {settings['alpha']:g}"
    return f"{label}, seed {settings['seed']}"


def plot_runs(runs: list[dict[str, Any]], path: str | Path) -> Path:
    """One panel per env: each run's evaluation success rate over frames."""
    from robot.plots import pyplot, save_figure

    plt = pyplot()
    envs = sorted({run["env"] for run in runs})
    fig, axes = plt.subplots(1, len(envs), figsize=(4.5 * len(envs), 3.2), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for run in (r for r in runs if r["env"] == env):
            ax.plot(run["frames"], run["success_rate"], marker="o", lw=1.5, label=run["label"])
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("env frames")
        ax.set_ylabel("evaluation success rate")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def compare_runs(runs: list[str | Path], plot: str | Path) -> dict[str, Any]:
    """Every run's record (read_run) and the PNG of their curves."""
    if not runs:
        raise ValueError("compare_runs needs at least one run folder")
    records = [read_run(run) for run in runs]
    labels = [record["label"] for record in records]
    for record in records:  # e.g. the same reward with two reward models: the folder tells them apart
        if labels.count(record["label"]) > 1:
            record["label"] += f" ({record['run']})"
    return {"runs": records, "plot": str(plot_runs(records, plot))}
