"""reward_node (and camera_node feeding it) in their own processes over Fast DDS on loopback, scoring
with a tiny reward model trained at the start of the session on mirror episodes the stack records."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from drr_interfaces.msg import EpisodeEvent, Reward  # noqa: E402
from drr_interfaces.srv import LabelEpisode  # noqa: E402
from drr_ros.messages import image_msg, stamp, stamp_ns  # noqa: E402
from drr_ros.wiring import COMMAND_QOS, SENSOR_QOS  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

SIZE = (48, 64)  # (height, width) of the recorded episodes and camera frames: 4:3 like the calibration
REWARD, IMAGE = "reward_node/reward", "camera/camera/color/image_raw"
FRAME_PERIOD_NS = 100_000_000  # the test camera's frames are stamped 10 Hz apart, reward_node's frame_rate


@pytest.fixture(scope="session")
def reward_model(tmp_path_factory):
    """A tiny codec + video model trained for a few steps on two recorded expert episodes (~5 s)."""
    import torch

    from models.train import train_codec, train_video
    from sim.record import record_episodes

    root = tmp_path_factory.mktemp("reward_model")
    episodes = root / "episodes"
    summary = record_episodes("sim:reach", "expert", range(2), episodes, image_size=SIZE, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        codec = train_codec(episodes, root / "codec", "tiny", steps=5, progress=False)
        video = train_video(episodes, root / "video", codec["checkpoint"], "tiny", steps=5, progress=False)
    finally:
        torch.set_num_threads(threads)
    return {"checkpoint": video["checkpoint"], "episodes": summary.files}


def diagnostics_of(probe, node: str):
    """A function listing the node's /diagnostics values as dicts (plus "_message"), as they arrive."""
    name = f"{probe.node.get_namespace()}/{node}"
    arrays = probe.record(DiagnosticArray, "/diagnostics", COMMAND_QOS)
    return lambda: [{kv.key: kv.value for kv in status.values} | {"_message": status.message}
                    for _, array in arrays for status in array.status if status.name == name]


def start_reward(nodes, probe, reward_model, **params):
    diagnostics = diagnostics_of(probe, "reward_node")
    nodes.start("reward_node", model=reward_model["checkpoint"], **params)
    probe.wait_for(diagnostics, 30, "reward_node's first /diagnostics")
    return diagnostics


def frame(index: int, size=SIZE, encoding="rgb8") -> Image:
    rgb = np.random.default_rng(index).integers(0, 256, (*size, 3), dtype=np.uint8)
    msg = image_msg(rgb, stamp(1_000_000_000 * 100 + index * FRAME_PERIOD_NS), "camera_color_optical_frame")
    msg.encoding = encoding
    return msg


def publish_until(probe, publisher, msg, rewards, timeout=15.0) -> int:
    """Best effort can lose a sample on the way: publish until its reward comes back; how many times."""
    want = stamp_ns(msg.header.stamp)
    end = time.monotonic() + timeout
    sent = 0
    while not any(stamp_ns(r.header.stamp) == want for _, r in rewards):
        assert time.monotonic() < end, f"no reward for the frame stamped {want}"
        publisher.publish(msg)
        sent += 1
        time.sleep(0.3)
    return sent


def assert_clean_exit(nodes) -> None:
    for name, (code, log) in nodes.stop_all().items():
        assert code == 0 and "Traceback" not in log, f"{name} exited {code}\n{log}"


def test_frames_flow_from_a_played_back_camera_to_rewards_stamped_like_the_images(nodes, probe, reward_model, tmp_path):
    from robot.cameras import Frame, write_recording
    from robot.episodes import read_episode

    frames = read_episode(reward_model["episodes"][0], image_size=None).frames[:12]
    stamps = [(1_000_000 + 100 * i) * 1_000_000 for i in range(len(frames))]  # ms in a double: exact at this size
    recording = write_recording(tmp_path / "camera.db3", [Frame(f, s, i + 1) for i, (f, s) in
                                                          enumerate(zip(frames, stamps))], fps=10)
    images = probe.record(Image, IMAGE, SENSOR_QOS)
    rewards = probe.record(Reward, REWARD, COMMAND_QOS)
    start_reward(nodes, probe, reward_model)
    nodes.start("camera_node", source="playback", path=str(recording), fps=10, loop=True)
    probe.wait_for(lambda: len(rewards) >= 10, 30, "10 rewards")

    scored = {stamp_ns(r.header.stamp) for _, r in rewards[:10]}
    assert scored <= set(stamps), (scored, stamps)
    # Discovery may match the probe a frame or two after reward_node; the recording loops, so it sees them next time.
    probe.wait_for(lambda: scored <= {stamp_ns(m.header.stamp) for _, m in images}, 5, "the scored frames' images")
    first = rewards[0][1]
    assert first.header.frame_id == "camera_color_optical_frame" and first.kind == "entropy"
    assert [r.frame_index for _, r in rewards[:10]] == list(range(10))  # no episode events: one history
    assert all(np.isfinite([r.total, r.standardized, r.raw]).all() and r.total == pytest.approx(r.standardized)
               and r.novelty == 0.0 and r.sparse == 0.0 for _, r in rewards)
    assert_clean_exit(nodes)


def test_malformed_images_are_dropped_with_a_clear_log_and_scoring_goes_on(nodes, probe, reward_model):
    rewards = probe.record(Reward, REWARD, COMMAND_QOS)
    diagnostics = start_reward(nodes, probe, reward_model, image_width=SIZE[1], image_height=SIZE[0])
    publisher = probe.publisher(Image, IMAGE, SENSOR_QOS)
    probe.wait_for(publisher.get_subscription_count, 10, "reward_node's image subscription")
    publish_until(probe, publisher, frame(0), rewards)

    # One call site logs at most once a second: space the malformed frames out.
    for bad, expected in [(frame(1, encoding="mono8"), "image encoding 'mono8' is not accepted"),
                          (frame(2, size=(24, 32)), "image is 32x24 (width x height); expected 64x48")]:
        publisher.publish(bad)
        probe.wait_for(lambda expected=expected: expected in nodes.log("reward_node"), 10, expected)
        time.sleep(1.1)
    truncated = frame(3)
    truncated.data = bytes(truncated.data)[:-10]
    publisher.publish(truncated)
    probe.wait_for(lambda: "image data has 9206 bytes" in nodes.log("reward_node"), 10, "the truncated frame's log")

    publish_until(probe, publisher, frame(4), rewards)
    assert {1, 2, 3}.isdisjoint({(stamp_ns(r.header.stamp) - 100_000_000_000) // FRAME_PERIOD_NS for _, r in rewards})
    probe.wait_for(lambda: diagnostics() and diagnostics()[-1]["rejected_frames"] == "3", 5, "rejected_frames 3")
    assert "dropped a camera frame" in nodes.log("reward_node")
    assert_clean_exit(nodes)


def test_the_queue_drops_the_oldest_frames_under_a_burst_and_reports_how_many(nodes, probe, reward_model):
    rewards = probe.record(Reward, REWARD, COMMAND_QOS)
    diagnostics = start_reward(nodes, probe, reward_model, queue_size=2, num_samples=4)
    publisher = probe.publisher(Image, IMAGE, SENSOR_QOS)
    probe.wait_for(publisher.get_subscription_count, 10, "reward_node's image subscription")
    publish_until(probe, publisher, frame(0), rewards)
    before = len(rewards)

    burst = [frame(i) for i in range(1, 31)]
    for msg in burst:  # far faster than it scores
        publisher.publish(msg)
        time.sleep(0.002)
    probe.wait_for(lambda: any(int(d["dropped_frames"]) > 0 for d in diagnostics()), 10, "dropped_frames > 0")
    last = stamp_ns(burst[-1].header.stamp)
    probe.wait_for(lambda: any(stamp_ns(r.header.stamp) == last for _, r in rewards), 15, "the newest frame's reward")
    time.sleep(1.2)  # the next /diagnostics after the last reward
    scored = [stamp_ns(r.header.stamp) for _, r in rewards[before:]]
    report = diagnostics()[-1]
    print(f"burst of {len(burst)}: {len(scored)} scored, {report['dropped_frames']} dropped by the queue")
    assert scored == sorted(scored) and len(scored) < len(burst)
    assert int(report["dropped_frames"]) >= 1 and report["queued_frames"] == "0"
    # Whatever reached the node was scored or dropped; the newest survived.
    assert int(report["scored_frames"]) == len(rewards)
    assert any("dropped the" in d["_message"] and "oldest" in d["_message"] for d in diagnostics())
    assert_clean_exit(nodes)


def test_a_30_hz_camera_is_scored_at_the_training_rate_by_stamp(nodes, probe, reward_model):
    rewards = probe.record(Reward, REWARD, COMMAND_QOS)
    diagnostics = start_reward(nodes, probe, reward_model)  # frame_rate 10 Hz by default
    publisher = probe.publisher(Image, IMAGE, SENSOR_QOS)
    probe.wait_for(publisher.get_subscription_count, 10, "reward_node's image subscription")
    extra_copies = publish_until(probe, publisher, frame(0), rewards) - 1
    due = []
    for i in range(1, 13):
        msg = frame(i)
        msg.header.stamp = stamp(100_000_000_000 + round(i * 1e9 / 30))
        if i % 3:  # inside the 100 ms period: thinned, whether best effort delivers it or not
            publisher.publish(msg)
            time.sleep(0.05)
        else:  # due at 100, 200, 300, 400 ms; were it lost, a later frame would be due. Copies carry
            # the same stamp, so the node thins them like any frame inside the period.
            extra_copies += publish_until(probe, publisher, msg, rewards) - 1
            due.append(stamp_ns(msg.header.stamp))
    time.sleep(0.3)
    scored = sorted(stamp_ns(r.header.stamp) for _, r in rewards)[1:]
    assert scored == due
    probe.wait_for(lambda: diagnostics() and int(diagnostics()[-1]["thinned_frames"]) > 0, 5, "thinned_frames > 0")
    # Exactly 8 when nothing is lost and no copy was needed; never more than the frames not scored.
    assert int(diagnostics()[-1]["thinned_frames"]) <= 8 + extra_copies
    assert_clean_exit(nodes)


def test_label_episode_scores_a_recorded_episode_and_reports_errors(nodes, probe, reward_model):
    from models.reward_model import DiffusionReward
    from robot.episodes import CENTER_SQUARE, read_episode

    start_reward(nodes, probe, reward_model)
    path = reward_model["episodes"][1]
    response = probe.call(LabelEpisode, "reward_node/label_episode", LabelEpisode.Request(episode_path=path))
    assert response.success, response.message
    episode = read_episode(path, image_size=(64, 64), crop=CENTER_SQUARE)
    assert list(response.stamps_ns) == episode.stamps_ns.tolist() and len(response.total) == len(episode)
    expected = DiffusionReward.load(reward_model["checkpoint"]).label_episode(episode.frames)
    np.testing.assert_allclose(response.raw, expected.raw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(response.standardized, expected.standardized, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(response.total, response.standardized)  # no RND, no sparse term
    assert f"labelled {len(episode)} frames" in response.message

    missing = probe.call(LabelEpisode, "reward_node/label_episode",
                         LabelEpisode.Request(episode_path="/nonexistent/episode.mcap"))
    assert not missing.success and "/nonexistent/episode.mcap" in missing.message and not missing.total
    assert_clean_exit(nodes)


def test_episode_start_restarts_the_history_and_success_adds_the_sparse_reward(nodes, probe, reward_model):
    rewards = probe.record(Reward, REWARD, COMMAND_QOS)
    start_reward(nodes, probe, reward_model, success_reward=2.5)
    images = probe.publisher(Image, IMAGE, SENSOR_QOS)
    events = probe.publisher(EpisodeEvent, "episode/events", COMMAND_QOS)
    probe.wait_for(lambda: images.get_subscription_count() and events.get_subscription_count(), 10, "subscriptions")
    publish_until(probe, images, frame(0), rewards)
    publish_until(probe, images, frame(1), rewards)
    events.publish(EpisodeEvent(event=EpisodeEvent.STARTED, state="running", episode_index=1, episode_id="e1"))
    time.sleep(0.3)
    publish_until(probe, images, frame(2), rewards)
    events.publish(EpisodeEvent(event=EpisodeEvent.SUCCESS_MARKED, state="running", episode_index=1, success=True))
    time.sleep(0.3)
    publish_until(probe, images, frame(3), rewards)
    by_frame = {(stamp_ns(r.header.stamp) - 100_000_000_000) // FRAME_PERIOD_NS: r for _, r in rewards}
    assert [by_frame[i].frame_index for i in range(4)] == [0, 1, 0, 1]
    assert [by_frame[i].sparse for i in range(4)] == [0.0, 0.0, 0.0, 2.5]
    assert by_frame[3].total == pytest.approx(by_frame[3].standardized + 2.5)
    assert_clean_exit(nodes)


@pytest.mark.parametrize("executable, params, message", [
    ("reward_node", {"queue_size": 0}, "parameter queue_size = 0 is invalid: expected an integer >= 1"),
    ("reward_node", {"kind": "curiosity"}, "parameter kind = 'curiosity' is invalid: expected one of entropy, "
                                           "likelihood"),
    ("reward_node", {"backend": "cuda"}, "parameter backend = 'cuda' is invalid: expected one of torch, "
                                         "onnxruntime, tensorrt"),
    ("reward_node", {"crop": "10,10,48"}, "parameter crop = '10,10,48' is invalid"),
    ("reward_node", {"model": "/nonexistent/video.ckpt"}, "no checkpoint file at /nonexistent/video.ckpt"),
    ("reward_node", {"model": "MODEL", "backend": "onnxruntime"}, "cannot load the reward"),
])
def test_bad_parameters_exit_non_zero_with_a_clear_message_and_no_traceback(refused_start, reward_model,
                                                                            executable, params, message):
    params = {k: reward_model["checkpoint"] if v == "MODEL" else v for k, v in params.items()}
    params.setdefault("model", reward_model["checkpoint"])
    refused_start(executable, params, message)
