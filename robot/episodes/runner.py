"""Runs episodes one after another around EpisodeStateMachine: what episode_node does, without ROS.

On top of the machine's transitions and timeouts it
- asks for the cell reset when the machine enters resetting (`take_reset_request`), and takes its
  answer (`reset_finished`), ignoring an answer that comes after the machine has moved on
  (a reset timeout or an e-stop came first);
- follows the safety gate: a latched e-stop aborts the episode and blocks starts until the gate
  clears it; with `require_safety_status`, no start before the gate has reported at all;
- counts the episodes that ran to their end (ENDED; one an e-stop aborts does not count) up to
  `num_episodes` (0 for no limit) and, with `auto_start`, starts the next one as soon as a reset
  is done.

Every method returns the transitions it caused, in order, for the caller to publish.
"""

from __future__ import annotations

from robot.episodes.state_machine import EpisodeEventRecord, EpisodeStateMachine, InvalidTransition


class EpisodeRunner:
    def __init__(self, machine: EpisodeStateMachine, task: str, *, auto_start: bool = False,
                 num_episodes: int = 0, require_safety_status: bool = True) -> None:
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"EpisodeRunner task must be a task id (e.g. 'sim:reach'), got {task!r}")
        if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 0:
            raise ValueError(f"EpisodeRunner num_episodes must be an int >= 0 (0: no limit), got {num_episodes!r}")
        self.machine, self.task = machine, task
        self.auto_start, self.num_episodes = auto_start, num_episodes
        self.require_safety_status = require_safety_status
        self.safety_seen = False
        self.estop_message = ""  # the gate's reason while its e-stop is latched
        self.last_reset = ""  # the last reset's answer, for diagnostics
        self.episodes_ended = 0
        self._reset_token = 0  # counts resets; an answer must carry the current one
        self._reset_requested = False

    @property
    def done(self) -> bool:
        """Every episode asked for has run to its end."""
        return 0 < self.num_episodes <= self.episodes_ended

    def start(self) -> list[EpisodeEventRecord]:
        """Start an episode of the task; InvalidTransition says why not."""
        if self.require_safety_status and not self.safety_seen:
            raise InvalidTransition("cannot start an episode: no SafetyStatus from the safety gate yet "
                                    "(is the safety_gate running?)")
        if self.done:
            raise InvalidTransition(f"cannot start an episode: all {self.num_episodes} episodes have run")
        if self.machine.e_stop_latched:
            raise InvalidTransition(f"cannot start an episode: the e-stop is latched ({self.estop_message or 'e_stop'})"
                                    "; clear it at the safety gate first")
        return [self.machine.handle("start", task=self.task)]

    def stop(self) -> list[EpisodeEventRecord]:
        return self._count([self.machine.handle("stop")])

    def mark_success(self) -> list[EpisodeEventRecord]:
        return [self.machine.handle("success")]

    def safety(self, estop_latched: bool, message: str = "") -> list[EpisodeEventRecord]:
        """The gate's latest SafetyStatus."""
        self.safety_seen = True
        if estop_latched:
            self.estop_message = message
            if not self.machine.e_stop_latched:
                self._reset_requested = False
                return [self.machine.handle("e_stop")]
        elif self.machine.e_stop_latched:
            self.estop_message = ""
            self.machine.clear_e_stop()
        return []

    def tick(self) -> list[EpisodeEventRecord]:
        """Call it periodically: state timeouts, and the reset request they may cause."""
        record = self.machine.tick()
        if record is None:
            return []
        if record.event == "RESET_STARTED":
            self._reset_token += 1
            self._reset_requested = True
        return self._count([record])

    def take_reset_request(self) -> int | None:
        """The token of a reset to call now (once), or None."""
        if not self._reset_requested:
            return None
        self._reset_requested = False
        return self._reset_token

    def reset_finished(self, token: int, success: bool, message: str = "") -> list[EpisodeEventRecord]:
        """The reset's answer; with auto_start a successful one starts the next episode."""
        self.last_reset = f"{'done' if success else 'failed'}: {message}" if message else \
            ("done" if success else "failed")
        if token != self._reset_token or self.machine.state != "resetting":
            return []  # too late: the reset timed out or an e-stop aborted it
        records = [self.machine.handle("reset_done" if success else "reset_failed")]
        if success and self.auto_start and not self.done and not self.machine.e_stop_latched:
            records += self.start()
        return records

    def _count(self, records: list[EpisodeEventRecord]) -> list[EpisodeEventRecord]:
        self.episodes_ended += sum(record.event == "ENDED" for record in records)
        return records
