"""The episode state machine that episode_node runs; recorder, policy, reward and reset
nodes follow the events it publishes (drr_interfaces/EpisodeEvent).

    idle --start--> running --stop | timeout--> ending --timeout--> resetting --reset_done--> idle
                    running --success--> running (marked successful)   resetting --reset_failed | timeout--> idle
    any state --e_stop--> idle (latched: no start until clear_e_stop)

Every state but idle has a time limit: running the episode's (per start, else the
default), ending a short settle for the recorder and the arm, resetting the reset's;
`tick` fires the `timeout` event once the clock passes it. Time comes from an injected
clock, so tests step it instead of sleeping.
"""

from __future__ import annotations

import math
import numbers
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

STATES = ("idle", "running", "ending", "resetting")
EVENTS = ("start", "stop", "success", "timeout", "reset_done", "reset_failed", "e_stop")
# drr_interfaces/EpisodeEvent constants.
EVENT_CODES = {"STARTED": 1, "SUCCESS_MARKED": 2, "ENDED": 3, "RESET_STARTED": 4, "RESET_DONE": 5, "ABORTED": 6}

# (state, event) -> (next state, published event, default reason)
_TRANSITIONS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("idle", "start"): ("running", "STARTED", "start"),
    ("running", "success"): ("running", "SUCCESS_MARKED", "success"),
    ("running", "stop"): ("ending", "ENDED", "operator_stop"),
    ("running", "timeout"): ("ending", "ENDED", "timeout"),
    ("ending", "timeout"): ("resetting", "RESET_STARTED", "episode_ended"),
    ("resetting", "reset_done"): ("idle", "RESET_DONE", "reset_done"),
    ("resetting", "reset_failed"): ("idle", "ABORTED", "reset_failed"),
    ("resetting", "timeout"): ("idle", "ABORTED", "reset_timeout"),
    **{(state, "e_stop"): ("idle", "ABORTED", "e_stop") for state in STATES},
}


class InvalidTransition(ValueError):
    """An event the current state does not accept; the state is unchanged."""


@dataclass(frozen=True)
class EpisodeTimeouts:
    episode_s: float = 60.0  # running: the episode time limit unless start gives one
    ending_s: float = 1.0  # ending: the recorder closes its file and the arm stops
    reset_s: float = 60.0  # resetting: a reset that takes longer is aborted

    def __post_init__(self) -> None:
        for item in fields(self):
            _check_seconds(f"EpisodeTimeouts.{item.name}", getattr(self, item.name))


@dataclass(frozen=True)
class EpisodeEventRecord:
    """One transition, as episode_node publishes it."""

    event: str  # STARTED | SUCCESS_MARKED | ENDED | RESET_STARTED | RESET_DONE | ABORTED
    trigger: str  # the event handled (one of EVENTS)
    state: str  # the state after the transition
    episode_index: int  # episodes started so far: the first episode is 1
    episode_id: str  # "" when no episode is under way
    task: str
    reason: str
    success: bool
    time_s: float  # the machine's clock at the transition

    def message_fields(self) -> dict[str, Any]:
        """drr_interfaces/EpisodeEvent fields (the node adds the header)."""
        return {"event": EVENT_CODES[self.event], "state": self.state, "episode_index": self.episode_index,
                "episode_id": self.episode_id, "task": self.task, "reason": self.reason, "success": self.success}


class EpisodeStateMachine:
    def __init__(self, timeouts: EpisodeTimeouts | None = None, *, clock: Callable[[], float] = time.monotonic,
                 new_episode_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.timeouts = timeouts or EpisodeTimeouts()
        self._clock, self._new_episode_id = clock, new_episode_id
        self.state = "idle"
        self.episode_index = 0
        self.episode_id = self.task = ""
        self.success = False
        self.e_stop_reason: str | None = None  # None: not latched
        self._time_limit_s = self.timeouts.episode_s
        self._entered_s = clock()

    @property
    def e_stop_latched(self) -> bool:
        return self.e_stop_reason is not None

    @property
    def deadline_s(self) -> float | None:
        """When the current state times out (clock seconds); None in idle."""
        limit = {"running": self._time_limit_s, "ending": self.timeouts.ending_s,
                 "resetting": self.timeouts.reset_s}.get(self.state)
        return None if limit is None else self._entered_s + limit

    def can(self, event: str) -> bool:
        """Whether `handle(event)` would be accepted now."""
        return self._refusal(event) is None

    def handle(self, event: str, *, reason: str | None = None, task: str | None = None,
               time_limit_s: float | None = None) -> EpisodeEventRecord:
        """Apply one event. start takes the task id (and optionally this episode's time limit);
        reason replaces the default reason ("operator_stop", "timeout", ...)."""
        if event not in EVENTS:
            raise ValueError(f"unknown episode event {event!r}; accepted: {', '.join(EVENTS)}")
        if event != "start" and (task is not None or time_limit_s is not None):
            raise ValueError(f"task and time_limit_s go with start, not {event!r}")
        refusal = self._refusal(event)
        if refusal is not None:
            raise InvalidTransition(refusal)
        next_state, published, default_reason = _TRANSITIONS[(self.state, event)]
        if event == "start":
            self._begin_episode(task, time_limit_s)
        elif event == "success":
            self.success = True
        elif event == "e_stop":
            self.e_stop_reason = self.e_stop_reason or reason or "e_stop"  # the first cause stays
        now = self._clock()
        if next_state != self.state:  # marking success keeps the episode's clock running
            self.state, self._entered_s = next_state, now
        record = EpisodeEventRecord(published, event, next_state, self.episode_index, self.episode_id, self.task,
                                    reason or default_reason, self.success, now)
        if next_state == "idle":
            self.episode_id, self.task, self.success = "", "", False
        return record

    def tick(self) -> EpisodeEventRecord | None:
        """Fire the current state's timeout if its deadline has passed; call it from a timer."""
        deadline = self.deadline_s
        if deadline is None or self._clock() < deadline:
            return None
        return self.handle("timeout")

    def clear_e_stop(self) -> None:
        """Un-latch (the safety gate's e-stop is cleared alongside); the machine stays idle."""
        self.e_stop_reason = None

    def _refusal(self, event: str) -> str | None:
        if event == "start" and self.e_stop_latched:
            return f"cannot start an episode: the e-stop is latched ({self.e_stop_reason}); clear it first"
        if event == "success" and self.state == "running" and self.success:
            return "the episode is already marked successful"
        if (self.state, event) not in _TRANSITIONS:
            accepted = [e for e in EVENTS if (self.state, e) in _TRANSITIONS]
            return f"episode event {event!r} is not accepted in state {self.state!r}; accepted there: " + \
                ", ".join(accepted)
        return None

    def _begin_episode(self, task: str | None, time_limit_s: float | None) -> None:
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"start needs the task id (e.g. 'sim:reach'), got {task!r}")
        if time_limit_s is not None:
            _check_seconds("time_limit_s", time_limit_s)
        self.episode_index += 1
        self.episode_id, self.task, self.success = self._new_episode_id(), task, False
        self._time_limit_s = self.timeouts.episode_s if time_limit_s is None else float(time_limit_s)


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
