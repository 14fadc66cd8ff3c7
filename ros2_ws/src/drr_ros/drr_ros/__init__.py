"""Thin rclpy nodes of the Diffusion Reward robot stack over robot/, sim/ and models/."""
