"""Scripted experts for the mirror's tasks: small phase machines on info["privileged"]
(positions in the base frame), acting through the same normalised action as a policy.

    policy = make_mirror_policy("expert", env, seed=0)   # or "suboptimal", "random"
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from sim.policies import Policy, scripted_policy

OPEN, CLOSED = -1.0, 1.0


class _Expert:
    """Shared plumbing: phase state and velocity -> normalised action."""

    name = "expert"
    phases: tuple[str, ...] = ("go",)

    def __init__(self, max_linear_speed: float, action_size: int = 4, gain: float = 5.0):
        self.max_linear_speed = max_linear_speed
        self.action_size = action_size
        self.gain = gain  # 1/s: proportional approach, saturated at the max speed
        self.phase = self.phases[0]

    def reset(self, seed: int | None = None) -> None:
        self.phase = self.phases[0]

    def _toward(self, target: np.ndarray, tcp: np.ndarray, gripper: float) -> np.ndarray:
        return self._action(self.gain * (target - tcp), gripper)

    def _action(self, velocity: np.ndarray, gripper: float) -> np.ndarray:
        action = np.zeros(self.action_size, dtype=np.float32)
        action[:3] = np.clip(velocity / self.max_linear_speed, -1.0, 1.0)
        action[-1] = gripper
        return action


class ReachExpert(_Expert):
    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        p = info["privileged"]
        return self._toward(p["goal_position"], p["tcp_position"], OPEN)


class PushExpert(_Expert):
    """Approach from behind the puck (seen from the goal) above it, go down, push
    along the puck-goal line steering sideways; lift and re-approach if it slips off."""

    phases = ("approach", "descend", "push")
    finger_half = 0.016  # m, about half the closed fingers' thickness
    standoff = 0.025  # m of clearance behind the puck before the push
    travel_z, push_z = 0.08, 0.02  # TCP heights: above the puck / at the puck's middle
    max_lateral = 0.015  # m off the push line before re-approaching

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        p = info["privileged"]
        tcp, puck, goal = p["tcp_position"], p["object_position"], p["goal_position"]
        to_goal = goal[:2] - puck[:2]
        u = to_goal / max(np.linalg.norm(to_goal), 1e-6)
        contact = puck[:2] - (p["object_radius"][0] + self.finger_half) * u
        behind = contact - self.standoff * u
        offset = tcp[:2] - contact
        lateral = offset - np.dot(offset, u) * u
        if self.phase == "push" and (np.linalg.norm(lateral) > self.max_lateral
                                     or np.dot(offset, u) > 0.01):
            self.phase = "approach"
        if self.phase == "approach":
            if np.linalg.norm(tcp[:2] - behind) < 0.01:
                self.phase = "descend"
            return self._toward(np.array([*behind, self.travel_z]), tcp, CLOSED)
        if self.phase == "descend":
            if tcp[2] < self.push_z + 0.01:
                self.phase = "push"
            return self._toward(np.array([*behind, self.push_z]), tcp, CLOSED)
        speed = np.clip(self.gain * np.linalg.norm(to_goal), 0.05, self.max_linear_speed)
        velocity = np.array([*(speed * u - self.gain * lateral), 0.0])
        velocity[2] = self.gain * (self.push_z - tcp[2])
        return self._action(velocity, CLOSED)


class DrawerOpenExpert(_Expert):
    """Closed fingers down into the gap between handle bar and drawer front, then pull
    along the drawer's axis."""

    phases = ("above", "descend", "pull")
    clearance_z = 0.10  # m above the gap to travel over the handle
    max_off_line = 0.02  # m, in the gap only while the TCP is this close to the pull line

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        p = info["privileged"]
        tcp, hook, axis = p["tcp_position"], p["handle_gap_position"], p["drawer_axis"]
        off_line = (tcp - hook) - np.dot(tcp - hook, axis) * axis
        if self.phase == "descend":
            off_line[2] = 0.0  # on the way down only the horizontal offset counts
        if self.phase != "above" and np.linalg.norm(off_line) > self.max_off_line:
            self.phase = "above"  # knocked out of line: start over from above the gap
        if self.phase == "above":
            above = hook + np.array([0.0, 0.0, self.clearance_z])
            if np.linalg.norm(tcp[:2] - above[:2]) < 0.008:
                self.phase = "descend"
            return self._toward(above, tcp, CLOSED)
        if self.phase == "descend":
            if abs(tcp[2] - hook[2]) < 0.01:
                self.phase = "pull"
            return self._toward(hook, tcp, CLOSED)
        # Keep the hook's height and line; move along the axis at full speed.
        correction = self.gain * (hook - tcp)
        correction -= np.dot(correction, axis) * axis
        return self._action(self.max_linear_speed * axis + correction, CLOSED)


EXPERTS: dict[str, type[_Expert]] = {
    "reach": ReachExpert,
    "push": PushExpert,
    "drawer-open": DrawerOpenExpert,
}


def make_mirror_policy(kind: str, env: gym.Env, seed: int | None = None) -> Policy:
    """kind: "expert" (scripted), "suboptimal" (expert with 25% random actions), "random", "zero"."""
    mirror = env.unwrapped

    def make_expert() -> Policy:
        return EXPERTS[mirror.task.name](mirror.max_linear_speed, env.action_space.shape[0])

    return scripted_policy(kind, make_expert, env.action_space, seed)
