"""teleop_node in its own process with a pseudo-terminal as its keyboard: held keys publish twists to the safety
gate's teleop input until the deadman stops them (one zero twist), and its episode keys call episode_node."""

from __future__ import annotations

import os
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from drr_interfaces.msg import EpisodeEvent  # noqa: E402
from drr_ros.episode_node import EVENTS_QOS  # noqa: E402
from drr_ros.wiring import COMMAND_QOS  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from std_msgs.msg import Float64  # noqa: E402

BIN = Path(sys.executable).parent  # where the drr_ros console scripts are, as in conftest.py
DEADMAN_S = 0.3
REPEAT_S = 0.05  # a terminal's key repeat


@pytest.fixture
def terminal():
    controller, keyboard = os.openpty()
    yield controller, keyboard
    os.close(controller)
    os.close(keyboard)


def start_teleop(nodes, keyboard_fd: int) -> subprocess.Popen:
    """Like nodes.start, with the pseudo-terminal as stdin (nodes.stop_all still ends it)."""
    log = open(nodes.log_dir / "teleop_node.log", "w")
    process = subprocess.Popen(["nice", str(BIN / "teleop_node"), "--ros-args", "-r", f"__ns:={nodes.namespace}",
                                "-p", "device:=keyboard", "-p", f"deadman_s:={DEADMAN_S}", "-p", "control_rate:=20.0"],
                               stdin=keyboard_fd, stdout=log, stderr=subprocess.STDOUT, text=True)
    log.close()
    nodes.processes["teleop_node"] = process
    return process


def press(controller: int, key: str, seconds: float = 0.0) -> None:
    """One press, or a key held for `seconds` (repeating)."""
    end = time.monotonic() + seconds
    while True:
        os.write(controller, key.encode())
        if time.monotonic() >= end:
            return
        time.sleep(REPEAT_S)


def test_held_keys_drive_the_gate_input_until_the_deadman_and_episode_keys_call_episode_node(nodes, probe,
                                                                                              terminal):
    controller, keyboard = terminal
    before = termios.tcgetattr(keyboard)
    nodes.start("episode_node", require_safety_status=False)
    start_teleop(nodes, keyboard)
    twists = probe.record(TwistStamped, "safety_gate/teleop/twist", COMMAND_QOS)
    grippers = probe.record(Float64, "safety_gate/teleop/gripper", COMMAND_QOS)
    events = probe.record(EpisodeEvent, "episode/events", EVENTS_QOS)
    probe.wait_for(lambda: "teleop at 20 Hz" in nodes.log("teleop_node") and probe.node.count_publishers(
        "safety_gate/teleop/twist"), 30, "teleop_node up")
    time.sleep(0.5)
    assert twists == []  # nothing before the operator acts: the policy keeps control

    pressed = time.monotonic()
    press(controller, "w", seconds=1.0)  # +x, held for a second
    released = time.monotonic()
    time.sleep(DEADMAN_S + 0.7)
    moving = [(t, m) for t, m in twists if m.twist.linear.x > 0]
    assert len(moving) >= 12, f"{len(moving)} twists in 1 s at 20 Hz"  # published all the while the key is held
    assert all(m.header.frame_id == "base_link" and m.twist.linear.y == m.twist.linear.z == 0 for _, m in moving)
    assert moving[0][1].twist.linear.x == pytest.approx(0.05)  # default max 0.1 m/s at speed scale 0.5
    assert moving[0][0] - pressed < 0.6
    after = twists[next(i for i, (t, _) in enumerate(twists) if t == moving[-1][0]) + 1:]
    assert len(after) == 1 and after[0][1].twist.linear.x == 0.0  # the deadman's single zero twist, then silence
    stop_delay = after[0][0] - released
    assert DEADMAN_S - 0.1 < stop_delay < DEADMAN_S + 0.4, stop_delay
    assert [m.data for _, m in grippers] == [0.0] * len(twists)  # the gripper rides along, open

    published = len(twists)
    press(controller, "c")  # close the gripper: one zero twist carries it to the gate
    probe.wait_for(lambda: grippers and grippers[-1][1].data == 1.0, 5, "the gripper command")
    time.sleep(0.3)
    assert len(twists) == published + 1 and twists[-1][1].twist.linear.x == 0.0

    press(controller, "b")  # start
    probe.wait_for(lambda: [m.event for _, m in events] == [EpisodeEvent.STARTED], 10, "STARTED from the b key")
    press(controller, "y")  # success
    press(controller, "x")  # stop
    probe.wait_for(lambda: len(events) >= 3, 10, "SUCCESS_MARKED and ENDED")
    assert [m.event for _, m in events][:3] == [EpisodeEvent.STARTED, EpisodeEvent.SUCCESS_MARKED, EpisodeEvent.ENDED]
    assert events[2][1].success

    for name, (code, log) in nodes.stop_all().items():
        assert code == 0 and "Traceback" not in log, f"{name} exited {code}\n{log}"
    assert termios.tcgetattr(keyboard) == before  # the operator's terminal restored on SIGTERM


def test_without_a_terminal_it_says_so_and_keeps_running(nodes):
    process = nodes.start("teleop_node", device="auto")  # stdin: not a terminal under pytest's capture
    deadline = time.monotonic() + 30
    while "teleop at" not in nodes.log("teleop_node") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert process.poll() is None
    log = nodes.log("teleop_node")
    assert "no keyboard teleop" in log and "interactive terminal" in log
    assert "no SpaceMouse/gamepad" in log or "evdev is not installed" in log
