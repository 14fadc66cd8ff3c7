"""policy_node: a policy drives the arm through the safety gate, at the control rate, while an episode runs.

Each control period (a timer on the node clock) it runs robot.policy_runtime.PolicyRunner on the latest
camera image (checked, cropped and resized to image_size) and, as the policy needs them, the latest
joint state + end-effector pose (proprio) and privileged state, and publishes the command as the gate's
policy source. It publishes nothing while no episode is running (it follows episode/events) or while
an input has not arrived, and one zero twist when a running episode stops (ENDED, ABORTED); on
shutdown the gate's watchdog zeroes the arm.

Policies (parameter `policy`):
  zero      holds still, gripper open
  random    uniform actions, seeded with seed + the episode's index
  scripted  the mirror's scripted expert (sim.experts) of the task in the privileged state. The expert
            needs privileged state (goal, object poses) that only the mirror has: sim_arm_node publishes
            it as std_msgs/String JSON on sim_arm_node/privileged (robot.policy_runtime.privileged_message:
            the env's info["privileged"] with the task id and the sim stamp). No privileged state, no action.
  actor     a trained actor (robot.policy_runtime.load_actor -> models.rl.load_actor(path)): `actor`
            names the first checkpoint ('' = wait for one on ~/weights). A missing file or loader ends
            the node at start-up with the reason; a bad one on ~/weights is logged and skipped.
            exploration_std > 0 adds seeded Gaussian noise to its actions (fine-tuning, launch/finetune).
New weights arrive on ~/weights as JSON {"path": ..., "version": N}: loaded on their own thread, and
swapped in at the start of the next step (never mid-step); a version no newer than the current is ignored.
The policy itself may change between episodes (`ros2 param set /policy_node policy random`, e.g. to
score several policies in one bring-up): refused while an episode runs, and switching to `actor`
is refused if its checkpoint does not load; the new policy acts from the next episode on.

Subscribes:
  camera/camera/color/image_raw   sensor_msgs/Image (sensor QoS)
  joint_states, ee_pose           sensor_msgs/JointState, geometry_msgs/PoseStamped (sensor QoS; actor)
  sim_arm_node/privileged         std_msgs/String JSON (sensor QoS; scripted)
  episode/events                  drr_interfaces/EpisodeEvent (reliable)
  ~/weights                       std_msgs/String JSON {"path", "version"} (reliable; actor)
Publishes (reliable):
  safety_gate/policy/twist        geometry_msgs/TwistStamped in the calibration's base frame
  safety_gate/policy/gripper      std_msgs/Float64, 0 open .. 1 closed
  /diagnostics                    step rate and latency, state, idle reason, weights version
Parameters: policy (zero | random | scripted | actor), control_rate, seed, actor, exploration_std,
  max_linear_speed (m/s of a full action), crop, image_size, calibration (base frame), finger_joints.
"""

from __future__ import annotations

import time

from drr_interfaces.msg import EpisodeEvent
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String

from calibration import default_calibration_path
from drr_ros import messages
from drr_ros.wiring import (
    COMMAND_QOS,
    ERROR,
    OK,
    SENSOR_QOS,
    WARN,
    ConfigError,
    Diagnostics,
    Param,
    calibration_of,
    crop_of,
    declare,
    main_of,
    on_change,
)
from robot.cameras import ImageError, check_image
from robot.cameras.crop import CROP_HELP, crop_and_resize
from robot.episode_follower import EpisodeFollower
from robot.policy_runtime import (
    POLICY_KINDS,
    ActorLoadError,
    PolicyRunner,
    Weights,
    WeightSwap,
    load_actor,
    make_policy,
    parse_privileged,
    parse_weights_message,
    proprio_vector,
)
from robot.types import ArmCommand

IMAGE_TOPIC, EVENTS_TOPIC, PRIVILEGED_TOPIC = ("camera/camera/color/image_raw", "episode/events",
                                               "sim_arm_node/privileged")
TWIST_TOPIC, GRIPPER_TOPIC = "safety_gate/policy/twist", "safety_gate/policy/gripper"
NEEDS = {"scripted": ("privileged",), "actor": ("proprio",)}

PARAMS = (
    Param("policy", "zero", "what acts; may change between episodes", choices=POLICY_KINDS, runtime=True),
    Param("control_rate", 10.0, "Hz of commands (node clock)", gt=0.0, le=1000.0),
    Param("seed", 0, "random: seed + episode index seeds each episode", ge=0, le=2**31 - 1),
    Param("actor", "", "actor: the first checkpoint ('' = wait for ~/weights)"),
    Param("exploration_std", 0.0, "actor: std of the Gaussian noise on each normalised action (0: the mean action)",
          ge=0.0, le=1.0),
    Param("max_linear_speed", 0.25, "m/s of a full action (the mirror env's scale)", gt=0.0, le=2.0),
    Param("crop", "center", f"policy input crop: {CROP_HELP}"),
    Param("image_size", 64, "pixels (square) of the policy's image input", gt=0, le=1024),
    Param("calibration", str(default_calibration_path()), "cell calibration YAML: the base frame"),
    Param("finger_joints", "finger_left,finger_right", "joint_states names of the gripper fingers"),
)


class PolicyNode(Node):
    NAME = "policy_node"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        p = declare(self, PARAMS)
        self.crop = crop_of(p.crop)
        self.base_frame = calibration_of(p.calibration).base_frame
        self.p = p
        self.follower = EpisodeFollower()
        self.fingers = tuple(n.strip() for n in p.finger_joints.split(",") if n.strip())
        self._image = self._joints = self._ee = self._privileged = None
        self._task = ""
        self._rejected = self._failed = self._failed_reported = self._bad_weights = 0
        self._subscribed: set[str] = set()  # inputs subscribed so far, by need
        self.weights: WeightSwap | None = None  # made when an actor is first asked for

        self._twist_out = self.create_publisher(TwistStamped, TWIST_TOPIC, COMMAND_QOS)
        self._gripper_out = self.create_publisher(Float64, GRIPPER_TOPIC, COMMAND_QOS)
        self.create_subscription(Image, IMAGE_TOPIC, self._on_image, SENSOR_QOS)
        self.create_subscription(EpisodeEvent, EVENTS_TOPIC, self._on_event, COMMAND_QOS)
        try:
            self.runner = self._runner_for(p.policy)
        except ActorLoadError as error:
            raise ConfigError(f"parameter actor = {p.actor!r}: {error}") from None
        on_change(self, PARAMS, self._on_parameters)
        self.diagnostics = Diagnostics(self, None, self._health)
        self.create_timer(1.0 / p.control_rate, self._step)
        self.get_logger().info(f"policy {p.policy} at {p.control_rate:g} Hz -> {TWIST_TOPIC}, {GRIPPER_TOPIC}; "
                               "acting while an episode runs")

    def _runner_for(self, kind: str) -> PolicyRunner:
        """A runner of this kind of policy, its inputs subscribed; ActorLoadError if an actor's first
        checkpoint (parameter actor) does not load."""
        if kind == "actor" and self.weights is None:
            first = load_actor(self.p.actor) if self.p.actor else None
            self.weights = WeightSwap()
            if first is not None:
                self.weights.offer(Weights(0, self.p.actor, first))
            # Its own group: loading a checkpoint must not stall the control loop.
            self.create_subscription(String, "~/weights", self._on_weights, COMMAND_QOS,
                                     callback_group=MutuallyExclusiveCallbackGroup())
        needs = NEEDS.get(kind, ())
        if "proprio" in needs and "proprio" not in self._subscribed:
            self.create_subscription(JointState, "joint_states", lambda m: setattr(self, "_joints", m), SENSOR_QOS)
            self.create_subscription(PoseStamped, "ee_pose", lambda m: setattr(self, "_ee", m), SENSOR_QOS)
        if "privileged" in needs and "privileged" not in self._subscribed:
            self.create_subscription(String, PRIVILEGED_TOPIC, self._on_privileged, SENSOR_QOS)
        self._subscribed.update(needs)
        policy = make_policy(kind, seed=self.p.seed, max_linear_speed=self.p.max_linear_speed,
                             exploration_std=self.p.exploration_std)
        return PolicyRunner(policy, self.p.max_linear_speed, needs=needs,
                            weights=self.weights if kind == "actor" else None, seed=self.p.seed)

    def _on_parameters(self, values: dict) -> str | None:
        """A new policy, between episodes only (the parameter service and the control loop share the
        node's default callback group: a switch never lands mid-step)."""
        kind = values["policy"]
        if self.follower.running:
            return (f"policy stays {self.p.policy} while episode {self.follower.episode} runs: change it "
                    "between episodes")
        try:
            runner = self._runner_for(kind)
        except ActorLoadError as error:
            return f"policy stays {self.p.policy}: actor = {self.p.actor!r}: {error}"
        self.runner, self.p.policy = runner, kind
        self.get_logger().info(f"policy {kind} from the next episode")
        return None

    # ------------------------------------------------------------ inputs

    def _on_image(self, msg: Image) -> None:
        try:
            rgb = check_image(msg)
            self._image = crop_and_resize(rgb, self.crop, (self.p.image_size, self.p.image_size))
        except (ImageError, ValueError) as error:
            self._rejected += 1
            self.get_logger().error(f"dropped a camera frame: {error}", throttle_duration_sec=1.0)

    def _on_privileged(self, msg: String) -> None:
        try:
            self._task, _, self._privileged = parse_privileged(msg.data)
        except ValueError as error:
            self.get_logger().error(f"ignored {PRIVILEGED_TOPIC}: {error}", throttle_duration_sec=1.0)

    def _on_event(self, msg: EpisodeEvent) -> None:
        change = messages.follow_event(self.follower, msg, self.get_logger())
        if change is None:
            return
        if change.started:
            self.runner.start(self.follower.episode)
            self.get_logger().info(f"episode {msg.episode_index} started: acting")
        elif change.stopped:
            self._publish(self.runner.stop(), gripper=False)
            self.get_logger().info(f"episode {msg.episode_index} stopped ({msg.reason}): zero twist sent")

    def _on_weights(self, msg: String) -> None:
        try:
            path, version = parse_weights_message(msg.data)
            if not self.weights.wants(version):
                self.get_logger().info(f"ignored weights version {version}: not newer than {self.weights.version}")
                return
            actor = load_actor(path)
        except (ValueError, ActorLoadError) as error:
            self._bad_weights += 1
            self.get_logger().error(f"kept weights version {self.weights.version}: {error}")
            return
        if self.weights.offer(Weights(version, path, actor)):
            self.get_logger().info(f"weights version {version} ({path}) loaded: in use from the next step")

    def _proprio(self):
        if self._joints is None or self._ee is None:
            return None
        joints = self._joints
        return proprio_vector(joints.name, joints.position, joints.velocity, messages.pose_of(self._ee)[0],
                              self.fingers)

    # ------------------------------------------------------------ control loop

    def _step(self) -> None:
        start = time.perf_counter()
        try:
            proprio = self._proprio() if "proprio" in self.runner.needs else None
            command = self.runner.step(self._image, proprio, self._privileged, self._task)
        except Exception as error:  # noqa: BLE001 - a failing policy stops the arm, not the node
            self._failed += 1
            self.get_logger().error(f"policy {self.p.policy} failed: {type(error).__name__}: {error}; "
                                    "sending a zero twist", throttle_duration_sec=1.0)
            command = ArmCommand.zero() if self.runner.running else None
            self._publish(command, gripper=False)
            return
        if command is not None:
            self._publish(command)
            self.diagnostics.tick(time.perf_counter() - start)

    def _publish(self, command: ArmCommand | None, gripper: bool = True) -> None:
        if command is None:
            return
        self._twist_out.publish(messages.twist_msg(command, self.get_clock().now().to_msg(), self.base_frame))
        if gripper:
            self._gripper_out.publish(messages.gripper_msg(command.gripper))

    def _health(self) -> tuple[bytes, str, dict]:
        values = {"policy": self.p.policy, "episode": self.follower.episode, "state": self.follower.state,
                  "steps": self.runner.steps, "weights_version": self.runner.version,
                  "rejected_frames": self._rejected, "policy_failures": self._failed,
                  "rejected_weights": self._bad_weights}
        new_failures, self._failed_reported = self._failed - self._failed_reported, self._failed
        if new_failures:
            return ERROR, f"the policy failed {new_failures} time(s) since the last report: zero twists sent", values
        reason = self.runner.idle_reason
        if reason and self.follower.running:
            return WARN, f"idle while the episode runs: {reason}", values
        return OK, f"idle: {reason}" if reason else "acting", values


main = main_of(PolicyNode, executor=lambda: MultiThreadedExecutor(num_threads=2))

if __name__ == "__main__":
    main()
