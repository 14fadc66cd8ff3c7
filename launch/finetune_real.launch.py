"""ros2 launch launch/finetune_real.launch.py [params:=FILE]: RL fine-tuning on a real cell (RealSense,
an arm behind MoveIt Servo, teleop interventions flagged in the buffer).
The nodes and remappings are launch/graphs.yaml's `finetune_real`; parameters launch/config/finetune_real.yaml.
Without a ROS install: `drr up finetune_real` runs the same graph."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_launch import graph_launch_description  # noqa: E402


def generate_launch_description():
    return graph_launch_description("finetune_real")
