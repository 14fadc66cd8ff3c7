"""drr_ros nodes (safety_gate, sim_arm_node, reset_node), each in its own process, over Fast DDS on
loopback. The test process watches through an rclpy probe; command sources that must die or fuzz
run as processes of this file (`python test_drr_nodes.py policy|fuzz NAMESPACE ...`)."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy")

from drr_interfaces.msg import EpisodeEvent, SafetyStatus  # noqa: E402
from drr_ros.messages import image_of, parameters_request, pose_of, stamp_ns  # noqa: E402
from drr_ros.wiring import CLOCK_QOS, COMMAND_QOS, LATCHED_QOS, SENSOR_QOS  # noqa: E402
from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from rcl_interfaces.srv import SetParametersAtomically  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from calibration import WorkspaceBox, load_calibration, save_calibration  # noqa: E402
from robot.policy_runtime import parse_privileged  # noqa: E402
from robot.safety import SafetyLimits  # noqa: E402

BOX = load_calibration().workspace
LIMITS = SafetyLimits(BOX)  # the gate's defaults
WATCHDOG = LIMITS.watchdog_timeout_s
LOOKAHEAD = 0.2  # the safety_gate node's default
PERIOD = 0.1  # 10 Hz, the gate's and the reset node's default control rate (the arm servoes at 50 Hz)
HOME = np.array([0.5, 0.0, 0.25])
BOX_TOLERANCE = 0.01  # the gate holds the reference in the box; the TCP's tracking lag adds millimetres
SOURCES = ("teleop", "reset", "policy")


def position(record) -> np.ndarray:
    return pose_of(record[1])[0]


def linear(msg: TwistStamped) -> np.ndarray:
    v = msg.twist.linear
    return np.array([v.x, v.y, v.z])


def angular(msg: TwistStamped) -> np.ndarray:
    w = msg.twist.angular
    return np.array([w.x, w.y, w.z])


def is_zero(msg: TwistStamped) -> bool:
    return not np.any(linear(msg)) and not np.any(angular(msg))


def start_role(role: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, role, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def watch_arm(probe) -> tuple[list, list]:
    poses = probe.record(PoseStamped, "ee_pose", SENSOR_QOS)
    twists = probe.record(TwistStamped, "safety_gate/twist_out", COMMAND_QOS)
    probe.wait_for(lambda: poses and twists, 30, "the arm's ee_pose and the gate's twist_out")
    return poses, twists


def moved_since(poses: list, t0: float) -> float:
    """How far the TCP got from where it was at t0."""
    before = [p for p in poses if p[0] <= t0][-1]
    return max((float(np.linalg.norm(position(p) - position(before))) for p in poses if p[0] >= t0), default=0.0)


def assert_clean_exit(nodes) -> None:
    """SIGTERM ends every node with status 0 and no traceback (wiring.run's shutdown)."""
    for name, (code, log) in nodes.stop_all().items():
        assert code == 0 and "Traceback" not in log, f"{name} exited {code}\n{log}"


def drive(probe, seconds: float, vx: float = 0.05, vy: float = 0.0) -> None:
    """Publish a policy twist at 10 Hz from the probe."""
    publisher = probe.publisher(TwistStamped, "safety_gate/policy/twist", COMMAND_QOS)
    probe.wait_for(publisher.get_subscription_count, 10, "the gate's policy subscription")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        msg = TwistStamped()
        msg.twist.linear.x, msg.twist.linear.y = vx, vy
        publisher.publish(msg)
        time.sleep(PERIOD)


# ---------------------------------------------------------------- policy -> gate -> arm, watchdog


def test_policy_drives_the_arm_and_a_killed_policy_stops_it_within_the_watchdog(nodes, probe):
    nodes.start("sim_arm_node", camera_rate=0.0)
    nodes.start("safety_gate")
    joints = probe.record(JointState, "joint_states", SENSOR_QOS)
    poses, twists = watch_arm(probe)
    policy = start_role("policy", nodes.namespace, "0.05")
    try:
        t0 = time.monotonic()
        probe.wait_for(lambda: moved_since(poses, t0) > 0.03, 20, "the arm to move 3 cm under the policy")
        assert joints and len(joints[-1][1].name) == 9 and joints[-1][1].name[0] == "joint1"
    finally:
        policy.send_signal(signal.SIGKILL)
        policy.communicate()
    killed = time.monotonic()
    time.sleep(WATCHDOG + 1.0)
    # The gate: zero from its first tick after the watchdog period, counted from the last command.
    last_motion = max(t for t, msg in twists if not is_zero(msg))
    gate_stop = min(t for t, msg in twists if t > last_motion)
    assert all(is_zero(msg) for t, msg in twists if t >= gate_stop)
    # The arm: the last pose more than 0.5 mm from where it came to rest.
    rest = position(poses[-1])
    arm_stop = max(t for t, pose in poses if np.linalg.norm(pose_of(pose)[0] - rest) > 5e-4)
    print(f"after SIGKILL: gate output zero in {gate_stop - killed:.3f} s, arm still in {arm_stop - killed:.3f} s "
          f"(watchdog {WATCHDOG} s)")
    # The last command came at most one period before the kill; then one gate period and delivery.
    assert gate_stop - killed <= WATCHDOG + PERIOD + 0.15
    # Then the arm's servo period (20 ms) and its tracking lag settling.
    assert arm_stop - killed <= WATCHDOG + 2 * PERIOD + 0.15
    assert_clean_exit(nodes)


# ---------------------------------------------------------------- e-stop


def test_latched_estop_blocks_reset_and_motion_until_the_service_clears_it(nodes, probe):
    nodes.start("sim_arm_node", camera_rate=0.0)
    nodes.start("safety_gate")
    nodes.start("reset_node")
    status = probe.record(SafetyStatus, "safety_gate/status", LATCHED_QOS)
    poses, twists = watch_arm(probe)
    estop_topic = probe.publisher(Bool, "safety_gate/estop", COMMAND_QOS)
    probe.wait_for(lambda: estop_topic.get_subscription_count(), 10, "the gate's ~/estop subscription")
    estop_topic.publish(Bool(data=True))
    probe.wait_for(lambda: status and status[-1][1].estop_latched, 10, "the e-stop to latch")
    assert status[-1][1].message == "~/estop topic"

    reset = probe.call(Trigger, "reset_node/reset", Trigger.Request())
    assert not reset.success and "e-stop is latched" in reset.message, reset.message

    t0 = time.monotonic()
    drive(probe, 1.0)
    estop_topic.publish(Bool(data=False))  # the topic cannot clear it
    time.sleep(0.5)
    assert status[-1][1].estop_latched
    assert all(is_zero(msg) for t, msg in twists if t >= t0)
    assert moved_since(poses, t0) < 1e-3

    cleared = probe.call(SetBool, "safety_gate/estop", SetBool.Request(data=False))
    assert cleared.success and "cleared" in cleared.message
    probe.wait_for(lambda: not status[-1][1].estop_latched, 5, "the e-stop to clear")
    t1 = time.monotonic()
    drive(probe, 1.0)
    assert moved_since(poses, t1) > 0.02
    assert_clean_exit(nodes)


# ---------------------------------------------------------------- fuzzed commands through the real gate

wild = st.one_of(st.floats(-1.0, 1.0),
                 st.sampled_from([0.0, 1e9, -1e9, 1e308, -1e308, math.nan, math.inf, -math.inf]),
                 st.floats(allow_nan=True, allow_infinity=True))
# A segment: one message repeated `repeat` times every `dt` s, so directions are held long enough to reach a wall.
segment = st.fixed_dictionaries({
    "dt": st.floats(0.02, 0.15), "repeat": st.integers(1, 20), "source": st.sampled_from(SOURCES),
    "kind": st.sampled_from(["twist", "twist", "twist", "gripper"]), "values": st.lists(wild, min_size=6, max_size=6),
})
FUZZ_SECONDS = 3.5  # per stream


def push(axis: int, sign: float) -> dict:
    """Two seconds at full speed toward one face of the box (from home: 1 s to get there, 1 s against it)."""
    values = [0.0] * 6
    values[axis] = sign * 1e9
    return {"dt": 0.1, "repeat": 20, "source": "policy", "kind": "twist", "values": values}


def truncated(stream: list[dict]) -> list[dict]:
    out, total = [], 0.0
    for seg in stream:
        repeat = min(seg["repeat"], max(0, int((FUZZ_SECONDS - total) / seg["dt"])))
        if repeat:
            out.append({**seg, "repeat": repeat})
            total += repeat * seg["dt"]
    return out


def rejected_in(stream: list[dict]) -> int:
    """Messages the gate must reject and count: non-finite twists, non-finite gripper values."""
    return sum(seg["repeat"] for seg in stream
               if not all(map(math.isfinite, seg["values"] if seg["kind"] == "twist" else seg["values"][:1])))


def accel_gap(out: np.ndarray, previous: np.ndarray) -> float:
    """Change from the previous output that the accel limit must cover: braking toward zero on an axis
    is free (the box cut and stops may brake at once), speeding up or reversing is not."""
    gap = out - previous
    gap = np.where(out > 0, np.maximum(gap, 0.0), np.where(out < 0, np.minimum(gap, 0.0), 0.0))
    return float(np.linalg.norm(gap))


# What the arm can follow, so that what leaves the box is the gate's doing (both measured without ROS too):
# - the mirror's Cartesian controller keeps the TCP within a few mm of its reference up to about 0.5 rad/s of
#   rotation at full linear speed; at 1 rad/s near its joint limits it strays up to ~1.5 cm: 0.5 rad/s here;
# - mirror.yaml's box floor is the table top (z = 0), but the fingertips touch the table with the TCP ~9 mm
#   above it, and pressing on there pushes the arm sideways, out through a side face by up to ~1 cm: the
#   box here has its floor 2 cm up, as a real cell's would.
MAX_ANGULAR_SPEED = 0.5
FUZZ_BOX = WorkspaceBox(min=(BOX.min[0], BOX.min[1], 0.02), max=BOX.max)


@pytest.fixture
def fuzz_rig(nodes, probe, tmp_path):
    calibration = save_calibration(dataclasses.replace(load_calibration(), workspace=FUZZ_BOX),
                                   tmp_path / "cell.yaml")
    nodes.start("sim_arm_node", camera_rate=0.0)
    nodes.start("safety_gate", max_angular_speed=MAX_ANGULAR_SPEED, calibration=str(calibration))
    status = probe.record(SafetyStatus, "safety_gate/status", LATCHED_QOS)
    grippers = probe.record(Float64, "safety_gate/gripper_out", COMMAND_QOS)
    poses, twists = watch_arm(probe)
    fuzz = start_role("fuzz", nodes.namespace)
    assert fuzz.stdout.readline().strip() == "ready", fuzz.stderr.read()
    probe.wait_for(lambda: status, 10, "the gate's status")
    yield {"poses": poses, "twists": twists, "status": status, "grippers": grippers, "fuzz": fuzz, "probe": probe}
    fuzz.kill()
    fuzz.communicate()


@settings(max_examples=4, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=st.lists(segment, min_size=1, max_size=8))
@example(stream=[push(1, 1.0), push(2, -1.0)])  # into the side wall, then down onto the table
def test_fuzzed_commands_keep_the_arm_in_the_box_within_limits_and_stop_after_the_watchdog(fuzz_rig, stream):
    rig, stream = fuzz_rig, truncated(stream)
    poses, twists = rig["poses"], rig["twists"]
    # Each stream is an episode: the arm starts at its start pose, not twisted up by the last stream.
    assert rig["probe"].call(Trigger, "sim_arm_node/randomize", Trigger.Request()).success
    time.sleep(2 * PERIOD)
    first_pose, first_twist = len(poses), len(twists)
    rejected_before = rig["status"][-1][1].commands_rejected  # (hypothesis may replay an example)
    rig["fuzz"].stdin.write(json.dumps(stream) + "\n")
    rig["fuzz"].stdin.flush()
    assert rig["fuzz"].stdout.readline().strip() == "done", rig["fuzz"].stderr.read()
    done = time.monotonic()
    time.sleep(WATCHDOG + 3 * PERIOD + 0.2)

    outputs = [msg for _, msg in twists[first_twist:]]
    for previous, msg in zip(outputs, outputs[1:]):
        lin, ang = linear(msg), angular(msg)
        assert np.all(np.isfinite(lin)) and np.all(np.isfinite(ang))
        assert np.linalg.norm(lin) <= LIMITS.max_linear_speed + 1e-9
        assert np.linalg.norm(ang) <= MAX_ANGULAR_SPEED + 1e-9
        dt = min((stamp_ns(msg.header.stamp) - stamp_ns(previous.header.stamp)) * 1e-9, LOOKAHEAD)
        assert accel_gap(lin, linear(previous)) <= LIMITS.max_linear_accel * dt + 1e-9
        if np.any(ang):  # stops are immediate
            assert np.linalg.norm(ang - angular(previous)) <= LIMITS.max_angular_accel * dt + 1e-9
    outside = max(float(np.max(np.maximum(np.subtract(FUZZ_BOX.min, p), np.subtract(p, FUZZ_BOX.max))))
                  for p in (pose_of(pose)[0] for _, pose in poses[first_pose:]))
    print(f"fuzz: {len(outputs)} outputs, {sum(s['repeat'] for s in stream)} commands; "
          f"furthest outside the box {max(outside, 0.0) * 1e3:.1f} mm")
    assert outside <= BOX_TOLERANCE
    assert all(0.0 <= msg.data <= 1.0 for _, msg in rig["grippers"])
    # Nothing after the stream: zero from the watchdog period on (plus a gate period and delivery).
    quiet = [msg for t, msg in twists[first_twist:] if t > done + WATCHDOG + PERIOD + 0.15]
    assert quiet and all(is_zero(msg) for msg in quiet)
    assert rig["status"][-1][1].commands_rejected == rejected_before + rejected_in(stream)


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("executable, name, value, accepted", [
    ("safety_gate", "max_linear_speed", -0.5, "expected a number > 0"),
    ("safety_gate", "lookahead_s", 0.05, "at least the gate's control period"),
    ("safety_gate", "calibration", "/nonexistent/cell.yaml", "calibration file not found"),
    ("sim_arm_node", "task", "sim:fly", "expected one of sim:reach, sim:push, sim:drawer-open"),
    ("sim_arm_node", "control_rate", 7.0, "not a whole number of servo periods"),
    ("reset_node", "home_position", [0.5, 0.0], "expected a list of 3 finite numbers"),
])
def test_bad_parameter_exits_non_zero_naming_it_without_a_traceback(nodes, executable, name, value, accepted):
    process = nodes.start(executable, **{name: value})
    assert process.wait(timeout=30) == 2
    log = nodes.log(executable)
    assert f"parameter{'s' if name == 'lookahead_s' else ''} {name} = {value!r}" in log, log
    assert accepted in log and "Traceback" not in log, log


# ---------------------------------------------------------------- reset


def render_scene(seed: int, size: tuple[int, int], task: str = "reach") -> np.ndarray:
    from sim.envs import MirrorEnv

    env = MirrorEnv(task, image_size=size)
    env.reset(seed=seed)
    image = env.render_camera(*size)
    env.close()
    return image.astype(float)


def test_reset_on_the_mirror_homes_the_arm_and_rerandomises_the_scene(nodes, probe):
    size = (120, 160)
    nodes.start("sim_arm_node", task="sim:reach", seed=0, camera_rate=5.0, image_width=size[1], image_height=size[0])
    nodes.start("safety_gate")
    nodes.start("reset_node")
    images = probe.record(Image, "sim_arm_node/camera/image_raw", SENSOR_QOS)
    status = probe.record(SafetyStatus, "safety_gate/status", LATCHED_QOS)
    poses, _ = watch_arm(probe)
    probe.wait_for(lambda: status, 10, "the gate's status")
    drive(probe, 1.5, vx=0.1, vy=0.1)  # away from home
    assert np.linalg.norm(position(poses[-1]) - HOME) > 0.08

    called = time.monotonic()
    reset = probe.call(Trigger, "reset_node/reset", Trigger.Request(), timeout=30)
    answered = time.monotonic()
    assert reset.success, reset.message
    assert "home within" in reset.message and "seed 1" in reset.message, reset.message
    # Home before the scene changed: the closest pose during the reset is within the tolerance.
    during = [np.linalg.norm(position(p) - HOME) for p in poses if called <= p[0] <= answered]
    assert min(during) <= 0.005 + 1e-3, min(during)
    print(f"reset took {answered - called:.1f} s: {reset.message}")

    # The camera now shows seed 1's scene (the goal and the arm's start pose), not seed 0's.
    probe.wait_for(lambda: images and images[-1][0] > answered + 0.5, 10, "an image after the reset")
    seen = image_of(images[-1][1]).astype(float)
    to_new, to_old = (float(np.abs(seen - render_scene(seed, size)).mean()) for seed in (1, 0))
    assert to_new < 1.0 and to_old > 3 * to_new, (to_new, to_old)

    # The answer came once the gate had released the reset source (a source keeps control until its
    # last command is watchdog_timeout_s old), so the next episode's policy is obeyed at once.
    assert "control released" in reset.message, reset.message
    took_control = next(t for t, msg in status if t > called and msg.active_source == "reset")
    released = next(t for t, msg in status if t > took_control and msg.active_source != "reset")
    assert released <= answered + 0.05, f"reset source released {released - answered:.2f} s after the answer"
    assert_clean_exit(nodes)


def test_the_mirror_changes_task_between_episodes_only(nodes, probe):
    size = (120, 160)
    nodes.start("sim_arm_node", task="sim:reach", seed=0, camera_rate=5.0, image_width=size[1], image_height=size[0])
    privileged = probe.record(String, "sim_arm_node/privileged", SENSOR_QOS)
    images = probe.record(Image, "sim_arm_node/camera/image_raw", SENSOR_QOS)
    events = probe.publisher(EpisodeEvent, "episode/events", COMMAND_QOS)
    probe.wait_for(lambda: privileged and events.get_subscription_count(), 20, "sim_arm_node up")

    def set_task(task: str):
        return probe.call(SetParametersAtomically, "sim_arm_node/set_parameters_atomically",
                          parameters_request(task=task)).result

    assert "parameter task = 'sim:fly' is invalid: expected one of sim:" in set_task("sim:fly").reason

    def event(code: int, state: str) -> EpisodeEvent:
        return EpisodeEvent(event=code, state=state, episode_index=1, episode_id="e1", task="sim:reach")

    events.publish(event(EpisodeEvent.STARTED, "running"))
    probe.wait_for(lambda: "task stays sim:reach while an episode runs" in set_task("sim:push").reason, 5,
                   "the change refused while the episode runs")
    events.publish(event(EpisodeEvent.ENDED, "ending"))
    probe.wait_for(lambda: set_task("sim:push").successful, 5, "the change taken between episodes")
    changed = time.monotonic()
    probe.wait_for(lambda: privileged[-1][0] > changed and parse_privileged(privileged[-1][1].data)[0] == "sim:push",
                   5, "push's privileged state")
    # The camera shows push's scene at the next seed (1), rendered by the rebuilt mirror.
    probe.wait_for(lambda: images and images[-1][0] > changed + 0.5, 10, "an image after the change")
    seen = image_of(images[-1][1]).astype(float)
    to_push, to_reach = (float(np.abs(seen - render_scene(1, size, task)).mean()) for task in ("push", "reach"))
    assert to_push < 1.0 and to_reach > 3 * to_push, (to_push, to_reach)
    assert "scene re-randomised: sim:push seed 1" in nodes.log("sim_arm_node")
    assert_clean_exit(nodes)


def test_reset_without_a_safety_gate_is_refused_once_the_status_wait_runs_out(nodes, probe):
    nodes.start("reset_node", status_timeout_s=0.5)
    refused = probe.call(Trigger, "reset_node/reset", Trigger.Request(), timeout=30)
    assert not refused.success
    assert "no SafetyStatus on safety_gate/status within 0.5 s (is the safety_gate running?)" in refused.message
    assert_clean_exit(nodes)


def test_reset_on_a_real_cell_waits_for_the_operator_and_fails_on_timeout(nodes, probe):
    nodes.start("sim_arm_node", camera_rate=0.0)
    nodes.start("safety_gate")
    nodes.start("reset_node", confirm_with_operator=True, confirm_timeout_s=1.0)
    status = probe.record(SafetyStatus, "safety_gate/status", LATCHED_QOS)
    watch_arm(probe)
    probe.wait_for(lambda: status, 10, "the gate's status")
    nobody = probe.call(Trigger, "reset_node/reset", Trigger.Request(), timeout=30)
    assert not nobody.success and "no operator confirmation on ~/confirm within 1 s" in nobody.message
    early = probe.call(Trigger, "reset_node/confirm", Trigger.Request())
    assert not early.success and "no reset is waiting" in early.message

    client = probe.node.create_client(Trigger, "reset_node/reset")
    assert client.wait_for_service(timeout_sec=10)
    pending = client.call_async(Trigger.Request())
    probe.wait_for(lambda: probe.call(Trigger, "reset_node/confirm", Trigger.Request()).success, 20,
             "the reset to wait for the operator", poll_s=0.1)
    probe.wait_for(pending.done, 10, "the reset to answer")
    assert pending.result().success and "operator confirmed" in pending.result().message
    assert_clean_exit(nodes)


# ---------------------------------------------------------------- sim time, camera contract


def test_faster_than_real_time_publishes_clock_and_full_resolution_images_in_sim_time(nodes, probe):
    nodes.start("sim_arm_node", real_time_factor=4.0, camera_rate=2.0)
    clock = probe.record(Clock, "/clock", CLOCK_QOS)
    images = probe.record(Image, "sim_arm_node/camera/image_raw", SENSOR_QOS)
    privileged = probe.record(String, "sim_arm_node/privileged", SENSOR_QOS)
    probe.wait_for(lambda: len(images) >= 3 and len(clock) > 20 and privileged, 20,
                   "/clock, three images and the privileged state")
    (t0, c0), (t1, c1) = clock[5], clock[-1]
    factor = (stamp_ns(c1.clock) - stamp_ns(c0.clock)) * 1e-9 / (t1 - t0)
    # 4x asked. Sim time must run ahead of wall time; how far behind 4x a loaded machine lags
    # (1.2x with an RL run sharing CI's 2 cores) is for `drr bench ros`, not a unit test.
    assert 1.0 < factor < 4.5, factor
    camera = load_calibration().camera
    image = images[-1][1]
    assert (image.width, image.height, image.encoding, image.step) == (camera.width, camera.height, "rgb8",
                                                                       3 * camera.width)
    assert image.header.frame_id == camera.frame_id
    stamps = [stamp_ns(msg.header.stamp) for _, msg in images]
    # 2 Hz of sim time (best effort: a 0.9 MB image may be dropped on the way, never mistimed).
    assert all((b - a) % 500_000_000 == 0 and b > a for a, b in zip(stamps, stamps[1:])), stamps
    assert stamps[-1] in {stamp_ns(msg.clock) for _, msg in clock}
    task, stamp, state = parse_privileged(privileged[-1][1].data)  # for policy_node's scripted expert
    assert task == "sim:reach" and stamp in {stamp_ns(msg.clock) for _, msg in clock}
    assert set(state) == {"tcp_position", "gripper_width", "goal_position"}
    assert_clean_exit(nodes)


# ---------------------------------------------------------------- command sources run as processes


def _policy(node, namespace: str, vx: str) -> None:
    """Publish a constant twist at 10 Hz until killed."""
    publisher = node.create_publisher(TwistStamped, f"{namespace}/safety_gate/policy/twist", COMMAND_QOS)
    while True:
        msg = TwistStamped()
        msg.twist.linear.x = float(vx)
        publisher.publish(msg)
        time.sleep(PERIOD)


def _fuzz(node, namespace: str) -> None:
    """For each JSON stream on stdin, publish its segments and print `done`."""
    twist = {s: node.create_publisher(TwistStamped, f"{namespace}/safety_gate/{s}/twist", COMMAND_QOS)
             for s in SOURCES}
    gripper = {s: node.create_publisher(Float64, f"{namespace}/safety_gate/{s}/gripper", COMMAND_QOS)
               for s in SOURCES}
    end = time.monotonic() + 15
    while not all(p.get_subscription_count() for p in [*twist.values(), *gripper.values()]):
        if time.monotonic() > end:
            sys.exit("fuzz: the gate's command subscriptions did not appear")
        time.sleep(0.05)
    print("ready", flush=True)
    for line in sys.stdin:
        for seg in json.loads(line):
            values = seg["values"]
            if seg["kind"] == "twist":
                msg = TwistStamped()
                (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z,
                 msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z) = values
                publisher = twist[seg["source"]]
            else:
                msg, publisher = Float64(data=values[0]), gripper[seg["source"]]
            for _ in range(seg["repeat"]):
                publisher.publish(msg)
                time.sleep(seg["dt"])
        print("done", flush=True)


if __name__ == "__main__":
    import rclpy

    role, *args = sys.argv[1:]
    rclpy.init()
    try:
        {"policy": _policy, "fuzz": _fuzz}[role](rclpy.create_node(f"test_{role}"), *args)
    finally:
        rclpy.try_shutdown()
