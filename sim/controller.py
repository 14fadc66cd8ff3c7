"""The mirror's arm controller: the real cell's action interface (an end-effector twist
in the base frame + a gripper closure, robot.types.ArmCommand) tracked the way a
Cartesian servo does it (MoveIt Servo style).

At the servo rate the twist moves a TCP pose reference (so the arm goes where the
commands integrate to, which is what the safety gate's box check assumes); damped
least squares on the TCP site Jacobian turns twist + pose feedback into joint
velocities, a nullspace term pulls toward the home posture, and the targets of the
joint position actuators integrate them inside the joint limits. A joint at its limit
drops out of the solve, so the others keep the TCP on its path. Without an angular
command the orientation is held (gripper down).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim import render  # noqa: F401  (chooses the GL backend before mujoco loads)

# isort: split
import mujoco
import numpy as np

from robot.types import ArmCommand
from sim.cell import ArmIndex, tcp_pose


@dataclass(frozen=True)
class ControllerConfig:
    control_hz: float = 10.0  # commands per second (the policy's rate)
    servo_hz: float = 100.0  # IK updates per second; physics steps run underneath
    damping: float = 0.05  # DLS lambda: bounded joint speeds near singularities
    position_gain: float = 10.0  # 1/s, TCP back onto its reference position
    orientation_gain: float = 5.0  # 1/s, TCP back onto its reference orientation
    orientation_weight: float = 0.2  # m/rad: when both cannot be met, position wins
    nullspace_gain: float = 1.0  # 1/s, pulls the elbow toward the home posture
    limit_margin: float = 0.05  # rad kept clear of every joint limit
    max_target_lead: float = 0.08  # rad a joint target may run ahead of the joint
    max_position_lead: float = 0.02  # m the reference may run ahead of the TCP (blocked)
    max_orientation_lead: float = 0.2  # rad, likewise

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not value > 0:
                raise ValueError(f"ControllerConfig.{name} must be > 0, got {value}")
        if self.servo_hz < self.control_hz:
            raise ValueError(f"ControllerConfig.servo_hz ({self.servo_hz}) must be at least "
                             f"control_hz ({self.control_hz})")


class DiffIKController:
    """Runs one ArmCommand for one control period on (model, data)."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, arm: ArmIndex,
                 config: ControllerConfig | None = None):
        config = config or ControllerConfig()
        self.model, self.data, self.arm, self.config = model, data, arm, config
        dt = model.opt.timestep
        self.substeps = max(1, round(1.0 / (config.servo_hz * dt)))
        self.servo_dt = self.substeps * dt
        self.ticks = max(1, round(1.0 / (config.control_hz * self.servo_dt)))
        if abs(self.ticks * self.servo_dt * config.control_hz - 1.0) > 1e-6:
            # Otherwise the arm would silently run at another rate than the policy asked for.
            raise ValueError(f"control rate {config.control_hz:g} Hz is not a whole number of servo "
                             f"periods ({self.servo_dt * 1e3:g} ms); use a divisor of "
                             f"{1.0 / self.servo_dt:g} Hz such as 5, 10, 20, 25 or 50")
        self.lower = arm.lower + config.limit_margin
        self.upper = arm.upper - config.limit_margin
        self.width_range = model.actuator_ctrlrange[arm.gripper_ctrl].copy()
        # position actuators: force = kp (ctrl - q) - kv qdot, biasprm = (0, -kp, -kv)
        self.kv_over_kp = model.actuator_biasprm[arm.ctrl, 2] / model.actuator_biasprm[arm.ctrl, 1]
        self.row_weights = np.repeat([1.0, config.orientation_weight], 3)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self.q_target = data.qpos[arm.qpos].copy()
        self.ref_position = np.zeros(3)
        self.ref_quat = np.array([1.0, 0.0, 0.0, 0.0])

    @property
    def period_s(self) -> float:
        return self.ticks * self.servo_dt

    def reset(self) -> None:
        """Hold the current posture and TCP pose (call after setting qpos, kinematics done)."""
        self.q_target = np.clip(self.data.qpos[self.arm.qpos], self.lower, self.upper)
        self.data.ctrl[self.arm.ctrl] = self.q_target
        self.ref_position, rotation = tcp_pose(self.data, self.arm)
        mujoco.mju_mat2Quat(self.ref_quat, rotation.ravel())

    def run(self, command: ArmCommand) -> None:
        """Track `command` for one control period (steps the physics)."""
        low, high = self.width_range
        self.data.ctrl[self.arm.gripper_ctrl] = high - command.gripper * (high - low)
        for _ in range(self.ticks):
            self._servo(command.linear, command.angular)
            mujoco.mj_step(self.model, self.data, nstep=self.substeps)

    def _servo(self, linear: np.ndarray, angular: np.ndarray) -> None:
        model, data, arm, cfg = self.model, self.data, self.arm, self.config
        # mj_step leaves the kinematics one step behind qpos; refresh them.
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        position, rotation = tcp_pose(data, arm)
        position_error = self._advance_position(position, linear)
        rotation_error = self._advance_orientation(rotation, angular)
        twist = np.concatenate([linear + cfg.position_gain * position_error,
                                angular + cfg.orientation_gain * rotation_error])
        mujoco.mj_jacSite(model, data, self._jacp, self._jacr, arm.tcp)
        jac = np.vstack([self._jacp[:, arm.dof], self._jacr[:, arm.dof]])
        q = data.qpos[arm.qpos]
        dq = self._joint_velocity(jac, twist, q)
        lead = self.q_target + dq * self.servo_dt - q
        lead_ratio = np.max(np.abs(lead)) / cfg.max_target_lead
        if lead_ratio > 1.0:  # blocked (contact): stop winding up, keep the direction
            lead /= lead_ratio
        self.q_target = np.clip(q + lead, self.lower, self.upper)
        # Velocity feed-forward: the actuator's damping then acts on the tracking error.
        data.ctrl[arm.ctrl] = np.clip(self.q_target + self.kv_over_kp * dq, self.lower, self.upper)

    def _advance_position(self, position: np.ndarray, linear: np.ndarray) -> np.ndarray:
        """Move the reference by the command; returns reference - TCP, bounded."""
        error = self.ref_position + linear * self.servo_dt - position
        error *= min(1.0, self.config.max_position_lead / max(np.linalg.norm(error), 1e-12))
        self.ref_position = position + error
        return error

    def _advance_orientation(self, rotation: np.ndarray, angular: np.ndarray) -> np.ndarray:
        """Turn the reference by the command; returns the rotation vector (base frame)
        from the TCP's orientation to the reference, bounded."""
        ref = np.zeros(9)
        mujoco.mju_quat2Mat(ref, self.ref_quat)
        # quatIntegrate takes the angular velocity in the rotating frame.
        mujoco.mju_quatIntegrate(self.ref_quat, ref.reshape(3, 3).T @ angular, self.servo_dt)
        current, local = np.zeros(4), np.zeros(3)
        mujoco.mju_mat2Quat(current, rotation.ravel())
        mujoco.mju_subQuat(local, self.ref_quat, current)
        angle = np.linalg.norm(local)
        if angle > self.config.max_orientation_lead:
            local *= self.config.max_orientation_lead / angle
            self.ref_quat = current.copy()
            mujoco.mju_quatIntegrate(self.ref_quat, local, 1.0)
        return rotation @ local

    def _joint_velocity(self, jac: np.ndarray, twist: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Weighted DLS with a nullspace posture pull; joints that would cross a limit
        are frozen and the rest re-solved."""
        cfg = self.config
        weighted_jac, weighted_twist = jac * self.row_weights[:, None], twist * self.row_weights
        free = np.ones(len(q))
        for _ in range(len(q)):
            u, sv, vt = np.linalg.svd(weighted_jac * free, full_matrices=False)
            dq = vt.T @ (sv / (sv ** 2 + cfg.damping ** 2) * (u.T @ weighted_twist))
            # The exact projector: a damped one would leak the posture pull into TCP drift.
            rows = vt[sv > 1e-9]
            pull = cfg.nullspace_gain * (self.arm.home - q) * free
            dq += pull - rows.T @ (rows @ pull)
            dq *= free
            nxt = self.q_target + dq * self.servo_dt
            blocked = ((nxt < self.lower) & (dq < 0)) | ((nxt > self.upper) & (dq > 0))
            if not np.any(blocked & (free > 0)):
                break
            free[blocked] = 0.0
        return dq


def place_tcp(model: mujoco.MjModel, data: mujoco.MjData, arm: ArmIndex, position: np.ndarray,
              rotation: np.ndarray, iterations: int = 100, tolerance: float = 1e-4) -> float:
    """Set the arm's qpos (kinematics only) so the TCP reaches a pose; returns the
    remaining position error (m). Starts from the current qpos, stays in the limits."""
    jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    target_quat, current = np.zeros(4), np.zeros(4)
    mujoco.mju_mat2Quat(target_quat, np.asarray(rotation, dtype=float).ravel())
    error = np.full(6, np.inf)
    for _ in range(iterations):
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mju_mat2Quat(current, data.site_xmat[arm.tcp])
        rot_local = np.zeros(3)
        mujoco.mju_subQuat(rot_local, target_quat, current)
        error = np.concatenate([position - data.site_xpos[arm.tcp],
                                data.site_xmat[arm.tcp].reshape(3, 3) @ rot_local])
        if np.linalg.norm(error) < tolerance:
            break
        mujoco.mj_jacSite(model, data, jacp, jacr, arm.tcp)
        jac = np.vstack([jacp[:, arm.dof], jacr[:, arm.dof]])
        dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), error)
        data.qpos[arm.qpos] = np.clip(data.qpos[arm.qpos] + dq, arm.lower, arm.upper)
    mujoco.mj_kinematics(model, data)
    return float(np.linalg.norm(error[:3]))
