"""MirrorEnv.execute: one control period of an ArmCommand, through the env's gate or past it
(sim_arm_node, which sits behind the safety_gate node)."""

from __future__ import annotations

import numpy as np
import pytest

from robot.types import ArmCommand
from sim import cell
from sim.envs import MirrorEnv


@pytest.fixture(scope="module")
def env():
    made = MirrorEnv("reach")
    yield made
    made.close()


def run(env: MirrorEnv, command: ArmCommand, steps: int, gated: bool) -> tuple[np.ndarray, list[ArmCommand]]:
    env.reset(seed=0)
    start = cell.tcp_pose(env.data, env.arm)[0]
    executed = [env.execute(command, gated=gated) for _ in range(steps)]
    return cell.tcp_pose(env.data, env.arm)[0] - start, executed


def test_ungated_execute_runs_the_command_as_given(env):
    fast = ArmCommand([0.0, 0.4, 0.0], [0, 0, 0], 0.0)  # above the env gate's 0.25 m/s
    moved, executed = run(env, fast, 3, gated=False)
    assert all(np.array_equal(out.linear, fast.linear) for out in executed)
    np.testing.assert_allclose(moved, [0.0, 0.12, 0.0], atol=0.01)  # 0.3 s at 0.4 m/s


def test_gated_execute_is_what_step_does(env):
    moved, executed = run(env, ArmCommand([0.0, 0.4, 0.0], [0, 0, 0], 0.0), 3, gated=True)
    speeds = [float(np.linalg.norm(out.linear)) for out in executed]
    assert speeds == pytest.approx([0.2, 0.25, 0.25])  # accel-limited from rest, then speed-limited
    assert moved[1] == pytest.approx(0.07, abs=0.01)


def test_privileged_state_is_infos(env):
    _, info = env.reset(seed=3)
    now = env.privileged_state()
    assert now.keys() == info["privileged"].keys() and "goal_position" in now
    for key, value in info["privileged"].items():
        np.testing.assert_array_equal(now[key], value)
