"""DrQ-v2 on the diffusion reward: the agent (drqv2.py), its presets (presets.py) and the episode
replay on disk (replay.py). `load_actor(path)` is what the policy node loads actors with."""

from models.rl.drqv2 import (
    ACTOR_KIND,
    AGENT_KIND,
    DrQActor,
    DrQV2Agent,
    EnvSpec,
    FrameStack,
    RandomShift,
    RNDBonus,
    load_actor,
    load_agent,
    save_actor,
    save_agent,
)
from models.rl.presets import DrQConfig, std_at
from models.rl.replay import Batch, Episode, ReplayBuffer, load_episode, nstep_return, save_episode

__all__ = [
    "ACTOR_KIND", "AGENT_KIND", "Batch", "DrQActor", "DrQConfig", "DrQV2Agent", "EnvSpec", "Episode", "FrameStack",
    "RNDBonus", "RandomShift", "ReplayBuffer", "load_actor", "load_agent", "load_episode", "nstep_return",
    "save_actor", "save_agent", "save_episode", "std_at",
]
