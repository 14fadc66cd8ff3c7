"""A policy acting on the cell at the control rate, as policy_node runs it (no ROS here).

    runner = PolicyRunner(make_policy("random", seed=0), max_linear_speed=0.25)
    runner.start(episode=1)                     # on EpisodeEvent STARTED
    command = runner.step(image)                # each control period: ArmCommand, or None (idle)
    zero = runner.stop()                        # on the episode's end: one zero twist

Policies follow sim.policies.Policy (act(obs, info) -> normalised action (vx, vy, vz, gripper) in
[-1, 1], as the mirror's gymnasium envs take it): `zero`, `random` (seeded per episode), `scripted`
(the mirror's scripted expert; it reads privileged task state, which on the mirror sim_arm_node
publishes, see `privileged_message`), and `actor` (a trained actor checkpoint, see `load_actor`).

New actor weights arrive by version while the policy runs (`WeightSwap.offer`, from any thread);
the runner swaps them in at the start of its next step, so a step never mixes two versions.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robot.types import ArmCommand

POLICY_KINDS = ("zero", "random", "scripted", "actor")
ACTION_SIZE = 4  # vx, vy, vz, gripper: the mirror envs' action without angular velocity
OPEN = -1.0  # normalised gripper action: -1 open .. 1 closed (command 0 .. 1)


class ZeroPolicy:
    """Holds still with the gripper open: for bringing the graph up, for tests, and as the still-arm
    baseline a dense reward must not pay as much as the expert (sim.policies)."""

    name = "zero"

    def __init__(self, action_size: int = ACTION_SIZE) -> None:
        self.action = np.zeros(action_size, dtype=np.float32)
        self.action[-1] = OPEN

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        return self.action.copy()


class ScriptedPolicy:
    """The mirror's scripted expert (sim.experts) of the task named in info["task"], acting on
    info["privileged"]: the same expert that records the demonstrations."""

    name = "scripted"

    def __init__(self, max_linear_speed: float) -> None:
        self.max_linear_speed = max_linear_speed
        self.task = ""
        self._expert: Any = None
        self._seed: int | None = None

    def reset(self, seed: int | None = None) -> None:
        self._seed = seed
        if self._expert is not None:
            self._expert.reset(seed)

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        task = info.get("task", "")
        if task != self.task or self._expert is None:
            from sim.experts import EXPERTS

            suite, _, name = task.partition(":")
            if suite != "sim" or name not in EXPERTS:
                raise ValueError(f"no scripted expert for task {task!r}; the mirror's are: "
                                 f"{', '.join(f'sim:{n}' for n in EXPERTS)}")
            self._expert, self.task = EXPERTS[name](self.max_linear_speed, ACTION_SIZE), task
            self._expert.reset(self._seed)
        return self._expert.act(obs, info)


# ---------------------------------------------------------------- trained actors


class Actor(Protocol):
    """What models.rl's actor offers policy_node: a deterministic action for one observation.

    image: uint8 (S, S, 3) RGB, the camera's crop at the actor's input size; proprio: float32
    (18,) as `proprio_vector` builds it. Returns the normalised action (vx, vy, vz, gripper).
    An actor that keeps state across steps (DrQ-v2 stacks its last frames) clears it in `reset`,
    called at every episode start."""

    def act(self, image: np.ndarray, proprio: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


class ActorLoadError(Exception):
    """An actor checkpoint cannot be loaded; the message says which file and why."""


def load_actor(path: str | Path) -> Actor:
    """The actor of a checkpoint written by the learner. The loader itself belongs to models.rl,
    which must provide `load_actor(path) -> Actor` (raising ValueError for a bad file)."""
    path = Path(path)
    if not path.is_file():
        raise ActorLoadError(f"actor checkpoint {path} not found (no such file)")
    try:
        from models.rl import load_actor as load_rl_actor
    except ImportError as error:
        raise ActorLoadError(f"cannot load actor checkpoint {path}: models.rl.load_actor, the loader of the "
                             f"learner's actor checkpoints, is not available ({error})") from None
    try:
        return load_rl_actor(path)
    except (ValueError, OSError, RuntimeError) as error:
        raise ActorLoadError(f"cannot load actor checkpoint {path}: {error}") from None


class ActorPolicy:
    """A trained actor; no action until it has weights. exploration_std > 0: Gaussian noise of that std
    on each normalised action (clipped to [-1, 1]), seeded per episode, as DrQ-v2 explores while it
    fine-tunes; 0 acts with the actor's mean action."""

    name = "actor"

    def __init__(self, actor: Actor | None = None, exploration_std: float = 0.0) -> None:
        if not (isinstance(exploration_std, (int, float)) and math.isfinite(exploration_std) and exploration_std >= 0):
            raise ValueError(f"exploration_std must be a finite number >= 0, got {exploration_std!r}")
        self.actor, self.exploration_std = actor, float(exploration_std)
        self._noise = np.random.default_rng(0)

    @property
    def ready(self) -> bool:
        return self.actor is not None

    def swap(self, actor: Actor) -> None:
        self.actor = actor

    def reset(self, seed: int | None = None) -> None:
        self._noise = np.random.default_rng(seed)
        if self.actor is not None:
            self.actor.reset()  # a new episode must not see the last one's frames

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        if self.actor is None:
            raise RuntimeError("the actor has no weights yet")
        action = np.asarray(self.actor.act(obs["image"], obs["proprio"]), dtype=np.float32)
        if self.exploration_std:
            action = np.clip(action + self._noise.normal(0.0, self.exploration_std, action.shape), -1.0, 1.0)
        return action.astype(np.float32)


def make_policy(kind: str, *, seed: int = 0, max_linear_speed: float = 0.25, actor: Actor | None = None,
                exploration_std: float = 0.0) -> Any:
    if kind not in POLICY_KINDS:
        raise ValueError(f"unknown policy {kind!r}; accepted: {', '.join(POLICY_KINDS)}")
    if kind == "zero":
        return ZeroPolicy()
    if kind == "random":
        import gymnasium as gym

        from sim.policies import RandomPolicy

        return RandomPolicy(gym.spaces.Box(-1.0, 1.0, (ACTION_SIZE,), np.float32), seed)
    if kind == "scripted":
        return ScriptedPolicy(max_linear_speed)
    return ActorPolicy(actor, exploration_std)


# ---------------------------------------------------------------- weights by version


@dataclass(frozen=True)
class Weights:
    version: int
    path: str
    actor: Any  # the loaded actor


def parse_weights_message(text: str) -> tuple[str, int]:
    """(checkpoint path, version) from the weights topic's JSON: {"path": "...", "version": 3}."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f'weights message is not JSON {{"path": ..., "version": ...}}: {error}') from None
    if not isinstance(value, dict) or set(value) - {"path", "version"}:
        raise ValueError(f'weights message must be {{"path": str, "version": int >= 0}}, got {text!r}')
    path, version = value.get("path"), value.get("version")
    if not isinstance(path, str) or not path:
        raise ValueError(f"weights message: path must be a non-empty string, got {path!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"weights message: version must be an int >= 0, got {version!r}")
    return path, version


class WeightSwap:
    """The newest offered weights, held until the policy's next step takes them. Versions only go
    up: an offer no newer than the current or pending version is refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Weights | None = None
        self.version = -1  # of the weights in use; -1: none yet

    def wants(self, version: int) -> bool:
        """Whether weights of this version would be taken (check before loading a file)."""
        with self._lock:
            return version > max(self.version, self._pending.version if self._pending else -1)

    def offer(self, weights: Weights) -> bool:
        with self._lock:
            newest = max(self.version, self._pending.version if self._pending else -1)
            if weights.version <= newest:
                return False
            self._pending = weights
            return True

    def take(self) -> Weights | None:
        """At the start of a step: the pending weights (now current), or None."""
        with self._lock:
            weights, self._pending = self._pending, None
            if weights is not None:
                self.version = weights.version
            return weights


# ---------------------------------------------------------------- observations and commands


def command_from_action(action: Sequence[float] | np.ndarray, max_linear_speed: float,
                        max_angular_speed: float = 1.0) -> ArmCommand:
    """A normalised action (vx, vy, vz[, wx, wy, wz], gripper) in [-1, 1] -> the arm command, as the
    mirror env scales it (sim.envs.MirrorEnv.command_from_action). NaN passes through to the
    safety gate, which rejects and counts it."""
    a = np.asarray(action, dtype=float).reshape(-1)
    if a.size not in (4, 7):
        raise ValueError(f"an action has 4 (vx, vy, vz, gripper) or 7 values (with wx, wy, wz), got {a.size}")
    a = np.where(np.isnan(a), a, np.clip(a, -1.0, 1.0))
    angular = a[3:6] * max_angular_speed if a.size == 7 else np.zeros(3)
    return ArmCommand(a[:3] * max_linear_speed, angular, (a[-1] + 1.0) / 2.0)


def proprio_vector(names: Sequence[str], positions: Sequence[float], velocities: Sequence[float],
                   ee_position: Sequence[float], finger_joints: Iterable[str]) -> np.ndarray:
    """The mirror env's "proprio" observation from joint_states + ee_pose: arm joint positions,
    arm joint velocities, end-effector position, gripper width (the finger joints' sum), float32."""
    fingers = set(finger_joints)
    positions, velocities = np.asarray(positions, dtype=float), np.asarray(velocities, dtype=float)
    if len(positions) != len(names) or (len(velocities) and len(velocities) != len(names)):
        raise ValueError(f"joint_states has {len(names)} names, {len(positions)} positions and "
                         f"{len(velocities)} velocities")
    if not len(velocities):
        velocities = np.zeros(len(names))
    arm = [i for i, n in enumerate(names) if n not in fingers]
    width = float(sum(positions[i] for i, n in enumerate(names) if n in fingers))
    return np.concatenate([positions[arm], velocities[arm], np.asarray(ee_position, dtype=float).reshape(3),
                           [width]]).astype(np.float32)


def privileged_message(task: str, stamp_ns: int, privileged: dict[str, Any]) -> str:
    """The JSON the mirror's arm publishes (std_msgs/String on sim_arm_node/privileged) so that the
    scripted expert can act on the ROS graph: the env's info["privileged"] (tcp_position,
    gripper_width and the task's own entries) with the task id and the sim stamp."""
    values = {key: np.asarray(value, dtype=float).reshape(-1).tolist() for key, value in privileged.items()}
    return json.dumps({"task": task, "stamp_ns": int(stamp_ns), "privileged": values})


def parse_privileged(text: str) -> tuple[str, int, dict[str, np.ndarray]]:
    """(task, stamp_ns, privileged arrays) from privileged_message's JSON; ValueError if malformed."""
    try:
        value = json.loads(text)
        task, stamp, entries = value["task"], value["stamp_ns"], value["privileged"]
        if not isinstance(task, str) or not isinstance(stamp, int) or not isinstance(entries, dict):
            raise TypeError("task must be a string, stamp_ns an int, privileged an object")
        arrays = {str(k): np.asarray(v, dtype=float) for k, v in entries.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"privileged state is not {{'task', 'stamp_ns', 'privileged': {{name: [numbers]}}}}: "
                         f"{error}") from None
    if not all(np.all(np.isfinite(a)) for a in arrays.values()):
        raise ValueError("privileged state holds non-finite numbers")
    return task, stamp, arrays


# ---------------------------------------------------------------- the loop


class PolicyRunner:
    """Gates a policy on the episode and its inputs; swaps weights between steps.

    needs: inputs besides the image the policy acts on: "proprio" and/or "privileged".
    A step returns None (publish nothing) while no episode runs or an input has not arrived;
    `idle_reason` says which."""

    INPUTS = ("proprio", "privileged")

    def __init__(self, policy: Any, max_linear_speed: float, max_angular_speed: float = 1.0, *,
                 needs: Iterable[str] = (), weights: WeightSwap | None = None, seed: int = 0) -> None:
        self.needs = frozenset(needs)
        if self.needs - set(self.INPUTS):
            raise ValueError(f"unknown policy inputs {sorted(self.needs - set(self.INPUTS))}; known: {self.INPUTS}")
        for name, value in (("max_linear_speed", max_linear_speed), ("max_angular_speed", max_angular_speed)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        self.policy, self.weights, self.seed = policy, weights, seed
        self.max_linear_speed, self.max_angular_speed = max_linear_speed, max_angular_speed
        self.running = False
        self.steps = 0  # commands produced
        self.idle_reason = "episode not running"
        self._gripper = 0.0  # of the last command, held when stopping

    @property
    def version(self) -> int:
        return self.weights.version if self.weights is not None else -1

    def start(self, episode: int = 0) -> None:
        """A new episode: the policy starts over (seeded with seed + episode)."""
        self.policy.reset(self.seed + episode)
        self.running = True

    def stop(self) -> ArmCommand | None:
        """The episode stopped: a zero twist (gripper held) if it was running, else None."""
        was, self.running = self.running, False
        self.idle_reason = "episode not running"
        return ArmCommand.zero(self._gripper) if was else None

    def step(self, image: np.ndarray | None, proprio: np.ndarray | None = None,
             privileged: dict[str, np.ndarray] | None = None, task: str = "") -> ArmCommand | None:
        if self.weights is not None and (new := self.weights.take()) is not None:
            self.policy.swap(new.actor)  # between steps: this step acts with the new weights throughout
        missing = [name for name, value in (("proprio", proprio), ("privileged", privileged))
                   if name in self.needs and value is None]
        if not self.running:
            self.idle_reason = "episode not running"
        elif image is None:
            self.idle_reason = "no image yet"
        elif missing:
            self.idle_reason = f"no {missing[0]} state yet"
        elif not getattr(self.policy, "ready", True):
            self.idle_reason = "no actor weights yet"
        else:
            self.idle_reason = ""
        if self.idle_reason:
            return None
        obs = {"image": image, "proprio": proprio}
        info = {"privileged": privileged, "task": task}
        command = command_from_action(self.policy.act(obs, info), self.max_linear_speed, self.max_angular_speed)
        self._gripper = command.gripper if math.isfinite(command.gripper) else self._gripper
        self.steps += 1
        return command
