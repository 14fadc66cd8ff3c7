"""Policy protocol and the task-independent policies of the evaluation (the paper's two, and zero).

A policy maps the environment's observation and info to a normalised action in the
env's action space. Scripted experts read privileged task state from `info`.
The paper's "suboptimal" demonstrations are the expert with 25% random actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from robot.policy_runtime import ZeroPolicy

SUBOPTIMAL_RANDOM_FRACTION = 0.25
POLICY_KINDS = ("expert", "suboptimal", "random", "zero")


class Policy(Protocol):
    name: str

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray: ...


class RandomPolicy:
    """Uniform random actions over the env's (bounded) action space."""

    name = "random"

    def __init__(self, action_space: gym.spaces.Box, seed: int | None = None):
        self.low = np.asarray(action_space.low, dtype=np.float32)
        self.high = np.asarray(action_space.high, dtype=np.float32)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(np.float32)


class SuboptimalPolicy:
    """The expert, with each action replaced by a random one with probability `random_fraction`."""

    name = "suboptimal"

    def __init__(self, expert: Policy, action_space: gym.spaces.Box,
                 random_fraction: float = SUBOPTIMAL_RANDOM_FRACTION, seed: int | None = None):
        if not 0.0 <= random_fraction <= 1.0:
            raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
        self.expert = expert
        self.random = RandomPolicy(action_space, seed)
        self.random_fraction = random_fraction
        self.rng = np.random.default_rng(None if seed is None else seed + 1)

    def reset(self, seed: int | None = None) -> None:
        self.expert.reset(seed)
        self.random.reset(seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed + 1)

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        # The expert is always queried so that stateful experts keep their phase.
        expert_action = self.expert.act(obs, info)
        if self.rng.random() < self.random_fraction:
            return self.random.act(obs, info)
        return expert_action


def scripted_policy(kind: str, make_expert: Callable[[], Policy], action_space: gym.spaces.Box,
                    seed: int | None = None) -> Policy:
    """The task's expert, the expert with random actions mixed in (the paper's
    "suboptimal"), uniform random, or zero (the arm holds still: what a dense reward must not pay
    as much as the expert): the sources of scripted episodes."""
    if kind not in POLICY_KINDS:
        raise ValueError(f"unknown policy kind {kind!r}; valid kinds: {', '.join(POLICY_KINDS)}")
    if kind == "random":
        return RandomPolicy(action_space, seed)
    if kind == "zero":
        return ZeroPolicy(action_space.shape[0])
    expert = make_expert()
    return expert if kind == "expert" else SuboptimalPolicy(expert, action_space, seed=seed)
