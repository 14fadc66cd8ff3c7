"""Session-wide settings: headless rendering and an isolated ROS 2 domain."""

import os
import random

# Offscreen rendering without a display; EGL runs on Mesa's software renderer here.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
# ROS 2 traffic of one test session stays on loopback and in its own domain.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
