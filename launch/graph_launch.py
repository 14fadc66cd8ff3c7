"""The launch description of one graph of graphs.yaml, shared by the <graph>.launch.py files.

`drr up <graph>` (robot/bringup.py) starts the same nodes with the same parameters where no ROS
install exists; this file is the ROS 2 launch side of that one description.
"""

from pathlib import Path

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

HERE = Path(__file__).resolve().parent


def graph_launch_description(graph: str) -> LaunchDescription:
    spec = yaml.safe_load((HERE / "graphs.yaml").read_text())[graph]
    actions = [
        DeclareLaunchArgument("params", default_value=str(HERE / "config" / f"{graph}.yaml"),
                              description="parameter YAML of every node (node: ros__parameters: ...)"),
        # ros2 launch does not pass the terminal's keys to a node: a tty node gets its own window.
        DeclareLaunchArgument("tty_prefix", default_value="xterm -e",
                              description="command that gives a terminal-reading node (teleop) a terminal"),
        # Shared memory big enough for camera images (see fastdds.xml); a profile already set is kept.
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                                   default_value=str(HERE / "fastdds.xml"))),
    ]
    for node in spec["nodes"]:
        tty = bool(node.get("tty", False))
        actions.append(Node(package="drr_ros", executable=node["executable"],
                            name=node.get("name", node["executable"]),
                            parameters=[LaunchConfiguration("params")],
                            remappings=list((node.get("remappings") or {}).items()),
                            prefix=LaunchConfiguration("tty_prefix") if tty else None,
                            output="screen", emulate_tty=True))
    return LaunchDescription(actions)
