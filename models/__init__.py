"""Reward models: VQGAN codec, conditional video diffusion, rewards, DrQ-v2, export
and inference backends (next milestone)."""
