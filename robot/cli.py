"""`drr`: the stack's command line. Each subcommand calls one library function.

Human-readable output first; the last line printed is always one JSON object, so
scripts can read `drr ... | tail -n 1`. Errors print a message naming the problem on
stderr and `{"error": ...}` as the last line, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result = args.run(args)
    except (ValueError, OSError, ImportError) as exc:  # bad input: say what and exit cleanly
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps({"error": str(exc)}))
        return 2
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns the same result: print it once
        print(json.dumps(result))
    return 0


class JsonErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error also ends with the JSON error line scripts read."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        print(json.dumps({"error": f"{self.prog}: {message}"}))
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = JsonErrorParser(prog="drr", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(title="commands")

    sim = _group(commands, "sim", "the MuJoCo mirror and MetaWorld tasks")
    _command(sim, "tasks", "list the task ids", run_sim_tasks)
    record = _command(sim, "record", "record scripted rollouts as MCAP episodes", run_sim_record)
    record.add_argument("--task", required=True, help="a task id from `drr sim tasks`")
    record.add_argument("--policy", default="expert", choices=("expert", "suboptimal", "random", "zero"),
                        help="zero: the arm holds still (a baseline a dense reward must not pay as the expert)")
    record.add_argument("--episodes", type=int, default=10)
    record.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    record.add_argument("--out", required=True, type=Path, help="output directory")
    record.add_argument("--image-size", type=_size, default=None,
                        help="HxW frames to record (default: the calibrated camera's resolution)")
    record.add_argument("--calibration", type=Path, default=None,
                        help="cell calibration YAML (default: the mirror's)")
    record.add_argument("--control-rate", type=_positive_hz, default=None, metavar="HZ",
                        help="commands per second for sim:* tasks (default 10)")
    record.add_argument("--full-length", action="store_true",
                        help="run every episode to its time limit instead of stopping at success "
                             "(success then means: succeeded at some step)")

    dataset = _group(commands, "dataset", "recorded episode datasets")
    info = _command(dataset, "info", "counts, success rates, incomplete files, contact sheet",
                    run_dataset_info)
    info.add_argument("root", type=Path)
    info.add_argument("--contact-sheet", type=Path, default=None,
                      help="PNG to write (default: ROOT/contact_sheet.png)")

    train = _group(commands, "train", "reward models on recorded episodes, policies in task envs")
    codec = _command(train, "codec", "train the VQGAN codec on expert episodes", run_train_codec)
    _training_arguments(codec, "codec.ckpt")
    video = _command(train, "video", "train the conditional video diffusion model on codec tokens",
                     run_train_video)
    _training_arguments(video, "video.ckpt")
    video.add_argument("--codec", required=True, type=Path, help="codec.ckpt from `drr train codec`")
    policy = _command(train, "policy", "train (or resume) a DrQ-v2 policy in a task env on the diffusion reward",
                      run_train_policy)
    policy.add_argument("--env", required=True, help="a task id from `drr sim tasks`: sim:TASK or metaworld:TASK")
    policy.add_argument("--reward", required=True, choices=("diffusion", "sparse", "rnd"),
                        help="diffusion: the paper's (diffusion + RND novelty + success); sparse: success only; "
                             "rnd: success + novelty")
    policy.add_argument("--reward-model", type=Path, default=None, help="video.ckpt from `drr train video` (diffusion)")
    policy.add_argument("--reward-kind", default="entropy",
                        help="entropy (the paper's), likelihood or likelihood_stay; see models.rewards")
    policy.add_argument("--alpha", type=float, default=0.95, help="weight of the RND novelty (the paper's 0.95)")
    policy.add_argument("--preset", default="cpu", choices=("tiny", "cpu", "paper"), help="DrQ-v2 sizes")
    policy.add_argument("--frames", type=int, default=100_000, help="env frames in all, action repeats included")
    policy.add_argument("--eval-every", type=int, default=10_000, metavar="FRAMES")
    policy.add_argument("--eval-episodes", type=int, default=10)
    policy.add_argument("--seed", type=int, default=0)
    policy.add_argument("--out", required=True, type=Path, help="run folder (resumes the run it holds)")
    policy.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    policy.add_argument("--calibration", type=Path, default=None,
                        help="cell calibration YAML the mirror renders its camera from (default: the mirror's)")

    evaluate = _group(commands, "eval", "evaluate trained models")
    eval_reward = _command(evaluate, "reward", "reward of held-out expert/suboptimal/random episodes",
                           run_eval_reward)
    eval_reward.add_argument("--model", required=True, type=Path, help="video.ckpt")
    eval_reward.add_argument("--data", required=True, type=Path, help="folder of recorded episodes")
    eval_reward.add_argument("--out", type=Path, default=Path("out/eval"))
    eval_reward.add_argument("--split", default="test", choices=("train", "test", "all"))
    eval_reward.add_argument("--tasks", nargs="+", default=None)
    eval_reward.add_argument("--reward", default="entropy",
                             help="entropy (the paper's), likelihood (of the observed frame) or likelihood_stay "
                                  "(that and the likelihood the scene stays there); see models.rewards")
    eval_reward.add_argument("--num-samples", type=int, default=1)
    eval_reward.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    eval_reward.add_argument("--onnx-dir", type=Path, default=None, help="from `drr export reward`")
    eval_reward.add_argument("--seed-spread", type=int, default=0, metavar="SEEDS",
                             help="also measure the reward's std across this many noise seeds "
                                  "(num_samples 1 and 8) on held-out expert frames")
    eval_policies = _command(evaluate, "policies", "evaluation success over frames of `drr train policy` runs, "
                             "side by side (table + PNG)", run_eval_policies)
    eval_policies.add_argument("runs", nargs="+", type=Path, help="run folders of `drr train policy`")
    eval_policies.add_argument("--plot", type=Path, default=Path("out/eval/policies.png"))

    export = _group(commands, "export", "export trained models")
    export_reward = _command(export, "reward", "ONNX graphs of the codec encoder and the denoiser",
                             run_export_reward)
    export_reward.add_argument("--model", required=True, type=Path, help="video.ckpt")
    export_reward.add_argument("--out", required=True, type=Path, help="folder for the .onnx files")

    from robot.demo import DEMO_BUDGETS

    demo = _command(commands, "demo", "the main job on the embedded default", run_demo)
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    demo.add_argument("--budget", default="quick", choices=sorted(DEMO_BUDGETS),
                      help="quick: about 14 min on 2 cores; full: the cpu preset's whole schedules trained on 20 "
                           "expert episodes per task (the reward figures of the docs, about 25 min); "
                           "flags below override")
    demo.add_argument("--episodes", type=int, default=None, help="expert episodes per mirror task trained on")
    demo.add_argument("--eval-episodes", type=int, default=None,
                      help="held-out episodes per mirror task of each source (expert, suboptimal, "
                           "random) to evaluate the reward on")
    demo.add_argument("--graph-episodes", type=int, default=None,
                      help="expert and random episodes scored live in the graph on the longest mirror task; "
                           "shorter tasks get as many frames (robot.demo.live_episodes)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--preset", default="cpu", choices=("tiny", "cpu", "paper"), help="reward model sizes")
    demo.add_argument("--codec-steps", type=int, default=None, help="codec training steps")
    demo.add_argument("--video-steps", type=int, default=None, help="video model training steps")

    up = _command(commands, "up", "run a node graph of launch/graphs.yaml (as `ros2 launch` would) until Ctrl-C",
                  run_up)
    up.add_argument("graph", help="sim, real, record, finetune or finetune_real (launch/graphs.yaml)")
    up.add_argument("--params", type=Path, default=None, help="parameter YAML (default: launch/config/GRAPH.yaml)")
    up.add_argument("--set", dest="assignments", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="override one parameter; repeatable")
    up.add_argument("--task", default=None, help="set `task` on every node whose parameters have one")
    up.add_argument("--without", nargs="+", default=(), metavar="NODE", help="leave these nodes out")
    up.add_argument("--log-dir", type=Path, default=Path("out/up"), help="one log per node, and params.yaml")
    up.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")

    bench = _group(commands, "bench", "benchmarks")
    bench_sim = _command(bench, "sim", "sim steps/s, render fps, episodes recorded per minute",
                         run_bench_sim)
    bench_sim.add_argument("--out", type=Path, default=Path("out/bench"))
    bench_reward = _command(bench, "reward", "reward frames/s: naive loop vs torch vs ONNX Runtime",
                            run_bench_reward)
    bench_reward.add_argument("--out", type=Path, default=Path("out/bench"))
    bench_reward.add_argument("--presets", nargs="+", default=["tiny", "cpu", "paper"])
    bench_reward.add_argument("--episode-frames", type=int, default=100)
    bench_reward.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    experts = _command(bench, "experts", "scripted expert/suboptimal/random success per task",
                       run_bench_experts)
    experts.add_argument("--out", type=Path, default=Path("out/bench"))
    experts.add_argument("--mirror-seeds", type=int, default=50)
    experts.add_argument("--metaworld-seeds", type=int, default=20)
    experts.add_argument("--suite", choices=("sim", "metaworld", "all"), default="all")
    bench_ros = _command(bench, "ros", "image transport over DDS, camera-to-command latency, live reward rate",
                         run_bench_ros)
    bench_ros.add_argument("--out", type=Path, default=Path("out/bench"))
    bench_ros.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    bench_ros.add_argument("--model", type=Path, default=Path("out/demo/reward_model/video.ckpt"),
                           help="trained cpu video.ckpt for the streaming reward (missing: that row is skipped)")
    return parser


def run_sim_tasks(args) -> dict:
    from sim.registry import metaworld_tasks, mirror_tasks

    mirror, metaworld = mirror_tasks(), metaworld_tasks()
    for task in mirror + metaworld:
        print(task)
    return {"mirror": list(mirror), "metaworld": list(metaworld)}


def run_sim_record(args) -> dict:
    from sim.record import record_episodes

    if args.episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {args.episodes}")
    seeds = range(args.seed, args.seed + args.episodes)
    summary = record_episodes(args.task, args.policy, seeds, args.out,
                              image_size=args.image_size, calibration=args.calibration,
                              control_hz=args.control_rate, stop_on_success=not args.full_length)
    result = summary.to_dict()
    print(f"{result['episodes']} episodes of {args.task} ({args.policy}) in {args.out}: "
          f"success {result['success_rate']:.0%}, {result['frames']} frames, "
          f"{result['episodes_per_minute']} episodes/min")
    return result


def run_dataset_info(args) -> dict:
    from robot.episodes import DatasetIndex, contact_sheet

    index = DatasetIndex.scan(args.root)
    summary = index.summary()
    sheet = args.contact_sheet or args.root / "contact_sheet.png"
    summary["contact_sheet"] = str(contact_sheet(index.select(complete_only=True), sheet))
    print_dataset_summary(summary)
    return summary


def print_dataset_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['episodes']} episodes, {summary['frames']} frames")
    for column in ("task", "source", "episodes", "success"):
        table.add_column(column)
    for row in summary.get("per_task_source", []):
        rate = row["success_rate"]  # None when no episode of the group is complete
        table.add_row(row["task"], row["source"], str(row["episodes"]),
                      "n/a" if rate is None else f"{rate:.0%}")
    Console(stderr=False).print(table)
    for problem in summary.get("incomplete", []):
        print(f"incomplete: {problem}")
    print(f"contact sheet: {summary['contact_sheet']}")


def run_train_codec(args) -> dict:
    import torch

    from models.train import train_codec

    if args.threads:
        torch.set_num_threads(args.threads)
    result = train_codec(args.data, args.out, args.preset, steps=args.steps, seed=args.seed, tasks=args.tasks)
    print(f"codec ({args.preset}) trained to step {result['steps']} on {result['train_frames']} frames: "
          f"{result['checkpoint']}; held-out L1 {result['test_l1']}")
    return result


def run_train_video(args) -> dict:
    import torch

    from models.train import train_video

    if args.threads:
        torch.set_num_threads(args.threads)
    result = train_video(args.data, args.out, args.codec, args.preset, steps=args.steps, seed=args.seed,
                         tasks=args.tasks)
    stats = "; ".join(f"{kind} reward mean {s['mean']:.2f}, std {s['std']:.2f}"
                      for kind, s in result["reward_stats"].items())
    print(f"video model ({args.preset}) trained to step {result['steps']} on {result['train_pairs']} frames: "
          f"{result['checkpoint']}; over the training experts: {stats}")
    return result


def run_train_policy(args) -> dict:
    import torch

    from models.rl.train import train_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    result = train_policy(args.env, args.out, reward=args.reward, reward_model=args.reward_model,
                          reward_kind=args.reward_kind, alpha=args.alpha, preset=args.preset, frames=args.frames,
                          eval_every_frames=args.eval_every, eval_episodes=args.eval_episodes, seed=args.seed,
                          calibration=args.calibration)
    rate, mean_return = result["final_success_rate"], result["final_mean_return"]
    outcome = "no evaluation yet" if rate is None else f"success {rate:.0%}, mean sparse return {mean_return:.2f}"
    print(f"DrQ-v2 ({args.preset}) on {args.env} with the {args.reward} reward: {result['frames']} frames, "
          f"{result['episodes']} episodes, {result['updates']} updates, {result['wall_s'] / 60:.1f} min; "
          f"last evaluation: {outcome}")
    print(f"actor: {result['actor_checkpoint']}; evaluations: {result['eval_csv']}, {result['eval_sheet']}")
    return result


def run_eval_reward(args) -> dict:
    from models.evaluation import evaluate_reward

    result = evaluate_reward(args.model, args.data, args.out, tasks=args.tasks, split=args.split,
                             kind=args.reward, num_samples=args.num_samples, backend=args.backend,
                             onnx_dir=args.onnx_dir, seed_spread=args.seed_spread)
    print_reward_figures(result)
    return result


def run_eval_policies(args) -> dict:
    from models.rl.compare import compare_runs

    result = compare_runs(args.runs, args.plot)
    frames = sorted({f for run in result["runs"] for f in run["frames"]})
    print("evaluation success rate by env frames:")
    width = max(len(run["label"]) for run in result["runs"])
    print("frames".rjust(8) + "".join(f"  {run['label']:>{width}}" for run in result["runs"]))
    success_at = [dict(zip(run["frames"], run["success_rate"])) for run in result["runs"]]
    for f in frames:
        cells = [success.get(f) for success in success_at]
        print(f"{f:8d}" + "".join(f"  {'' if c is None else f'{c:.2f}':>{width}}" for c in cells))
    for run in result["runs"]:
        print(f"{run['run']}: {run['env']}, {run['label']}, {run['frames_per_s']:.1f} frames/s")
    print(f"curves: {result['plot']}")
    return result


def print_reward_figures(figures: dict) -> None:
    """One line per task of evaluate_reward's figures, then where the curves are."""
    print(f"{figures['kind']} reward:")
    for task, by_task in figures["tasks"].items():
        means = ", ".join(f"{k[5:]} {v:+.2f}" for k, v in by_task.items() if k.startswith("mean_"))
        frames, episodes = by_task.get("auroc_expert_vs_random"), by_task.get("episode_auroc_expert_vs_random")
        still = by_task.get("auroc_expert_vs_zero")
        print(f"  {task} ({'seen' if by_task['seen'] else 'unseen'}): {means}; AUROC expert vs random "
              f"{'n/a' if frames is None else f'{frames:.2f} (frames), {episodes:.2f} (episode means)'}"
              + ("" if still is None else f", vs zero (still arm) {still:.2f}"))
    print(f"reward curves: {figures['plot']}")


def run_export_reward(args) -> dict:
    from models.export import export_reward

    result = export_reward(args.model, args.out)
    for name in result["files"]:
        print(f"wrote {args.out / name}")
    return result


def run_demo(args) -> dict:
    from robot.demo import DEMO_BUDGETS, run_main_job

    chosen = {name: getattr(args, name) for name in DEMO_BUDGETS[args.budget] if getattr(args, name, None) is not None}
    summary = run_main_job(args.out, seed=args.seed, preset=args.preset, **{**DEMO_BUDGETS[args.budget], **chosen})
    for figures in summary["reward_eval"].values():
        print_reward_figures(figures)
    live = summary["graph"]
    print(f"live in the graph ({live['kind']} reward, mean standardised): " + "; ".join(
        f"{task} " + ", ".join(f"{k[5:]} {v:+.2f}" for k, v in means.items() if v is not None)
        for task, means in live["tasks"].items()))
    print(f"live reward curves: {live['plot']}")
    print("minutes per stage: " + ", ".join(f"{stage} {s / 60:.1f}" for stage, s in summary["stage_seconds"].items()))
    print(f"contact sheet: {summary['contact_sheet']}\nsummary: {Path(args.out) / 'summary.json'}")
    return {"summary": str(Path(args.out) / "summary.json"),
            "reward_eval": {kind: {key: figures[key] for key in ("plot", "seen", "tasks")}
                            for kind, figures in summary["reward_eval"].items()},
            "graph": summary["graph"]}


def run_up(args) -> dict:
    import time

    from robot.bringup import NodeCrashed, NodeProcesses, load_graph, parse_overrides

    overrides = parse_overrides(args.assignments)
    graph = load_graph(args.graph, args.params, without=tuple(args.without))
    if args.task:
        for node, values in graph.params.items():
            if "task" in values:
                overrides.setdefault(node, {}).setdefault("task", args.task)
    graph = load_graph(args.graph, args.params, overrides, tuple(args.without))
    print(f"graph {graph.name}: {graph.description}; logs in {args.log_dir}/")
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    with NodeProcesses(graph, args.log_dir) as nodes:
        for node in graph.nodes:
            print(f"  {node.name} (pid {nodes.processes[node.name].pid})")
        try:
            while time.monotonic() < deadline:
                nodes.check()
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("stopping")
        except NodeCrashed as crash:
            raise ValueError(str(crash)) from None
    return {"graph": graph.name, "nodes": [node.name for node in graph.nodes], "log_dir": str(args.log_dir)}


def run_bench_sim(args) -> dict:
    from bench.sim import run_sim_benchmark

    return run_sim_benchmark(args.out)


def run_bench_reward(args) -> dict:
    from bench.reward import run_reward_benchmark

    return run_reward_benchmark(args.out, tuple(args.presets), args.episode_frames, args.threads)


def run_bench_experts(args) -> dict:
    from bench.experts import run_experts_benchmark

    suites = ("sim", "metaworld") if args.suite == "all" else (args.suite,)
    return run_experts_benchmark(args.out, args.mirror_seeds, args.metaworld_seeds, suites)


def run_bench_ros(args) -> dict:
    from bench.ros import run_ros_benchmark

    return run_ros_benchmark(args.out, args.seconds, args.model)


def _training_arguments(parser: argparse.ArgumentParser, checkpoint: str) -> None:
    parser.add_argument("--data", required=True, type=Path, help="folder of recorded episodes")
    parser.add_argument("--out", required=True, type=Path, help=f"run folder (resumes if it holds {checkpoint})")
    parser.add_argument("--preset", default="cpu", choices=("tiny", "cpu", "paper"))
    parser.add_argument("--steps", type=int, default=None, help="total steps (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=None, help="task ids to train on (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _group(commands, name: str, help_text: str):
    return commands.add_parser(name, help=help_text).add_subparsers(title=f"{name} commands")


def _command(commands, name: str, help_text: str, run: Callable) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text)
    parser.set_defaults(run=run)
    return parser


def _positive_hz(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 1.0 <= value <= 1000.0:
        raise argparse.ArgumentTypeError(f"control rate must be a number of Hz in [1, 1000], got {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must look like 480x640 (HxW), got {text!r}") from None
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"image size must be at least 8x8, got {text!r}")
    return height, width


if __name__ == "__main__":
    sys.exit(main())
