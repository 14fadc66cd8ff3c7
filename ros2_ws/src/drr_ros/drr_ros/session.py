"""Drive a running graph from a script: start its episodes, follow their events, set node
parameters between episodes, collect the rewards the reward node publishes. The main job
(robot/demo.py) records demonstrations and scores episodes through the graph with it; a researcher
can do the same from a notebook.

    with GraphSession() as session:                 # rclpy context + a node of its own
        experts = session.run_episodes(3, timeout_s=120, check=nodes.check)
        session.set_parameters("policy_node", policy="random")   # between episodes (wait_idle for the task)
        randoms = session.run_episodes(3, timeout_s=120, check=nodes.check)

run_episodes presses episode_node's start for each episode (as an operator would) and follows it
to its end; the graph resets the cell in between. For a graph whose episode_node runs them itself
(auto_start), press `start` once and follow `events`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import rclpy
from drr_interfaces.msg import EpisodeEvent, Reward
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger

from drr_ros.episode_node import EVENTS_QOS
from drr_ros.messages import parameters_request
from drr_ros.wiring import COMMAND_QOS

FINISHED = (EpisodeEvent.ENDED, EpisodeEvent.ABORTED)
REWARD_CATCH_UP_S = 60.0  # after the last episode ends, for the reward node to score the frames it holds


@dataclass
class EpisodeResult:
    episode_id: str
    success: bool
    reason: str
    ended: bool  # False: ABORTED
    rewards: list[Reward] = field(default_factory=list)  # in scoring order


class GraphSession(Node):
    NAME = "drr_session"

    def __init__(self, reward_topic: str | None = "reward_node/reward") -> None:
        super().__init__(self.NAME)
        self.scoring = bool(reward_topic)
        self.events: list[EpisodeEvent] = []
        self.rewards: list[Reward] = []
        self.create_subscription(EpisodeEvent, "episode/events", self.events.append, EVENTS_QOS)
        if reward_topic:
            self.create_subscription(Reward, reward_topic, self.rewards.append, COMMAND_QOS)
        self._start = self.create_client(Trigger, "episode_node/start")
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self)

    def __enter__(self) -> GraphSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self._executor.shutdown()
        self.destroy_node()

    def spin_for(self, seconds: float, check: Callable[[], None] = lambda: None) -> None:
        self._spin_until(lambda: False, time.monotonic() + seconds, check)

    def wait_ready(self, nodes: list[str], services: dict[str, type], timeout_s: float,
                   check: Callable[[], None] = lambda: None, settle_s: float = 1.0) -> None:
        """Until every node is on the graph and every service is offered (a node that loads a
        model offers its services after loading), then settle_s more for subscriptions to match:
        nodes that follow episode events must not miss the first STARTED."""
        clients = [self.create_client(service_type, name) for name, service_type in services.items()]
        deadline = time.monotonic() + timeout_s
        while True:
            present = {name for name, _ in self.get_node_names_and_namespaces()}
            missing = [n for n in nodes if n not in present] + [c.srv_name for c in clients if not c.service_is_ready()]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the graph was not up after {timeout_s:g} s: waiting for {missing}")
            self.spin_for(0.2, check)
        for client in clients:
            self.destroy_client(client)
        self.spin_for(settle_s, check)

    def start(self, timeout_s: float, check: Callable[[], None] = lambda: None) -> None:
        """Press episode_node's start, again after each event while it refuses (the gate's status
        not seen yet, the cell still resetting)."""
        deadline, answer = time.monotonic() + timeout_s, "no answer"
        while time.monotonic() < deadline:
            if self._start.service_is_ready():
                seen = len(self.events)
                future = self._start.call_async(Trigger.Request())
                self._spin_until(future.done, deadline, check)
                if future.done() and future.result().success:
                    return
                answer = future.result().message if future.done() else "no answer"
                retry = min(deadline, time.monotonic() + 0.5)
                self._spin_until(lambda seen=seen: len(self.events) > seen, retry, check)
            else:
                self.spin_for(0.1, check)
        raise TimeoutError(f"episode_node/start did not start an episode in {timeout_s:g} s: {answer}")

    def run_episodes(self, count: int, timeout_s: float, check: Callable[[], None] = lambda: None,
                     start_timeout_s: float = 60.0) -> list[EpisodeResult]:
        """Start `count` episodes one after another, each once the cell is ready, and follow each to
        its end (ENDED or ABORTED); with a reward topic, wait until their frames are scored."""
        first_event = len(self.events)
        deadline = time.monotonic() + timeout_s
        for number in range(1, count + 1):
            self.start(start_timeout_s, check)
            self._spin_until(lambda number=number: len(self._finished(first_event)) >= number, deadline, check)
            if len(self._finished(first_event)) < number:
                raise TimeoutError(f"{number - 1} of {count} episodes finished in {timeout_s:g} s; events: "
                                   f"{[e.event for e in self.events[first_event:]]}")
        finished = self._finished(first_event)[:count]
        if self.scoring:
            self._wait_for_rewards_up_to(_ns(finished[-1].header.stamp), REWARD_CATCH_UP_S, check)
        started = {e.episode_id: _ns(e.header.stamp) for e in self.events[first_event:]
                   if e.event == EpisodeEvent.STARTED}
        # The reward node scores every frame, also while the cell resets: an episode's rewards are
        # those of the frames stamped between its STARTED and its end (both on the graph's clock).
        return [EpisodeResult(e.episode_id, e.success, e.reason, e.event == EpisodeEvent.ENDED,
                              [r for r in self.rewards if started.get(e.episode_id, 0) <= _ns(r.header.stamp)
                               <= _ns(e.header.stamp)])
                for e in finished]

    def wait_idle(self, timeout_s: float, check: Callable[[], None] = lambda: None) -> None:
        """Until episode_node is idle (the last episode's reset done), e.g. before changing its task."""
        def idle() -> bool:
            return not self.events or self.events[-1].state == "idle"

        self._spin_until(idle, time.monotonic() + timeout_s, check)
        if not idle():
            raise TimeoutError(f"episode_node not idle after {timeout_s:g} s: {self.events[-1].state}")

    def set_parameters(self, node: str, timeout_s: float = 10.0, **values) -> None:
        """Set parameters of a running node together (its ~/set_parameters_atomically, as `ros2 param
        set`); RuntimeError with the node's reason if it refuses, TimeoutError if it does not answer."""
        client = self.create_client(SetParametersAtomically, f"{node}/set_parameters_atomically")
        try:
            deadline = time.monotonic() + timeout_s
            self._spin_until(client.service_is_ready, deadline)
            future = client.call_async(parameters_request(**values)) if client.service_is_ready() else None
            if future is not None:
                self._spin_until(future.done, deadline)
            if future is None or not future.done():
                raise TimeoutError(f"{node} did not answer setting {values} within {timeout_s:g} s")
            result = future.result().result
            if not result.successful:
                raise RuntimeError(f"{node} refused {values}: {result.reason}")
        finally:
            self.destroy_client(client)

    def _spin_until(self, condition: Callable[[], bool], deadline: float,
                    check: Callable[[], None] = lambda: None) -> None:
        while not condition() and time.monotonic() < deadline:
            self._executor.spin_once(timeout_sec=0.02)
            check()

    def _wait_for_rewards_up_to(self, stamp_ns: int, timeout_s: float, check: Callable[[], None]) -> None:
        """Until a reward of a frame stamped after stamp_ns arrives: the reward node scores in
        order, so every frame before it was scored (or dropped) by then. A node that falls behind
        holds frames for seconds; the episode's rewards are not complete before."""
        deadline = time.monotonic() + timeout_s
        while not any(_ns(r.header.stamp) > stamp_ns for r in self.rewards):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reward of a frame after the last episode's end in {timeout_s:g} s "
                                   f"({len(self.rewards)} rewards so far): is reward_node scoring?")
            self.spin_for(0.2, check)

    def _finished(self, first_event: int) -> list[EpisodeEvent]:
        return [e for e in self.events[first_event:] if e.event in FINISHED and e.episode_id]


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def ros_context() -> None:
    """rclpy.init once per process (the main job brings several graphs up in turn)."""
    if not rclpy.ok():
        rclpy.init(args=[])
