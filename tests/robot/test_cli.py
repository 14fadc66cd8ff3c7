"""The `drr` CLI as a user runs it: a separate process, last line one JSON object."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.data import select_episodes
from robot.episodes import DatasetIndex, EpisodeReadError, read_episode

DRR = [sys.executable, "-m", "robot.cli"]


def drr(*args: str, expect_ok: bool = True) -> tuple[dict, str]:
    result = subprocess.run([*DRR, *args], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    last_line = result.stdout.strip().splitlines()[-1]
    assert (result.returncode == 0) == expect_ok, result.stderr + result.stdout
    return json.loads(last_line), result.stderr


def test_sim_tasks_lists_mirror_and_metaworld():
    tasks, _ = drr("sim", "tasks")
    assert len(tasks["mirror"]) >= 3 and all(t.startswith("sim:") for t in tasks["mirror"])
    assert len(tasks["metaworld"]) == 7 and "metaworld:reach-v3" in tasks["metaworld"]


def test_record_then_dataset_info(tmp_path):
    tasks, _ = drr("sim", "tasks")
    task = tasks["mirror"][0]
    out = tmp_path / "episodes"
    recorded, _ = drr("sim", "record", "--task", task, "--policy", "expert", "--episodes", "2",
                      "--seed", "3", "--out", str(out), "--image-size", "96x128")
    assert recorded["episodes"] == 2 and recorded["frames"] > 2
    assert 0.0 <= recorded["success_rate"] <= 1.0
    assert sorted(Path(f).name for f in recorded["files"]) == sorted(p.name for p in out.glob("*.mcap"))

    info, _ = drr("dataset", "info", str(out))
    assert info["episodes"] == 2 and info["frames"] == recorded["frames"]
    assert Path(info["contact_sheet"]).stat().st_size > 1000


@pytest.mark.parametrize(
    "args, message",
    [
        (["sim", "record", "--task", "sim:fly-to-moon", "--out", "{tmp}/x"], "unknown task"),
        (["sim", "record", "--task", "sim:reach", "--episodes", "0", "--out", "{tmp}/x"], "at least 1"),
        (["sim", "record", "--task", "sim:reach", "--out", "/proc/drr"], "output directory /proc/drr"),
        (["sim", "record", "--task", "sim:reach", "--out", "{tmp}/x", "--calibration", "{tmp}/bad.yaml"],
         "missing field camera.fx"),
        (["dataset", "info", "{tmp}/nothing-here"], "nothing-here"),
        (["sim", "record", "--task", "sim:reach", "--out", "{tmp}/x", "--control-rate", "fast"],
         "control rate must be a number of Hz"),
        (["sim", "record", "--task", "sim:reach", "--out", "{tmp}/x", "--image-size", "64"],
         "image size must look like 480x640"),
        (["sim", "record", "--task", "sim:reach", "--out", "{tmp}/x", "--policy", "perfect"],
         "invalid choice: 'perfect'"),
    ],
)
def test_bad_input_is_named(tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text(
        (Path(__file__).parents[2] / "calibration/data/mirror.yaml").read_text().replace("fx: 615.0", ""))
    result, stderr = drr(*(a.format(tmp=tmp_path) for a in args), expect_ok=False)
    assert message in result["error"] and message in stderr


def test_corrupt_episode_is_reported_and_kept(tmp_path):
    tasks, _ = drr("sim", "tasks")
    drr("sim", "record", "--task", tasks["mirror"][0], "--episodes", "1", "--out", str(tmp_path),
        "--image-size", "64x64")
    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(b"this is not an mcap file" * 10)
    info, _ = drr("dataset", "info", str(tmp_path))
    assert info["episodes"] == 2
    assert any("corrupt.mcap" in str(item) for item in info["incomplete"])
    assert corrupt.exists()


def test_demo_records_trains_evaluates_and_resumes(tmp_path):
    fast = ("--preset", "tiny", "--codec-steps", "4", "--video-steps", "4", "--eval-episodes", "1",
            "--graph-episodes", "1")
    first, _ = drr("demo", "--out", str(tmp_path), "--episodes", "2", *fast)
    summary = json.loads(Path(first["summary"]).read_text())
    assert set(first["reward_eval"]) == {"likelihood"}  # the quick budget's kinds
    assert set(summary["video"]["reward_stats"]) == {"likelihood"}  # statistics of only what it scores
    for figures in first["reward_eval"].values():
        assert set(figures["tasks"]) == {"sim:reach", "sim:push", "sim:drawer-open"}
        assert Path(figures["plot"]).is_file()
        assert all("auroc_expert_vs_random" in by_task for by_task in figures["tasks"].values())
    assert summary["dataset"]["suboptimal"]["episodes"] == summary["dataset"]["random"]["episodes"] == 3
    assert summary["dataset"]["expert"]["success_rate"] == 1.0
    assert summary["codec"]["steps"] == summary["video"]["steps"] == 4
    assert Path(summary["contact_sheet"]).is_file()
    # Experts were recorded through the ROS 2 graph, and the trained reward scored episodes live in it.
    experts = DatasetIndex.scan(Path(summary["demos"])).select(source="expert")
    assert all(e.seed is None for e in experts)  # recorder_node knows no seeds
    # 2 trained on per task (--episodes) and at least one held out: the hash split decides how many more.
    assert len(experts) == summary["dataset"]["expert"]["episodes"] >= 9
    for task in first["graph"]["tasks"]:
        assert len(select_episodes(summary["demos"], tasks=[task], split="train")) >= 2
        assert len(select_episodes(summary["demos"], tasks=[task], split="test")) >= 1
    assert Path(first["graph"]["plot"]).is_file() and first["graph"]["frames_scored"] > 0
    assert set(first["graph"]["tasks"]) == {"sim:reach", "sim:push", "sim:drawer-open"}
    live = json.loads(Path(first["graph"]["plot"]).with_suffix(".json").read_text())["curves"]
    assert len(live["sim:push"]["expert"]) == 1 and len(live["sim:reach"]["random"]) == 3  # as many frames
    # One bring-up per task: the expert's episodes, then (policy and recorder switched) the random policy's.
    scored = DatasetIndex.scan(tmp_path / "graph" / "scored_episodes").entries
    assert sorted((e.task, e.source, e.metadata["policy"]) for e in scored) == sorted(
        (task, source, policy) for task, by_source in live.items() for policy, source in
        (("scripted", "expert"), ("random", "random")) for _ in by_source[source])
    # Re-running resumes: nothing is recorded twice and finished training is not redone.
    again, _ = drr("demo", "--out", str(tmp_path), "--episodes", "2", *fast)
    resumed = json.loads(Path(again["summary"]).read_text())
    assert resumed["dataset"] == summary["dataset"]
    assert resumed["codec"]["steps"] == resumed["video"]["steps"] == 4


def test_recording_killed_mid_run_loses_nothing_already_written(tmp_path):
    """kill -9 while recording: finished episodes stay complete, the current one is listed
    as incomplete (readable up to its last complete step), nothing is silently dropped."""
    out = tmp_path / "episodes"
    process = subprocess.Popen([*DRR, "sim", "record", "--task", "sim:push", "--policy", "random",
                                "--episodes", "50", "--out", str(out), "--image-size", "120x160"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.mcap"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.15)  # usually mid-way through the third episode
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    files = sorted(out.glob("*.mcap"))
    assert len(files) >= 3, "recording did not start in time"

    info, _ = drr("dataset", "info", str(out))
    assert info["episodes"] == len(files)
    assert info["complete"] >= len(files) - 1  # at most the episode being written is cut
    for problem in info["incomplete"]:
        path = Path(problem.split(": ")[0])
        try:
            partial = read_episode(path, image_size=None)
        except EpisodeReadError:
            continue  # killed before its first step reached the disk: listed, not dropped
        assert not partial.complete and partial.frames.shape[1:] == (120, 160, 3)
