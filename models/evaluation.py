"""How well a reward separates good behaviour from bad, on held-out episodes.

- AUROC of per-frame rewards, expert (positive) vs random, suboptimal or zero (negative; zero:
  the arm holds still, present when such episodes were recorded, `drr sim record --policy zero`):
  the probability that a random expert frame scores above a random other frame (ties 1/2). A
  dense reward that pays a still arm as much as the expert gives an RL policy nothing to climb.
- The same AUROC over whole episodes, each scored by its mean reward: what an RL return sees,
  where per-frame AUROC also counts the frames every policy shares (the first ones, before
  anything moves).
- Spearman correlation between reward and time step on expert episodes: a dense reward
  for a task that progresses should rise as the expert gets closer to success.

Frames the reward does not score (NaN in a curve: an episode's warm-up frames, see
models.reward_model) are left out of every figure.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

SOURCES = ("expert", "suboptimal", "random", "zero")  # the first is the positive class of every AUROC


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
    """Figures for one task from per-episode reward arrays keyed by source (SOURCES);
    NaN frames (not scored) are left out."""
    rewards = {source: [r[~np.isnan(r)] for r in episodes] for source, episodes in rewards.items()}
    rewards = {source: [r for r in episodes if r.size] for source, episodes in rewards.items()}
    flat = {source: np.concatenate(list(episodes)) for source, episodes in rewards.items() if episodes}
    summary: dict = {f"mean_{source}": float(values.mean()) for source, values in flat.items()}
    summary["episodes"] = {source: len(episodes) for source, episodes in rewards.items()}
    for other in SOURCES[1:]:
        if "expert" in flat and other in flat:
            summary[f"auroc_expert_vs_{other}"] = auroc(flat["expert"], flat[other])
            summary[f"episode_auroc_expert_vs_{other}"] = auroc(
                np.array([e.mean() for e in rewards["expert"]]), np.array([e.mean() for e in rewards[other]]))
    if rewards.get("expert"):
        summary["spearman_expert_time"] = time_correlation(rewards["expert"])
    return summary


def plot_reward_curves(rewards_by_task: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
                       path: str | Path, ylabel: str = "standardised reward") -> Path:
    """One panel per task: each episode's reward over time, coloured by source."""
    from robot.plots import pyplot, save_figure

    plt = pyplot()
    colours = defaultdict(lambda: "grey", expert="tab:green", suboptimal="tab:orange", random="tab:red",
                          zero="tab:blue")
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
    return save_figure(fig, path)


def evaluation_episodes(data: str | Path, tasks: Sequence[str] | None, split: str) -> list:
    """Expert episodes of `split`, and every suboptimal and random episode: training only
    ever sees the train split's experts, so all the others are held out."""
    from models.data import select_episodes

    experts = select_episodes(data, tasks=tasks, sources=("expert",), split=split)
    try:
        others = select_episodes(data, tasks=tasks, sources=SOURCES[1:], split="all")
    except ValueError:
        others = []  # expert-only data: means and time correlation, no AUROC
    return experts + others


def evaluate_reward(model_path: str | Path, data: str | Path, out: str | Path, *,
                    tasks: Sequence[str] | None = None, split: str = "test", kind: str = "entropy",
                    num_samples: int = 1, backend: str = "torch", onnx_dir: str | Path | None = None,
                    seed_spread: int = 0, progress: bool = True) -> dict:
    """Standardised reward (of this kind, see models.rewards.REWARD_KINDS) of held-out episodes
    per task and source: means, AUROCs, reward-time correlation; seen (trained-on) and unseen
    tasks reported apart. seed_spread > 0 also measures the reward's spread across that many
    noise seeds."""
    from tqdm import tqdm

    from models.checkpoint import load_checkpoint
    from models.data import load_frames
    from models.reward_model import DiffusionReward

    if seed_spread < 0 or seed_spread == 1:
        raise ValueError(f"seed_spread must be 0 (off) or at least 2 seeds, got {seed_spread}")
    reward = DiffusionReward.load(model_path, kind=kind, num_samples=num_samples, backend=backend, onnx_dir=onnx_dir)
    seen = set(load_checkpoint(model_path).extra.get("tasks", []))
    episodes = load_frames(evaluation_episodes(data, tasks, split), reward.image_size, progress=False)
    curves: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    raw_by_episode = {}
    for episode in tqdm(episodes, desc="labelling episodes", unit="ep", disable=not progress):
        labels = reward.label_episode(episode.frames)
        scored = labels.standardized.astype(np.float64)
        scored[:labels.warmup] = np.nan  # not scored: left out of the figures and the plot
        curves[episode.entry.task][episode.entry.source].append(scored)
        raw_by_episode[episode.entry.path.stem] = labels.raw
    per_task = {task: {"seen": task in seen, **summarize(by_source)} for task, by_source in sorted(curves.items())}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"model": str(model_path), "split": split, "kind": kind, "num_samples": num_samples, "backend": backend,
               "warmup_frames": reward.warmup_frames, "reward_mean": reward.stats.mean, "reward_std": reward.stats.std,
               "tasks": per_task,
               "seen": _pooled({t: s for t, s in curves.items() if t in seen}),
               "unseen": _pooled({t: s for t, s in curves.items() if t not in seen}),
               "plot": str(plot_reward_curves(curves, out / "reward_curves.png"))}
    np.savez_compressed(out / "raw_rewards.npz", **raw_by_episode)  # per frame, by episode file name
    figures["raw_rewards"] = str(out / "raw_rewards.npz")
    if seed_spread:
        experts = [e.frames for e in episodes if e.entry.source == "expert"]
        figures["seed_spread"] = seed_spread_figures(reward, experts, seeds=seed_spread)
    (out / "reward_eval.json").write_text(json.dumps(figures, indent=2))
    return figures


def seed_spread_figures(reward, episodes: Sequence[np.ndarray], seeds: int = 5,
                        num_samples: Sequence[int] = (1, 8), max_frames: int = 60) -> dict:
    """How much the sampled reward moves with its noise: per frame, the std of the raw reward
    across `seeds` noise seeds, averaged over up to max_frames evenly spread frames, for each
    num_samples; also relative to the reward's std over expert frames."""
    if seeds < 2:
        raise ValueError(f"a spread across seeds needs at least 2 seeds, got {seeds}")
    import torch

    inputs = [reward.scoring_inputs(frames) for frames in episodes]
    histories, tokens = torch.cat([h for h, _ in inputs]), torch.cat([t for _, t in inputs])
    pick = np.linspace(0, len(histories) - 1, min(max_frames, len(histories))).astype(int)
    spread = {}
    for r in num_samples:
        raw = np.stack([reward.score(histories[pick], tokens[pick], seed=seed, num_samples=r)
                        for seed in range(seeds)])
        std = float(raw.std(axis=0, ddof=1).mean())
        spread[f"num_samples_{r}"] = {"std_nats": std, "std_over_reward_std": std / reward.stats.std}
    return {"seeds": seeds, "frames": len(histories), **spread}


def _pooled(curves: Mapping[str, Mapping[str, Sequence[np.ndarray]]]) -> dict | None:
    """summarize() over all these tasks' episodes together (None when there are none)."""
    pooled: dict[str, list[np.ndarray]] = defaultdict(list)
    for by_source in curves.values():
        for source, episodes in by_source.items():
            pooled[source].extend(episodes)
    return summarize(pooled) if pooled else None
