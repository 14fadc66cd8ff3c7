"""ament_python package: `colcon build` on a ROS machine, `pip install -e` into the venv here."""

from setuptools import setup

PACKAGE = "drr_ros"
NODES = ("safety_gate", "sim_arm_node", "reset_node", "camera_node", "reward_node", "policy_node",
         "teleop_node", "episode_node", "recorder_node", "learner_node")

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Diffusion Reward robot stack maintainers",
    maintainer_email="maintainers@diffusion-reward-robot.invalid",
    description="rclpy nodes of the Diffusion Reward robot stack: safety gate, MuJoCo mirror arm, cell reset",
    license="MIT",
    entry_points={"console_scripts": [f"{node} = {PACKAGE}.{node}:main" for node in NODES]},
)
