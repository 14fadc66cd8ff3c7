"""How well a reward separates good behaviour from bad, on held-out episodes.

- AUROC of per-frame rewards, expert (positive) vs random or suboptimal (negative): the
  probability that a random expert frame scores above a random other frame (ties 1/2).
- Spearman correlation between reward and time step on expert episodes: a dense reward
  for a task that progresses should rise as the expert gets closer to success.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of scores, positive vs negative (Mann-Whitney U / n1 n2)."""
    positive, negative = np.ravel(positive), np.ravel(negative)
    if positive.size == 0 or negative.size == 0:
        raise ValueError(f"AUROC needs scores on both sides, got {positive.size} positive "
                         f"and {negative.size} negative")
    u_statistic = stats.mannwhitneyu(positive, negative, alternative="two-sided").statistic
    return float(u_statistic / (positive.size * negative.size))


def time_correlation(episodes: Sequence[np.ndarray]) -> float:
    """Mean over episodes of Spearman's rho between reward and time step (NaN-free)."""
    rhos = [stats.spearmanr(np.arange(len(r)), r).statistic for r in episodes
            if len(r) > 2 and np.ptp(r) > 0]
    return float(np.mean(rhos)) if rhos else float("nan")


def summarize(rewards: Mapping[str, Sequence[np.ndarray]]) -> dict:
    """Figures for one task from per-episode reward arrays keyed by source
    ("expert", "suboptimal", "random")."""
    flat = {source: np.concatenate(list(episodes)) for source, episodes in rewards.items() if episodes}
    summary: dict = {f"mean_{source}": float(values.mean()) for source, values in flat.items()}
    summary["episodes"] = {source: len(episodes) for source, episodes in rewards.items()}
    for other in ("random", "suboptimal"):
        if "expert" in flat and other in flat:
            summary[f"auroc_expert_vs_{other}"] = auroc(flat["expert"], flat[other])
    if rewards.get("expert"):
        summary["spearman_expert_time"] = time_correlation(rewards["expert"])
    return summary


def plot_reward_curves(rewards_by_task: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
                       path: str | Path, ylabel: str = "standardised reward") -> Path:
    """One panel per task: each episode's reward over time, coloured by source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = defaultdict(lambda: "grey", expert="tab:green", suboptimal="tab:orange", random="tab:red")
    tasks = list(rewards_by_task)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for source, episodes in rewards_by_task[task].items():
            for index, curve in enumerate(episodes):
                ax.plot(curve, color=colours[source], alpha=0.5, lw=1,
                        label=source if index == 0 else None)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("frame")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SOURCES = ("expert", "suboptimal", "random")


def evaluate_reward(model_path: str | Path, data: str | Path, out: str | Path, *,
                    tasks: Sequence[str] | None = None, split: str = "test", num_samples: int = 1,
                    backend: str = "torch", onnx_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Standardised reward of held-out episodes per task and source: means, AUROCs,
    reward-time correlation; seen (trained-on) and unseen tasks reported apart."""
    from tqdm import tqdm

    from models.checkpoint import load_checkpoint
    from models.data import load_frames, select_episodes
    from models.reward_model import DiffusionReward

    reward = DiffusionReward.load(model_path, num_samples=num_samples, backend=backend, onnx_dir=onnx_dir)
    seen = set(load_checkpoint(model_path).extra.get("tasks", []))
    entries = select_episodes(data, tasks=tasks, sources=SOURCES, split=split)
    curves: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for episode in tqdm(load_frames(entries, reward.image_size, progress=False), desc="labelling episodes",
                        unit="ep", disable=not progress):
        labels = reward.label_episode(episode.frames)
        curves[episode.entry.task][episode.entry.source].append(labels.standardized)
    per_task = {task: {"seen": task in seen, **summarize(by_source)} for task, by_source in sorted(curves.items())}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"model": str(model_path), "split": split, "num_samples": num_samples, "backend": backend,
               "tasks": per_task,
               "seen": _pooled({t: s for t, s in curves.items() if t in seen}),
               "unseen": _pooled({t: s for t, s in curves.items() if t not in seen}),
               "plot": str(plot_reward_curves(curves, out / "reward_curves.png"))}
    (out / "reward_eval.json").write_text(json.dumps(figures, indent=2))
    return figures


def _pooled(curves: Mapping[str, Mapping[str, Sequence[np.ndarray]]]) -> dict | None:
    """summarize() over all these tasks' episodes together (None when there are none)."""
    pooled: dict[str, list[np.ndarray]] = defaultdict(list)
    for by_source in curves.values():
        for source, episodes in by_source.items():
            pooled[source].extend(episodes)
    return summarize(pooled) if pooled else None
