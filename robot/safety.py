"""The safety gate between every command source and the arm.

Pure logic, no ROS: the MuJoCo mirror calls `step` every control step, and the
safety_gate node wraps the same object (`submit` / `update_state` from subscriptions,
`compute` from its control timer). Times are seconds on any clock the caller keeps.

Contract: `compute` runs at least every `lookahead_s` and the arm executes each output
until the next one; then the workspace box holds between computes too.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from calibration import WorkspaceBox
from robot.types import ArmCommand


@dataclass(frozen=True)
class SafetyLimits:
    workspace: WorkspaceBox
    max_linear_speed: float = 0.25  # m/s, norm of the linear velocity
    max_angular_speed: float = 1.0  # rad/s, norm
    max_linear_accel: float = 2.0  # m/s^2, norm of the change per second
    max_angular_accel: float = 8.0  # rad/s^2
    watchdog_timeout_s: float = 0.5  # no fresh command or robot state for this long -> zero
    lookahead_s: float = 0.1  # box check horizon (one control period at 10 Hz)

    def __post_init__(self) -> None:
        box = self.workspace
        if not isinstance(box, WorkspaceBox) or not np.all(np.asarray(box.min) < box.max):
            raise ValueError(f"SafetyLimits.workspace must be a WorkspaceBox with min < max "
                             f"on every axis, got {box!r}")
        for name in _limit_names():
            value = getattr(self, name)
            # bool is an int in Python; `true` in a YAML file is never a limit.
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value) or value <= 0):
                raise ValueError(f"SafetyLimits.{name} must be a finite number > 0, got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_dict(cls, workspace: WorkspaceBox, values: dict) -> SafetyLimits:
        """Limits from parameters (YAML, ROS); a typo must not silently become a default."""
        unknown = sorted(set(values) - set(_limit_names()))
        if unknown:
            raise ValueError(f"unknown safety limit(s) {unknown}; accepted: {list(_limit_names())}")
        return cls(workspace, **values)

    def check_control_period(self, period_s: float) -> None:
        """The box holds between computes only if `compute` runs at least every lookahead_s."""
        if not (math.isfinite(period_s) and 0 < period_s <= self.lookahead_s):
            raise ValueError(f"SafetyLimits.lookahead_s ({self.lookahead_s:g} s) must be at least the gate's "
                             f"control period ({period_s:g} s): raise lookahead_s or the control rate")


def _limit_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(SafetyLimits) if f.name != "workspace")


@dataclass
class SafetyStatus:
    estop_latched: bool = False
    estop_reason: str = ""
    watchdog_tripped: bool = True  # output forced to zero by a stale or missing command/state
    watchdog_reason: str = "no fresh command and no fresh robot state"  # "" when not tripped
    clipped_workspace: bool = False
    clipped_speed: bool = False
    clipped_accel: bool = False
    rejected_nonfinite: int = 0  # NaN/inf commands rejected since start
    active_source: str = ""  # the source in control at the last compute ("" if none)
    last_output: ArmCommand = field(default_factory=ArmCommand.zero)


class SafetyGate:
    """E-stop latch, watchdog, source priority, speed/accel limits and workspace box."""

    def __init__(self, limits: SafetyLimits,
                 sources: tuple[str, ...] = ("teleop", "reset", "policy")) -> None:
        if not sources or len(set(sources)) != len(sources):
            raise ValueError(f"sources must be distinct names, highest priority first, got {sources!r}")
        self.limits = limits
        self.sources = tuple(sources)
        self._box_min = np.asarray(limits.workspace.min, dtype=float)
        self._box_max = np.asarray(limits.workspace.max, dtype=float)
        self._clock = -math.inf
        self._commands: dict[str, tuple[ArmCommand, float]] = {}  # latest per source, with stamp
        self._ee: np.ndarray | None = None  # best estimate of the end-effector position
        self._ee_s = 0.0  # time of that estimate
        self._state_s: float | None = None  # when the last valid robot state arrived
        self._sent = ArmCommand.zero()  # what the arm is executing now
        self._accel_ref: tuple[ArmCommand, float] | None = None  # None: start from rest
        self._status = SafetyStatus()

    def submit(self, command: ArmCommand, now_s: float, source: str = "policy") -> bool:
        """Store a source's latest command; False (counted, not stored) if it is not finite."""
        if source not in self.sources:
            raise ValueError(f"unknown command source {source!r}; known: {self.sources}")
        now = self._tick(now_s)
        if not command.is_finite():
            self._status.rejected_nonfinite += 1
            return False
        self._commands[source] = (command.copy(), now)
        return True

    def update_state(self, ee_position: np.ndarray, now_s: float) -> None:
        now = self._tick(now_s)
        position = np.asarray(ee_position, dtype=float).reshape(3)
        if np.all(np.isfinite(position)):
            self._ee, self._ee_s, self._state_s = position.copy(), now, now
        else:
            self._state_s = None  # not knowing where the arm is stops it at once

    def compute(self, now_s: float) -> ArmCommand:
        """The command to send to the arm now."""
        now, lim, status = self._tick(now_s), self.limits, self._status
        if self._ee is not None:
            # The arm kept executing the last output since the last state or compute.
            self._ee = self._ee + self._sent.linear * (now - self._ee_s)
            self._ee_s = now
        status.active_source = next(
            (s for s in self.sources  # priority order
             if s in self._commands and now - self._commands[s][1] < lim.watchdog_timeout_s), "")
        state_fresh = self._state_s is not None and now - self._state_s < lim.watchdog_timeout_s
        status.watchdog_tripped = not (status.active_source and state_fresh)
        status.watchdog_reason = " and ".join(
            reason for reason, stale in (("no fresh command", not status.active_source),
                                         ("no fresh robot state", not state_fresh)) if stale)
        status.clipped_workspace = status.clipped_speed = status.clipped_accel = False
        if status.estop_latched or status.watchdog_tripped:
            # Stopping is immediate, not accel-limited; the gripper holds so nothing is dropped.
            out = ArmCommand.zero(self._sent.gripper)
        else:
            out = self._limit(self._commands[status.active_source][0], now)
        self._sent, self._accel_ref = out, (out, now)
        status.last_output = out.copy()
        return out.copy()

    def step(self, command: ArmCommand, ee_position: np.ndarray, now_s: float,
             source: str = "policy") -> ArmCommand:
        """Synchronous use (the mirror): state, command and output in one call."""
        self.update_state(ee_position, now_s)
        self.submit(command, now_s, source)
        return self.compute(now_s)

    def engage_estop(self, reason: str) -> None:
        """Latch the e-stop; while latched, the first reason is kept."""
        if not self._status.estop_latched:
            self._status.estop_latched, self._status.estop_reason = True, reason

    def clear_estop(self) -> None:
        """Un-latch; commands sent before are dropped, so only a new command moves the arm."""
        self._status.estop_latched, self._status.estop_reason = False, ""
        self._commands.clear()

    def reset_motion(self) -> None:
        """Accelerate from rest at the next output (e.g. episode start); the e-stop stays."""
        self._accel_ref = None

    @property
    def status(self) -> SafetyStatus:
        return dataclasses.replace(self._status, last_output=self._status.last_output.copy())

    def _tick(self, now_s: float) -> float:
        if not math.isfinite(now_s):
            raise ValueError(f"now_s must be a finite time in seconds, got {now_s!r}")
        # Time only goes forward: a late stamp counts as "now", so dt is never negative.
        self._clock = max(self._clock, float(now_s))
        return self._clock

    def _limit(self, command: ArmCommand, now: float) -> ArmCommand:
        lim, status = self.limits, self._status
        linear, clipped_linear = _clamp_norm(command.linear, lim.max_linear_speed)
        angular, clipped_angular = _clamp_norm(command.angular, lim.max_angular_speed)
        status.clipped_speed = clipped_linear or clipped_angular

        ref, ref_s = self._accel_ref or (ArmCommand.zero(), now - lim.lookahead_s)
        dt = min(now - ref_s, lim.lookahead_s)  # a long pause must not allow a jump
        d_linear, clipped_linear = _clamp_norm(linear - ref.linear, lim.max_linear_accel * dt)
        d_angular, clipped_angular = _clamp_norm(angular - ref.angular, lim.max_angular_accel * dt)
        linear, angular = ref.linear + d_linear, ref.angular + d_angular
        status.clipped_accel = clipped_linear or clipped_angular

        # The box comes last so no stage can push out: per axis, stay inside over the
        # lookahead; already outside, only motion back toward the box.
        reach_min = np.minimum((self._box_min - self._ee) / lim.lookahead_s, 0.0)
        reach_max = np.maximum((self._box_max - self._ee) / lim.lookahead_s, 0.0)
        boxed = np.clip(linear, reach_min, reach_max)
        status.clipped_workspace = not np.array_equal(boxed, linear)
        return ArmCommand(boxed, angular, min(max(command.gripper, 0.0), 1.0))


def _clamp_norm(vector: np.ndarray, limit: float) -> tuple[np.ndarray, bool]:
    """Scale down to norm <= limit keeping the direction; True if it was scaled."""
    scale = float(np.max(np.abs(vector)))
    if scale == 0.0:
        return vector, False
    norm = scale * float(np.linalg.norm(vector / scale))  # huge finite values must not overflow
    if norm <= limit:
        return vector, False
    return vector * (limit / norm), True
