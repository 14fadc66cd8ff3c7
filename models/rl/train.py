"""`drr train policy`: DrQ-v2 in a mirror or MetaWorld task on the diffusion reward.

    summary = train_policy("sim:reach", "runs/reach", reward="diffusion",
                           reward_model="out/demo/reward_model/video.ckpt", frames=100_000)

The loop is DrQ-v2's: uniform random actions for the preset's seed frames, then the actor with
scheduled noise, each action repeated action_repeat env frames (their sparse rewards summed, only the
last frame kept), an update every update_every_steps agent steps. The reward is the paper's,

    reward = (1 - alpha) * standardised diffusion reward + alpha * RND novelty + sparse success reward

with its terms computed where they stay valid: the diffusion term when an episode ends, every frame
in one batched call of the reward model (stored with the episode, its parts and the model's
fingerprint, so ReplayBuffer.relabel can redo it for a new model), the novelty at update time on the
sampled next observations (RNDBonus), so it follows the RND predictor as it trains. Step t's diffusion
reward is that of frame t + 1, the frame its action led to, as the novelty is that of the next
observation. `sparse` learns from the success reward alone, `rnd` from success plus novelty.

Episodes are fixed-length: success does not end them (the time limit does), as in the paper, and the
success rate counts an episode that succeeded at some step.

A run folder holds run.json (the settings), replay/ (one file per episode), agent.ckpt (everything to
resume) and actor.ckpt (what policy_node loads), rnd.ckpt (the novelty's predictor), eval.csv,
eval_episodes.png (the last evaluation's episodes) and tensorboard/. Checkpoints are written at every
evaluation and at the end; a rerun on the same folder with a larger frame budget continues from them,
and refuses other settings.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import gymnasium as gym
import numpy as np
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from models.checkpoint import Checkpoint, load_checkpoint, load_state_checked, save_checkpoint
from models.rewards import RND, RNDConfig, check_reward_kind, compose_reward
from models.rl.drqv2 import DrQActor, DrQV2Agent, FrameStack, RNDBonus, load_agent, save_actor, save_agent
from models.rl.presets import DrQConfig
from models.rl.replay import Episode, ReplayBuffer
from robot.episodes.reader import CENTER_SQUARE

if TYPE_CHECKING:
    from models.reward_model import DiffusionReward

REWARDS = ("diffusion", "sparse", "rnd")
PAPER_ALPHA = 0.95  # the RND weight within the diffusion reward
IMAGE_SIZE = 64  # the paper's frames: what the reward models and the agent see
# The mirror camera's crop they see: the centred square, as the reward models' training frames
# (models.data) and policy_node's default `crop`, so an actor trained here runs in the graph unchanged.
MIRROR_CROP = CENTER_SQUARE
EVAL_SEED_OFFSET = 1_000_000  # evaluation scenes never coincide with training scenes (seed + episode index)
EVAL_COLUMNS = ("frames", "episodes", "success_rate", "mean_return", "wall_s")


# ---------------------------------------------------------------- labelling finished episodes


class Labeller(Protocol):
    """Rewards of a finished episode, in the shape ReplayBuffer.relabel takes: {"reward": (T,) the
    composed total, part name: (T,) ...}. The episode holds its sparse success reward in
    reward_parts["sparse"]. fingerprint: identifies what the labels depend on. reads_env_frames: the
    episode must carry every env frame (Episode.env_frames) when steps repeat actions."""

    fingerprint: str
    reads_env_frames: bool

    def __call__(self, episode: Episode) -> dict[str, np.ndarray]: ...


class SparseLabeller:
    """The env's success reward alone (the `sparse` and `rnd` rewards; RND joins at update time)."""

    fingerprint = "sparse"
    reads_env_frames = False

    def __call__(self, episode: Episode) -> dict[str, np.ndarray]:
        return {"reward": episode.reward_parts["sparse"]}


class DiffusionLabeller:
    """(1 - alpha) * standardised diffusion reward + sparse, stored as the episode's reward; the
    standardised and raw diffusion rewards are kept as parts."""

    reads_env_frames = True

    def __init__(self, reward: DiffusionReward, fingerprint: str, alpha: float = PAPER_ALPHA) -> None:
        self.reward, self.fingerprint, self.alpha = reward, fingerprint, alpha

    def __call__(self, episode: Episode) -> dict[str, np.ndarray]:
        # Every env frame: the model learned from videos at the env's rate, so frames an action repeat
        # skips would make its history span k times the time it expects.
        labels = self.reward.label_episode(episode.image if episode.env_frames is None else episode.env_frames)
        standardized, raw = per_step(labels.standardized, len(episode)), per_step(labels.raw, len(episode))
        no_novelty = np.zeros_like(standardized)  # RNDBonus adds it when the step is sampled
        total = compose_reward(standardized, no_novelty, episode.reward_parts["sparse"], self.alpha)
        return {"reward": total, "diffusion": standardized, "diffusion_raw": raw}


def per_step(frame_values: np.ndarray, steps: int) -> np.ndarray:
    """(F,) values of an episode's frames -> (steps,): each step's mean over the frames its action led
    to. Step t covers frames t*k + 1 .. (t+1)*k, k = ceil((F - 1) / steps) (the last step may have fewer;
    k = 1: step t gets frame t + 1's value)."""
    after = np.asarray(frame_values)[1:]
    if steps < 1 or len(after) < steps:
        raise ValueError(f"per_step: {len(after) + 1} frames cannot cover {steps} steps")
    k = -(-len(after) // steps)
    starts = np.arange(steps) * k
    if starts[-1] >= len(after):
        raise ValueError(f"per_step: {len(after) + 1} frames do not split into {steps} steps of {k} frames")
    return (np.add.reduceat(after, starts) / np.diff(np.r_[starts, len(after)])).astype(after.dtype)


def label(episode: Episode, labeller: Labeller) -> Episode:
    """The episode with the labeller's reward, its parts added, and its fingerprint in meta."""
    labels = dict(labeller(episode))
    return replace(episode, reward=labels.pop("reward"), reward_parts={**episode.reward_parts, **labels},
                   meta={**episode.meta, "reward_fingerprint": labeller.fingerprint})


def reward_model_fingerprint(path: str | os.PathLike, kind: str, alpha: float) -> str:
    """What a diffusion label depends on: the model file's bytes, the reward kind and alpha."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"video-{digest.hexdigest()[:16]}/{kind}/alpha={alpha:g}"


def make_labeller(reward: str | Labeller, reward_model: str | os.PathLike | None, kind: str,
                  alpha: float) -> Labeller:
    if not isinstance(reward, str):
        return reward
    if reward != "diffusion":
        return SparseLabeller()
    from models.reward_model import DiffusionReward

    model = DiffusionReward.load(reward_model, kind=kind)
    if model.image_size != IMAGE_SIZE:
        raise ValueError(f"the reward model {reward_model} takes {model.image_size}x{model.image_size} frames; the "
                         f"policy's env renders {IMAGE_SIZE}x{IMAGE_SIZE} (train the reward model at that size)")
    return DiffusionLabeller(model, reward_model_fingerprint(reward_model, kind, alpha), alpha)


# ---------------------------------------------------------------- acting


@dataclass
class Repeated:
    """One agent step: the action repeated until action_repeat frames or the episode's end."""

    obs: dict[str, np.ndarray]  # after the last frame
    reward: float  # the frames' sparse rewards, summed
    images: list[np.ndarray]  # every frame's image, the last one obs["image"]
    success: bool  # at some frame
    done: bool

    @property
    def frames(self) -> int:
        return len(self.images)


def repeat_action(env: gym.Env, action: np.ndarray, repeat: int) -> Repeated:
    reward, success, images = 0.0, False, []
    for _ in range(repeat):
        obs, frame_reward, terminated, truncated, info = env.step(action)
        reward += float(frame_reward)
        success |= bool(info["success"])
        images.append(obs["image"])
        if terminated or truncated:
            return Repeated(obs, reward, images, success, True)
    return Repeated(obs, reward, images, success, False)


@dataclass
class EvalEpisode:
    frames: list[np.ndarray]
    sparse_return: float
    success: bool


def evaluate(env: gym.Env, actor: DrQActor, seeds: range, action_repeat: int) -> list[EvalEpisode]:
    """The deterministic actor, fed frame by frame as policy_node feeds it, one episode per seed."""
    episodes = []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        actor.reset()
        episode, done = EvalEpisode([obs["image"]], 0.0, bool(info["success"])), False
        while not done:
            step = repeat_action(env, actor.act(obs["image"], obs["proprio"]), action_repeat)
            obs, done = step.obs, step.done
            episode.frames.append(obs["image"])
            episode.sparse_return += step.reward
            episode.success |= step.success
        episodes.append(episode)
    return episodes


def eval_sheet(episodes: list[EvalEpisode], path: Path, frames_per_episode: int = 8, tile: int = 96) -> Path:
    """One row per evaluation episode: a label band, then evenly spaced frames (robot.episodes'
    contact_sheet reads episode files; these frames were never written to one)."""
    band = 18
    sheet = np.full((len(episodes) * (tile + band), frames_per_episode * tile, 3), 32, np.uint8)
    for row, episode in enumerate(episodes):
        top = row * (tile + band)
        text = (f"eval {row}: {'success' if episode.success else 'failure'}, return {episode.sparse_return:.1f}, "
                f"{len(episode.frames)} frames")
        cv2.putText(sheet, text, (4, top + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1, cv2.LINE_AA)
        picks = np.linspace(0, len(episode.frames) - 1, frames_per_episode).round().astype(int)
        for column, index in enumerate(picks):
            cell = cv2.resize(episode.frames[index], (tile, tile), interpolation=cv2.INTER_NEAREST)
            sheet[top + band:top + band + tile, column * tile:(column + 1) * tile] = cell
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: could not encode the evaluation sheet as PNG")
    write_atomically(path, png.tobytes())
    return path


# ---------------------------------------------------------------- the run folder


@dataclass
class Counters:
    frames: int = 0  # env frames, action repeats included: the budget's unit
    steps: int = 0  # agent steps: what the seed phase and the noise schedule count
    episodes: int = 0  # training episodes finished (the next one's env seed is seed + episodes)
    wall_s: float = 0.0  # training time over every session of the run


def reward_name(reward: str | Labeller) -> str:
    return reward if isinstance(reward, str) else f"custom:{type(reward).__name__}"


def uses_novelty(reward: str | Labeller, alpha: float) -> bool:
    return reward in ("diffusion", "rnd") and alpha > 0


def run_settings(env_id: str, reward: str | Labeller, kind: str, alpha: float, preset: str, seed: int,
                 labeller: Labeller) -> dict[str, Any]:
    """What a resumed run must share with the run in its folder."""
    return {"env": env_id, "reward": reward_name(reward), "reward_kind": kind if reward == "diffusion" else None,
            "alpha": alpha if reward in ("diffusion", "rnd") else None, "preset": preset, "seed": seed,
            "reward_fingerprint": labeller.fingerprint}


def check_or_write_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / "run.json"
    if path.exists():
        before = json.loads(path.read_text())
        differ = {key: (before.get(key), value) for key, value in settings.items() if before.get(key) != value}
        if differ:
            listed = "; ".join(f"{key}: folder {old!r}, now {new!r}" for key, (old, new) in differ.items())
            raise ValueError(f"{out} holds a run with other settings ({listed}); resume it with its settings "
                             "or train in a new folder")
        return
    write_atomically(path, json.dumps(settings, indent=2).encode())


def write_atomically(path: Path, data: bytes) -> None:
    """A temp file next to path, renamed onto it: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_eval_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVAL_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def last_eval_row(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else None


# ---------------------------------------------------------------- training


@dataclass
class Trainer:
    """One training session on a run folder: acting, labelling, updates, evaluation, checkpoints."""

    env_id: str
    env: gym.Env
    agent: DrQV2Agent
    replay: ReplayBuffer
    labeller: Labeller
    bonus: RNDBonus | None
    out: Path
    seed: int
    counters: Counters
    writer: SummaryWriter
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def config(self) -> DrQConfig:
        return self.agent.config

    def run_episode(self, frame_budget: int, bar: tqdm) -> None:
        """One training episode (cut short at the frame budget), labelled and stored when it ends."""
        episode_seed = self.seed + self.counters.episodes
        obs, info = self.env.reset(seed=episode_seed)
        stack = FrameStack(self.config.frame_stack)
        images, proprio, actions, sparse, success = [obs["image"]], [obs["proprio"]], [], [], bool(info["success"])
        env_frames = [obs["image"]]
        done = False
        while not done and self.counters.frames < frame_budget:
            action = self.agent.act(stack.push(obs["image"]), obs["proprio"], self.counters.steps)
            self.update()  # DrQ-v2's order: agent step t acts, updates at t, then steps the env
            step = repeat_action(self.env, action, self.config.action_repeat)
            obs, done, success = step.obs, step.done, success or step.success
            images.append(obs["image"])
            env_frames.extend(step.images)
            proprio.append(obs["proprio"])
            actions.append(action)
            sparse.append(step.reward)
            self.counters.frames += step.frames
            self.counters.steps += 1
            bar.update(step.frames)
        sparse = np.asarray(sparse, np.float32)
        repeated = len(env_frames) > len(images) and self.labeller.reads_env_frames
        episode = Episode(np.stack(images), np.stack(proprio), np.stack(actions), sparse, {"sparse": sparse},
                          meta={"env": self.env_id, "seed": episode_seed, "success": success},
                          env_frames=np.stack(env_frames) if repeated else None)
        labelled = label(episode, self.labeller)
        self.replay.add(labelled)
        self.counters.episodes += 1
        self.log_episode(labelled)

    def update(self) -> None:
        if self.counters.steps < self.config.seed_steps or not len(self.replay):
            return
        try:
            metrics = self.agent.update(self.replay, self.counters.steps, self.bonus)
        except FloatingPointError as error:
            raise ValueError(f"DrQ-v2 training diverged ({error}); the last good checkpoint is kept: "
                             f"{self.out / 'agent.ckpt'}") from None
        self.metrics |= metrics

    def log_episode(self, episode: Episode) -> None:
        frames = self.counters.frames
        self.writer.add_scalar("train/episode_reward", float(episode.reward.sum()), frames)
        self.writer.add_scalar("train/episode_success", float(episode.meta["success"]), frames)
        for name, part in episode.reward_parts.items():
            self.writer.add_scalar(f"train/episode_{name}", float(part.sum()), frames)
        for name, value in self.metrics.items():
            self.writer.add_scalar(f"update/{name}", value, frames)

    def evaluate_and_save(self, episodes: int, started: float) -> dict[str, Any]:
        seeds = range(EVAL_SEED_OFFSET + self.seed, EVAL_SEED_OFFSET + self.seed + episodes)
        results = evaluate(self.env, self.agent.deployment_actor(), seeds, self.config.action_repeat)
        row = {"frames": self.counters.frames, "episodes": self.counters.episodes,
               "success_rate": float(np.mean([e.success for e in results])),
               "mean_return": float(np.mean([e.sparse_return for e in results])),
               "wall_s": round(self.counters.wall_s + time.perf_counter() - started, 1)}
        self.counters.wall_s = row["wall_s"]
        self.save()
        append_eval_row(self.out / "eval.csv", row)  # after the checkpoint: no row the checkpoint lacks
        eval_sheet(results, self.out / "eval_episodes.png")
        for name in ("success_rate", "mean_return"):
            self.writer.add_scalar(f"eval/{name}", row[name], self.counters.frames)
        self.writer.flush()
        return row

    def save(self) -> None:
        """Atomic writes: a crash leaves the previous files whole."""
        save_agent(self.agent, self.out / "agent.ckpt", step=self.counters.steps, counters=asdict(self.counters))
        save_actor(self.agent, self.out / "actor.ckpt", step=self.counters.steps)
        if self.bonus is not None:
            save_rnd(self.bonus, self.out / "rnd.ckpt", self.counters.steps, self.config.name)


def make_bonus(reward: str | Labeller, alpha: float, preset: str, seed: int, resume: Path | None) -> RNDBonus | None:
    """The novelty hook: trained on the sampled frames, alpha-weighted; none without novelty in the reward."""
    if not uses_novelty(reward, alpha):
        return None
    rnd = RND(RNDConfig.preset(preset, input_shape=(3, IMAGE_SIZE, IMAGE_SIZE), seed=seed))
    optimizer = rnd.make_optimizer()
    if resume is not None and resume.exists():
        ckpt = load_checkpoint(resume, expect_kind="rnd", expect_preset=preset)
        load_state_checked(rnd, ckpt.state_dict, f"RND weights in {resume}")
        optimizer.load_state_dict(ckpt.extra["optimizer"])
    return RNDBonus(rnd, scale=alpha, optimizer=optimizer)


def save_rnd(bonus: RNDBonus, path: Path, step: int, preset: str) -> None:
    rnd = bonus.rnd
    save_checkpoint(Checkpoint(kind="rnd", preset=preset, config=rnd.config.to_dict(), state_dict=rnd.state_dict(),
                               step=step, extra={"optimizer": bonus.optimizer.state_dict()}), path)


def check_arguments(env_id: str, reward: str | Labeller, reward_model: Any, kind: str, alpha: float, preset: str,
                    frames: int, eval_every_frames: int, eval_episodes: int, seed: int) -> None:
    """Every cheap check before anything is loaded, built or written."""
    from sim.registry import parse_task_id

    parse_task_id(env_id)
    custom = not isinstance(reward, str) and callable(reward) and isinstance(getattr(reward, "fingerprint", None), str)
    if not custom and reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; rewards: {', '.join(REWARDS)}, or a Labeller")
    DrQConfig.preset(preset)
    check_reward_kind(kind)
    if reward == "diffusion" and reward_model is None:
        raise ValueError("the diffusion reward needs a trained reward model: pass the video.ckpt of "
                         "`drr train video` (--reward-model)")
    if reward != "diffusion" and reward_model is not None:
        raise ValueError(f"a reward model is used by the diffusion reward only, not by {reward_name(reward)!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the RND weight) must be a number in [0, 1], got {alpha!r}")
    for name, value, low in (("frames", frames, 1), ("eval_every_frames", eval_every_frames, 1),
                             ("eval_episodes", eval_episodes, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def make_agent(out: Path, config: DrQConfig, env: gym.Env, seed: int) -> tuple[DrQV2Agent, Counters]:
    """The run's agent and counters from agent.ckpt, or a new agent for this env."""
    path = out / "agent.ckpt"
    if path.exists():
        agent, ckpt = load_agent(path)
        if agent.config != config:
            raise ValueError(f"{path} was trained with another DrQ-v2 config than the preset {config.name!r}")
        return agent, Counters(**ckpt.extra["counters"])
    spaces = env.observation_space
    proprio_dim, action_dim = spaces["proprio"].shape[0], env.action_space.shape[0]
    return DrQV2Agent(config, IMAGE_SIZE, proprio_dim, action_dim, seed=seed), Counters()


def train_policy(env_id: str, out_dir: str | os.PathLike, *, reward: str | Labeller = "diffusion",
                 reward_model: str | os.PathLike | None = None, reward_kind: str = "entropy",
                 alpha: float = PAPER_ALPHA, preset: str = "cpu", frames: int = 100_000,
                 eval_every_frames: int = 10_000, eval_episodes: int = 10, seed: int = 0,
                 calibration: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) DrQ-v2 in env_id until `frames` env frames; see the module docstring.
    calibration: a cell calibration YAML the mirror renders its camera from (default: the mirror's).

    reward: "diffusion" (needs reward_model, a video.ckpt; reward_kind and alpha as in models.rewards),
    "sparse", "rnd", or a Labeller of your own (a task's shaped reward, to compare against). eval_episodes
    run with the deterministic actor whenever the frames pass a multiple of eval_every_frames, and at
    the end. Returns the final success rate and mean sparse return, counts and paths."""
    from sim.record import check_writable_dir
    from sim.registry import make_env

    check_arguments(env_id, reward, reward_model, reward_kind, alpha, preset, frames, eval_every_frames,
                    eval_episodes, seed)
    config = DrQConfig.preset(preset)
    labeller = make_labeller(reward, reward_model, reward_kind, alpha)
    out = check_writable_dir(out_dir)
    check_or_write_settings(out, run_settings(env_id, reward, reward_kind, alpha, preset, seed, labeller))
    view = {"image_crop": MIRROR_CROP} if env_id.startswith("sim:") else {}  # MetaWorld renders a square view
    if calibration is not None:
        view["calibration"] = calibration  # make_env refuses it for MetaWorld, whose camera is fixed
    env = make_env(env_id, image_size=(IMAGE_SIZE, IMAGE_SIZE), terminate_on_success=False, **view)
    try:
        agent, counters = make_agent(out, config, env, seed)
        resumed = counters.frames
        bonus = make_bonus(reward, alpha, preset, seed, out / "rnd.ckpt" if resumed else None)
        replay = ReplayBuffer(out / "replay", config.replay_size, frame_stack=config.frame_stack,
                              nstep=config.nstep, discount=config.discount)
        with SummaryWriter(str(out / "tensorboard")) as writer:
            trainer = Trainer(env_id, env, agent, replay, labeller, bonus, out, seed, counters, writer)
            last = train_until(trainer, frames, eval_every_frames, eval_episodes, progress)
    finally:
        env.close()
    return summary(trainer, last, resumed, reward_name(reward), preset)


def train_until(trainer: Trainer, frames: int, eval_every: int, eval_episodes: int,
                progress: bool) -> dict[str, Any] | None:
    """Episodes until the budget, evaluating (and saving) each time the frames pass a multiple of
    eval_every and once at the end; the last evaluation's row."""
    counters, started = trainer.counters, time.perf_counter()
    last = last_eval_row(trainer.out / "eval.csv")
    next_eval = (counters.frames // eval_every + 1) * eval_every
    with tqdm(total=frames, initial=min(counters.frames, frames), unit="frame", desc=f"DrQ-v2 {trainer.env_id}",
              disable=not progress) as bar:
        while counters.frames < frames:
            trainer.run_episode(frames, bar)
            if counters.frames >= next_eval or counters.frames >= frames:
                last = trainer.evaluate_and_save(eval_episodes, started)
                started = time.perf_counter()
                next_eval = (counters.frames // eval_every + 1) * eval_every
                bar.set_postfix(success=f"{last['success_rate']:.0%}", ret=f"{last['mean_return']:.1f}")
    return last


def summary(trainer: Trainer, last: dict[str, Any] | None, resumed_from: int, reward: str,
            preset: str) -> dict[str, Any]:
    out = trainer.out

    def number(key: str) -> float | None:
        return None if last is None else float(last[key])

    return {"env": trainer.env_id, "reward": reward, "preset": preset,
            "final_success_rate": number("success_rate"), "final_mean_return": number("mean_return"),
            "frames": trainer.counters.frames, "episodes": trainer.counters.episodes,
            "agent_steps": trainer.counters.steps, "updates": trainer.agent.updates,
            "resumed_from_frames": resumed_from, "wall_s": trainer.counters.wall_s,
            "replay_episodes": len(trainer.replay.episode_files()),
            "agent_checkpoint": str(out / "agent.ckpt"), "actor_checkpoint": str(out / "actor.ckpt"),
            "eval_csv": str(out / "eval.csv"), "eval_sheet": str(out / "eval_episodes.png"),
            "tensorboard": str(out / "tensorboard"), "replay": str(out / "replay")}
