"""ros2 launch launch/finetune.launch.py [params:=FILE]: RL fine-tuning on the MuJoCo mirror, the session a
real cell runs (episodes, safety-gated resets, labelling, updates, new actor weights by version).
The nodes and remappings are launch/graphs.yaml's `finetune`; parameters launch/config/finetune.yaml.
Without a ROS install: `drr up finetune` runs the same graph."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_launch import graph_launch_description  # noqa: E402


def generate_launch_description():
    return graph_launch_description("finetune")
