"""Following episode_node's events (drr_interfaces/EpisodeEvent) in a node that acts per frame:
whether an episode is running, which one, and whether it was marked successful.

The reward and policy nodes hold one of these, feed it every event and ask it per frame.
Frames arriving before the first event belong to episode 0, so a node with no episode_node
running still works (it just never sees an episode boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

from robot.episodes.state_machine import EVENT_CODES, STATES

_NAMES = {code: name for name, code in EVENT_CODES.items()}


@dataclass(frozen=True)
class EpisodeTransition:
    """What one event changed, for the node to act on."""

    event: str  # STARTED | SUCCESS_MARKED | ENDED | RESET_STARTED | RESET_DONE | ABORTED
    started: bool  # a new episode began: histories and policy state start over
    stopped: bool  # the episode was running and no longer is: the arm gets a zero twist


class EpisodeFollower:
    def __init__(self) -> None:
        self.episode = 0  # episodes started since this follower was made (0: before the first)
        self.episode_id = ""
        self.task = ""
        self.state = "idle"
        self.success = False

    @property
    def running(self) -> bool:
        return self.state == "running"

    def on_event(self, code: int, state: str = "", *, success: bool = False, episode_id: str = "",
                 task: str = "") -> EpisodeTransition:
        """Apply one event (its EpisodeEvent constant and the state after it). ValueError for an
        unknown event code or state: the publisher speaks another version of the interface."""
        if code not in _NAMES:
            raise ValueError(f"unknown EpisodeEvent.event {code}; known: "
                             f"{', '.join(f'{n}={c}' for n, c in EVENT_CODES.items())}")
        event = _NAMES[code]
        if state and state not in STATES:
            raise ValueError(f"unknown EpisodeEvent.state {state!r}; known: {', '.join(STATES)}")
        was_running = self.running
        if event == "STARTED":
            self.episode += 1
            self.episode_id, self.task, self.success = episode_id, task, False
        self.success = self.success or success or event == "SUCCESS_MARKED"
        # The state after the event; older publishers may leave it empty, then the event says it.
        self.state = state or {"STARTED": "running", "SUCCESS_MARKED": "running", "ENDED": "ending",
                               "RESET_STARTED": "resetting"}.get(event, "idle")
        return EpisodeTransition(event, started=event == "STARTED", stopped=was_running and not self.running)
