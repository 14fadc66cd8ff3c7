"""Bring a node graph up without a ROS install: the processes `ros2 launch launch/<graph>.launch.py`
would start, from the same description (launch/graphs.yaml) and parameter file
(launch/config/<graph>.yaml), each a drr_ros executable on the PyPI ROS 2 wheels.

    graph = load_graph("sim", overrides={"sim_arm_node": {"task": "sim:push"}})
    with NodeProcesses(graph, log_dir) as nodes:   # started; stopped (SIGINT, then SIGKILL) on exit
        nodes.check()                              # NodeCrashed if any node exited

No rclpy here: talking to the running graph is drr_ros's job.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"
GRAPHS_FILE = LAUNCH_DIR / "graphs.yaml"
DDS_PROFILE = LAUNCH_DIR / "fastdds.xml"  # shared memory big enough for camera images (see the file)
STOP_TIMEOUT_S = 10.0  # after SIGINT, before SIGKILL


@dataclass(frozen=True)
class NodeSpec:
    executable: str
    name: str
    remappings: dict[str, str] = field(default_factory=dict)
    tty: bool = False  # reads the terminal: keeps this process's stdin


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]
    params_file: Path
    params: dict[str, dict[str, Any]]  # node name -> its ros__parameters (overrides applied)


def graph_names(graphs_file: Path = GRAPHS_FILE) -> list[str]:
    return list(_read_yaml(graphs_file))


def load_graph(name: str, params_file: str | Path | None = None,
               overrides: dict[str, dict[str, Any]] | None = None, without: tuple[str, ...] = (),
               graphs_file: Path = GRAPHS_FILE) -> Graph:
    """The graph `name` with its parameters (launch/config/<name>.yaml unless params_file),
    overrides {node name: {parameter: value}} applied on top, and the nodes named in `without`
    left out (e.g. the reward node while there is no reward model yet)."""
    graphs = _read_yaml(graphs_file)
    if name not in graphs:
        raise ValueError(f"unknown graph {name!r}: {graphs_file} defines {sorted(graphs)}")
    nodes = tuple(_node_spec(raw, f"{graphs_file}: {name}") for raw in graphs[name]["nodes"])
    unknown = set(without) - {node.name for node in nodes}
    if unknown:
        raise ValueError(f"cannot leave out {sorted(unknown)}: graph {name!r} has nodes {[n.name for n in nodes]}")
    nodes = tuple(node for node in nodes if node.name not in without)
    params_path = Path(params_file) if params_file else LAUNCH_DIR / "config" / f"{name}.yaml"
    params = {node: values for node, values in _node_params(_read_yaml(params_path), params_path).items()
              if node not in without}
    names = {node.name for node in nodes}
    for node_name, values in (overrides or {}).items():
        if node_name not in names:
            raise ValueError(f"cannot set parameters of {node_name!r}: graph {name!r} has nodes {sorted(names)}")
        params.setdefault(node_name, {}).update(values)
    return Graph(name, graphs[name].get("description", ""), nodes, params_path, params)


def parse_overrides(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """["node.param=value", ...] -> {node: {param: value}}; values are YAML scalars (1, 0.5, true, text)."""
    overrides: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        target, sep, value = assignment.partition("=")
        node, dot, param = target.partition(".")
        if not (sep and dot and node and param):
            raise ValueError(f"--set {assignment!r}: expected NODE.PARAMETER=VALUE, e.g. sim_arm_node.task=sim:push")
        overrides.setdefault(node, {})[param] = yaml.safe_load(value) if value else ""
    return overrides


def node_command(node: NodeSpec, params_file: Path, executable_dir: Path) -> list[str]:
    """The command line `ros2 run drr_ros <executable> --ros-args ...` amounts to."""
    executable = executable_dir / node.executable
    if not executable.is_file():
        raise FileNotFoundError(f"{executable} is missing: the drr_ros nodes are installed by scripts/setup.sh")
    command = [str(executable), "--ros-args", "-r", f"__node:={node.name}", "--params-file", str(params_file)]
    for source, target in node.remappings.items():
        command += ["-r", f"{source}:={target}"]
    return command


class NodeCrashed(RuntimeError):
    pass


class NodeProcesses:
    """Each node of a graph in its own process, logging to log_dir/<node>.log. The parameters
    (with overrides) are written to log_dir/params.yaml, the file every node reads."""

    def __init__(self, graph: Graph, log_dir: str | Path, executable_dir: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.graph, self.log_dir = graph, Path(log_dir)
        self.executable_dir = executable_dir or Path(sys.executable).parent
        self.env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "FASTDDS_DEFAULT_PROFILES_FILE": str(DDS_PROFILE),
                    **os.environ, **(env or {})}
        self.processes: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> NodeProcesses:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        params_file = self.log_dir / "params.yaml"
        params_file.write_text(yaml.safe_dump(
            {name: {"ros__parameters": values} for name, values in self.graph.params.items()}, sort_keys=False))
        commands = {node.name: node_command(node, params_file, self.executable_dir) for node in self.graph.nodes}
        for node in self.graph.nodes:
            log = open(self.log_dir / f"{node.name}.log", "wb")  # noqa: SIM115 (kept open by the child)
            log.write(f"$ {shlex.join(commands[node.name])}\n".encode())
            log.flush()
            self.processes[node.name] = subprocess.Popen(
                commands[node.name], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                stdin=None if node.tty else subprocess.DEVNULL, start_new_session=not node.tty)
            log.close()

    def check(self) -> None:
        """NodeCrashed naming every node that has exited, with the end of its log."""
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            details = "\n".join(f"--- {name} exited with status {code}; the end of {self.log_dir / name}.log:\n"
                                f"{self.log_tail(name)}" for name, code in dead.items())
            raise NodeCrashed(f"{len(dead)} node(s) of graph {self.graph.name!r} stopped:\n{details}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """SIGINT to every node (rclpy shuts down cleanly on it), SIGKILL to any still running
        after timeout_s; the exit statuses."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return {name: p.returncode for name, p in self.processes.items()}


def _node_spec(raw: Any, where: str) -> NodeSpec:
    if not isinstance(raw, dict) or "executable" not in raw:
        raise ValueError(f"{where}: each node needs an `executable`, got {raw!r}")
    unknown = set(raw) - {"executable", "name", "remappings", "tty"}
    if unknown:
        raise ValueError(f"{where}: node {raw['executable']!r} has unknown keys {sorted(unknown)}")
    return NodeSpec(raw["executable"], raw.get("name", raw["executable"]),
                    {str(k): str(v) for k, v in (raw.get("remappings") or {}).items()}, bool(raw.get("tty", False)))


def _node_params(raw: Any, path: Path) -> dict[str, dict[str, Any]]:
    params = {}
    for node_name, section in (raw or {}).items():
        if not isinstance(section, dict) or set(section) != {"ros__parameters"}:
            raise ValueError(f"{path}: {node_name} must hold exactly `ros__parameters:`")
        params[node_name] = dict(section["ros__parameters"] or {})
    return params


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a mapping at the top level")
    return data
