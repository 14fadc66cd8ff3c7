"""ros2 launch launch/real.launch.py [params:=FILE]: a RealSense camera and a real arm behind MoveIt Servo.
The nodes and remappings are launch/graphs.yaml's `real`; parameters launch/config/real.yaml.
Without a ROS install: `drr up real` runs the same graph."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_launch import graph_launch_description  # noqa: E402


def generate_launch_description():
    return graph_launch_description("real")
