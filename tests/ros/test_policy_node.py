"""policy_node in its own process over Fast DDS on loopback: it acts at the control rate only while an
episode runs and an image has arrived, and sends one zero twist when the episode stops."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from drr_interfaces.msg import EpisodeEvent  # noqa: E402
from drr_ros.messages import image_msg, parameters_request, stamp  # noqa: E402
from drr_ros.wiring import COMMAND_QOS, SENSOR_QOS  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rcl_interfaces.srv import SetParametersAtomically  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float64, String  # noqa: E402

RATE = 20.0
MAX_SPEED = 0.25  # the node's default max_linear_speed


def linear(msg: TwistStamped) -> np.ndarray:
    return np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z])


def connect(nodes, probe, **params):
    twists = probe.record(TwistStamped, "safety_gate/policy/twist", COMMAND_QOS)
    grippers = probe.record(Float64, "safety_gate/policy/gripper", COMMAND_QOS)
    images = probe.publisher(Image, "camera/camera/color/image_raw", SENSOR_QOS)
    events = probe.publisher(EpisodeEvent, "episode/events", COMMAND_QOS)
    nodes.start("policy_node", control_rate=RATE, **params)
    probe.wait_for(lambda: images.get_subscription_count() and events.get_subscription_count(), 20,
                   "policy_node's image and event subscriptions")
    probe.wait_for(lambda: probe.node.count_publishers("safety_gate/policy/twist"), 10, "policy_node's twist publisher")
    return twists, grippers, images, events


def event(code: int, state: str, index: int = 1) -> EpisodeEvent:
    return EpisodeEvent(event=code, state=state, episode_index=index, episode_id=f"e{index}", task="sim:reach")


@pytest.mark.parametrize("policy", ["zero", "random"])
def test_acts_at_the_control_rate_only_while_running_with_an_image_and_stops_with_zero(nodes, probe, policy):
    twists, grippers, images, events = connect(nodes, probe, policy=policy, seed=3)
    events.publish(event(EpisodeEvent.STARTED, "running"))
    time.sleep(0.6)
    assert not twists, "acted before any image arrived"

    image = image_msg(np.zeros((48, 64, 3), np.uint8), stamp(1), "camera_color_optical_frame")
    probe.wait_for(lambda: images.publish(image) or twists, 5, "the first twist", poll_s=0.1)  # best effort: resend
    start = twists[0][0]
    time.sleep(1.6)
    window = [t for t, _ in twists if start + 0.5 <= t < start + 1.5]
    print(f"{policy}: {len(window)} twists in 1 s at control_rate {RATE:g}")
    assert 0.75 * RATE <= len(window) <= 1.25 * RATE
    moving = [linear(m) for _, m in twists]
    assert all(m.header.frame_id == "base_link" for _, m in twists)
    if policy == "zero":
        assert not np.any(moving) and all(g.data == 0.0 for _, g in grippers)
    else:
        assert np.all(np.abs(moving) <= MAX_SPEED + 1e-9) and len({tuple(v) for v in moving}) == len(moving)
        assert all(0.0 <= g.data <= 1.0 for _, g in grippers) and len(grippers) >= len(window)

    events.publish(event(EpisodeEvent.ENDED, "ending"))
    ended = time.monotonic()
    probe.wait_for(lambda: twists[-1][0] > ended and not np.any(linear(twists[-1][1])), 5, "the zero twist")
    time.sleep(0.5)
    after = [m for t, m in twists if t > ended]
    assert len(after) <= 2 and not np.any(linear(after[-1])), "kept acting after the episode ended"
    for name, (code, log) in nodes.stop_all().items():
        assert code == 0 and "Traceback" not in log, f"{name} exited {code}\n{log}"


def test_scripted_acts_on_the_mirrors_privileged_state(nodes, probe):
    from robot.policy_runtime import privileged_message

    twists, grippers, images, events = connect(nodes, probe, policy="scripted")
    privileged = probe.publisher(String, "sim_arm_node/privileged", SENSOR_QOS)
    probe.wait_for(privileged.get_subscription_count, 10, "policy_node's privileged subscription")
    events.publish(event(EpisodeEvent.STARTED, "running"))
    images.publish(image_msg(np.zeros((48, 64, 3), np.uint8), stamp(1), "camera_color_optical_frame"))
    time.sleep(0.5)
    assert not twists, "acted without privileged state"
    state = {"tcp_position": [0.5, 0.0, 0.25], "gripper_width": [0.08], "goal_position": [0.5, 0.2, 0.25]}
    image = image_msg(np.zeros((48, 64, 3), np.uint8), stamp(1), "camera_color_optical_frame")

    def publish_inputs():  # best effort: until they get through
        images.publish(image)
        privileged.publish(String(data=privileged_message("sim:reach", 1, state)))
        return twists

    probe.wait_for(publish_inputs, 5, "a twist from the scripted expert", poll_s=0.1)
    # The reach expert heads for the goal (+y here) at its gain, saturated at the speed limit, gripper open.
    assert linear(twists[-1][1]) == pytest.approx([0.0, MAX_SPEED, 0.0]) and grippers[-1][1].data == 0.0
    for name, (code, log) in nodes.stop_all().items():
        assert code == 0 and "Traceback" not in log, f"{name} exited {code}\n{log}"


def test_an_actor_without_weights_waits_and_unloadable_weights_are_refused(nodes, probe, tmp_path):
    twists, _, images, events = connect(nodes, probe, policy="actor")
    weights = probe.publisher(String, "policy_node/weights", COMMAND_QOS)
    probe.wait_for(weights.get_subscription_count, 10, "policy_node's weights subscription")
    events.publish(event(EpisodeEvent.STARTED, "running"))
    images.publish(image_msg(np.zeros((48, 64, 3), np.uint8), stamp(1), "camera_color_optical_frame"))
    weights.publish(String(data=json.dumps({"path": str(tmp_path / "actor.ckpt"), "version": 1})))
    probe.wait_for(lambda: "kept weights version -1" in nodes.log("policy_node"), 10, "the refused weights' log")
    assert "actor.ckpt not found" in nodes.log("policy_node")
    weights.publish(String(data="not json"))
    probe.wait_for(lambda: "weights message is not JSON" in nodes.log("policy_node"), 10, "the bad message's log")
    time.sleep(0.3)
    assert not twists
    for name, (code, log) in nodes.stop_all().items():
        assert code == 0 and "Traceback" not in log, f"{name} exited {code}\n{log}"


def set_policy(probe, **values):
    return probe.call(SetParametersAtomically, "policy_node/set_parameters_atomically",
                      parameters_request(**values)).result


def test_the_policy_changes_between_episodes_and_never_during_one(nodes, probe, tmp_path):
    twists, _, images, events = connect(nodes, probe, policy="zero", seed=3, actor=str(tmp_path / "actor.ckpt"))
    image = image_msg(np.zeros((48, 64, 3), np.uint8), stamp(1), "camera_color_optical_frame")
    events.publish(event(EpisodeEvent.STARTED, "running", index=1))
    probe.wait_for(lambda: images.publish(image) or twists, 5, "the zero policy's first twist", poll_s=0.1)

    refused = set_policy(probe, policy="random")
    assert not refused.successful and "policy stays zero while episode 1 runs" in refused.reason
    events.publish(event(EpisodeEvent.ENDED, "ending", index=1))
    probe.wait_for(lambda: "episode 1 stopped" in nodes.log("policy_node"), 5, "the end of episode 1")
    for values, reason in (({"policy": "greedy"}, "parameter policy = 'greedy' is invalid: expected one of zero"),
                           ({"policy": "actor"}, "policy stays zero: actor = ")):  # its checkpoint is missing
        refused = set_policy(probe, **values)
        assert not refused.successful and reason in refused.reason, refused.reason
    assert set_policy(probe, policy="random").successful

    acted = len(twists)
    events.publish(event(EpisodeEvent.STARTED, "running", index=2))
    probe.wait_for(lambda: images.publish(image) or len(twists) > acted + 5, 5, "the random policy's twists",
                   poll_s=0.1)
    assert np.any([linear(m) for _, m in twists[acted + 1:]]), "still the zero policy after the change"
    assert all(not np.any(linear(m)) for _, m in twists[:acted])
    for name, (code, log) in nodes.stop_all().items():
        assert code == 0 and "Traceback" not in log, f"{name} exited {code}\n{log}"


@pytest.mark.parametrize("params, message", [
    ({"policy": "greedy"}, "parameter policy = 'greedy' is invalid: expected one of zero, random, scripted, actor"),
    ({"policy": "actor", "actor": "/nonexistent/actor.ckpt"},
     "parameter actor = '/nonexistent/actor.ckpt': actor checkpoint /nonexistent/actor.ckpt not found"),
    ({"control_rate": 0.0}, "parameter control_rate = 0.0 is invalid: expected a number > 0"),
    ({"crop": "middle"}, "parameter crop = 'middle' is invalid"),
])
def test_bad_parameters_exit_non_zero_with_a_clear_message_and_no_traceback(refused_start, params, message):
    refused_start("policy_node", params, message)
