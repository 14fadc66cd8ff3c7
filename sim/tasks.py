"""The mirror's tasks: which scene, how a reset randomises it, what success means, and
the privileged state a scripted expert reads. Geometry lives in sim/assets/<scene>;
here are only the task's rules (ranges, tolerances, time limits).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim import render  # noqa: F401  (chooses the GL backend before mujoco loads)

# isort: split
import mujoco
import numpy as np

from sim.cell import TCP_SITE

Privileged = dict[str, np.ndarray]


@dataclass(frozen=True)
class Box:
    """Axis-aligned sampling box, base frame, metres."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.low, self.high)


class Task:
    """One task on one compiled scene. Subclasses bind names to ids in `__init__`.

    Time limits (seconds; 20, 60 and 50 control steps at the default 10 Hz) are 1.2-1.9x the
    scripted expert's longest episode over 200 seeds, so the expert always succeeds, also
    through the ROS 2 graph, whose camera-to-command latency costs it one or two control
    periods, and the suboptimal expert (25% random actions) sometimes runs out of time.
    """

    name: str
    scene: str
    time_limit_s: float

    @classmethod
    def steps_at(cls, control_hz: float) -> int:
        """The time limit in control steps at this control rate."""
        return max(1, round(cls.time_limit_s * control_hz))

    def __init__(self, model: mujoco.MjModel):
        self.model = model

    def reset(self, data: mujoco.MjData, rng: np.random.Generator) -> None:
        """Randomise objects and goals (the arm is placed by the env)."""
        raise NotImplementedError

    def privileged(self, data: mujoco.MjData) -> Privileged:
        raise NotImplementedError

    def success(self, data: mujoco.MjData) -> bool:
        raise NotImplementedError


class ReachTask(Task):
    name, scene, time_limit_s = "reach", "reach.xml", 2.0
    goal_box = Box((0.35, -0.25, 0.05), (0.70, 0.25, 0.35))

    def __init__(self, model: mujoco.MjModel):
        super().__init__(model)
        self.goal = model.body("goal").mocapid[0]
        self.tcp = model.site(TCP_SITE).id
        self.tolerance = float(model.geom("goal").size[0])  # the sphere shows the tolerance

    def reset(self, data: mujoco.MjData, rng: np.random.Generator) -> None:
        data.mocap_pos[self.goal] = self.goal_box.sample(rng)

    def privileged(self, data: mujoco.MjData) -> Privileged:
        return {"goal_position": data.mocap_pos[self.goal].copy()}

    def success(self, data: mujoco.MjData) -> bool:
        error = data.site_xpos[self.tcp] - data.mocap_pos[self.goal]
        return bool(np.linalg.norm(error) < self.tolerance)


class PushTask(Task):
    name, scene, time_limit_s = "push", "push.xml", 6.0
    puck_box = Box((0.42, -0.15), (0.62, 0.15))
    goal_box = Box((0.35, -0.25), (0.72, 0.25))
    goal_distance = (0.12, 0.22)  # m, puck start to goal

    def __init__(self, model: mujoco.MjModel):
        super().__init__(model)
        self.goal = model.body("goal").mocapid[0]
        self.puck_qpos = model.joint("puck").qposadr[0]
        self.puck_body = model.body("puck").id
        self.puck_radius = np.array([model.geom("puck").size[0]])
        self.tolerance = float(model.geom("goal").size[0])  # the disc shows the tolerance

    def reset(self, data: mujoco.MjData, rng: np.random.Generator) -> None:
        puck = self.puck_box.sample(rng)
        for _ in range(100):  # rejection: a goal at the right distance inside its box
            angle = rng.uniform(-np.pi, np.pi)
            goal = puck + rng.uniform(*self.goal_distance) * np.array([np.cos(angle), np.sin(angle)])
            if np.all(goal >= self.goal_box.low) and np.all(goal <= self.goal_box.high):
                break
        rest_z = self.model.body_pos[self.puck_body][2]
        data.qpos[self.puck_qpos:self.puck_qpos + 7] = [*puck, rest_z, 1.0, 0.0, 0.0, 0.0]
        data.mocap_pos[self.goal] = [*goal, 0.0]

    def privileged(self, data: mujoco.MjData) -> Privileged:
        return {"object_position": data.xpos[self.puck_body].copy(),
                "object_radius": self.puck_radius.copy(),
                "goal_position": data.mocap_pos[self.goal].copy()}

    def success(self, data: mujoco.MjData) -> bool:
        error = data.xpos[self.puck_body][:2] - data.mocap_pos[self.goal][:2]
        return bool(np.linalg.norm(error) < self.tolerance)


class DrawerOpenTask(Task):
    name, scene, time_limit_s = "drawer-open", "drawer.xml", 5.0
    cabinet_box = Box((0.42, 0.17), (0.60, 0.23))  # cabinet front centre (x, y)
    goal_opening = 0.10  # m of the drawer's 0.16 m travel

    def __init__(self, model: mujoco.MjModel):
        super().__init__(model)
        self.cabinet = model.body("cabinet").id
        self.drawer_joint = model.joint("drawer").id
        self.drawer_qpos = model.joint("drawer").qposadr[0]
        self.handle = model.site("handle").id
        self.handle_gap = model.site("handle_gap").id

    def reset(self, data: mujoco.MjData, rng: np.random.Generator) -> None:
        # The cabinet is fixed to the table; moving it is a model change, kept per env.
        self.model.body_pos[self.cabinet][:2] = self.cabinet_box.sample(rng)
        data.qpos[self.drawer_qpos] = 0.0

    def opening(self, data: mujoco.MjData) -> float:
        return float(data.qpos[self.drawer_qpos])

    def privileged(self, data: mujoco.MjData) -> Privileged:
        return {"handle_position": data.site_xpos[self.handle].copy(),
                "handle_gap_position": data.site_xpos[self.handle_gap].copy(),
                "drawer_axis": data.xaxis[self.drawer_joint].copy(),  # opening direction
                "drawer_opening": np.array([self.opening(data)]),
                "goal_opening": np.array([self.goal_opening])}

    def success(self, data: mujoco.MjData) -> bool:
        return self.opening(data) >= self.goal_opening


TASKS: dict[str, type[Task]] = {t.name: t for t in (ReachTask, PushTask, DrawerOpenTask)}
