"""The README's main job on the embedded default (the MuJoCo mirror, no robot, no GPU):

1. record scripted expert demonstrations of every mirror task through the ROS 2 graph
   (policy_node's scripted expert -> safety_gate -> sim_arm_node, recorded by recorder_node;
   fixed-length episodes that run on after success, as the paper's demonstrations; one the
   expert fails is set aside in rejected_demos/ and recorded again), as many as the train
   split needs to hold `episodes` per task with some held out, plus a few suboptimal
   and random episodes to evaluate against (recorded offline, faster);
2. train the reward's codec and video model (`cpu` preset by default) on the experts;
3. score the held-out episodes offline (the budget's reward kinds: AUROC, reward curves);
4. bring the graph up again with the trained reward_node (the reward kind that separated the
   held-out episodes best) and run expert and random episodes through it, about as many frames of
   each task: their live reward curves (PNG) and means.

Every stage resumes: recorded episodes are counted (graph) or their seeds skipped (offline),
training continues from its checkpoint, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import contextmanager
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


# The main job's sizes. episodes: expert demonstrations per task trained on; eval_episodes: held-out
# episodes per task of each source (experts on top of the trained ones, suboptimal, random).
# quick: what fits 15 minutes on 2 CPU cores (10 demonstrations per task and short training: the
# reward separates expert from random less well); full: the cpu preset's whole schedules on 20
# demonstrations per task, where the reward figures of the docs come from. None: the preset's schedule.
# reward_kinds: the kinds scored on the held-out episodes. quick scores only the likelihood: the paper's
# entropy reward scores push and reach near or below chance on the mirror at frame_skip 3 (three runs: AUROC
# 0.23-0.36 and 0.39-0.54; docs/MEASUREMENTS.md, Reward model), and scoring it took ~45 s of the 15 minutes.
# likelihood_stay (two likelihood passes a frame) would double the held-out scoring and, live, fall behind
# the camera's 10 frames/s on 2 cores; full scores it too.
DEMO_BUDGETS = {
    "quick": {"episodes": 10, "eval_episodes": 4, "graph_episodes": 2, "codec_steps": 200, "video_steps": 700,
              "reward_kinds": ("likelihood",)},
    "full": {"episodes": 20, "eval_episodes": 5, "graph_episodes": 2, "codec_steps": None, "video_steps": None,
             "reward_kinds": ("entropy", "likelihood", "likelihood_stay")},
}

GRAPH_REAL_TIME_FACTOR = 2.0  # the mirror graph runs at twice real time in the main job (sim time on /clock)
# Live scoring runs in real time: on 2 cores the cpu reward scores ~10 frames/s in batches next to
# the graph, the camera's rate; at 2x its queue overflowed and the curves lost frames.
SCORING_REAL_TIME_FACTOR = 1.0
LIVE_POLICIES = {"scripted": "expert", "random": "random"}  # policy_node's policy -> the episodes' source


def task_parameters(task: str) -> dict[str, dict]:
    """The parameters that put the sim graph on a mirror task: the mirror's, and episodes of the
    task's time limit (at start-up, or set between episodes)."""
    from sim.tasks import TASKS

    time_limit_s = TASKS[task.partition(":")[2]].time_limit_s
    return {"sim_arm_node": {"task": task}, "episode_node": {"task": task, "episode_time_limit_s": time_limit_s}}


def graph_overrides(task: str, real_time_factor: float, **by_node: dict) -> dict[str, dict]:
    """Parameters that put the sim graph on one mirror task at a real-time factor; by_node adds or
    replaces per node."""
    sim_time = {"use_sim_time": real_time_factor != 1.0}
    overrides = {node: dict(sim_time) for node in ("sim_arm_node", "safety_gate", "camera_node", "reward_node",
                                                    "policy_node", "reset_node", "episode_node", "recorder_node")}
    overrides["sim_arm_node"]["real_time_factor"] = real_time_factor
    for node, values in [*task_parameters(task).items(), *by_node.items()]:
        overrides[node].update(values)
    return overrides


def run_graph_episodes(task: str, batches: Sequence[tuple[int, dict[str, dict]]], log_dir: Path, *,
                       without: tuple[str, ...] = (), real_time_factor: float = GRAPH_REAL_TIME_FACTOR,
                       **by_node: dict) -> list[list]:
    """Bring the sim graph up on `task` once and run batches of episodes through it: for each
    (count, {node: {parameter: value}}), set those parameters once the cell is idle (another
    policy, another task: task_parameters), then run `count` episodes; bring it down. Each
    batch's results (drr_ros.session.EpisodeResult: success, the Reward messages)."""
    from drr_interfaces.srv import LabelEpisode
    from drr_ros.session import GraphSession, ros_context
    from std_srvs.srv import Trigger

    from robot.bringup import NodeProcesses, load_graph
    from sim.tasks import TASKS

    overrides = graph_overrides(task, real_time_factor, **by_node)
    graph = load_graph("sim", overrides={n: v for n, v in overrides.items() if n not in without}, without=without)
    ros_context()
    per_episode_s = (max(t.time_limit_s for t in TASKS.values()) + 15.0) / real_time_factor
    scoring = "reward_node" not in without
    with NodeProcesses(graph, log_dir) as nodes, GraphSession(
            reward_topic="reward_node/reward" if scoring else None) as session:
        services = {"episode_node/start": Trigger, "reset_node/reset": Trigger}
        if scoring:
            services["reward_node/label_episode"] = LabelEpisode  # offered once the model is loaded
        session.wait_ready([node.name for node in graph.nodes], services, timeout_s=120.0, check=nodes.check)
        results = []
        for count, parameters in batches:
            if parameters:
                session.wait_idle(60.0, nodes.check)
            for node, values in parameters.items():
                session.set_parameters(node, **values)
            results.append(session.run_episodes(count, timeout_s=60.0 + count * per_episode_s, check=nodes.check))
        return results


def record_through_graph(demos: Path, count: int, seed: int, log_root: Path, progress: bool = True,
                         max_rounds: int = 3, tasks: tuple[str, ...] | None = None) -> None:
    """`count` successful expert demonstrations of every mirror task through the graph: the scripted
    expert (policy_node) -> safety_gate -> the mirror arm (sim_arm_node), recorded by recorder_node.
    Only the missing ones are recorded (resumable). The graph's camera-to-command latency makes the
    scripted expert miss now and then (about 1 in 60 drawer episodes); such an episode is not a
    demonstration, so it moves to demos/../rejected_demos (kept for inspection, never trained on) and
    another scene is recorded in its place, for at most max_rounds rounds per task."""
    from sim.registry import mirror_tasks

    rejected = demos.parent / "rejected_demos"
    for task in tasks or mirror_tasks():
        for round_number in range(max_rounds + 1):
            done, failed = _set_aside_failed_experts(demos, task, rejected), _graph_experts(rejected, task)
            if len(done) >= count:
                break
            if round_number == max_rounds:
                raise RuntimeError(f"{task}: {len(done)} of {count} expert episodes succeeded after {max_rounds} "
                                   f"rounds through the graph; see the node logs under {log_root} and {rejected}")
            if progress:
                print(f"recording {count - len(done)} expert episodes of {task} through the graph", flush=True)
            run_graph_episodes(task, [(count - len(done), {})], log_root / f"record_{task.replace(':', '-')}",
                               without=("reward_node",),
                               sim_arm_node={"seed": seed + len(done) + len(failed)},  # a new scene each time
                               policy_node={"policy": "scripted"},
                               recorder_node={"out_dir": str(demos), "source": "expert", "policy": "scripted"})


def record_demonstrations(demos: Path, train: int, held_out: int, seed: int, log_root: Path,
                          progress: bool = True, max_top_ups: int = 10) -> None:
    """Expert demonstrations of every mirror task through the graph until the dataset's split (the
    one training reads, models.data.select_episodes) puts at least `train` of each task on its
    train side: train + held_out first, then as many more as the train side lacks. The split is a
    hash of each episode's id, so the held-out count varies around held_out (at least one)."""
    from models.data import select_episodes
    from sim.registry import mirror_tasks

    for task in mirror_tasks():
        count = train + held_out
        for _ in range(max_top_ups + 1):
            record_through_graph(demos, count, seed, log_root, progress, tasks=(task,))
            trained = len(select_episodes(demos, tasks=[task], split="train"))
            if trained >= train:
                break
            count += train - trained
        else:
            raise RuntimeError(f"{task}: the split still trains on {trained} of {count} expert episodes "
                               f"after {max_top_ups} top-ups, fewer than the {train} asked for")


def _graph_experts(root: Path, task: str) -> list:
    if not root.is_dir() or not any(root.rglob("*.mcap")):
        return []
    return DatasetIndex.scan(root).select(task=task, source="expert", complete_only=False)


def _set_aside_failed_experts(demos: Path, task: str, rejected: Path) -> list:
    """Moves the task's expert episodes that did not succeed (or did not finish) to `rejected`;
    the successful ones that stay."""
    kept = []
    for entry in _graph_experts(demos, task):
        if entry.complete and entry.success:
            kept.append(entry)
            continue
        rejected.mkdir(parents=True, exist_ok=True)
        entry.path.rename(rejected / entry.path.name)
        print(f"{entry.path.name}: the expert did not succeed through the graph; moved to {rejected}", flush=True)
    return kept


def live_episodes(task: str, episodes: int) -> int:
    """Episodes per policy that give `task` about as many scored frames as `episodes` episodes of the
    longest mirror task: reach's 2 s episodes are 20 frames, and two of them a side did not order
    expert above random reliably where two 6 s push episodes did."""
    from sim.registry import mirror_tasks
    from sim.tasks import TASKS

    def seconds(task_id: str) -> float:
        return TASKS[task_id.partition(":")[2]].time_limit_s

    longest = max(seconds(t) for t in mirror_tasks())
    return max(episodes, round(episodes * longest / seconds(task)))


def score_through_graph(model: Path, episodes: int, seed: int, log_root: Path, plot: Path,
                        kind: str = "entropy", progress: bool = True) -> dict:
    """The trained reward (of this kind) live in the graph, brought up once: per mirror task (switched
    between episodes), scripted-expert and then random episodes (`episodes` of the longest task,
    live_episodes of shorter ones), each frame scored by reward_node; their curves (PNG) and mean
    standardised rewards."""
    from models.checkpoint import load_checkpoint
    from models.evaluation import plot_reward_curves
    from sim.registry import mirror_tasks

    done_file = plot.with_suffix(".json")
    trained = load_checkpoint(model)  # what identifies the model, whichever run wrote the file
    key = {"model": str(model), "step": trained.step, "data": trained.data_fingerprint, "stats": trained.stats,
           "kind": kind, "episodes": episodes, "seed": seed}
    if done_file.exists() and json.loads(done_file.read_text()).get("key") == key:
        return json.loads(done_file.read_text())["figures"]  # this model was scored already: resume
    batches, plan = [], []  # one bring-up: per task, the expert's episodes, then the random policy's
    for task in mirror_tasks():
        count = live_episodes(task, episodes)
        batches += [(count, {**task_parameters(task), "policy_node": {"policy": policy},
                             "recorder_node": {"source": source, "policy": policy}})
                    for policy, source in LIVE_POLICIES.items()]
        plan.append(f"{count} scripted and {count} random episodes of {task}")
    if progress:
        print(f"scoring {'; '.join(plan)} live in the graph", flush=True)
    results = run_graph_episodes(mirror_tasks()[0], batches, log_root / "score",
                                 sim_arm_node={"seed": seed + 3000}, policy_node={"seed": seed},
                                 real_time_factor=SCORING_REAL_TIME_FACTOR,
                                 reward_node={"model": str(model), "kind": kind, "queue_size": 64},
                                 recorder_node={"out_dir": str(log_root / "scored_episodes")})
    curves: dict[str, dict[str, list]] = {}
    for (_, params), batch in zip(batches, results, strict=True):
        source = params["recorder_node"]["source"]
        curves.setdefault(params["episode_node"]["task"], {})[source] = [
            [r.standardized for r in result.rewards] for result in batch]
    figures = {task: {f"mean_{source}": _mean(episodes) for source, episodes in by_source.items()}
               for task, by_source in curves.items()}
    result = {"plot": str(plot_reward_curves(curves, plot)), "kind": kind, "tasks": figures,
              "frames_scored": sum(len(c) for by_source in curves.values() for e in by_source.values() for c in e)}
    done_file.write_text(json.dumps({"key": key, "figures": result, "curves": curves}, indent=1))
    return result


def _mean(episodes: list[list[float]]) -> float | None:
    values = [value for episode in episodes for value in episode]
    return sum(values) / len(values) if values else None


def run_main_job(out: str | Path, *, episodes: int = 20, eval_episodes: int = 5, graph_episodes: int = 2,
                 seed: int = 0, preset: str = "cpu", codec_steps: int | None = None, video_steps: int | None = None,
                 reward_kinds: Sequence[str] = DEMO_BUDGETS["full"]["reward_kinds"], progress: bool = True) -> dict:
    """Record, train, evaluate these kinds of reward; returns (and writes to out/summary.json) the figures."""
    from models.evaluation import evaluate_reward
    from models.rewards import check_reward_kinds
    from models.train import train_codec, train_video

    check_reward_kinds(reward_kinds)
    if episodes < 2 or eval_episodes < 1:
        raise ValueError(f"--episodes must be >= 2 (some are held out) and --eval-episodes >= 1, "
                         f"got {episodes} and {eval_episodes}")
    out = Path(out)
    demos, models_dir, graph_logs = out / "demos", out / "reward_model", out / "graph"
    seconds: dict[str, float] = {}  # wall time per stage, to see where the main job's minutes go
    with _stage(seconds, "record"):
        record_demonstrations(demos, episodes, eval_episodes, seed, graph_logs, progress)
        for source in ("suboptimal", "random"):  # scored offline by evaluate_reward below
            first = seed + SOURCE_SEED_OFFSETS[source]
            record_missing(demos, source, range(first, first + eval_episodes), progress)
    index = DatasetIndex.scan(demos)
    sheet = contact_sheet(index.select(source="expert", complete_only=True), out / "contact_sheet.png")
    with _stage(seconds, "train_codec"):
        codec = train_codec(demos, models_dir, preset, steps=codec_steps, seed=seed, progress=progress)
    with _stage(seconds, "train_video"):
        video = train_video(demos, models_dir, codec["checkpoint"], preset, steps=video_steps, seed=seed,
                            reward_kinds=reward_kinds, progress=progress)  # statistics of the kinds it scores
    with _stage(seconds, "evaluate"):
        figures = {kind: evaluate_reward(video["checkpoint"], demos, out / "eval" / kind, kind=kind,
                                         progress=progress) for kind in reward_kinds}
    with _stage(seconds, "score_in_graph"):
        live = score_through_graph(Path(video["checkpoint"]), graph_episodes, seed, graph_logs,
                                   out / "graph" / "reward_curves.png", best_kind(figures), progress)
    summary = {"demos": str(demos), "dataset": index.summary()["per_source"], "contact_sheet": str(sheet),
               "codec": codec, "video": video, "reward_eval": figures, "graph": live,
               "stage_seconds": {stage: round(s, 1) for stage, s in seconds.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def best_kind(figures: dict[str, dict]) -> str:
    """The reward kind with the highest mean held-out AUROC expert-vs-random over the tasks
    (evaluate_reward's figures by kind); the graph's episodes are other scenes, so choosing on the
    held-out episodes does not flatter the live comparison."""
    def mean_auroc(kind: str) -> float:
        values = [t["auroc_expert_vs_random"] for t in figures[kind]["tasks"].values()
                  if t.get("auroc_expert_vs_random") is not None]
        return sum(values) / len(values) if values else float("-inf")

    return max(figures, key=mean_auroc)


@contextmanager
def _stage(seconds: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start
