"""Driving the end effector home: the next twist toward a home pose, from the current pose.

Pure logic, no ROS: the reset_node calls `homing_twist` at its control rate with the
arm's latest end-effector pose and publishes the twist on the safety gate's reset input,
so the gate's limits still apply. Proportional in position and orientation, capped at a
speed, zero once within tolerance (then the caller stops commanding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HomingConfig:
    position_tolerance: float = 0.005  # m: home when the TCP is this close ...
    orientation_tolerance: float = 0.05  # rad: ... and turned this little from the home orientation
    max_linear_speed: float = 0.1  # m/s, norm; keep it below the gate's limit
    max_angular_speed: float = 0.5  # rad/s, norm
    gain: float = 2.0  # 1/s: speed per metre (radian) of error, so the arm slows down near home

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"HomingConfig.{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class HomingStep:
    linear: np.ndarray  # m/s, base frame
    angular: np.ndarray  # rad/s, base frame
    arrived: bool  # within both tolerances; the twist is zero
    position_error: float  # m to home
    orientation_error: float  # rad to home


def homing_twist(position: np.ndarray, orientation_xyzw: np.ndarray, home_position: np.ndarray,
                 home_orientation_xyzw: np.ndarray, config: HomingConfig) -> HomingStep:
    """The twist (base frame) that moves the end effector toward the home pose."""
    offset = np.asarray(home_position, dtype=float).reshape(3) - np.asarray(position, dtype=float).reshape(3)
    rotation = rotation_vector_between(orientation_xyzw, home_orientation_xyzw)
    distance, angle = float(np.linalg.norm(offset)), float(np.linalg.norm(rotation))
    if not (math.isfinite(distance) and math.isfinite(angle)):
        raise ValueError(f"homing needs a finite pose, got position {position!r}, orientation {orientation_xyzw!r}")
    if distance <= config.position_tolerance and angle <= config.orientation_tolerance:
        return HomingStep(np.zeros(3), np.zeros(3), True, distance, angle)
    linear = _capped(config.gain * offset, config.max_linear_speed)
    angular = _capped(config.gain * rotation, config.max_angular_speed)
    return HomingStep(linear, angular, False, distance, angle)


def rotation_vector_between(from_xyzw: np.ndarray, to_xyzw: np.ndarray) -> np.ndarray:
    """Rotation vector (base frame, rad) that turns orientation `from` into `to`, the short way."""
    q_from, q_to = _unit(from_xyzw), _unit(to_xyzw)
    # to = delta * from  =>  delta = to * conj(from), expressed in the base frame.
    x, y, z, w = _multiply(q_to, q_from * np.array([-1.0, -1.0, -1.0, 1.0]))
    if w < 0:  # q and -q are the same orientation: take the turn of at most pi
        x, y, z, w = -x, -y, -z, -w
    axis = np.array([x, y, z])
    sin_half = float(np.linalg.norm(axis))
    if sin_half < 1e-12:
        return np.zeros(3)
    return axis / sin_half * 2.0 * math.atan2(sin_half, w)


def _unit(quaternion_xyzw: np.ndarray) -> np.ndarray:
    q = np.asarray(quaternion_xyzw, dtype=float).reshape(4)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"orientation must be a non-zero quaternion (x, y, z, w), got {quaternion_xyzw!r}")
    return q / norm


def _multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of quaternions in (x, y, z, w) order."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz])


def _capped(vector: np.ndarray, limit: float) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector * (limit / norm) if norm > limit else vector
