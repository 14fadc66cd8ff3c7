"""episode_node: the episode state machine (robot.episodes.EpisodeRunner) on the ROS graph.

    idle --~/start--> running --~/stop | time limit--> ending --ending_s--> resetting --reset ok--> idle
                      running --~/mark_success--> running          resetting --reset failed | timeout--> idle (ABORTED)
    any state --e-stop latched at the gate--> idle (ABORTED); no start until the gate clears it

Entering resetting it calls the reset node's ~/reset asynchronously (the executor keeps
spinning: timeouts, services and the e-stop are served while the cell resets); an answer that
comes after the reset timeout or an e-stop is ignored. With auto_start a successful reset starts
the next episode, until num_episodes have run.

Subscribes:  safety_gate/status   drr_interfaces/SafetyStatus (transient local)
Publishes:   episode/events       drr_interfaces/EpisodeEvent, one per transition (reliable, transient
                                  local, depth 10: a late joiner gets the latest events)
             /diagnostics         state, episode, e-stop, last reset
Services:    ~/start, ~/stop, ~/mark_success   std_srvs/Trigger (success=false with the reason if refused)
Calls:       reset_node/reset     std_srvs/Trigger (parameter reset_service; "" skips the reset)
Parameters:  task and episode_time_limit_s (both may change while the cell is idle, for the next
             episode), ending_s, reset_timeout_s, auto_start, num_episodes, require_safety_status,
             reset_service, tick_rate.
Time (timeouts, stamps) is the node's clock: sim time with use_sim_time.
"""

from __future__ import annotations

import dataclasses
import time

from drr_interfaces.msg import EpisodeEvent, SafetyStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from drr_ros.wiring import ERROR, LATCHED_QOS, OK, WARN, Diagnostics, Param, declare, main_of, on_change
from robot.episodes import EpisodeEventRecord, EpisodeStateMachine, EpisodeTimeouts, InvalidTransition
from robot.episodes.runner import EpisodeRunner

# Late joiners (policy, reward, monitor) get the last few transitions, not only the last one.
EVENTS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
_DEFAULTS = EpisodeTimeouts()
PARAMS = (
    Param("task", "sim:reach", "task id of the episodes, e.g. sim:reach (metadata for recorder, policy and "
          "reward); may change while idle", nonblank=True, runtime=True),
    Param("episode_time_limit_s", _DEFAULTS.episode_s, "s an episode runs before it ends by itself; may change "
          "while idle", gt=0.0, le=86400.0, runtime=True),
    Param("ending_s", _DEFAULTS.ending_s, "s between ENDED and the reset (recorder closes, arm stops)",
          gt=0.0, le=60.0),
    Param("reset_timeout_s", _DEFAULTS.reset_s, "s the reset may take before the episode is ABORTED",
          gt=0.0, le=3600.0),
    Param("auto_start", False, "start the next episode as soon as a reset is done"),
    Param("num_episodes", 0, "episodes to run to their end (e-stopped ones do not count); 0: no limit", ge=0),
    Param("require_safety_status", True, "refuse ~/start until the safety gate has published its status"),
    Param("reset_service", "reset_node/reset", "std_srvs/Trigger that resets the cell; empty: no reset"),
    Param("tick_rate", 20.0, "Hz at which timeouts are checked", gt=0.0, le=1000.0),
)


class EpisodeNode(Node):
    NAME = "episode_node"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        p = declare(self, PARAMS)
        timeouts = EpisodeTimeouts(p.episode_time_limit_s, p.ending_s, p.reset_timeout_s)
        machine = EpisodeStateMachine(timeouts, clock=lambda: self.get_clock().now().nanoseconds * 1e-9)
        self.runner = EpisodeRunner(machine, p.task, auto_start=p.auto_start, num_episodes=p.num_episodes,
                                    require_safety_status=p.require_safety_status)
        self._events = self.create_publisher(EpisodeEvent, "episode/events", EVENTS_QOS)
        self.create_subscription(SafetyStatus, "safety_gate/status", self._on_status, LATCHED_QOS)
        self._reset = self.create_client(Trigger, p.reset_service) if p.reset_service else None
        for name, action in (("start", self.runner.start), ("stop", self.runner.stop),
                             ("mark_success", self.runner.mark_success)):
            self.create_service(Trigger, f"~/{name}", lambda request, response, act=action: self._serve(act, response))
        self.diagnostics = Diagnostics(self, p.tick_rate, self._health)
        self.create_timer(1.0 / p.tick_rate, self._tick)
        on_change(self, PARAMS, self._on_parameters)
        self.get_logger().info(f"task {p.task}: episodes of {p.episode_time_limit_s:g} s, reset by "
                               f"{self._reset.srv_name if self._reset else 'nobody (reset_service empty)'}"
                               f"{', auto-start' if p.auto_start else ''}"
                               f"{f', {p.num_episodes} episodes' if p.num_episodes else ''}")

    def _on_parameters(self, values: dict) -> str | None:
        """The next episodes' task or time limit, while idle: a running episode, or a cell ending or
        resetting one, keeps what it started with."""
        machine = self.runner.machine
        if machine.state != "idle":
            return f"the task and time limit change while idle; episode_node is {machine.state}"
        self.runner.task = values.get("task", self.runner.task)
        if "episode_time_limit_s" in values:
            machine.timeouts = dataclasses.replace(machine.timeouts, episode_s=values["episode_time_limit_s"])
        self.get_logger().info(f"next episodes: task {self.runner.task}, {machine.timeouts.episode_s:g} s")
        return None

    def _serve(self, action, response: Trigger.Response) -> Trigger.Response:
        try:
            records = action()
        except InvalidTransition as refusal:
            response.success, response.message = False, str(refusal)
            return response
        self._publish(records)
        response.success, response.message = True, _describe(records[-1])
        return response

    def _tick(self) -> None:
        start = time.perf_counter()
        self._publish(self.runner.tick())
        token = self.runner.take_reset_request()
        if token is not None:
            self._call_reset(token)
        self.diagnostics.tick(time.perf_counter() - start)

    def _call_reset(self, token: int) -> None:
        if self._reset is None:
            self._publish(self.runner.reset_finished(token, True, "no reset service configured"))
        elif not self._reset.service_is_ready():
            self._publish(self.runner.reset_finished(token, False, f"no {self._reset.srv_name} service"))
        else:
            future = self._reset.call_async(Trigger.Request())
            future.add_done_callback(lambda done: self._on_reset(token, done))

    def _on_reset(self, token: int, future) -> None:
        try:
            result = future.result()
            success, message = result.success, result.message
        except Exception as error:  # noqa: BLE001 - a failed call is a failed reset
            success, message = False, f"{type(error).__name__}: {error}"
        if success:  # one severity per logging call site: rclpy refuses to change it
            self.get_logger().info(f"reset done: {message}")
        else:
            self.get_logger().error(f"reset failed: {message}")
        self._publish(self.runner.reset_finished(token, success, message))

    def _on_status(self, msg: SafetyStatus) -> None:
        was_latched = self.runner.machine.e_stop_latched
        self._publish(self.runner.safety(msg.estop_latched, msg.message))
        if was_latched and not msg.estop_latched:
            self.get_logger().info("e-stop cleared at the gate: episodes may start again")

    def _publish(self, records: list[EpisodeEventRecord]) -> None:
        for record in records:
            msg = EpisodeEvent(**record.message_fields())
            msg.header.stamp = self.get_clock().now().to_msg()
            self._events.publish(msg)
            if record.event == "ABORTED":
                self.get_logger().warning(_describe(record))
            else:
                self.get_logger().info(_describe(record))

    def _health(self) -> tuple[bytes, str, dict]:
        machine = self.runner.machine
        values = {"state": machine.state, "episode_index": machine.episode_index, "episode_id": machine.episode_id,
                  "e_stop_latched": machine.e_stop_latched, "last_reset": self.runner.last_reset or "none"}
        if machine.e_stop_latched:
            return ERROR, f"e-stop latched: {self.runner.estop_message or 'e_stop'}", values
        if not self.runner.safety_seen and self.runner.require_safety_status:
            return WARN, "no SafetyStatus from the safety gate: starts are refused", values
        return OK, f"{machine.state} (episode {machine.episode_index})", values


def _describe(record: EpisodeEventRecord) -> str:
    return (f"{record.event} episode {record.episode_index} {record.episode_id} ({record.task}): "
            f"{record.reason}, now {record.state}{', successful' if record.success else ''}")


main = main_of(EpisodeNode)

if __name__ == "__main__":
    main()
