"""The README's main job on the embedded default (the MuJoCo mirror, no robot, no GPU):

1. record scripted expert demonstrations of every mirror task (fixed-length episodes that
   run on after success, as the paper's demonstrations), plus a few suboptimal and random
   episodes to evaluate against;
2. train the reward's codec and video model (`cpu` preset by default) on the experts;
3. score the held-out episodes: reward-curve PNG and the figures as JSON.

Every stage resumes: recorded seeds are skipped and training continues from its
checkpoint, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

from robot.episodes import DatasetIndex, contact_sheet

# Seeds per source never overlap, so a scene is never both a demonstration and a test.
SOURCE_SEED_OFFSETS = {"expert": 0, "suboptimal": 1000, "random": 2000}


def recorded_seeds(root: Path, source: str) -> dict[str, set[int]]:
    """Seeds of the complete episodes of `source` already under root, per task."""
    if not any(root.rglob("*.mcap")):
        return {}
    seeds: dict[str, set[int]] = {}
    for entry in DatasetIndex.scan(root).select(source=source, complete_only=True):
        seeds.setdefault(entry.task, set()).add(entry.seed)
    return seeds


def record_missing(root: Path, source: str, seeds: range, progress: bool = True) -> None:
    """Record, for every mirror task, the seeds of `source` not yet complete under root."""
    from sim.record import record_episodes
    from sim.registry import mirror_tasks

    recorded = recorded_seeds(root, source)
    for task in mirror_tasks():
        missing = [seed for seed in seeds if seed not in recorded.get(task, set())]
        if missing:
            record_episodes(task, source, missing, root, stop_on_success=False, progress=progress)


def run_main_job(out: str | Path, *, episodes: int = 20, eval_episodes: int = 5, seed: int = 0,
                 preset: str = "cpu", codec_steps: int | None = None, video_steps: int | None = None,
                 progress: bool = True) -> dict:
    """Record, train, evaluate both kinds of reward; returns (and writes to out/summary.json) the figures."""
    from models.evaluation import evaluate_reward
    from models.rewards import REWARD_KINDS
    from models.train import train_codec, train_video

    if episodes < 2 or eval_episodes < 1:
        raise ValueError(f"--episodes must be >= 2 (some are held out) and --eval-episodes >= 1, "
                         f"got {episodes} and {eval_episodes}")
    out = Path(out)
    demos, models_dir = out / "demos", out / "reward_model"
    for source, count in (("expert", episodes), ("suboptimal", eval_episodes), ("random", eval_episodes)):
        first = seed + SOURCE_SEED_OFFSETS[source]
        record_missing(demos, source, range(first, first + count), progress)
    index = DatasetIndex.scan(demos)
    sheet = contact_sheet(index.select(source="expert", complete_only=True), out / "contact_sheet.png")

    codec = train_codec(demos, models_dir, preset, steps=codec_steps, seed=seed, progress=progress)
    video = train_video(demos, models_dir, codec["checkpoint"], preset, steps=video_steps, seed=seed,
                        progress=progress)
    figures = {kind: evaluate_reward(video["checkpoint"], demos, out / "eval" / kind, kind=kind, progress=progress)
               for kind in REWARD_KINDS}
    summary = {"demos": str(demos), "dataset": index.summary()["per_source"], "contact_sheet": str(sheet),
               "codec": codec, "video": video, "reward_eval": figures}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
