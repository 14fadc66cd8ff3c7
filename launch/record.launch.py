"""ros2 launch launch/record.launch.py [params:=FILE]: teleoperated expert demonstrations on the MuJoCo mirror.
The nodes and remappings are launch/graphs.yaml's `record`; parameters launch/config/record.yaml.
Without a ROS install: `drr up record` runs the same graph."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_launch import graph_launch_description  # noqa: E402


def generate_launch_description():
    return graph_launch_description("record")
