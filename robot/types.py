"""The arm's command and state, shared by the mirror, the safety gate, the recorder
and (later) the ROS 2 nodes.

The action interface of the real cell: end-effector velocity in the robot base frame
(what MoveIt Servo or a Cartesian velocity controller takes) plus a gripper command.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ArmCommand:
    """End-effector twist in the base frame plus a gripper closure target.

    linear: m/s, angular: rad/s, gripper: 0.0 fully open .. 1.0 fully closed.
    """

    linear: np.ndarray = field(default_factory=lambda: np.zeros(3))
    angular: np.ndarray = field(default_factory=lambda: np.zeros(3))
    gripper: float = 0.0

    def __post_init__(self) -> None:
        self.linear = np.asarray(self.linear, dtype=float).reshape(3)
        self.angular = np.asarray(self.angular, dtype=float).reshape(3)
        self.gripper = float(self.gripper)

    @classmethod
    def zero(cls, gripper: float = 0.0) -> ArmCommand:
        return cls(np.zeros(3), np.zeros(3), gripper)

    def copy(self) -> ArmCommand:
        return ArmCommand(self.linear.copy(), self.angular.copy(), self.gripper)

    def is_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.linear)) and np.all(np.isfinite(self.angular))
                    and np.isfinite(self.gripper))


@dataclass
class RobotState:
    """What the arm reports each control step (joint_states + end-effector pose)."""

    joint_names: tuple[str, ...]
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    ee_position: np.ndarray  # base frame, m
    ee_orientation_xyzw: np.ndarray  # base frame, unit quaternion
    gripper_width: float  # m between the fingers
    stamp_ns: int = 0  # sensor time of the reading
