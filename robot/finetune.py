"""On-robot fine-tuning: recorded episodes -> the DrQ-v2 replay -> updates -> versioned actors (no ROS here).

    learner = Finetuner(LearnerConfig(run_dir="out/finetune", episodes_dir="out/finetune/episodes"))
    for path in learner.new_recordings():        # closed MCAP files not yet in the buffer, oldest first
        learner.ingest(path)                     # read, label, add to the replay; persisted at once
    if learner.train():                          # the updates the ingested episodes are owed
        actor_path, version = learner.publishable()   # what policy_node loads from ~/weights

learner_node (drr_ros) is the wiring: it calls these on its own thread when recorder_node has closed an
episode, and publishes the actor. The MCAP files recorder_node writes are the record: the learner
reads each closed, complete one exactly once (by file name), whoever was running when it was recorded.

A recording becomes an Episode as policy_node saw it: frames cropped and resized as policy_node's
`crop` and `image_size` (robot.cameras.crop, the reader's resize), the proprio vector it builds
(robot.policy_runtime.proprio_vector), and the command the safety gate executed after each frame as the
normalised action (the linear twist over max_linear_speed, the gripper 0..1 -> -1..1). Step t goes
from frame t to frame t + action_repeat. Each step carries:
  intervention  teleop had control of the gate at some moment of the step (the /safety_gate/status
                messages recorder_node records);
  sparse reward 1 from the step that reaches the moment success was marked (the episode's
                SUCCESS_MARKED event) onward: success latches, as reward_node's sparse term does.
The diffusion reward labels frames cropped as the reward model was trained (reward_crop, by default the
centred square, robot.episodes.read_episode's), which may differ from the policy's crop.

The run folder: run.json (settings; a resume with others is refused), replay/ (one .npz per episode,
models.rl.replay), learner_state.json (which recordings are in the buffer, the updates owed),
agent.ckpt (the agent, with the actor version in its counters), actors/actor_vNNNNNN.ckpt.
Every file is written atomically. The order of writes makes a kill at any moment safe: an episode's
.npz names its recording in its metadata, so one that reached the buffer but not the state file is
found again on restart (never added twice); the actor file of a version is written before agent.ckpt
records that version, and the version is published only after both, so versions only go up.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from robot.cameras.crop import parse_crop
from robot.episodes.reader import CENTER_SQUARE, read_episode
from robot.policy_runtime import ACTION_SIZE

STATE_FILE = "learner_state.json"
ACTORS_DIR = "actors"
MCAP_MAGIC = b"\x89MCAP0\r\n"  # an MCAP file ends with it once its writer has closed it
STATUS_TOPIC = "/safety_gate/status"  # drr_interfaces/SafetyStatus, recorded by recorder_node
EVENTS_TOPIC = "/episode/events"  # drr_interfaces/EpisodeEvent, recorded by recorder_node
SUCCESS_MARKED = 2  # drr_interfaces/EpisodeEvent.SUCCESS_MARKED
TELEOP = "teleop"
MIRROR_PROPRIO_DIM = 18  # the mirror Panda's proprio_vector: 7 joints, 7 velocities, TCP xyz, gripper width
REWARDS = ("sparse", "diffusion", "rnd")  # models.rl.train's


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


# ---------------------------------------------------------------- recordings -> episodes


@dataclass(frozen=True)
class PolicyView:
    """How policy_node turned the camera into the actor's input, so the buffer holds what it saw."""

    crop: str = CENTER_SQUARE  # policy_node's `crop` parameter text (its default)
    image_size: int = 64
    max_linear_speed: float = 0.25  # m/s of a full action
    action_repeat: int = 1  # recorded frames per agent step

    def __post_init__(self) -> None:
        parse_crop(self.crop)
        _check_int("image_size", self.image_size, 15)
        _check_int("action_repeat", self.action_repeat, 1)
        if not (isinstance(self.max_linear_speed, (int, float)) and math.isfinite(self.max_linear_speed)
                and self.max_linear_speed > 0):
            raise ValueError(f"max_linear_speed must be a finite number > 0 (m/s of a full action), "
                             f"got {self.max_linear_speed!r}")


@dataclass
class Recording:
    """A recorded episode as the replay stores it (reward = the sparse success reward, not yet labelled),
    and its frames as the reward model takes them: every recorded frame up to the last step's end, in the
    reward model's crop (None: the same as episode.image)."""

    episode: Any  # models.rl.replay.Episode
    reward_frames: np.ndarray | None = None


def is_closed(path: Path) -> bool:
    """Whether the recorder has closed the file (an MCAP ends with its magic); cheap, reads 8 bytes."""
    try:
        with open(path, "rb") as f:
            f.seek(-len(MCAP_MAGIC), os.SEEK_END)
            return f.read() == MCAP_MAGIC
    except OSError:
        return False


def graph_messages(path: Path) -> tuple[list[tuple[int, str]], list[int]]:
    """([(stamp, active source)] of the gate's status messages, [stamps of SUCCESS_MARKED events]),
    decoded from the schemas in the file (mcap-ros2-support), in time order."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    statuses, marks = [], []
    with open(path, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages(topics=[STATUS_TOPIC, EVENTS_TOPIC]):
            if channel.topic == STATUS_TOPIC:
                statuses.append((message.log_time, str(decoded.active_source)))
            elif int(decoded.event) == SUCCESS_MARKED:
                marks.append(message.log_time)
    return sorted(statuses), sorted(marks)


def intervention_flags(frame_stamps: np.ndarray, statuses: list[tuple[int, str]]) -> np.ndarray:
    """(N - 1,) bool: step t (frame t to frame t + 1) had teleop in control at some moment: the status
    in force at frame t's stamp, or one that came before frame t + 1's, says teleop."""
    stamps = np.asarray(frame_stamps, dtype=np.int64)
    flags = np.zeros(max(len(stamps) - 1, 0), dtype=bool)
    if not statuses:
        return flags
    times = np.array([s for s, _ in statuses], dtype=np.int64)
    teleop = np.array([source == TELEOP for _, source in statuses])
    for t in range(len(flags)):
        in_force = max(int(np.searchsorted(times, stamps[t], side="right")) - 1, 0)  # at frame t (or the first)
        before_next = int(np.searchsorted(times, stamps[t + 1], side="left"))
        flags[t] = bool(teleop[in_force:before_next].any())
    return flags


def success_rewards(frame_stamps: np.ndarray, marks: list[int], success: bool) -> np.ndarray:
    """(N - 1,) float32: 1 for the steps whose next frame is at or after the first success mark. An
    episode recorded as successful without a mark in the file gets 1 on its last step."""
    stamps = np.asarray(frame_stamps, dtype=np.int64)
    reward = np.zeros(max(len(stamps) - 1, 0), dtype=np.float32)
    if marks:
        reward[stamps[1:] >= marks[0]] = 1.0
    elif success and len(reward):
        reward[-1] = 1.0
    return reward


def normalised_actions(gated: np.ndarray, max_linear_speed: float) -> np.ndarray:
    """The recorded gate output (N, 7): linear(3), angular(3), gripper 0..1 -> (N, 4) actions in [-1, 1]
    as policy_node's actor emits them (robot.policy_runtime.command_from_action, inverted)."""
    gated = np.asarray(gated, dtype=np.float64)
    linear = np.clip(gated[:, :3] / max_linear_speed, -1.0, 1.0)
    gripper = np.clip(gated[:, 6:7] * 2.0 - 1.0, -1.0, 1.0)
    return np.concatenate([linear, gripper], axis=1).astype(np.float32)


def proprio_of(recorded) -> np.ndarray:
    """(N, P) the proprio vector policy_node builds (robot.policy_runtime.proprio_vector): arm joint
    positions, arm joint velocities (0 where none were published), TCP position, gripper width."""
    velocities = np.nan_to_num(recorded.joint_velocities, nan=0.0)
    widths = np.nan_to_num(recorded.gripper_widths, nan=0.0)[:, None]
    return np.concatenate([recorded.joint_positions, velocities, recorded.ee_positions, widths],
                          axis=1).astype(np.float32)


def episode_from_recording(path: str | os.PathLike, view: PolicyView = PolicyView(),
                           reward_crop: str | None = None) -> Recording:
    """The replay Episode of a complete recording (ValueError naming the file otherwise); reward_crop:
    also return the frames cropped for the reward model (a crop text, e.g. 'center')."""
    from models.rl.replay import Episode

    path = Path(path)
    size = (view.image_size, view.image_size)
    recorded = read_episode(path, image_size=size, crop=parse_crop(view.crop))
    if not recorded.complete:
        raise ValueError(f"{path}: not a complete episode ({'; '.join(recorded.problems) or 'no episode_end'})")
    k = view.action_repeat
    if len(recorded) < k + 1:
        raise ValueError(f"{path}: {len(recorded)} frames, fewer than one step of {k} frame(s) and the frame after")
    statuses, marks = graph_messages(path)
    per_frame_flags = intervention_flags(recorded.stamps_ns, statuses)
    per_frame_sparse = success_rewards(recorded.stamps_ns, marks, bool(recorded.success))
    steps = (len(recorded) - 1) // k
    frames = np.arange(steps + 1) * k  # the observed frames: every k-th
    sparse = per_frame_sparse[:steps * k].reshape(steps, k).sum(axis=1)
    meta = {"recording": path.name, "episode_id": recorded.metadata.get("episode_id", ""),
            "task": recorded.metadata.get("task", ""), "success": bool(recorded.success),
            "end_event": recorded.metadata.get("end_event", ""), "end_reason": recorded.metadata.get("end_reason", ""),
            "policy": recorded.metadata.get("policy", ""), "action_repeat": k}
    episode = Episode(image=recorded.frames[frames], proprio=proprio_of(recorded)[frames],
                      action=normalised_actions(recorded.actions, view.max_linear_speed)[frames[:-1]],
                      reward=sparse, reward_parts={"sparse": sparse},
                      intervention=per_frame_flags[:steps * k].reshape(steps, k).any(axis=1), meta=meta)
    reward_frames = None  # every frame: the reward model learned videos at the recording's rate, not every k-th
    if reward_crop is not None and parse_crop(reward_crop) != parse_crop(view.crop):
        reward_frames = read_episode(path, image_size=size, crop=parse_crop(reward_crop)).frames[:steps * k + 1]
    elif k > 1:
        reward_frames = recorded.frames[:steps * k + 1]
    return Recording(episode, reward_frames)


def label_recording(recording: Recording, labeller) -> Any:
    """The episode with the labeller's reward (models.rl.train.Labeller), its parts and fingerprint; the
    labeller sees the reward model's frames."""
    episode = recording.episode
    seen = episode if recording.reward_frames is None else replace(episode, env_frames=recording.reward_frames)
    labels = dict(labeller(seen))
    return replace(episode, reward=labels.pop("reward"), reward_parts={**episode.reward_parts, **labels},
                   meta={**episode.meta, "reward_fingerprint": labeller.fingerprint})


# ---------------------------------------------------------------- the learner


@dataclass(frozen=True)
class LearnerConfig:
    """learner_node's parameters, checked here (errors name the field and what is accepted)."""

    run_dir: str
    episodes_dir: str  # recorder_node's out_dir
    preset: str = "tiny"  # models.rl.presets; a resumed run or init_agent must have been trained with it
    init_agent: str = ""  # agent.ckpt to start from (e.g. a mirror run of `drr train policy`); '' = a new agent
    reward: str = "sparse"  # sparse | diffusion | rnd (models.rl.train)
    reward_model: str = ""  # video.ckpt (diffusion)
    reward_kind: str = "entropy"
    alpha: float = 0.95  # the RND weight (diffusion, rnd)
    reward_crop: str = CENTER_SQUARE  # the reward model's training frames (models.data)
    view: PolicyView = PolicyView()
    proprio_dim: int = MIRROR_PROPRIO_DIM  # of a new agent
    updates_per_episode: int = 50
    learning_starts: int = -1  # transitions in the buffer before the first update; -1: the preset's seed_frames
    seed: int = 0
    keep_actors: int = 5  # newest actor files kept

    def __post_init__(self) -> None:
        from models.rl.presets import DrQConfig

        for name in ("run_dir", "episodes_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{name} must name a folder, got {getattr(self, name)!r}")
        DrQConfig.preset(self.preset)
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; accepted: {', '.join(REWARDS)}")
        if self.reward == "diffusion" and not self.reward_model:
            raise ValueError("reward diffusion needs reward_model: the video.ckpt of `drr train video`")
        if self.reward == "diffusion" and not Path(self.reward_model).is_file():
            raise ValueError(f"reward_model {self.reward_model!r} is not a file")
        if self.init_agent and not Path(self.init_agent).is_file():
            raise ValueError(f"init_agent {self.init_agent!r} is not a file (an agent.ckpt of `drr train policy`)")
        parse_crop(self.reward_crop)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {self.alpha!r}")
        for name, low in (("proprio_dim", 0), ("updates_per_episode", 0), ("learning_starts", -1), ("seed", 0),
                          ("keep_actors", 1)):
            _check_int(name, getattr(self, name), low)

    def settings(self, fingerprint: str) -> dict[str, Any]:
        """What a resumed run must share with the one in its folder."""
        return {"preset": self.preset, "reward": self.reward, "reward_fingerprint": fingerprint,
                "reward_crop": self.reward_crop, "view": asdict(self.view)}


@dataclass
class LearnerState:
    """learner_state.json: the recordings in the buffer (file name -> replay file name), those that
    cannot be (name -> why), the transitions ingested and the updates they are owed."""

    ingested: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    steps: int = 0
    updates_owed: int = 0

    @classmethod
    def load(cls, path: Path) -> LearnerState:
        if not path.exists():
            return cls()
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path} is not a learner state file ({error}); move it away to start over") from None

    def save(self, path: Path) -> None:
        from models.rl.train import write_atomically

        write_atomically(path, json.dumps(asdict(self), indent=1, sort_keys=True).encode())


class Finetuner:
    """The learner of a fine-tuning session: the replay, the agent and its versions, in one run folder."""

    def __init__(self, config: LearnerConfig) -> None:
        from models.rl import ReplayBuffer
        from models.rl.presets import DrQConfig
        from models.rl.train import check_or_write_settings, make_bonus, make_labeller

        self.config = config
        self.run_dir = Path(config.run_dir)
        self.episodes_dir = Path(config.episodes_dir)
        for folder in (self.run_dir, self.run_dir / ACTORS_DIR, self.episodes_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.labeller = make_labeller(config.reward, config.reward_model or None, config.reward_kind, config.alpha)
        check_or_write_settings(self.run_dir, config.settings(self.labeller.fingerprint))
        self.agent, self.version = self._load_or_make_agent(DrQConfig.preset(config.preset))
        agent_config = self.agent.config
        self.replay = ReplayBuffer(self.run_dir / "replay", agent_config.replay_size,
                                   frame_stack=agent_config.frame_stack, nstep=agent_config.nstep,
                                   discount=agent_config.discount)
        resumed = (self.run_dir / "rnd.ckpt") if (self.run_dir / "rnd.ckpt").exists() else None
        self.bonus = make_bonus(config.reward, config.alpha, config.preset, config.seed, resumed)
        self.learning_starts = agent_config.seed_frames if config.learning_starts < 0 else config.learning_starts
        self.state_path = self.run_dir / STATE_FILE
        self.state = LearnerState.load(self.state_path)
        self.recovered = self._recover_from_replay()
        if not self.actor_path(self.version).exists():  # a new agent: its version 0 is what the actor starts with
            self._save_version(self.version)

    # ------------------------------------------------------------ agent and versions

    def _load_or_make_agent(self, preset):
        from models.rl import DrQV2Agent, load_agent

        path = self.run_dir / "agent.ckpt"
        source = path if path.exists() else Path(self.config.init_agent) if self.config.init_agent else None
        if source is None:
            return DrQV2Agent(preset, self.config.view.image_size, self.config.proprio_dim, ACTION_SIZE,
                              seed=self.config.seed), 0
        agent, ckpt = load_agent(source)
        if agent.config.name != preset.name:
            raise ValueError(f"{source} was trained with the DrQ-v2 preset {agent.config.name!r}, not {preset.name!r}")
        spec = agent.spec
        if (spec.image_size, spec.action_dim) != (self.config.view.image_size, ACTION_SIZE):
            raise ValueError(f"{source} acts on {spec.image_size}px images with {spec.action_dim} actions; policy_node "
                             f"gives {self.config.view.image_size}px and {ACTION_SIZE} (vx, vy, vz, gripper)")
        return agent, int(ckpt.extra.get("counters", {}).get("version", 0)) if source == path else 0

    def actor_path(self, version: int) -> Path:
        return self.run_dir / ACTORS_DIR / f"actor_v{version:06d}.ckpt"

    def publishable(self) -> tuple[Path, int]:
        """The newest actor file and its version: what policy_node should run."""
        return self.actor_path(self.version), self.version

    def _save_version(self, version: int) -> None:
        """The actor file first, then agent.ckpt naming the version (the commit), then old actors go."""
        from models.rl import save_actor, save_agent
        from models.rl.train import save_rnd

        save_actor(self.agent, self.actor_path(version), step=self.state.steps)
        if self.bonus is not None:
            save_rnd(self.bonus, self.run_dir / "rnd.ckpt", self.state.steps, self.config.preset)
        save_agent(self.agent, self.run_dir / "agent.ckpt", step=self.state.steps,
                   counters={"version": version, "steps": self.state.steps})
        self.version = version
        actors = sorted((self.run_dir / ACTORS_DIR).glob("actor_v*.ckpt"))
        for old in actors[:-self.config.keep_actors]:
            old.unlink(missing_ok=True)

    # ------------------------------------------------------------ the buffer

    def _recover_from_replay(self) -> list[str]:
        """Recordings whose episode reached the replay but not the state file (a kill between the two):
        booked now, as ingest would have, so they are never added again."""
        from models.rl import load_episode

        booked = set(self.state.ingested.values())
        recovered = []
        for path in self.replay.episode_files():
            if path.name in booked or path in self.replay.unreadable:
                continue
            episode = load_episode(path)
            name = episode.meta.get("recording")
            if name and name not in self.state.ingested:
                self._book(name, path.name, len(episode))
                recovered.append(name)
        if recovered:
            self.state.save(self.state_path)
        return recovered

    def _book(self, recording: str, replay_file: str, steps: int) -> None:
        self.state.ingested[recording] = replay_file
        self.state.steps += steps
        if len(self.replay) >= self.learning_starts:
            self.state.updates_owed += self.config.updates_per_episode

    def new_recordings(self) -> list[Path]:
        """Closed recordings in episodes_dir neither in the buffer nor skipped, oldest first (by mtime)."""
        known = self.state.ingested.keys() | self.state.skipped.keys()
        candidates = [p for p in self.episodes_dir.glob("*.mcap") if p.name not in known and is_closed(p)]
        return sorted(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def unfinished_recordings(self) -> int:
        """Files the recorder has not closed (being written, or cut short by a crash)."""
        known = self.state.ingested.keys() | self.state.skipped.keys()
        return sum(1 for p in self.episodes_dir.glob("*.mcap") if p.name not in known and not is_closed(p))

    def ingest(self, path: Path) -> Any | None:
        """Read, label and store one closed recording; its Episode, or None if it is not a usable episode
        (the reason is kept in the state's `skipped`, so it is not read again)."""
        try:
            recording = episode_from_recording(path, self.config.view, self.config.reward_crop
                                               if self.config.reward == "diffusion" else None)
        except ValueError as error:
            self.state.skipped[path.name] = str(error)
            self.state.save(self.state_path)
            return None
        proprio_dim = recording.episode.proprio.shape[1]
        if self.agent.config.use_proprio and proprio_dim != self.agent.spec.proprio_dim:
            raise ValueError(f"{path}: proprio of {proprio_dim} values, the agent takes {self.agent.spec.proprio_dim} "
                             "(parameter proprio_dim of a new agent must match the arm)")
        episode = label_recording(recording, self.labeller)
        replay_file = self.replay.add(episode)
        self._book(path.name, replay_file.name, len(episode))
        self.state.save(self.state_path)
        return episode

    # ------------------------------------------------------------ learning

    @property
    def updates_due(self) -> int:
        return max(self.state.updates_owed - self.agent.updates, 0)

    def train(self, should_stop: Callable[[], bool] = lambda: False,
              on_update: Callable[[dict[str, float]], None] = lambda metrics: None) -> bool:
        """The updates owed (updates_per_episode per episode ingested once learning started), then a new
        version saved; False if there was nothing to do. Stops early (saving) when should_stop()."""
        if not self.updates_due or not len(self.replay):
            return False
        batch_size = self.agent.config.batch_size
        while self.updates_due and not should_stop():
            batch = self.replay.sample(batch_size, self.agent.generator)
            try:
                metrics = self.agent.learn(batch, self.state.steps, self.bonus)
            except FloatingPointError as error:
                raise ValueError(f"DrQ-v2 diverged ({error}); the last good checkpoint is kept: "
                                 f"{self.run_dir / 'agent.ckpt'}") from None
            on_update(metrics)
        self._save_version(self.version + 1)
        return True

    def summary(self) -> dict[str, Any]:
        return {"version": self.version, "episodes": len(self.state.ingested), "skipped": len(self.state.skipped),
                "buffer_transitions": self.state.steps, "updates": self.agent.updates,
                "updates_due": self.updates_due}

