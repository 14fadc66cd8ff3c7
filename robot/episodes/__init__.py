"""Episodes as ROS 2 MCAP bags, one file per episode; read back as numpy arrays; indexed
as a dataset. No ROS install needed: ros2 bag, rosbags, Foxglove and mcap-ros2-support
read the files.

File layout (format_version 1): profile "ros2", CDR messages, "ros2msg" schemas from
the ROS 2 Kilted definitions, zstd chunks of exactly one control step each. Every
message of a step has log time = publish time = header stamp = the sensor stamp.
- Metadata "episode" (before the first step) and "episode_end" (written by finish:
  success, num_frames, duration_s, start/end_stamp_ns, extras). No "episode_end" means
  the recording did not finish.
- /episode/event (std_msgs/String, JSON): "start" before the first frame, "end" after
  the last, "abort" with a reason when the writer closes without finish().
- /camera/camera/color/camera_info once, then per step: image_raw (rgb8), /joint_states
  (arm joints plus "gripper_width": position = opening in m, velocity NaN), /ee_pose,
  /safety_gate/cmd_twist (sent), /policy/cmd_twist (requested, when given),
  /gripper/command (Float64, 0 open .. 1 closed, the sent value).
"""

from robot.episodes.dataset import DatasetIndex, EpisodeEntry, contact_sheet, iter_episodes
from robot.episodes.messages import GRIPPER_JOINT, TOPICS
from robot.episodes.metadata import FORMAT_VERSION, SOURCES, EpisodeMetadata, episode_path
from robot.episodes.reader import CENTER_SQUARE, Episode, EpisodeReadError, read_episode
from robot.episodes.state_machine import (
    EVENT_CODES,
    EVENTS,
    STATES,
    EpisodeEventRecord,
    EpisodeStateMachine,
    EpisodeTimeouts,
    InvalidTransition,
)
from robot.episodes.writer import EpisodeWriter

__all__ = [
    "CENTER_SQUARE",
    "EVENTS",
    "EVENT_CODES",
    "FORMAT_VERSION",
    "GRIPPER_JOINT",
    "SOURCES",
    "STATES",
    "TOPICS",
    "DatasetIndex",
    "Episode",
    "EpisodeEntry",
    "EpisodeEventRecord",
    "EpisodeMetadata",
    "EpisodeReadError",
    "EpisodeStateMachine",
    "EpisodeTimeouts",
    "EpisodeWriter",
    "InvalidTransition",
    "contact_sheet",
    "episode_path",
    "iter_episodes",
    "read_episode",
]
