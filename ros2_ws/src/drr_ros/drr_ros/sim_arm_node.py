"""sim_arm_node: the MuJoCo mirror of the cell (sim.envs.MirrorEnv) as a robot on the ROS graph.

It executes the safety gate's output like a real arm behind MoveIt Servo: each control period
(50 Hz: a servo rate, above the gate's and the policy's 10 Hz) it runs the latest twist + gripper
command through the mirror's Cartesian controller, in real time (`real_time_factor` 1) or
faster/slower, and publishes what the arm's drivers would.

It does not gate again: the mirror env's own SafetyGate is bypassed (MirrorEnv.execute(...,
gated=False)), so the arm does exactly what the safety_gate node sent and a fault of that node
shows on the arm, where tests measure it. What it keeps is what a real arm driver does too:
non-finite twists are dropped (and counted), a twist in another frame than the base frame is
ignored, and a twist runs for at most `command_timeout_s` of sim time, then the arm holds still
(MoveIt Servo's incoming-command timeout). The gate publishes every period, so this acts only when
the gate is late or gone; keep it at most the gate's lookahead_s, which assumes no output runs longer.

Subscribes:
  safety_gate/twist_out    geometry_msgs/TwistStamped, base frame (reliable)
  safety_gate/gripper_out  std_msgs/Float64, 0 open .. 1 closed (reliable)
Publishes (sensor QoS; stamps are sim time, which starts at the wall time the node started):
  joint_states             sensor_msgs/JointState: joint1..joint7, finger_left, finger_right
  ee_pose                  geometry_msgs/PoseStamped, the TCP in the calibration's base frame
  ~/privileged             std_msgs/String every control period: the env's info["privileged"] (TCP,
                           gripper, goal and object poses) as robot.policy_runtime.privileged_message
                           JSON, for policy_node's scripted experts (only the mirror has it)
  ~/camera/image_raw       sensor_msgs/Image at camera_rate (sim time): the calibrated camera rendered,
                           rgb8, image_width x image_height (default: the calibration's full
                           resolution), frame_id the calibration's optical frame
                           (camera.frame_id), no distortion (the intrinsics are the calibration's,
                           scaled to the image size: calibration.CameraIntrinsics.scaled).
                           Contract for camera_node's `sim` source: it republishes these images
                           under realsense2_camera's names (/camera/camera/color/image_raw) with
                           CameraInfo from the same calibration, keeping stamp and frame_id.
  /clock                   rosgraph_msgs/Clock every control period, only when real_time_factor
                           != 1 (run the other nodes with use_sim_time:=true then)
  /diagnostics             loop rate, step latency, achieved real-time factor
  calls success_service (default episode_node/mark_success) once per running episode when the task
                           succeeds: the mirror is its own success detector (on a real cell the
                           operator marks success with a teleop key)
Services:
  ~/randomize              std_srvs/Trigger: re-randomise the scene with the next seed (seed + 1,
                           + 2, ...) and put the arm at the task's start pose (home, with the env's
                           start jitter); the reset_node calls it on the mirror
Parameters: task (sim:reach | sim:push | sim:drawer-open; may change between episodes: the mirror is
  rebuilt on the new task's next scene), control_rate, camera_rate (0: no camera), image_width,
  image_height (0: calibrated), calibration, seed, real_time_factor, command_timeout_s.
"""

from __future__ import annotations

import math
import time

from drr_interfaces.msg import EpisodeEvent
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from calibration import default_calibration_path
from drr_ros import messages
from drr_ros.wiring import (
    CLOCK_QOS,
    COMMAND_QOS,
    OK,
    SENSOR_QOS,
    WARN,
    Diagnostics,
    Param,
    calibration_of,
    declare,
    invalid,
    main_of,
    on_change,
)
from robot.policy_runtime import privileged_message
from robot.types import ArmCommand
from sim import cell
from sim.controller import ControllerConfig
from sim.envs import MirrorEnv
from sim.registry import mirror_tasks

PARAMS = (
    Param("task", "sim:reach", "mirror task; may change between episodes", choices=mirror_tasks(), runtime=True),
    # Servo-like: a new twist takes effect within 20 ms, as behind MoveIt Servo. At the policy's 10 Hz a twist
    # would wait up to a whole period, running the last one meanwhile, which the gate's dead reckoning
    # (its output runs from the moment it is computed) does not expect: near a wall that overshoots.
    Param("control_rate", 50.0, "Hz the arm takes the latest twist, steps and publishes its state at; a divisor "
          "of the 100 Hz servo rate", gt=0.0, le=100.0),
    Param("camera_rate", 10.0, "Hz of sim time between rendered images; 0 turns the camera off", ge=0.0, le=100.0),
    Param("image_width", 0, "pixels; 0: the calibration's width", ge=0, le=4096),
    Param("image_height", 0, "pixels; 0: the calibration's height", ge=0, le=4096),
    Param("calibration", str(default_calibration_path()), "cell calibration YAML: camera, base frame"),
    Param("seed", 0, "seed of the first scene; each ~/randomize takes the next", ge=0, le=2**31 - 1),
    Param("real_time_factor", 1.0, "sim seconds per wall second; != 1 publishes /clock", gt=0.0, le=100.0),
    # At most the gate's lookahead_s (0.2 s): its workspace check assumes no output runs longer, which a
    # late gate (a loaded machine) would otherwise break.
    Param("command_timeout_s", 0.2, "sim s a twist is executed without a newer one; then the arm holds still",
          gt=0.0, le=10.0),
    Param("success_service", "episode_node/mark_success",
          "std_srvs/Trigger called once per running episode when the task succeeds; empty: none"),
)


class SimArmNode(Node):
    NAME = "sim_arm_node"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        p = declare(self, PARAMS)
        calibration = calibration_of(p.calibration)
        if (p.image_width == 0) != (p.image_height == 0):
            raise invalid("image_width", p.image_width, f"set both image_width and image_height, or neither "
                          f"(image_height = {p.image_height})")
        self.image_size = (p.image_height or calibration.camera.height, p.image_width or calibration.camera.width)
        self.calibration = calibration
        try:
            self.controller = ControllerConfig(control_hz=p.control_rate)
            self.env = self._mirror(p.task)
        except ValueError as error:  # a control rate that is no whole number of servo periods
            raise invalid("control_rate", p.control_rate, str(error)) from None
        self.p, self.base_frame, self.optical_frame = p, calibration.base_frame, calibration.camera.frame_id
        self.period_ns = round(self.env.controller.period_s * 1e9)
        self._scene = 0
        self.env.reset(seed=p.seed)
        self._sim_ns = self.get_clock().now().nanoseconds  # sim time starts at the wall time of start-up
        self._next_camera_ns = self._sim_ns
        self._twist: ArmCommand | None = None
        self._twist_ns = 0  # sim time it arrived
        self._gripper = 0.0  # open, as the env starts
        self._dropped = 0
        self._wall_start, self._sim_start = time.monotonic(), self._sim_ns

        self.create_subscription(TwistStamped, "safety_gate/twist_out", self._on_twist, COMMAND_QOS)
        self.create_subscription(Float64, "safety_gate/gripper_out", self._on_gripper, COMMAND_QOS)
        self._joints_out = self.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self._pose_out = self.create_publisher(PoseStamped, "ee_pose", SENSOR_QOS)
        self._image_out = self.create_publisher(Image, "~/camera/image_raw", SENSOR_QOS)
        self._privileged_out = self.create_publisher(String, "~/privileged", SENSOR_QOS)
        self._clock_out = (self.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
                           if p.real_time_factor != 1.0 else None)
        self.create_service(Trigger, "~/randomize", self._on_randomize)
        # The mirror knows when its task succeeds (a real cell's operator marks it with a teleop key).
        self._mark_success = self.create_client(Trigger, p.success_service) if p.success_service else None
        self._episode_running = self._success_marked = False
        self.create_subscription(EpisodeEvent, "episode/events", self._on_episode_event, COMMAND_QOS)
        rate = p.control_rate * p.real_time_factor
        self.diagnostics = Diagnostics(self, rate, self._health)
        # Wall-clock timer: this node makes sim time, so it must not wait for it.
        self.create_timer(1.0 / rate, self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        on_change(self, PARAMS, self._on_parameters)
        self.get_logger().info(f"{p.task} (seed {p.seed}) at {p.control_rate:g} Hz x{p.real_time_factor:g}, camera "
                               f"{self.image_size[1]}x{self.image_size[0]} at {p.camera_rate:g} Hz")

    def _mirror(self, task: str) -> MirrorEnv:
        return MirrorEnv(task.partition(":")[2], image_size=self.image_size, calibration=self.calibration,
                         angular=True, controller=self.controller)

    def _on_parameters(self, values: dict) -> str | None:
        """Another task, between episodes: the mirror rebuilt on it, at the next scene's seed. The
        timer shares the node's callback group with the parameter service: no step runs meanwhile."""
        task = values["task"]
        if self._episode_running:
            return f"task stays {self.p.task} while an episode runs: change it between episodes"
        if task != self.p.task:
            old, self.env, self.p.task = self.env, self._mirror(task), task
            old.close()
            self._next_scene()
        return None

    def destroy_node(self) -> None:
        # The GL context, while the interpreter can still release it cleanly (rclpy also destroys a
        # node whose __init__ failed, when it shuts down: then there may be no env).
        if hasattr(self, "env"):
            self.env.close()
        super().destroy_node()

    def _tick(self) -> None:
        start = time.perf_counter()
        now = messages.stamp(self._sim_ns)
        if self._clock_out is not None:
            self._clock_out.publish(ClockMsg(clock=now))
        # State first: it is the state at this sim time; the step below runs until the next tick.
        state = cell.robot_state(self.env.data, self.env.arm)
        self._joints_out.publish(messages.joint_state_msg(state, now, cell.FINGER_JOINTS))
        self._pose_out.publish(messages.pose_msg(state, now, self.base_frame))
        self._privileged_out.publish(String(data=privileged_message(self.p.task, self._sim_ns,
                                                                    self.env.privileged_state())))
        if self.p.camera_rate > 0 and self._sim_ns >= self._next_camera_ns:
            rgb = self.env.render_camera(*self.image_size)
            self._image_out.publish(messages.image_msg(rgb, now, self.optical_frame))
            self._next_camera_ns += round(1e9 / self.p.camera_rate)
        fresh = self._twist is not None and self._sim_ns - self._twist_ns < self.p.command_timeout_s * 1e9
        twist = self._twist if fresh else ArmCommand.zero()
        self.env.execute(ArmCommand(twist.linear, twist.angular, self._gripper), gated=False)
        self._report_success()
        self._sim_ns += self.period_ns
        self.diagnostics.tick(time.perf_counter() - start)

    def _on_twist(self, msg: TwistStamped) -> None:
        command = messages.command_of(msg, 0.0)
        if msg.header.frame_id not in ("", self.base_frame) or not command.is_finite():
            self._dropped += 1
            self.get_logger().error(f"dropped a twist (frame {msg.header.frame_id!r}, finite: "
                                    f"{command.is_finite()}): the arm takes finite twists in "
                                    f"{self.base_frame!r}", throttle_duration_sec=1.0)
            return
        self._twist, self._twist_ns = command, self._sim_ns

    def _on_gripper(self, msg: Float64) -> None:
        if math.isfinite(msg.data):
            self._gripper = min(max(msg.data, 0.0), 1.0)
        else:
            self._dropped += 1

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.STARTED:
            self._episode_running, self._success_marked = True, False
        elif msg.event in (EpisodeEvent.ENDED, EpisodeEvent.ABORTED):
            self._episode_running = False

    def _report_success(self) -> None:
        if self._mark_success is None or not self._episode_running or self._success_marked:
            return
        if self.env.task.success(self.env.data):
            self._success_marked = True
            if self._mark_success.service_is_ready():
                self._mark_success.call_async(Trigger.Request())
            else:
                self.get_logger().error(f"task succeeded but {self.p.success_service} is not available")

    def _on_randomize(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = True, self._next_scene()
        return response

    def _next_scene(self) -> str:
        """The task's scene at the next seed, the arm at its start pose; what happened, logged."""
        self._scene += 1
        seed = self.p.seed + self._scene
        self.env.reset(seed=seed)
        self._twist, self._gripper = None, 0.0  # the env starts with the gripper open
        message = f"scene re-randomised: {self.p.task} seed {seed}"
        self.get_logger().info(message)
        return message

    def _health(self) -> tuple[bytes, str, dict]:
        wall = time.monotonic() - self._wall_start
        achieved = (self._sim_ns - self._sim_start) * 1e-9 / max(wall, 1e-9)
        values = {"real_time_factor": f"{achieved:.2f}", "target_real_time_factor": f"{self.p.real_time_factor:g}",
                  "sim_time_s": f"{self._sim_ns * 1e-9:.3f}", "scene_seed": self.p.seed + self._scene,
                  "dropped_commands": self._dropped}
        if self._twist is None or self._sim_ns - self._twist_ns >= self.p.command_timeout_s * 1e9:
            return WARN, "no twist from safety_gate/twist_out: holding still", values
        return OK, "following safety_gate/twist_out", values


main = main_of(SimArmNode)

if __name__ == "__main__":
    main()
