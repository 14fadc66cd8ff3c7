"""Hardware-facing runtime with no ROS import: commands and robot state, the safety
gate, episode recording and reading, cameras and teleop devices."""
