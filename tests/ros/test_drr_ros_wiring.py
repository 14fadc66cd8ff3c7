"""drr_ros without processes: parameter checks, message conversions, the package's metadata."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from drr_ros import messages  # noqa: E402
from drr_ros.wiring import ConfigError, Param  # noqa: E402

from robot.types import ArmCommand, RobotState  # noqa: E402

PACKAGE = Path(__file__).parents[2] / "ros2_ws" / "src" / "drr_ros"


@pytest.mark.parametrize("param, value, expected", [
    (Param("speed", 0.25, "m/s", gt=0.0, le=2.0), 1, 1.0),  # `-p speed:=1` is a number, not a type error
    (Param("rate", 10, "Hz", ge=1), 3, 3),
    (Param("task", "sim:reach", "task", choices=("sim:reach", "sim:push")), "sim:push", "sim:push"),
    (Param("home", [0.5, 0.0, 0.25], "m", length=3), [1, 2, 3.5], [1.0, 2.0, 3.5]),
    (Param("confirm", False, "wait"), True, True),
])
def test_param_accepts_and_coerces(param, value, expected):
    checked = param.check(value)
    assert checked == expected and type(checked) is type(expected)


@pytest.mark.parametrize("param, value, accepted", [
    (Param("speed", 0.25, "m/s", gt=0.0, le=2.0), -1.0, "a number > 0 and <= 2 (m/s)"),
    (Param("speed", 0.25, "m/s", gt=0.0), math.nan, "a number > 0"),
    (Param("speed", 0.25, "m/s", gt=0.0), math.inf, "a number > 0"),
    (Param("speed", 0.25, "m/s", gt=0.0), "fast", "a number > 0"),
    (Param("speed", 0.25, "m/s", gt=0.0), True, "a number > 0"),
    (Param("rate", 10, "Hz", ge=1), 2.5, "an integer >= 1"),
    (Param("task", "sim:reach", "task", choices=("sim:reach", "sim:push")), "sim:fly", "one of sim:reach, sim:push"),
    (Param("home", [0.5, 0.0, 0.25], "m", length=3), [0.5, 0.0], "a list of 3 finite numbers"),
    (Param("home", [0.5, 0.0, 0.25], "m", length=3), [0.5, math.nan, 0.0], "a list of 3 finite numbers"),
    (Param("confirm", False, "wait"), 1, "true or false"),
    (Param("task", "sim:reach", "task id", nonblank=True), "  ", "a non-blank string (task id)"),
])
def test_param_rejects_naming_the_parameter_the_value_and_what_is_accepted(param, value, accepted):
    with pytest.raises(ConfigError) as error:
        param.check(value)
    assert str(error.value).startswith(f"parameter {param.name} = {value!r} is invalid: expected {accepted}")


def test_command_and_state_messages_round_trip():
    command = ArmCommand([0.1, -0.2, 0.05], [0.0, 0.3, -1.0], 0.7)
    twist = messages.twist_msg(command, messages.stamp(1_700_000_000_123_456_789), "base_link")
    assert messages.stamp_ns(twist.header.stamp) == 1_700_000_000_123_456_789
    back = messages.command_of(twist, 0.7)
    np.testing.assert_array_equal(back.linear, command.linear)
    np.testing.assert_array_equal(back.angular, command.angular)
    assert back.gripper == 0.7 and messages.gripper_msg(0.7).data == 0.7

    state = RobotState(("joint1", "joint2"), np.array([0.1, 0.2]), np.array([0.0, -0.1]), np.array([0.5, 0.0, 0.25]),
                       np.array([0.0, 1.0, 0.0, 0.0]), gripper_width=0.06)
    joints = messages.joint_state_msg(state, messages.stamp(5), ("finger_left", "finger_right"))
    assert list(joints.name) == ["joint1", "joint2", "finger_left", "finger_right"]
    assert list(joints.position) == pytest.approx([0.1, 0.2, 0.03, 0.03])
    pose = messages.pose_msg(state, messages.stamp(5), "base_link")
    position, orientation = messages.pose_of(pose)
    np.testing.assert_array_equal(position, state.ee_position)
    np.testing.assert_array_equal(orientation, state.ee_orientation_xyzw)
    assert pose.header.frame_id == "base_link"


def test_image_message_is_rgb8_and_round_trips():
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    msg = messages.image_msg(rgb, messages.stamp(7), "camera_color_optical_frame")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 5, 15, "rgb8")
    np.testing.assert_array_equal(messages.image_of(msg), rgb)
    with pytest.raises(ValueError, match="uint8"):
        messages.image_msg(rgb.astype(float), messages.stamp(7), "x")


def test_reset_nodes_default_home_is_the_mirrors_home():
    import mujoco
    from drr_ros.reset_node import PARAMS
    from scipy.spatial.transform import Rotation

    from sim import cell
    from sim.envs import MirrorEnv

    env = MirrorEnv("reach")
    env.data.qpos[env.arm.qpos] = env.arm.home  # the keyframe arm_home
    mujoco.mj_kinematics(env.model, env.data)
    position, rotation = cell.tcp_pose(env.data, env.arm)
    env.close()
    defaults = {p.name: p.default for p in PARAMS}
    np.testing.assert_allclose(defaults["home_position"], position, atol=1e-4)
    turn = Rotation.from_quat(defaults["home_orientation_xyzw"]).inv() * Rotation.from_matrix(rotation)
    assert turn.magnitude() < 1e-5


def test_package_metadata_is_an_ament_python_package_with_the_nodes():
    root = ElementTree.parse(PACKAGE / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "drr_ros"
    assert root.find("export/build_type").text == "ament_python"
    depends = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "std_srvs", "diagnostic_msgs",
            "rosgraph_msgs", "drr_interfaces"} <= depends
    assert (PACKAGE / "resource" / "drr_ros").is_file()
    setup = (PACKAGE / "setup.py").read_text()
    for node in ("safety_gate", "sim_arm_node", "reset_node"):
        assert f'"{node}"' in setup and (PACKAGE / "drr_ros" / f"{node}.py").is_file()
    assert "install_scripts=$base/lib/drr_ros" in (PACKAGE / "setup.cfg").read_text()  # where `ros2 run` looks
