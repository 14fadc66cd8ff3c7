"""EpisodeRunner: episodes one after another around the state machine, on a fake clock."""

from __future__ import annotations

import itertools

import pytest

from robot.episodes import EpisodeStateMachine, EpisodeTimeouts, InvalidTransition
from robot.episodes.runner import EpisodeRunner

TIMEOUTS = EpisodeTimeouts(episode_s=10.0, ending_s=1.0, reset_s=30.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_runner(**options) -> tuple[EpisodeRunner, Clock]:
    clock, ids = Clock(), (f"ep{n}" for n in itertools.count(1))
    machine = EpisodeStateMachine(TIMEOUTS, clock=clock, new_episode_id=lambda: next(ids))
    runner = EpisodeRunner(machine, "sim:reach", **options)
    runner.safety(False)
    return runner, clock


def events(records) -> list[tuple[str, str]]:
    return [(r.event, r.reason) for r in records]


def end_episode(runner: EpisodeRunner, clock: Clock) -> int:
    """stop, then let the ending settle: returns the reset's token."""
    runner.stop()
    clock.now += TIMEOUTS.ending_s
    assert events(runner.tick()) == [("RESET_STARTED", "episode_ended")]
    token = runner.take_reset_request()
    assert token is not None and runner.take_reset_request() is None  # asked for once
    return token


def test_an_episode_runs_ends_resets_and_auto_starts_the_next():
    runner, clock = make_runner(auto_start=True)
    assert events(runner.start()) == [("STARTED", "start")]
    assert events(runner.mark_success()) == [("SUCCESS_MARKED", "success")]
    assert runner.tick() == [] and runner.take_reset_request() is None
    token = end_episode(runner, clock)
    records = runner.reset_finished(token, True, "home")
    assert events(records) == [("RESET_DONE", "reset_done"), ("STARTED", "start")]
    assert records[1].episode_id == "ep2" and records[1].episode_index == 2 and not records[1].success


def test_without_auto_start_the_runner_waits_idle_after_the_reset():
    runner, clock = make_runner()
    runner.start()
    assert events(runner.reset_finished(end_episode(runner, clock), True)) == [("RESET_DONE", "reset_done")]
    assert runner.machine.state == "idle" and runner.last_reset == "done"


def test_the_time_limit_ends_the_episode():
    runner, clock = make_runner()
    runner.start()
    clock.now += TIMEOUTS.episode_s
    assert events(runner.tick()) == [("ENDED", "timeout")]


def test_a_failed_reset_aborts_and_does_not_auto_start():
    runner, clock = make_runner(auto_start=True)
    runner.start()
    token = end_episode(runner, clock)
    assert events(runner.reset_finished(token, False, "homing timed out")) == [("ABORTED", "reset_failed")]
    assert runner.machine.state == "idle" and runner.last_reset == "failed: homing timed out"


def test_a_reset_answer_after_the_reset_timeout_is_ignored():
    runner, clock = make_runner()
    runner.start()
    token = end_episode(runner, clock)
    clock.now += TIMEOUTS.reset_s
    assert events(runner.tick()) == [("ABORTED", "reset_timeout")]
    assert runner.reset_finished(token, True) == []
    # Nor does it count for the next episode's reset.
    runner.start()
    next_token = end_episode(runner, clock)
    assert runner.reset_finished(token, True) == [] and runner.machine.state == "resetting"
    assert events(runner.reset_finished(next_token, True)) == [("RESET_DONE", "reset_done")]


def test_an_e_stop_aborts_blocks_starts_until_cleared_and_voids_the_reset():
    runner, clock = make_runner(auto_start=True)
    runner.start()
    assert events(runner.safety(True, "~/estop topic")) == [("ABORTED", "e_stop")]
    assert runner.safety(True, "~/estop topic") == []  # the gate repeats its status: one abort
    with pytest.raises(InvalidTransition, match=r"e-stop is latched \(~/estop topic\)"):
        runner.start()
    assert runner.safety(False) == []
    runner.start()
    token = end_episode(runner, clock)
    assert events(runner.safety(True, "button")) == [("ABORTED", "e_stop")]
    assert runner.reset_finished(token, True) == []  # no auto-start behind a latched e-stop


def test_starts_wait_for_the_gate_and_stop_at_the_episode_budget():
    clock = Clock()
    runner = EpisodeRunner(EpisodeStateMachine(TIMEOUTS, clock=clock), "sim:push", auto_start=True, num_episodes=2)
    with pytest.raises(InvalidTransition, match="no SafetyStatus"):
        runner.start()
    runner.safety(False)
    runner.start()
    runner.safety(True)  # an aborted episode does not count
    runner.safety(False)
    runner.start()
    events_after_reset = runner.reset_finished(end_episode(runner, clock), True)
    assert [r.event for r in events_after_reset] == ["RESET_DONE", "STARTED"] and not runner.done
    assert [r.event for r in runner.reset_finished(end_episode(runner, clock), True)] == ["RESET_DONE"]
    assert runner.done and runner.episodes_ended == 2 and runner.machine.episode_index == 3
    with pytest.raises(InvalidTransition, match="all 2 episodes have run"):
        runner.start()


def test_bad_settings_and_refused_events_name_what_was_wrong():
    machine = EpisodeStateMachine(TIMEOUTS)
    with pytest.raises(ValueError, match="num_episodes must be an int >= 0"):
        EpisodeRunner(machine, "sim:reach", num_episodes=-1)
    with pytest.raises(ValueError, match="task must be a task id"):
        EpisodeRunner(machine, " ")
    runner, _ = make_runner()
    with pytest.raises(InvalidTransition, match="'stop' is not accepted in state 'idle'"):
        runner.stop()
