"""The fine-tuning session end to end through the ROS 2 graph on the mirror (launch/graphs.yaml's `finetune`,
brought up as `drr up finetune` does): episodes run, reset, are recorded, learned from, and the actor takes
the new weights by version. The learner is killed with SIGKILL midway and started again: every recorded
episode reaches the buffer exactly once, and its versions continue from its checkpoint.

The issue's acceptance run: 20 episodes (82 s measured on 2 cores shared with a training job);
DRR_FINETUNE_EPISODES sets another number (at least 6)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from drr_interfaces.msg import EpisodeEvent  # noqa: E402
from drr_ros.session import FINISHED, GraphSession, ros_context  # noqa: E402
from drr_ros.wiring import COMMAND_QOS  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from models.rl import load_episode  # noqa: E402
from robot.bringup import NodeProcesses, load_graph, node_command  # noqa: E402
from robot.demo import graph_overrides  # noqa: E402
from robot.episodes import read_episode  # noqa: E402

EPISODES = int(os.environ.get("DRR_FINETUNE_EPISODES", "20"))
KILL_AFTER = 3  # episodes finished before the learner is killed
DOWN_FOR = 2  # episodes that finish while it is down
REAL_TIME_FACTOR = 2.0  # the main job's (robot/demo.py)


def finetune_graph(tmp_path):
    overrides = graph_overrides("sim:reach", REAL_TIME_FACTOR, episode_node={"num_episodes": EPISODES},
                                recorder_node={"out_dir": str(tmp_path / "episodes")})
    del overrides["reward_node"]  # not in the finetune graph: the learner labels the episodes
    overrides["learner_node"] = {"use_sim_time": True, "run_dir": str(tmp_path / "run"),
                                 "episodes_dir": str(tmp_path / "episodes"), "preset": "tiny", "reward": "sparse",
                                 "updates_per_episode": 5, "learning_starts": 0, "scan_period_s": 1.0}
    return load_graph("finetune", overrides=overrides)


def restart(nodes: NodeProcesses, name: str) -> None:
    """Start one node of the running graph again, as a supervisor would after it died."""
    spec = next(node for node in nodes.graph.nodes if node.name == name)
    command = node_command(spec, nodes.log_dir / "params.yaml", nodes.executable_dir)
    with open(nodes.log_dir / f"{name}.log", "ab") as log:
        log.write(b"\n--- restarted ---\n")
        log.flush()
        nodes.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=nodes.env,
                                                 stdin=subprocess.DEVNULL, start_new_session=True)


def finished(session: GraphSession) -> int:
    return len([e for e in session.events if e.event in FINISHED and e.episode_id])


def run_until(session: GraphSession, count: int, check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while finished(session) < count:
        assert time.monotonic() < deadline, f"{finished(session)} of {count} episodes finished in {timeout_s:g} s"
        session.spin_for(0.2, check)


def weights_versions(diagnostics: list[DiagnosticArray]) -> list[int]:
    """policy_node's weights_version over time, from its /diagnostics."""
    versions = []
    for array in diagnostics:
        for status in array.status:
            if status.hardware_id == "policy_node":
                versions += [int(kv.value) for kv in status.values if kv.key == "weights_version"]
    return versions


def test_a_session_survives_a_killed_learner_and_loses_no_episode(tmp_path):
    graph = finetune_graph(tmp_path)
    ros_context()
    started = time.monotonic()
    with NodeProcesses(graph, tmp_path / "logs") as nodes, GraphSession(reward_topic=None) as session:
        diagnostics: list[DiagnosticArray] = []
        session.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, COMMAND_QOS)
        learner_up = [True]

        def check() -> None:  # every node but a learner we killed must be running
            dead = {n: p.returncode for n, p in nodes.processes.items() if p.poll() is not None
                    and (n != "learner_node" or learner_up[0])}
            if dead:
                nodes.check()

        session.wait_ready([node.name for node in graph.nodes], {"episode_node/start": Trigger,
                                                                  "reset_node/reset": Trigger},
                           timeout_s=120.0, check=check)
        session.start(60.0, check)
        per_episode_s = 30.0
        run_until(session, KILL_AFTER, check, 60.0 + KILL_AFTER * per_episode_s)
        nodes.processes["learner_node"].kill()  # kill -9, whatever it is doing
        learner_up[0] = False
        nodes.processes["learner_node"].wait()
        version_before = max(weights_versions(diagnostics), default=-1)
        run_until(session, KILL_AFTER + DOWN_FOR, check, DOWN_FOR * per_episode_s)
        restart(nodes, "learner_node")
        learner_up[0] = True
        run_until(session, EPISODES, check, (EPISODES - KILL_AFTER - DOWN_FOR) * per_episode_s + 60.0)

        # The learner takes every recording, the last one too (it was closed after the last ENDED).
        recordings = sorted(p.name for p in (tmp_path / "episodes").glob("*.mcap")
                            if read_episode(p, image_size=(16, 16)).complete)
        state_file = tmp_path / "run" / "learner_state.json"

        def ingested() -> dict:
            return json.loads(state_file.read_text())["ingested"] if state_file.exists() else {}

        deadline = time.monotonic() + 60.0
        while sorted(ingested()) != recordings:
            assert time.monotonic() < deadline, f"ingested {sorted(ingested())}, recorded {recordings}"
            session.spin_for(0.5, check)
        session.spin_for(3.0, check)  # the last version reaches policy_node
        elapsed = time.monotonic() - started

    episodes_run = [e for e in session.events if e.event == EpisodeEvent.ENDED]
    assert len(episodes_run) >= EPISODES and len(recordings) >= EPISODES, (len(episodes_run), recordings)
    # Every recording in the buffer exactly once: one replay file each, naming it.
    replay = sorted((tmp_path / "run" / "replay").glob("episode_*.npz"))
    in_buffer = sorted(load_episode(path).meta["recording"] for path in replay)
    assert in_buffer == recordings, (in_buffer, recordings)
    # The restarted learner resumed from its checkpoint: its first announced version is the last one before.
    log = (tmp_path / "logs" / "learner_node.log").read_text()
    before, after = log.split("--- restarted ---")
    last_before = max(int(v) for v in re.findall(r"published weights version (\d+)", before))
    resumed = int(re.search(r"learning from .*: version (\d+)", after).group(1))
    assert resumed >= last_before > 0 and resumed >= version_before, (last_before, resumed, version_before)
    # policy_node took the versions in order, never going back, up to the learner's last.
    versions = weights_versions(diagnostics)
    assert versions == sorted(versions) and versions[-1] > resumed, versions
    final = max(int(v) for v in re.findall(r"published weights version (\d+)", after))
    assert versions[-1] == final
    print(f"{EPISODES} episodes, learner killed after {KILL_AFTER}, {len(recordings)} recordings in the buffer, "
          f"versions up to {final}, {elapsed:.0f} s")


@pytest.mark.parametrize(("params", "message"), [
    ({"updates_per_episode": -1}, "parameter updates_per_episode = -1 is invalid"),
    ({"reward": "dense"}, "parameter reward = 'dense' is invalid"),
    ({"reward": "diffusion", "reward_model": "''"}, "reward diffusion needs reward_model"),
    ({"crop": "middle"}, "crop 'middle' is not"),
])
def test_bad_parameters_are_refused_at_start(refused_start, tmp_path, params, message):
    refused_start("learner_node", {"run_dir": str(tmp_path / "run"), "episodes_dir": str(tmp_path / "episodes"),
                                   **params}, message)
