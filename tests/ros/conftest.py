"""ROS 2 tests run real processes: a fixture that starts the peers (tests/ros/peers.py) and cleans up.

The session's ROS 2 isolation is tests/conftest.py's: unless the shell already sets them, it puts
ROS_DOMAIN_ID (derived from the pytest process's pid, 1..100) and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
in os.environ before any test runs, so every process started here inherits them. The tests also name
their topics and services after that pid, so two sessions on one domain do not cross.
"""

import json
import subprocess
import sys
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
