"""The launch files, checked without `ros2 launch` (not installable here): each builds its graph
from launch/graphs.yaml, and every executable, parameter file and parameter in it exists and
is declared by its node. `drr up` reads the same description (robot/bringup.py)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from robot.bringup import LAUNCH_DIR, graph_names, load_graph, node_command


class _Recorded:
    """Stands in for a launch action: keeps what it was constructed with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def fake_launch(monkeypatch):
    """Minimal `launch` and `launch_ros` modules that record the actions a launch file builds."""
    modules = {
        "launch": {"LaunchDescription": _Recorded},
        "launch.actions": {"DeclareLaunchArgument": _Recorded, "SetEnvironmentVariable": _Recorded},
        "launch.substitutions": {"LaunchConfiguration": _Recorded, "EnvironmentVariable": _Recorded},
        "launch_ros": {},
        "launch_ros.actions": {"Node": _Recorded},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "graph_launch", raising=False)


def _launch(graph: str):
    spec = importlib.util.spec_from_file_location(f"{graph}_launch", LAUNCH_DIR / f"{graph}.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (actions,) = module.generate_launch_description().args
    nodes = [a for a in actions if "package" in a.kwargs]
    arguments = {a.args[0]: a.kwargs["default_value"] for a in actions if "default_value" in a.kwargs}
    return nodes, arguments


def _console_scripts() -> set[str]:
    """The executables `ros2 run drr_ros ...` finds: the installed package's console scripts."""
    return {entry.name for entry in importlib.metadata.distribution("drr_ros").entry_points
            if entry.group == "console_scripts"}


def _declared_parameters(executable: str) -> set[str]:
    module = importlib.import_module(f"drr_ros.{executable}")
    return {param.name for param in module.PARAMS} | {"use_sim_time"}


@pytest.mark.parametrize("graph", graph_names())
def test_launch_file_builds_its_graph_from_the_shared_description(fake_launch, graph):
    assert graph in graph_names()
    nodes, arguments = _launch(graph)
    params_file = Path(arguments["params"])
    assert params_file == LAUNCH_DIR / "config" / f"{graph}.yaml" and params_file.is_file()
    described = load_graph(graph)
    assert [(n.kwargs["executable"], n.kwargs["name"]) for n in nodes] == \
        [(n.executable, n.name) for n in described.nodes]
    assert [dict(n.kwargs["remappings"]) for n in nodes] == [n.remappings for n in described.nodes]
    assert all(n.kwargs["package"] == "drr_ros" for n in nodes)


@pytest.mark.parametrize("graph", graph_names())
def test_every_executable_and_parameter_exists(graph):
    described = load_graph(graph)
    executables = _console_scripts()
    names = {node.name: node.executable for node in described.nodes}
    for node in described.nodes:
        assert node.executable in executables, f"{graph}: {node.executable} is not a drr_ros executable"
    for node_name, values in described.params.items():
        assert node_name in names, f"{described.params_file}: {node_name} is not a node of graph {graph}"
        unknown = set(values) - _declared_parameters(names[node_name])
        assert not unknown, f"{described.params_file}: {node_name} does not declare {sorted(unknown)}"


def test_bringup_commands_are_what_ros2_run_would_start(tmp_path):
    graph = load_graph("real")
    gate = next(node for node in graph.nodes if node.executable == "safety_gate")
    command = node_command(gate, tmp_path / "params.yaml", Path(sys.executable).parent)
    assert command[0].endswith("/safety_gate") and command[1:5] == ["--ros-args", "-r", "__node:=safety_gate",
                                                                    "--params-file"]
    assert "/safety_gate/twist_out:=/servo_node/delta_twist_cmds" in command
    with pytest.raises(FileNotFoundError, match="scripts/setup.sh"):
        node_command(gate, tmp_path / "params.yaml", tmp_path)


def test_bad_graph_requests_say_what_is_accepted(tmp_path):
    graphs = r"\['finetune', 'finetune_real', 'real', 'record', 'sim'\]"
    with pytest.raises(ValueError, match=rf"unknown graph 'moon'.*{graphs}"):
        load_graph("moon")
    with pytest.raises(ValueError, match="cannot set parameters of 'nobody'"):
        load_graph("sim", overrides={"nobody": {"x": 1}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("safety_gate:\n  control_rate: 10\n")
    with pytest.raises(ValueError, match="exactly `ros__parameters:`"):
        load_graph("sim", bad)
