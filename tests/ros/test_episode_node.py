"""episode_node in its own process over Fast DDS: its services drive the episode state machine, it calls a
reset service and follows the safety gate's status. The cell (a fake reset_node/reset and the gate's
SafetyStatus) is a process of this file, scripted over stdin: `python test_episode_node.py cell NAMESPACE`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("rclpy")

from drr_interfaces.msg import EpisodeEvent, SafetyStatus  # noqa: E402
from drr_ros.episode_node import EVENTS_QOS  # noqa: E402
from drr_ros.messages import parameters_request  # noqa: E402
from drr_ros.wiring import LATCHED_QOS  # noqa: E402
from rcl_interfaces.srv import SetParametersAtomically  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

NAMES = {EpisodeEvent.STARTED: "STARTED", EpisodeEvent.SUCCESS_MARKED: "SUCCESS_MARKED", EpisodeEvent.ENDED: "ENDED",
         EpisodeEvent.RESET_STARTED: "RESET_STARTED", EpisodeEvent.RESET_DONE: "RESET_DONE",
         EpisodeEvent.ABORTED: "ABORTED"}
TIMING = {"ending_s": 0.3, "reset_timeout_s": 1.5, "episode_time_limit_s": 60.0}


class Cell:
    """The fake cell process: `reset ok|fail|slow` sets how the next resets answer, `estop on|off` publishes
    the gate's status; it prints one JSON line per command it took and per reset call it answers."""

    def __init__(self, namespace: str) -> None:
        self.process = subprocess.Popen(["nice", sys.executable, __file__, "cell", namespace], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.calls: list[dict] = []
        self.taken: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            answer = json.loads(line)
            if "took" in answer:
                self.taken.append(answer["took"])
            else:
                self.calls.append(answer)

    def send(self, command: str) -> None:
        """Returns once the cell has taken the command."""
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        end = time.monotonic() + 20
        while command not in self.taken:
            assert time.monotonic() < end and self.process.poll() is None, f"the cell did not take {command!r}"
            time.sleep(0.01)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def cell(nodes):
    running = Cell(nodes.namespace)
    yield running
    running.stop()


def events(received: list) -> list[tuple[str, str, str]]:
    return [(NAMES[m.event], m.reason, m.state) for _, m in received]


def call(probe, service: str) -> Trigger.Response:
    return probe.call(Trigger, f"episode_node/{service}", Trigger.Request())


def wait_event(probe, received: list, name: str, count: int = 1, timeout: float = 10.0) -> None:
    probe.wait_for(lambda: sum(NAMES[m.event] == name for _, m in received) >= count, timeout,
                   f"{count} x {name} on episode/events (got {events(received)})")


def test_services_run_an_episode_reset_it_and_abort_on_a_failed_or_slow_reset(nodes, probe, cell):
    nodes.start("episode_node", task="sim:push", **TIMING)
    received = probe.record(EpisodeEvent, "episode/events", EVENTS_QOS)
    # The gate's status must have arrived before a start is accepted.
    probe.wait_for(lambda: call(probe, "start").success, 20, "the first start to be accepted")
    assert call(probe, "start").message.startswith("episode event 'start' is not accepted in state 'running'")
    assert call(probe, "mark_success").success
    assert call(probe, "stop").success
    wait_event(probe, received, "RESET_DONE")
    assert events(received) == [("STARTED", "start", "running"), ("SUCCESS_MARKED", "success", "running"),
                                ("ENDED", "operator_stop", "ending"), ("RESET_STARTED", "episode_ended", "resetting"),
                                ("RESET_DONE", "reset_done", "idle")]
    first = received[0][1]
    assert first.task == "sim:push" and first.episode_index == 1 and len(first.episode_id) == 32
    assert [m.success for _, m in received] == [False, True, True, True, True]
    assert {m.episode_id for _, m in received} == {first.episode_id}
    ended_at = next(t for t, m in received if m.event == EpisodeEvent.ENDED)
    reset_at = next(t for t, m in received if m.event == EpisodeEvent.RESET_STARTED)
    assert reset_at - ended_at >= TIMING["ending_s"] - 0.05  # the ending settles before the reset
    # The cell reports its calls on a pipe, which can trail the events over DDS on a loaded machine.
    probe.wait_for(lambda: len(cell.calls) == 1, 10, "the cell's report of the reset call")

    # While idle the next episodes' task and time limit may change, checked as at start-up; not while one runs.
    def set_parameters(**values):
        return probe.call(SetParametersAtomically, "episode_node/set_parameters_atomically",
                          parameters_request(**values)).result

    assert "parameter episode_time_limit_s = -1.0 is invalid" in set_parameters(episode_time_limit_s=-1.0).reason
    assert "parameter task = ' ' is invalid: expected a non-blank string" in set_parameters(task=" ").reason
    assert set_parameters(task="sim:reach", episode_time_limit_s=1.0).successful
    cell.send("reset fail")
    assert call(probe, "start").success
    refused = set_parameters(task="sim:push")
    assert not refused.successful and "change while idle; episode_node is running" in refused.reason
    wait_event(probe, received, "ABORTED")  # it ran to the new time limit
    assert ("ENDED", "timeout", "ending") in events(received)
    assert events(received)[-1] == ("ABORTED", "reset_failed", "idle")
    probe.wait_for(lambda: len(cell.calls) == 2, 10, "the cell's report of the failed reset call")

    cell.send("reset slow")  # answers after 3 s, past the 1.5 s reset timeout
    assert call(probe, "start").success and call(probe, "stop").success
    wait_event(probe, received, "ABORTED", count=2)
    assert events(received)[-1] == ("ABORTED", "reset_timeout", "idle")
    assert received[-1][1].episode_index == 3
    assert {m.task for _, m in received[5:]} == {"sim:reach"}
    probe.wait_for(lambda: len(cell.calls) == 3, 10, "the slow reset's late answer")
    time.sleep(0.3)
    assert len(received) == 13  # the late answer changed nothing
    assert call(probe, "start").success  # and the node still serves

    # A late joiner gets the latest events (transient local, depth 10).
    late = probe.record(EpisodeEvent, "episode/events", EVENTS_QOS)
    probe.wait_for(lambda: len(late) == 10, 10, "the last 10 events for a late subscriber")
    assert [m for _, m in late] == [m for _, m in received[-10:]]
    for name, (code, log) in nodes.stop_all().items():
        assert code == 0 and "Traceback" not in log, f"{name} exited {code}\n{log}"


def test_an_e_stop_aborts_the_episode_and_blocks_starts_until_cleared_then_auto_start_runs_the_budget(
        nodes, probe, cell):
    nodes.start("episode_node", auto_start=True, num_episodes=2, **TIMING)
    received = probe.record(EpisodeEvent, "episode/events", EVENTS_QOS)
    probe.wait_for(lambda: call(probe, "start").success, 20, "the first start to be accepted")
    cell.send("estop on")
    wait_event(probe, received, "ABORTED")
    assert events(received) == [("STARTED", "start", "running"), ("ABORTED", "e_stop", "idle")]
    refused = call(probe, "start")
    assert not refused.success and "e-stop is latched (button)" in refused.message

    cell.send("estop off")
    probe.wait_for(lambda: call(probe, "start").success, 10, "a start once the gate cleared the e-stop")
    assert call(probe, "stop").success
    wait_event(probe, received, "STARTED", count=3)  # reset done: the next episode starts by itself
    assert events(received)[-2:] == [("RESET_DONE", "reset_done", "idle"), ("STARTED", "start", "running")]
    assert received[-1][1].episode_index == 3
    assert {m.task for _, m in received[5:]} == {"sim:reach"}
    assert call(probe, "stop").success
    wait_event(probe, received, "RESET_DONE", count=2)
    time.sleep(0.3)
    assert NAMES[received[-1][1].event] == "RESET_DONE"  # the budget is spent: no auto-start
    refused = call(probe, "start")
    assert not refused.success and "all 2 episodes have run" in refused.message


# ---------------------------------------------------------------- the fake cell, run as a process


def _cell(namespace: str) -> None:
    import rclpy

    rclpy.init()
    node = rclpy.create_node("fake_cell", namespace=namespace)
    status = node.create_publisher(SafetyStatus, "safety_gate/status", LATCHED_QOS)
    behaviour = {"reset": "ok"}

    def reset(request, response):
        if behaviour["reset"] == "slow":
            time.sleep(3.0)
        response.success = behaviour["reset"] != "fail"
        response.message = f"fake reset: {behaviour['reset']}"
        print(json.dumps({"reset": behaviour["reset"]}), flush=True)
        return response

    node.create_service(Trigger, "reset_node/reset", reset)
    commands: list[str] = []
    threading.Thread(target=lambda: commands.extend(line.strip() for line in sys.stdin), daemon=True).start()
    status.publish(SafetyStatus(active_source="none"))
    while rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.05)
        while commands:
            command = commands.pop(0)
            what, value = command.split()
            if what == "reset":
                behaviour["reset"] = value
            else:  # estop on|off, as the gate publishes it
                latched = value == "on"
                status.publish(SafetyStatus(estop_latched=latched, active_source="none",
                                            message="button" if latched else ""))
            print(json.dumps({"took": command}), flush=True)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    {"cell": _cell}[role](*args)
