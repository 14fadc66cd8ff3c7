"""Every task id the stack knows, and how to build its env and its scripted policies.

Task ids name a suite and a task: `sim:<task>` for the MuJoCo mirror of the cell,
`metaworld:<task>-v3` for the paper's MetaWorld tasks (needs the `metaworld` extra).
"""

from __future__ import annotations

import gymnasium as gym

from sim.policies import Policy

SUITES = ("sim", "metaworld")


def mirror_tasks() -> tuple[str, ...]:
    from sim.envs import MIRROR_TASKS

    return tuple(f"sim:{name}" for name in MIRROR_TASKS)


def metaworld_tasks() -> tuple[str, ...]:
    """Empty when the optional `metaworld` extra is not installed."""
    try:
        from sim.metaworld_adapter import PAPER_TASKS
    except ImportError:
        return ()

    return tuple(f"metaworld:{name}" for name in PAPER_TASKS)


def task_ids() -> tuple[str, ...]:
    return mirror_tasks() + metaworld_tasks()


def parse_task_id(task_id: str) -> tuple[str, str]:
    """Split 'suite:name', checking both against what is installed."""
    suite, sep, name = task_id.partition(":")
    if not sep or suite not in SUITES:
        raise ValueError(f"unknown task {task_id!r}: task ids look like 'sim:reach' or "
                         f"'metaworld:reach-v3'; known: {', '.join(task_ids())}")
    known = mirror_tasks() if suite == "sim" else metaworld_tasks()
    if not known:
        raise ValueError(f"task {task_id!r} needs MetaWorld: pip install -e '.[metaworld]'")
    if task_id not in known:
        raise ValueError(f"unknown task {task_id!r}; {suite} tasks are: {', '.join(known)}")
    return suite, name


def make_env(task_id: str, **kwargs) -> gym.Env:
    """The task's env with the project's observation/info contract (see sim/envs.py)."""
    suite, name = parse_task_id(task_id)
    if suite == "sim":
        from sim.envs import make_mirror_env

        return make_mirror_env(name, **kwargs)
    from sim.metaworld_adapter import make_metaworld_env

    # MetaWorld's camera and control rate are fixed by the benchmark: say so rather than ignore them.
    if kwargs.pop("calibration", None) is not None:
        raise ValueError(f"{task_id} uses MetaWorld's fixed camera; a calibration can be given for sim:* tasks only")
    if kwargs.pop("control_hz", None) is not None:
        raise ValueError(f"{task_id} runs at MetaWorld's fixed control rate; "
                         "a control rate can be set for sim:* tasks only")
    return make_metaworld_env(name, **kwargs)


def make_policy(kind: str, task_id: str, env: gym.Env, seed: int | None = None) -> Policy:
    suite, _ = parse_task_id(task_id)
    if suite == "sim":
        from sim.experts import make_mirror_policy

        return make_mirror_policy(kind, env, seed)
    from sim.metaworld_adapter import make_metaworld_policy

    return make_metaworld_policy(kind, env, seed)
