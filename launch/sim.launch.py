"""ros2 launch launch/sim.launch.py [params:=FILE]: the whole graph on the MuJoCo mirror (no hardware).
The nodes and remappings are launch/graphs.yaml's `sim`; parameters launch/config/sim.yaml.
Without a ROS install: `drr up sim` runs the same graph."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_launch import graph_launch_description  # noqa: E402


def generate_launch_description():
    return graph_launch_description("sim")
