"""robot.finetune: recordings become the episodes policy_node saw (teleop steps flagged, success latched),
each recording reaches the buffer exactly once across restarts and kills, and actor versions only go up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from calibration.schema import CameraIntrinsics
from models.rl import load_actor, load_agent
from robot import finetune
from robot.episodes import EpisodeMetadata, EpisodeWriter
from robot.episodes.live import ros2msg_definition
from robot.finetune import (
    Finetuner,
    LearnerConfig,
    PolicyView,
    episode_from_recording,
    intervention_flags,
    label_recording,
    success_rewards,
)
from robot.types import ArmCommand, RobotState

MSG_DIR = Path(__file__).resolve().parents[2] / "ros2_ws/src/drr_interfaces/msg"
CAMERA = CameraIntrinsics(width=32, height=24, fx=30.0, fy=30.0, cx=15.5, cy=11.5)
PERIOD_NS = 100_000_000
VIEW = PolicyView(crop="none", image_size=16, max_linear_speed=0.25)


def _store():
    store = get_typestore(Stores.ROS2_KILTED)
    for name in ("SafetyStatus", "EpisodeEvent"):
        store.register(get_types_from_msg((MSG_DIR / f"{name}.msg").read_text(), f"drr_interfaces/msg/{name}"))
    return store


STORE = _store()


def _message(name: str, stamp_ns: int, **fields):
    types = STORE.types
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                          frame_id="")
    typename = f"drr_interfaces/msg/{name}"
    defaults = {"SafetyStatus": dict(estop_latched=False, active_source="policy", watchdog_tripped=False,
                                     workspace_clipped=False, speed_limited=False, accel_limited=False,
                                     commands_rejected=0, message=""),
                "EpisodeEvent": dict(event=0, state="running", episode_index=0, episode_id="", task="sim:reach",
                                     reason="", success=False)}[name]
    msg = types[typename](header=header, **{**defaults, **fields})
    definition = ros2msg_definition(typename, (MSG_DIR / f"{name}.msg").read_text())
    return typename, definition, bytes(STORE.serialize_cdr(msg, typename)), stamp_ns


def record(folder: Path, name: str, steps: int = 6, statuses=(), marks=(), success: bool = False,
           finish: bool = True) -> Path:
    """An episode file as recorder_node writes it: frame i is filled with i (left half) and 100 + i (right
    half), the gate executed vx = 0.01 * i m/s and gripper 0.5; statuses (frame index, source) and success
    marks (frame index) are stamped half a period after that frame."""
    meta = EpisodeMetadata(task="sim:reach", source="policy", seed=None, calibration_id="mirror-default",
                           policy="learner_node", episode_id=f"{name:0<16}"[:16])
    path = folder / f"{name}.mcap"
    writer = EpisodeWriter(path, meta, CAMERA)
    stamp = lambda i: (i + 1) * PERIOD_NS  # noqa: E731
    for index, source in statuses:
        writer.write_message("/safety_gate/status", *_message("SafetyStatus", stamp(index) + PERIOD_NS // 2,
                                                              active_source=source))
    for index in marks:
        writer.write_message("/episode/events", *_message("EpisodeEvent", stamp(index) + PERIOD_NS // 2, event=2))
    for i in range(steps):
        image = np.zeros((24, 32, 3), np.uint8)
        image[:, :16], image[:, 16:] = i, 100 + i
        state = RobotState(tuple(f"joint{j}" for j in range(7)), np.full(7, 0.1 * i), np.full(7, 0.2), np.array(
            [0.4, 0.0, 0.3]), np.array([0.0, 0.0, 0.0, 1.0]), gripper_width=0.08, stamp_ns=stamp(i))
        writer.write_step(image, state, ArmCommand([0.01 * i, 0.0, 0.0], [0.0, 0.0, 0.0], 0.5))
    if finish:
        writer.finish(success)
    else:
        writer.abort("the episode was cut off")
    return path


def config(tmp_path: Path, **overrides) -> LearnerConfig:
    values = dict(run_dir=str(tmp_path / "run"), episodes_dir=str(tmp_path / "episodes"), preset="tiny",
                  view=VIEW, updates_per_episode=3, learning_starts=0, keep_actors=2)
    return LearnerConfig(**{**values, **overrides})


# ---------------------------------------------------------------- recordings -> episodes


def test_a_recording_becomes_the_episode_policy_node_saw(tmp_path):
    path = record(tmp_path, "a", steps=6, statuses=[(0, "policy"), (2, "teleop"), (3, "policy")], marks=[3],
                  success=True)
    recording = episode_from_recording(path, VIEW)
    episode = recording.episode
    assert len(episode) == 5 and episode.image.shape == (6, 16, 16, 3) and recording.reward_frames is None
    assert episode.image[4, 0, 0, 0] == 4 and episode.image[4, 0, -1, 0] == 104  # whole field of view
    np.testing.assert_allclose(episode.action[:, 0], 0.04 * np.arange(5), atol=1e-6)  # 0.01 i m/s of 0.25
    np.testing.assert_allclose(episode.action[:, 3], 0.0)  # gripper 0.5 -> 0 in -1..1
    assert episode.proprio.shape == (6, 18)
    np.testing.assert_allclose(episode.proprio[2], [*[0.2] * 7, *[0.2] * 7, 0.4, 0.0, 0.3, 0.08], atol=1e-6)
    # teleop took over in step 2 (between frames 2 and 3) and gave control back in step 3
    assert episode.intervention.tolist() == [False, False, True, True, False]
    # success marked during step 3: from then on the sparse reward is 1
    assert episode.reward.tolist() == [0, 0, 0, 1, 1] and episode.reward_parts["sparse"].tolist() == [0, 0, 0, 1, 1]
    assert episode.meta["recording"] == "a.mcap" and episode.meta["success"] is True


def test_action_repeat_steps_over_frames_and_the_reward_model_gets_its_own_crop(tmp_path):
    path = record(tmp_path, "b", steps=7, marks=[4], success=True)
    view = PolicyView(crop="none", image_size=16, action_repeat=2)
    recording = episode_from_recording(path, view, reward_crop="center")
    episode = recording.episode
    assert len(episode) == 3 and [int(f[0, 0, 0]) for f in episode.image] == [0, 2, 4, 6]
    np.testing.assert_allclose(episode.action[:, 0], [0.0, 0.08, 0.16], atol=1e-6)
    assert episode.reward.tolist() == [0, 0, 2]  # frames 4->5 and 5->6 after the mark, summed
    # Every frame of the 3 steps, not every 2nd: the reward model learned videos at the recording's rate.
    assert recording.reward_frames.shape == (7, 16, 16, 3)
    assert [int(f[0, 0, 0]) for f in recording.reward_frames] == list(range(7))  # the left half, centre-cropped
    assert recording.reward_frames[0, 0, 0, 0] == 0 and recording.reward_frames[0, 0, 1, 0] == 0  # centre: 4 px in

    class Seen:
        fingerprint = "seen"

        def __call__(self, episode):
            self.env_frames = episode.env_frames
            return {"reward": episode.reward_parts["sparse"] * 10, "extra": np.ones(len(episode), np.float32)}

    labeller = Seen()
    labelled = label_recording(recording, labeller)
    assert labeller.env_frames is recording.reward_frames and labelled.image is episode.image
    assert labelled.env_frames is None  # the recording is the record: the replay keeps no second copy
    # Same crop: the reward model still gets every frame.
    same_crop = episode_from_recording(path, view, reward_crop="none").reward_frames
    assert [int(f[0, 0, 0]) for f in same_crop] == list(range(7))
    assert labelled.reward.tolist() == [0, 0, 20] and labelled.meta["reward_fingerprint"] == "seen"
    assert set(labelled.reward_parts) == {"sparse", "extra"}


def test_interventions_and_success_from_the_graph_messages():
    stamps = np.array([10, 20, 30, 40])
    assert intervention_flags(stamps, []).tolist() == [False] * 3
    assert intervention_flags(stamps, [(5, "teleop")]).tolist() == [True] * 3  # in force from the start
    assert intervention_flags(stamps, [(25, "teleop"), (26, "policy")]).tolist() == [False, True, False]
    assert intervention_flags(stamps, [(30, "teleop")]).tolist() == [False, False, True]
    assert success_rewards(stamps, [30], True).tolist() == [0, 1, 1]
    assert success_rewards(stamps, [], True).tolist() == [0, 0, 1]  # successful, no mark recorded: the last step
    assert success_rewards(stamps, [], False).tolist() == [0, 0, 0]


# ---------------------------------------------------------------- the learner


def test_each_recording_reaches_the_buffer_once_across_restarts_and_versions_continue(tmp_path):
    episodes = tmp_path / "episodes"
    episodes.mkdir()
    for name in ("e0", "e1"):
        record(episodes, name)
    learner = Finetuner(config(tmp_path))
    assert learner.version == 0 and load_actor(learner.publishable()[0]).spec.image_size == 16
    assert [p.name for p in learner.new_recordings()] == ["e0.mcap", "e1.mcap"]
    for path in learner.new_recordings():
        learner.ingest(path)
    assert learner.train() and learner.agent.updates == 6 and learner.version == 1
    assert not learner.train()  # nothing owed
    path, version = learner.publishable()
    assert version == 1 and path.name == "actor_v000001.ckpt" and load_actor(path).spec.action_dim == 4

    record(episodes, "e2")  # recorded while the learner was down
    again = Finetuner(config(tmp_path))
    assert again.version == 1 and again.agent.updates == 6 and len(again.replay.episode_files()) == 2
    assert [p.name for p in again.new_recordings()] == ["e2.mcap"]
    again.ingest(again.new_recordings()[0])
    assert again.train() and again.version == 2 and again.agent.updates == 9
    assert sorted(p.name for p in (tmp_path / "run/actors").iterdir()) == ["actor_v000001.ckpt", "actor_v000002.ckpt"]
    _, ckpt = load_agent(tmp_path / "run/agent.ckpt")
    assert ckpt.extra["counters"]["version"] == 2
    names = sorted(e.meta["recording"] for e in again.replay.episodes)
    assert names == ["e0.mcap", "e1.mcap", "e2.mcap"] and again.new_recordings() == []


def test_a_learner_killed_between_the_buffer_and_its_state_adds_nothing_twice_and_owes_the_updates(
        tmp_path, monkeypatch):
    episodes = tmp_path / "episodes"
    episodes.mkdir()
    record(episodes, "e0")
    learner = Finetuner(config(tmp_path))

    def killed(self, path):
        raise KeyboardInterrupt("kill -9")

    monkeypatch.setattr(finetune.LearnerState, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        learner.ingest(learner.new_recordings()[0])  # the episode file is written, the state is not
    monkeypatch.undo()
    restarted = Finetuner(config(tmp_path))
    assert restarted.recovered == ["e0.mcap"] and restarted.new_recordings() == []
    assert len(restarted.replay.episode_files()) == 1 and restarted.updates_due == 3
    assert restarted.train() and restarted.version == 1


def test_unusable_and_unfinished_recordings_are_set_aside_not_lost(tmp_path):
    episodes = tmp_path / "episodes"
    episodes.mkdir()
    record(episodes, "aborted", finish=False)  # closed without episode_end
    cut = record(episodes, "cut")
    cut.write_bytes(cut.read_bytes()[:-100])  # a recorder killed mid-write: no closing magic
    learner = Finetuner(config(tmp_path))
    assert [p.name for p in learner.new_recordings()] == ["aborted.mcap"] and learner.unfinished_recordings() == 1
    assert learner.ingest(episodes / "aborted.mcap") is None
    assert "not a complete episode" in learner.state.skipped["aborted.mcap"]
    assert Finetuner(config(tmp_path)).new_recordings() == []  # not read again
    assert cut.exists() and (episodes / "aborted.mcap").exists()


def test_bad_settings_name_what_is_accepted(tmp_path):
    with pytest.raises(ValueError, match="unknown reward 'dense'; accepted: sparse, diffusion, rnd"):
        config(tmp_path, reward="dense")
    with pytest.raises(ValueError, match="reward diffusion needs reward_model"):
        config(tmp_path, reward="diffusion")
    with pytest.raises(ValueError, match="init_agent 'nowhere.ckpt' is not a file"):
        config(tmp_path, init_agent="nowhere.ckpt")
    with pytest.raises(ValueError, match="crop 'middle' is not"):
        PolicyView(crop="middle")
    with pytest.raises(ValueError, match="action_repeat must be an int >= 1"):
        PolicyView(action_repeat=0)
    Finetuner(config(tmp_path))
    with pytest.raises(ValueError, match="holds a run with other settings"):
        Finetuner(config(tmp_path, view=PolicyView(crop="center", image_size=16)))
