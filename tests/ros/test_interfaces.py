"""drr_interfaces, built from the ROS 2 wheels by scripts/build_interfaces.sh, across real processes over Fast DDS."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("rclpy")

# Test values survive float32 exactly; integers sit at their types' limits.
REWARD = {"header": {"stamp": {"sec": 1_700_000_000, "nanosec": 123_456_789}, "frame_id": "camera_color_optical_frame"},
          "total": -0.734375, "standardized": 1.5, "raw": -12.25, "novelty": 0.0078125, "sparse": 1.0,
          "kind": "entropy", "frame_index": 2**64 - 1}
EVENT = {"header": {"stamp": {"sec": 42, "nanosec": 7}, "frame_id": ""}, "event": 6, "state": "resetting",  # 6: ABORTED
         "episode_index": 2**32 - 1, "episode_id": "2026-11-21T10-00-00_sim-reach_0007", "task": "sim:reach",
         "reason": "e_stop", "success": False}


def test_fresh_interpreter_imports_the_built_package():
    # As a new shell would start it: the venv's drr_interfaces.pth alone must make it importable and loadable.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    code = ("from drr_interfaces.msg import EpisodeEvent, Reward, SafetyStatus\n"
            "from drr_interfaces.srv import LabelEpisode\n"
            "from rclpy.serialization import deserialize_message, serialize_message\n"
            "status = SafetyStatus(estop_latched=True, active_source='reset', commands_rejected=3, message='m')\n"
            "assert deserialize_message(serialize_message(status), SafetyStatus) == status\n"
            "print([EpisodeEvent.STARTED, EpisodeEvent.SUCCESS_MARKED, EpisodeEvent.ENDED,\n"
            "       EpisodeEvent.RESET_STARTED, EpisodeEvent.RESET_DONE, EpisodeEvent.ABORTED])\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2, 3, 4, 5, 6]"


def test_reward_and_episode_event_cross_processes_intact(peers):
    prefix = f"/test_{os.getpid()}"
    listener = peers.start("listener", prefix)
    talker = peers.start("talker", prefix, json.dumps({"reward": REWARD, "event": EVENT}))
    assert peers.result(listener) == {"reward": REWARD, "event": EVENT}
    assert peers.result(talker) == {"published": 2}


def test_label_episode_service_across_processes(peers):
    service = f"/test_{os.getpid()}/label_episode"
    server = peers.start("server", service)
    client = peers.start("client", service, "/data/episodes/episode_0007.mcap")
    assert peers.result(client) == {"success": True, "message": "scored /data/episodes/episode_0007.mcap",
                                    "stamps_ns": [0, 100_000_000, -(2**63), 2**63 - 1],
                                    "total": [0.5, -1.25, 3.0, 2**-10], "standardized": [0.25, -0.5, 1.0, 2.0],
                                    "raw": [-10.5, -11.0, -9.75, -12.0]}
    assert peers.result(server) == {"episode_path": "/data/episodes/episode_0007.mcap"}
