"""The episode state machine: every transition, every timeout, the e-stop latch, and a
property test over random event sequences. Time is a fake clock, stepped by hand."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot.episodes import (
    EVENT_CODES,
    EVENTS,
    STATES,
    EpisodeStateMachine,
    EpisodeTimeouts,
    InvalidTransition,
)

TIMEOUTS = EpisodeTimeouts(episode_s=10.0, ending_s=1.0, reset_s=30.0)

# (state, event) -> (next state, published event); every other pair is rejected.
ACCEPTED = {
    ("idle", "start"): ("running", "STARTED"),
    ("running", "success"): ("running", "SUCCESS_MARKED"),
    ("running", "stop"): ("ending", "ENDED"),
    ("running", "timeout"): ("ending", "ENDED"),
    ("ending", "timeout"): ("resetting", "RESET_STARTED"),
    ("resetting", "reset_done"): ("idle", "RESET_DONE"),
    ("resetting", "reset_failed"): ("idle", "ABORTED"),
    ("resetting", "timeout"): ("idle", "ABORTED"),
    **{(state, "e_stop"): ("idle", "ABORTED") for state in STATES},
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_machine() -> tuple[EpisodeStateMachine, FakeClock]:
    clock = FakeClock()
    ids = (f"ep{n}" for n in itertools.count(1))
    return EpisodeStateMachine(TIMEOUTS, clock=clock, new_episode_id=lambda: next(ids)), clock


def machine_in(state: str) -> tuple[EpisodeStateMachine, FakeClock]:
    machine, clock = make_machine()
    path = {"idle": [], "running": ["start"], "ending": ["start", "stop"],
            "resetting": ["start", "stop", "timeout"]}[state]
    for event in path:
        machine.handle(event, task="sim:reach") if event == "start" else machine.handle(event)
    assert machine.state == state
    return machine, clock


def send(machine: EpisodeStateMachine, event: str, **kwargs):
    if event == "start":
        kwargs.setdefault("task", "sim:push")
    return machine.handle(event, **kwargs)


# ---------------------------------------------------------------- transitions


@pytest.mark.parametrize(("state", "event"), list(itertools.product(STATES, EVENTS)))
def test_every_state_event_pair_is_accepted_or_rejected_as_specified(state, event):
    machine, _ = machine_in(state)
    index_before = machine.episode_index
    if (state, event) in ACCEPTED:
        record = send(machine, event)
        next_state, published = ACCEPTED[(state, event)]
        assert (record.event, record.state, machine.state) == (published, next_state, next_state)
        assert record.trigger == event
    else:
        assert not machine.can(event)
        with pytest.raises(InvalidTransition, match=rf"{event!r} is not accepted in state {state!r}; "
                                                    r"accepted there: .*e_stop"):
            send(machine, event)
        assert (machine.state, machine.episode_index) == (state, index_before)


def test_a_whole_episode_publishes_what_the_nodes_follow():
    machine, clock = make_machine()
    started = machine.handle("start", task="sim:reach")
    assert (started.event, started.state, started.episode_index, started.episode_id, started.task) == \
        ("STARTED", "running", 1, "ep1", "sim:reach")
    assert started.success is False and started.time_s == 100.0
    clock.now += 2.0
    marked = machine.handle("success", reason="task_success")
    assert (marked.event, marked.state, marked.success, marked.reason) == ("SUCCESS_MARKED", "running", True,
                                                                           "task_success")
    clock.now += 1.0
    ended = machine.handle("stop")
    assert (ended.event, ended.state, ended.reason, ended.success, ended.time_s) == \
        ("ENDED", "ending", "operator_stop", True, 103.0)
    clock.now += 1.0
    reset = machine.tick()
    assert (reset.event, reset.state, reset.episode_id, reset.reason) == ("RESET_STARTED", "resetting", "ep1",
                                                                          "episode_ended")
    done = machine.handle("reset_done")
    assert (done.event, done.state, done.episode_id, done.success) == ("RESET_DONE", "idle", "ep1", True)
    # Idle: no episode under way any more; the count stays.
    assert (machine.episode_id, machine.task, machine.success, machine.episode_index) == ("", "", False, 1)
    assert done.message_fields() == {"event": EVENT_CODES["RESET_DONE"], "state": "idle", "episode_index": 1,
                                     "episode_id": "ep1", "task": "sim:reach", "reason": "reset_done",
                                     "success": True}
    second = machine.handle("start", task="sim:push")
    assert (second.episode_index, second.episode_id, second.success) == (2, "ep2", False)


def test_event_codes_match_drr_interfaces():
    assert EVENT_CODES == {"STARTED": 1, "SUCCESS_MARKED": 2, "ENDED": 3, "RESET_STARTED": 4, "RESET_DONE": 5,
                           "ABORTED": 6}


def test_success_is_marked_once_per_episode():
    machine, _ = machine_in("running")
    machine.handle("success")
    assert not machine.can("success")
    with pytest.raises(InvalidTransition, match="already marked successful"):
        machine.handle("success")


def test_marking_success_keeps_the_episode_clock():
    """A fixed-length episode that succeeds early still ends at its time limit."""
    machine, clock = machine_in("running")
    deadline = machine.deadline_s
    clock.now += 4.0
    record = machine.handle("success")
    assert record.time_s == clock.now and machine.deadline_s == deadline
    clock.now = deadline
    assert machine.tick().event == "ENDED"


def test_reset_failure_aborts_with_the_callers_reason():
    machine, _ = machine_in("resetting")
    record = machine.handle("reset_failed", reason="reset_failed: puck out of reach")
    assert (record.event, record.state, record.reason) == ("ABORTED", "idle", "reset_failed: puck out of reach")


# ---------------------------------------------------------------- timeouts


def test_running_times_out_at_the_episode_limit_and_not_before():
    machine, clock = machine_in("running")
    assert machine.deadline_s == 110.0
    clock.now = 109.999
    assert machine.tick() is None and machine.state == "running"
    clock.now = 110.0
    record = machine.tick()
    assert (record.event, record.state, record.reason, record.success) == ("ENDED", "ending", "timeout", False)


def test_start_can_set_this_episodes_time_limit():
    machine, clock = make_machine()
    machine.handle("start", task="sim:reach", time_limit_s=1.5)
    clock.now += 1.5
    assert machine.tick().event == "ENDED"
    clock.now += 1.0
    machine.tick()
    machine.handle("reset_done")
    machine.handle("start", task="sim:push")  # the default again
    assert machine.deadline_s == clock.now + TIMEOUTS.episode_s


def test_ending_is_bounded_then_the_reset_starts():
    machine, clock = machine_in("ending")
    clock.now += TIMEOUTS.ending_s - 0.01
    assert machine.tick() is None
    clock.now += 0.01
    assert machine.tick().event == "RESET_STARTED"


def test_a_reset_that_takes_too_long_is_aborted_back_to_idle():
    machine, clock = machine_in("resetting")
    clock.now += TIMEOUTS.reset_s
    record = machine.tick()
    assert (record.event, record.state, record.reason) == ("ABORTED", "idle", "reset_timeout")
    assert machine.deadline_s is None and machine.tick() is None


def test_each_state_times_out_from_when_it_was_entered():
    machine, clock = machine_in("running")
    clock.now += 5.0
    machine.handle("stop")
    assert machine.deadline_s == clock.now + TIMEOUTS.ending_s


# ---------------------------------------------------------------- e-stop


@pytest.mark.parametrize("state", STATES)
def test_e_stop_aborts_from_any_state_and_latches_until_cleared(state):
    machine, _ = machine_in(state)
    record = machine.handle("e_stop", reason="e_stop: button")
    assert (record.event, record.state, record.reason) == ("ABORTED", "idle", "e_stop: button")
    assert machine.e_stop_latched and not machine.can("start")
    with pytest.raises(InvalidTransition, match=r"e-stop is latched \(e_stop: button\); clear it first"):
        machine.handle("start", task="sim:reach")
    machine.clear_e_stop()
    assert machine.handle("start", task="sim:reach").state == "running"


def test_e_stop_keeps_its_first_reason():
    machine, _ = machine_in("running")
    machine.handle("e_stop", reason="operator")
    machine.handle("e_stop", reason="watchdog")
    assert machine.e_stop_reason == "operator"


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "5"])
@pytest.mark.parametrize("name", ["episode_s", "ending_s", "reset_s"])
def test_timeouts_reject_bad_values_naming_the_field(name, bad):
    with pytest.raises(ValueError, match=rf"EpisodeTimeouts\.{name} must be a finite number of seconds > 0"):
        EpisodeTimeouts(**{name: bad})


def test_bad_calls_name_what_was_wrong():
    machine, _ = make_machine()
    with pytest.raises(ValueError, match="unknown episode event 'begin'; accepted: start, stop"):
        machine.handle("begin")
    with pytest.raises(ValueError, match="start needs the task id"):
        machine.handle("start")
    with pytest.raises(ValueError, match="time_limit_s must be a finite number of seconds > 0"):
        machine.handle("start", task="sim:reach", time_limit_s=0)
    assert machine.state == "idle" and machine.episode_index == 0
    machine.handle("start", task="sim:reach")
    with pytest.raises(ValueError, match="task and time_limit_s go with start, not 'stop'"):
        machine.handle("stop", task="sim:reach")


# ---------------------------------------------------------------- property test

steps = st.lists(st.tuples(st.sampled_from([*EVENTS, "tick", "clear_e_stop"]),
                           st.floats(min_value=0.0, max_value=20.0)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_random_event_sequences_keep_the_invariants(sequence):
    machine, clock = make_machine()
    started_ids: list[str] = []
    for name, dt in sequence:
        clock.now += dt
        before = (machine.state, machine.episode_index, machine.episode_id, machine.success)
        if name == "clear_e_stop":
            machine.clear_e_stop()
            continue
        if name == "tick":
            deadline = machine.deadline_s
            record = machine.tick()
            assert (record is not None) == (deadline is not None and clock.now >= deadline)
        elif machine.can(name):
            record = send(machine, name)
        else:
            with pytest.raises(InvalidTransition):
                send(machine, name)
            assert (machine.state, machine.episode_index, machine.episode_id, machine.success) == before
            continue
        if record is None:
            continue
        assert record.state == machine.state and record.time_s == clock.now
        assert record.event in EVENT_CODES and machine.state in STATES
        if record.event == "STARTED":
            assert machine.episode_index == before[1] + 1 and not record.success
            assert record.episode_id not in started_ids
            started_ids.append(record.episode_id)
        else:
            assert machine.episode_index == before[1]
            assert record.episode_id == before[2] and record.success == (before[3] or name == "success")
        # Invariants after every accepted step:
        assert not (machine.e_stop_latched and machine.state == "running")
        assert machine.episode_index == len(started_ids)
        assert (machine.state == "idle") == (machine.deadline_s is None)
        assert (machine.state == "idle") == (machine.episode_id == "")
