"""The main job's expert recording loop (robot/demo.py): failed expert episodes are set aside and
replaced by new scenes. The graph itself is replaced by a writer here; tests/robot/test_cli.py runs
the real one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.schema import CameraIntrinsics
from robot import demo
from robot.episodes import EpisodeMetadata, EpisodeWriter
from robot.types import ArmCommand, RobotState

CAMERA = CameraIntrinsics(width=32, height=24, fx=30.0, fy=30.0, cx=15.5, cy=11.5)


def state(i: int) -> RobotState:
    return RobotState(tuple(f"joint{j}" for j in range(7)), np.zeros(7), np.zeros(7), np.array([0.4, 0.0, 0.3]),
                      np.array([0.0, 0.0, 0.0, 1.0]), gripper_width=0.08, stamp_ns=(i + 1) * 100_000_000)


class FakeGraph:
    """Writes one expert episode per requested one; the outcomes come from a list, in order."""

    def __init__(self, outcomes: list[bool]):
        self.outcomes, self.calls = list(outcomes), []

    def __call__(self, task, batches, log_dir, *, without, sim_arm_node, policy_node, recorder_node):
        ((count, parameters),) = batches  # recording: one batch, nothing changed between episodes
        assert parameters == {}
        self.calls.append((task, count, sim_arm_node["seed"]))
        out = Path(recorder_node["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            number = len(list(out.parent.rglob("*.mcap")))
            meta = EpisodeMetadata(task=task, source="expert", seed=None, calibration_id="mirror-default",
                                   policy="scripted")
            with EpisodeWriter(out / f"{task.replace(':', '-')}_{number:03d}.mcap", meta, CAMERA) as writer:
                for i in range(3):
                    writer.write_step(np.full((24, 32, 3), i, np.uint8), state(i), ArmCommand.zero(), None)
                writer.finish(self.outcomes.pop(0))


@pytest.fixture
def one_task(monkeypatch):
    monkeypatch.setattr("sim.registry.mirror_tasks", lambda: ("sim:reach",))


def test_failed_experts_move_aside_and_new_scenes_replace_them(tmp_path, monkeypatch, one_task):
    graph = FakeGraph([True, False, True, True])
    monkeypatch.setattr(demo, "run_graph_episodes", graph)
    demo.record_through_graph(tmp_path / "demos", 3, seed=10, log_root=tmp_path / "logs", progress=False)
    # Round one records 3 (one fails); round two records the missing one on a scene not used before.
    assert graph.calls == [("sim:reach", 3, 10), ("sim:reach", 1, 10 + 2 + 1)]
    assert len(list((tmp_path / "demos").glob("*.mcap"))) == 3
    assert len(list((tmp_path / "rejected_demos").glob("*.mcap"))) == 1
    demo.record_through_graph(tmp_path / "demos", 3, seed=10, log_root=tmp_path / "logs", progress=False)
    assert len(graph.calls) == 2  # resumed: nothing missing, nothing recorded


def test_an_expert_that_keeps_failing_is_a_clear_error(tmp_path, monkeypatch, one_task):
    monkeypatch.setattr(demo, "run_graph_episodes", FakeGraph([False] * 3))
    with pytest.raises(RuntimeError, match=r"sim:reach: 0 of 1 expert episodes succeeded after 3 rounds"):
        demo.record_through_graph(tmp_path / "demos", 1, seed=0, log_root=tmp_path / "logs", progress=False)
    assert len(list((tmp_path / "rejected_demos").glob("*.mcap"))) == 3  # nothing recorded is lost


def test_demonstrations_fill_the_train_split_and_hold_some_out(tmp_path, monkeypatch, one_task):
    from models.data import select_episodes

    monkeypatch.setattr(demo, "run_graph_episodes", FakeGraph([True] * 40))
    demo.record_demonstrations(tmp_path / "demos", train=6, held_out=2, seed=0, log_root=tmp_path / "logs",
                               progress=False)
    # The split is a hash of random episode ids: however it falls, the train side gets its 6.
    assert len(select_episodes(tmp_path / "demos", split="train")) >= 6
    assert len(select_episodes(tmp_path / "demos", split="test")) >= 1


def test_live_scoring_gives_short_tasks_as_many_frames_as_the_longest():
    assert demo.live_episodes("sim:push", 2) == 2  # 6 s, the longest
    assert demo.live_episodes("sim:reach", 2) == 6  # 2 s
    assert demo.live_episodes("sim:drawer-open", 2) == 2  # 5 s: 2.4 rounds down, never below the count asked
    assert demo.live_episodes("sim:reach", 1) == 3
