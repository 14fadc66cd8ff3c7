"""Scripted policy success per task: expert, suboptimal (25% random actions) and random,
side by side, over fixed seeds (50 per mirror task, 20 per MetaWorld task by default)."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from sim.policies import POLICY_KINDS
from sim.record import check_writable_dir, evaluate_policy
from sim.registry import metaworld_tasks, mirror_tasks


def run_experts_benchmark(out_dir: str | Path, mirror_seeds: int = 50, metaworld_seeds: int = 20,
                          suites: tuple[str, ...] = ("sim", "metaworld")) -> dict:
    out = check_writable_dir(out_dir)
    plan = [(task, mirror_seeds) for task in mirror_tasks() if "sim" in suites]
    plan += [(task, metaworld_seeds) for task in metaworld_tasks() if "metaworld" in suites]
    rows = []
    for task, seeds in tqdm(plan, desc="tasks", unit="task"):
        row = {"task": task, "seeds": seeds}
        for kind in POLICY_KINDS:
            result = evaluate_policy(task, kind, seeds)
            row[kind] = result["success_rate"]
            row[f"{kind}_mean_steps"] = result["mean_steps"]
        rows.append(row)
    print_table(rows)
    (out / "bench_experts.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "bench_experts.png")
    return {"tasks": rows, "plot": str(out / "bench_experts.png")}


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Scripted policy success rate (seeds 0..N-1)")
    for column in ("task", "seeds", *POLICY_KINDS, "expert steps"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for row in rows:
        table.add_row(row["task"], str(row["seeds"]), *(f"{row[k]:.0%}" for k in POLICY_KINDS),
                      f"{row['expert_mean_steps']:.1f}")
    Console(width=120).print(table)


def plot(rows: list[dict], path: Path) -> None:
    import numpy as np

    from robot.plots import pyplot, save_figure

    plt = pyplot()

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 3.5))
    for offset, kind in zip((-0.27, 0, 0.27), POLICY_KINDS):
        ax.bar(x + offset, [row[kind] for row in rows], width=0.27, label=kind)
    ax.set_xticks(x, [row["task"].split(":")[1] for row in rows], rotation=30, ha="right")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.25)  # headroom so the legend never covers a bar
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(ncol=3, loc="upper center", fontsize=8, frameon=False)
    save_figure(fig, path, dpi=120)
