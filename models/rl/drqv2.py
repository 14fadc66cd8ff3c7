"""DrQ-v2 (Yarats et al. 2021) as in its official code: conv encoder, actor and twin critics with
LayerNorm trunks, random-shift augmentation, n-step targets, scheduled exploration noise.

    agent = DrQV2Agent(DrQConfig.preset("cpu"), image_size=64, proprio_dim=18, action_dim=4, seed=0)
    action = agent.act(stack.push(obs["image"]), obs["proprio"], step)   # stack: a FrameStack
    metrics = agent.update(replay, step, bonus=RNDBonus(rnd))           # every update_every_steps
    save_agent(agent, "runs/rl/agent.ckpt", step=step)                  # full state, to resume
    actor = load_actor("runs/rl/agent.ckpt"); actor.reset(); actor.act(image, proprio)  # deployment

Our additions: proprio (config.use_proprio) joins the trunk features in the actor and critic heads
(DrQ-v2 is pixels-only), and the update takes an optional exploration bonus on the next observations
(the paper's RND term) added to the replay's stored reward. The agent draws all its randomness
(exploration, augmentation, replay sampling) from its own seeded generator, saved with it.
"""

from __future__ import annotations

import copy
import os
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import distributions, nn

from models.checkpoint import Checkpoint, load_checkpoint, load_state_checked, save_checkpoint
from models.rewards import RND
from models.rl.presets import DrQConfig, std_at
from models.rl.replay import Batch, ReplayBuffer

AGENT_KIND = "drqv2"  # full training state
ACTOR_KIND = "drqv2-actor"  # encoder + actor only: what the policy node needs

Bonus = Callable[[torch.Tensor], torch.Tensor]  # next_obs (B, 3k, H, W) float in [0, 255] -> (B,)


@dataclass(frozen=True)
class EnvSpec:
    """The env's sizes the networks are built for."""

    image_size: int  # square RGB images
    proprio_dim: int
    action_dim: int

    def __post_init__(self) -> None:
        for name, low in (("image_size", 15), ("proprio_dim", 0), ("action_dim", 1)):  # 15: 4 convs leave 1x1
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"EnvSpec.{name} must be an int >= {low}, got {value!r}")


# ---------------------------------------------------------------- networks (the official code's)


def _weight_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        m.bias.data.fill_(0.0)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight.data, nn.init.calculate_gain("relu"))
        m.bias.data.fill_(0.0)


class RandomShift(nn.Module):
    """Shift each image by up to `pad` pixels (replicate-padded), via bilinear grid_sample of
    whole-pixel offsets, as the official RandomShiftsAug."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        if h != w:
            raise ValueError(f"RandomShift expects square images, got {h}x{w}")
        if not self.pad:
            return x
        x = F.pad(x, (self.pad,) * 4, mode="replicate")
        eps = 1.0 / (h + 2 * self.pad)
        arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * self.pad, device=x.device, dtype=x.dtype)[:h]
        arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
        base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
        shift = torch.randint(0, 2 * self.pad + 1, (n, 1, 1, 2), generator=generator).to(x.device, x.dtype)
        shift *= 2.0 / (h + 2 * self.pad)
        return F.grid_sample(x, base_grid + shift, padding_mode="zeros", align_corners=False)


class Encoder(nn.Module):
    """4 conv layers 3x3 (the first stride 2), ReLU; pixels scaled to [-0.5, 0.5]."""

    def __init__(self, in_channels: int, channels: int, image_size: int) -> None:
        super().__init__()
        self.convnet = nn.Sequential(nn.Conv2d(in_channels, channels, 3, stride=2), nn.ReLU(),
                                     nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU(),
                                     nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU(),
                                     nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU())
        side = (image_size - 3) // 2 + 1 - 6
        self.repr_dim = channels * side * side
        self.apply(_weight_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convnet(obs / 255.0 - 0.5).flatten(1)


def _trunk(repr_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, hidden_dim),
                         nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class TruncatedNormal(distributions.Normal):
    """Normal whose samples are clamped inside (-1, 1) with a straight-through gradient; the noise
    itself can be clipped (the target policy smoothing of DrQ-v2)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> None:
        super().__init__(loc, scale, validate_args=False)
        self.eps = eps

    def sample(self, clip: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.loc.shape, generator=generator).to(self.loc.device, self.loc.dtype) * self.scale
        if clip is not None:
            noise = noise.clamp(-clip, clip)
        x = self.loc + noise
        return x - x.detach() + x.clamp(-1.0 + self.eps, 1.0 - self.eps).detach()


class Actor(nn.Module):
    def __init__(self, repr_dim: int, spec: EnvSpec, config: DrQConfig) -> None:
        super().__init__()
        self.trunk = _trunk(repr_dim, config.feature_dim)
        self.proprio_dim = spec.proprio_dim if config.use_proprio else 0
        self.policy = _mlp(config.feature_dim + self.proprio_dim, config.hidden_dim, spec.action_dim)
        self.apply(_weight_init)

    def mean(self, h: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        features = self.trunk(h)
        if self.proprio_dim:
            features = torch.cat([features, proprio], dim=-1)
        return torch.tanh(self.policy(features))

    def forward(self, h: torch.Tensor, proprio: torch.Tensor, std: float) -> TruncatedNormal:
        mu = self.mean(h, proprio)
        return TruncatedNormal(mu, torch.full_like(mu, std))


class Critic(nn.Module):
    """Twin Q heads on one trunk."""

    def __init__(self, repr_dim: int, spec: EnvSpec, config: DrQConfig) -> None:
        super().__init__()
        self.trunk = _trunk(repr_dim, config.feature_dim)
        self.proprio_dim = spec.proprio_dim if config.use_proprio else 0
        in_dim = config.feature_dim + self.proprio_dim + spec.action_dim
        self.Q1 = _mlp(in_dim, config.hidden_dim, 1)
        self.Q2 = _mlp(in_dim, config.hidden_dim, 1)
        self.apply(_weight_init)

    def forward(self, h: torch.Tensor, proprio: torch.Tensor, action: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self.trunk(h), proprio, action] if self.proprio_dim else [self.trunk(h), action]
        x = torch.cat(parts, dim=-1)
        return self.Q1(x), self.Q2(x)


class DrQNets(nn.Module):
    """All weights of an agent, so one state_dict holds them ('encoder.*', 'actor.*', 'critic.*',
    'critic_target.*'); the actor alone needs only the first two."""

    def __init__(self, config: DrQConfig, spec: EnvSpec, actor_only: bool = False) -> None:
        super().__init__()
        self.encoder = Encoder(3 * config.frame_stack, config.channels, spec.image_size)
        self.actor = Actor(self.encoder.repr_dim, spec, config)
        if not actor_only:
            self.critic = Critic(self.encoder.repr_dim, spec, config)
            self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)


def build_nets(config: DrQConfig, spec: EnvSpec, seed: int, actor_only: bool = False) -> DrQNets:
    """Seeded initialisation that leaves the caller's global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DrQNets(config, spec, actor_only)


# ---------------------------------------------------------------- frame stacking


class FrameStack:
    """The last k frames, stacked on channels oldest first; the first frame after reset() fills the
    stack, as DrQ-v2's FrameStack wrapper and the replay's sampling do at an episode's start."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._frames: deque[np.ndarray] = deque(maxlen=k)

    def reset(self) -> None:
        self._frames.clear()

    def push(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3k, H, W) uint8."""
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))
        self._frames.extend([chw] * (self.k - len(self._frames)) if not self._frames else [chw])
        return np.concatenate(self._frames, axis=0)


# ---------------------------------------------------------------- the agent


class DrQV2Agent:
    def __init__(self, config: DrQConfig, image_size: int, proprio_dim: int, action_dim: int, *, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.config, self.spec = config, EnvSpec(image_size, proprio_dim, action_dim)
        self.device = torch.device(device)
        self.nets = build_nets(config, self.spec, seed).to(self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.aug = RandomShift(config.shift_pad)
        self.optimizers = {name: torch.optim.Adam(getattr(self.nets, name).parameters(), lr=config.lr)
                           for name in ("encoder", "actor", "critic")}
        self.updates = 0

    def act(self, obs: np.ndarray, proprio: np.ndarray, step: int, eval_mode: bool = False) -> np.ndarray:
        """obs: (3k, S, S) uint8 stacked frames. Uniform random before seed_steps (not in eval),
        then the policy with scheduled noise; eval_mode: the mean action."""
        if not eval_mode and step < self.config.seed_steps:
            return (torch.rand(self.spec.action_dim, generator=self.generator) * 2 - 1).numpy()
        if not self.config.use_proprio:
            proprio = np.zeros(0, np.float32)  # pixels only: whatever came is ignored
        with torch.no_grad():
            h = self.nets.encoder(self._tensor(obs)[None])
            dist = self.nets.actor(h, self._tensor(proprio)[None], std_at(self.config.std_schedule, step))
            action = dist.mean if eval_mode else dist.sample(generator=self.generator)
        return action[0].cpu().numpy()

    def update(self, replay: ReplayBuffer, step: int, bonus: Bonus | None = None) -> dict[str, float]:
        """One update every update_every_steps agent steps, on a batch sampled from the replay."""
        if step % self.config.update_every_steps:
            return {}
        theirs = (replay.frame_stack, replay.nstep, replay.discount)
        ours = (self.config.frame_stack, self.config.nstep, self.config.discount)
        if theirs != ours:
            raise ValueError(f"the replay samples (frame_stack, nstep, discount) = {theirs}, the agent's config says "
                             f"{ours}")
        return self.learn(replay.sample(self.config.batch_size, self.generator), step, bonus)

    def learn(self, batch: Batch, step: int, bonus: Bonus | None = None) -> dict[str, float]:
        """One critic and one actor step on `batch`, then the target critic's soft update.
        A loss that is not finite raises FloatingPointError before its optimizer step: the caller
        stops and keeps its last good checkpoint (save_agent refuses non-finite weights anyway)."""
        obs, proprio, action, reward, discount, next_obs, next_proprio = (
            self._tensor(getattr(batch, name)) for name in
            ("obs", "proprio", "action", "reward", "discount", "next_obs", "next_proprio"))
        metrics = {"batch_reward": float(reward.mean()), "batch_intervention": float(np.mean(batch.intervention))}
        if bonus is not None:  # on the un-augmented frames; outside no_grad so the hook may train (RND)
            extra = bonus(next_obs).detach()
            if extra.numel() != len(reward):
                raise ValueError(f"the bonus hook returned shape {tuple(extra.shape)} for a batch of {len(reward)}")
            reward = reward + extra.reshape(-1, 1).to(reward)
            metrics["bonus"] = float(extra.mean())
        obs, next_obs = self.aug(obs, self.generator), self.aug(next_obs, self.generator)
        h = self.nets.encoder(obs)
        with torch.no_grad():
            next_h = self.nets.encoder(next_obs)
        std = std_at(self.config.std_schedule, step)
        metrics |= self._update_critic(h, proprio, action, reward, discount, next_h, next_proprio, std)
        metrics |= self._update_actor(h.detach(), proprio, std)
        _soft_update(self.nets.critic, self.nets.critic_target, self.config.critic_tau)
        self.updates += 1
        return metrics

    def _update_critic(self, h, proprio, action, reward, discount, next_h, next_proprio, std) -> dict[str, float]:
        with torch.no_grad():
            next_action = self.nets.actor(next_h, next_proprio, std).sample(self.config.std_clip, self.generator)
            target_q = reward + discount * torch.min(*self.nets.critic_target(next_h, next_proprio, next_action))
        q1, q2 = self.nets.critic(h, proprio, action)
        loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self._check_finite("critic", loss)
        self.optimizers["encoder"].zero_grad(set_to_none=True)
        self.optimizers["critic"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["critic"].step()
        self.optimizers["encoder"].step()
        return {"critic_loss": loss.item(), "critic_q1": q1.mean().item(), "critic_target_q": target_q.mean().item()}

    def _update_actor(self, h, proprio, std) -> dict[str, float]:
        action = self.nets.actor(h, proprio, std).sample(self.config.std_clip, self.generator)
        loss = -torch.min(*self.nets.critic(h, proprio, action)).mean()
        self._check_finite("actor", loss)
        self.optimizers["actor"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["actor"].step()
        return {"actor_loss": loss.item(), "actor_std": std}

    def _check_finite(self, what: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"DrQ-v2 {what} loss is {loss.item()} at update {self.updates}")

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), device=self.device).float()

    def deployment_actor(self) -> DrQActor:
        """A deployment actor sharing this agent's weights (it follows their updates)."""
        return DrQActor(self.nets, self.config, self.spec)


def _soft_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for param, target_param in zip(net.parameters(), target.parameters()):
            target_param.lerp_(param, tau)


# ---------------------------------------------------------------- deployment actor


class DrQActor:
    """The deterministic policy (the mean action, no exploration noise), fed frame by frame.

    It keeps the last frame_stack frames itself: call reset() at every episode start, so the first
    frame fills the stack as in training; without it the first steps see the previous episode's frames.
    """

    def __init__(self, nets: DrQNets, config: DrQConfig, spec: EnvSpec) -> None:
        self.nets, self.config, self.spec = nets, config, spec
        self.frames = FrameStack(config.frame_stack)
        self.device = next(nets.parameters()).device

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def action_dim(self) -> int:
        return self.spec.action_dim

    def reset(self) -> None:
        self.frames.reset()

    def act(self, image: np.ndarray, proprio: np.ndarray) -> np.ndarray:
        """image: uint8 (S, S, 3) RGB at image_size; proprio: float (proprio_dim,). -> (action_dim,) in [-1, 1]."""
        size, p = self.spec.image_size, self.spec.proprio_dim
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.shape != (size, size, 3):
            raise ValueError(f"the actor takes uint8 ({size}, {size}, 3) RGB images, got {image.dtype} {image.shape}")
        proprio = np.asarray(proprio, dtype=np.float32) if self.config.use_proprio else np.zeros(0, np.float32)
        if proprio.shape != (p if self.config.use_proprio else 0,):
            raise ValueError(f"the actor takes proprio of shape ({p},), got {proprio.shape}")
        obs = torch.as_tensor(self.frames.push(image), device=self.device).float()[None]
        with torch.no_grad():
            mean = self.nets.actor.mean(self.nets.encoder(obs), torch.as_tensor(proprio, device=self.device)[None])
        return mean[0].cpu().numpy()


# ---------------------------------------------------------------- exploration bonus


class RNDBonus:
    """The update's bonus hook from models.rewards.RND: scale * novelty of the newest frame of each
    next observation. With an optimizer it first trains the RND predictor on those frames, as URLB's
    RND agent does. The paper composes (1 - a) * standardised diffusion + a * novelty + sparse with
    a = 0.95: the labeller stores the first and last terms, this hook adds the middle one."""

    def __init__(self, rnd: RND, scale: float = 0.95, optimizer: torch.optim.Optimizer | None = None) -> None:
        if len(rnd.config.input_shape) != 3 or rnd.config.input_shape[0] != 3:
            raise ValueError(f"RNDBonus needs an image RND of input shape (3, H, W), got {rnd.config.input_shape}")
        self.rnd, self.scale, self.optimizer = rnd, scale, optimizer

    def __call__(self, next_obs: torch.Tensor) -> torch.Tensor:
        frames = next_obs[:, -3:] / 127.5 - 1.0  # RND takes images in [-1, 1]
        if self.optimizer is not None:
            self.rnd.update(frames, self.optimizer)
        return self.scale * self.rnd.novelty(frames)


# ---------------------------------------------------------------- checkpoints


def save_agent(agent: DrQV2Agent, path: str | os.PathLike, *, step: int,
               counters: dict[str, Any] | None = None) -> Path:
    """Everything to resume training: weights (target critic included), optimizers, the RNG and
    the update count; `step` (agent steps) and `counters` (plain values: episodes, frames, ...)
    come back from load_agent's checkpoint. Atomic; refuses non-finite weights."""
    extra = {"spec": asdict(agent.spec), "updates": agent.updates, "generator": agent.generator.get_state(),
             "optimizers": {name: opt.state_dict() for name, opt in agent.optimizers.items()},
             "counters": dict(counters or {})}
    return save_checkpoint(Checkpoint(kind=AGENT_KIND, preset=agent.config.name, config=agent.config.to_dict(),
                                      state_dict=agent.nets.state_dict(), step=step, extra=extra), path)


def save_actor(agent: DrQV2Agent, path: str | os.PathLike, *, step: int = 0) -> Path:
    """Encoder and actor weights only, for the policy node (a fraction of the agent's file)."""
    weights = {k: v for k, v in agent.nets.state_dict().items() if k.startswith(("encoder.", "actor."))}
    return save_checkpoint(Checkpoint(kind=ACTOR_KIND, preset=agent.config.name, config=agent.config.to_dict(),
                                      state_dict=weights, step=step, extra={"spec": asdict(agent.spec)}), path)


def load_agent(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[DrQV2Agent, Checkpoint]:
    """The agent of save_agent's file, ready to go on training, and its checkpoint (step, counters)."""
    ckpt = load_checkpoint(path, expect_kind=AGENT_KIND)
    config, spec = _config_and_spec(ckpt, path)
    agent = DrQV2Agent(config, spec.image_size, spec.proprio_dim, spec.action_dim, device=device)
    load_state_checked(agent.nets, ckpt.state_dict, f"DrQ-v2 weights in {path}")
    try:
        for name, optimizer in agent.optimizers.items():
            optimizer.load_state_dict(ckpt.extra["optimizers"][name])
        agent.generator.set_state(ckpt.extra["generator"])
        agent.updates = int(ckpt.extra["updates"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: the training state (optimizers, generator, updates) does not load: "
                         f"{error}") from None
    return agent, ckpt


def load_actor(path: str | os.PathLike, device: str | torch.device = "cpu") -> DrQActor:
    """The deployment actor of an agent or actor checkpoint; ValueError naming the file if it is
    not one (see DrQActor for the frame stack and reset())."""
    ckpt = load_checkpoint(path)
    if ckpt.kind not in (AGENT_KIND, ACTOR_KIND):
        raise ValueError(f"{path} is a {ckpt.kind!r} checkpoint, not a DrQ-v2 actor "
                         f"(kinds {AGENT_KIND!r}, {ACTOR_KIND!r})")
    config, spec = _config_and_spec(ckpt, path)
    nets = build_nets(config, spec, seed=0, actor_only=True).to(device)
    weights = {k: v for k, v in ckpt.state_dict.items() if k.startswith(("encoder.", "actor."))}
    load_state_checked(nets, weights, f"DrQ-v2 actor weights in {path}")
    return DrQActor(nets.eval(), config, spec)


def _config_and_spec(ckpt: Checkpoint, path: str | os.PathLike) -> tuple[DrQConfig, EnvSpec]:
    try:
        return DrQConfig.from_dict(ckpt.config), EnvSpec(**ckpt.extra["spec"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a valid DrQ-v2 config or env spec: {error}") from None
