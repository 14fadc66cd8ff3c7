"""ROS 2 tests run real processes: fixtures that start the peers (tests/ros/peers.py) or the drr_ros
nodes (`nodes`: each executable in its own process, one namespace per test, logs in tmp_path), a
`probe` (an rclpy node in the test process, spun by a thread, that records, publishes and calls),
and clean up.

The session's ROS 2 isolation is tests/conftest.py's: unless the shell already sets them, it puts
ROS_DOMAIN_ID (derived from the pytest process's pid, 1..100) and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
in os.environ before any test runs, so every process started here inherits them. The tests also name
their topics and services after that pid, so two sessions on one domain do not cross.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PEERS = Path(__file__).with_name("peers.py")
WAIT_S = 20.0  # a peer gives up by itself after 15 s


class Peers:
    """Starts peers.py roles as subprocesses and reads the JSON object each prints last."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def start(self, role: str, *args: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, str(PEERS), role, *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process

    def result(self, process: subprocess.Popen) -> dict:
        try:
            stdout, stderr = process.communicate(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"{process.args[2:]} still running after {WAIT_S:.0f} s\n{stdout}\n{stderr}")
        assert process.returncode == 0, f"{process.args[2:]} exited {process.returncode}\n{stdout}\n{stderr}"
        return json.loads(stdout.strip().splitlines()[-1])

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.fixture
def peers():
    running = Peers()
    yield running
    running.stop_all()


# ---------------------------------------------------------------- drr_ros nodes as processes, and a probe

BIN = Path(sys.executable).parent  # the venv's bin, where `pip install -e ros2_ws/src/drr_ros` puts the nodes
_namespaces = itertools.count()


def ros_value(value) -> str:
    """A parameter value as `-p name:=value` takes it (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, list | float | int) else str(value)


class Nodes:
    """drr_ros executables in their own processes, in one namespace per test; logs in files."""

    def __init__(self, log_dir: Path) -> None:
        self.namespace = f"/test_{os.getpid()}_{next(_namespaces)}"
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, executable: str, **params) -> subprocess.Popen:
        path = BIN / executable
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup.sh (pip install -e ros2_ws/src/drr_ros)")
        args = [str(path), "--ros-args", "-r", f"__ns:={self.namespace}"]
        for name, value in params.items():
            args += ["-p", f"{name}:={ros_value(value)}"]
        log = open(self.log_dir / f"{executable}.log", "w")
        process = subprocess.Popen(["nice", *args], stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()
        self.processes[executable] = process
        return process

    def log(self, executable: str) -> str:
        return (self.log_dir / f"{executable}.log").read_text()

    def stop_all(self) -> dict[str, tuple[int, str]]:
        """SIGTERM every node still running; (exit status, log) of each."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        results = {}
        for name, process in self.processes.items():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            results[name] = (process.returncode, self.log(name))
        return results


@pytest.fixture
def nodes(tmp_path):
    running = Nodes(tmp_path)
    yield running
    running.stop_all()


class Probe:
    """An rclpy node in the test process, spun by a background thread: records what it
    subscribes to as (arrival time.monotonic(), message), publishes, and calls services."""

    def __init__(self, namespace: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("probe", namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def record(self, msg_type, topic: str, qos) -> list:
        received: list = []
        self.node.create_subscription(msg_type, topic, lambda m: received.append((time.monotonic(), m)), qos)
        return received

    def publisher(self, msg_type, topic: str, qos):
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type, service: str, request, timeout: float = 20.0):
        client = self.node.create_client(srv_type, service)
        assert client.wait_for_service(timeout_sec=timeout), f"no service {service} after {timeout} s"
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done():
            assert time.monotonic() < end, f"{service} did not answer within {timeout} s"
            time.sleep(0.01)
        return future.result()

    @staticmethod
    def wait_for(condition, timeout: float, what: str, poll_s: float = 0.02):
        end = time.monotonic() + timeout
        while not (result := condition()):
            if time.monotonic() > end:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(poll_s)
        return result

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self.thread.join(timeout=2.0)


@pytest.fixture
def probe(nodes):
    pytest.importorskip("rclpy")
    running = Probe(nodes.namespace)
    yield running
    running.close()


@pytest.fixture
def refused_start():
    """Starts a drr_ros executable with these parameters and checks that it refuses them: exit 2,
    a log naming `message`, no traceback. A function (executable, params, message)."""
    def check(executable: str, params: dict, message: str) -> None:
        args = [str(BIN / executable), "--ros-args", "-r", "__ns:=/bad_params"]
        for name, value in params.items():
            args += ["-p", f"{name}:={value}"]
        result = subprocess.run(["nice", *args], capture_output=True, text=True, timeout=60)
        log = result.stdout + result.stderr
        assert result.returncode == 2, log
        assert message in log and "Traceback" not in log, log

    return check
