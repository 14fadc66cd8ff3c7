"""ROS 2 speed of the graph, measured side by side in one run:

1. image transport: 640x480 rgb8 images at 30 Hz from a publisher process to a subscriber process
   over DDS on loopback (sensor-data QoS), once with the repository's Fast DDS profile
   (launch/fastdds.xml, as `drr up` sets it) and once with Fast DDS's default transports, to show
   why the profile exists. The publisher stamps each image with the system clock just before
   publish(); the subscriber's latency is its receive time (system clock, at the start of its
   callback) minus that stamp. Frames sent/received/dropped (best effort: a lost image is not
   resent), latency p50/p99, achieved rates.
2. camera to command: the policy path of the `sim` graph (sim_arm_node, camera_node, safety_gate,
   policy_node, episode_node, reset_node; no reward or recorder node) brought up with robot.bringup,
   one episode started (drr_ros.session.GraphSession). policy_node stamps its command with its own
   clock at publish (not with the image's stamp) and acts on the latest image it has on a timer of
   its own, so the latency measured is: the arrival of a camera image at a peer subscriber (this
   process, on the same topic as policy_node) -> the publish stamp of the next policy command
   (safety_gate/policy/twist), each command paired with the latest image that arrived before it.
   This is how old the newest image is when a command leaves policy_node: the wait for the control
   timer plus the policy's step.
3. streaming reward: sim_arm_node + camera_node + reward_node (a trained `cpu` video.ckpt) scoring
   the camera's frames live: the rate of reward_node/reward against the camera's, frames dropped
   (reward_node's /diagnostics dropped_frames: its queue drops the oldest frames when scoring falls
   behind) and the scoring latency: image stamp -> arrival of its Reward here (the Reward carries the
   frame's stamp), and, drift-free, the image's arrival here -> its Reward's arrival.

The mirror's image stamps are sim time, which starts at the wall time sim_arm_node starts and lags
the wall clock when the mirror runs slower than real time; stamp-based figures of parts 2 and 3
include that lag (reported as the camera leg: image stamp -> arrival here).

Nodes run in a private ROS domain (ROS_DOMAIN_ID if set, else one picked per run), so a graph
already running on the machine neither disturbs nor is disturbed by the measurement.

    python -m bench.ros publish|subscribe JSON   the two ends of part 1 (the last line is JSON)
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from robot.bringup import DDS_PROFILE
from sim.record import check_writable_dir

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path("out/demo/reward_model/video.ckpt")
TRANSPORT_WIDTH, TRANSPORT_HEIGHT, TRANSPORT_RATE_HZ = 640, 480, 30.0
MATCH_TIMEOUT_S = 20.0  # for the two transport processes to discover each other
GRAPH_TIMEOUT_S = 180.0  # for a graph's nodes to be up (reward_node loads its model first)
FIRST_REWARD_TIMEOUT_S = 120.0
WARMUP_S = 1.0  # after the episode starts / the first reward, before the measured window
DRAIN_TIMEOUT_S = 30.0  # after the window, for its frames still queued in reward_node
LEFT_OUT_OF_POLICY_PATH = ("reward_node", "recorder_node")
REWARD_GRAPH = ("sim_arm_node", "camera_node", "reward_node")
_topics = itertools.count()


# ---------------------------------------------------------------- figures


def latency_ms(samples_ns: list[int] | np.ndarray) -> dict:
    """p50/p99/max (ms) and the sample count; None figures without samples."""
    values = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if values.size == 0:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": int(values.size), "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)), "max_ms": float(values.max())}


def rate_hz(times_ns: list[int]) -> float | None:
    """Events per second between the first and the last event."""
    if len(times_ns) < 2 or times_ns[-1] <= times_ns[0]:
        return None
    return (len(times_ns) - 1) / ((times_ns[-1] - times_ns[0]) / 1e9)


def ros_domain() -> int:
    """ROS_DOMAIN_ID when set, else a domain of this run's own (1..100)."""
    if os.environ.get("ROS_DOMAIN_ID"):
        return int(os.environ["ROS_DOMAIN_ID"])
    return random.Random(f"drr-bench-ros-{os.getpid()}").randint(1, 100)


def ros_env(domain: int, profile: bool = True) -> dict[str, str]:
    """The environment of the processes measured: loopback discovery in `domain`; Fast DDS with the
    repository's profile, or with its default transports (no profile file at all)."""
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(DDS_PROFILE)
    else:
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    return env


# ---------------------------------------------------------------- 1. image transport


def measure_image_transport(width: int = TRANSPORT_WIDTH, height: int = TRANSPORT_HEIGHT,
                            rate: float = TRANSPORT_RATE_HZ, seconds: float = 5.0, profile: bool = True,
                            domain: int | None = None, keep_samples: bool = False) -> dict:
    """rgb8 images of width x height at `rate` Hz for `seconds`, publisher process -> subscriber process."""
    if width < 1 or height < 1 or not 0 < rate <= 1000 or not 0 < seconds <= 600:
        raise ValueError(f"image transport: bad size {width}x{height}, rate {rate} Hz or {seconds} s")
    domain = ros_domain() if domain is None else domain
    spec = {"topic": f"/drr_bench_{os.getpid()}_{next(_topics)}/image", "width": width, "height": height,
            "rate": rate, "seconds": seconds}
    env = ros_env(domain, profile)
    command = [sys.executable, "-m", "bench.ros"]
    timeout_s = MATCH_TIMEOUT_S + seconds + 30.0
    subscriber = subprocess.Popen([*command, "subscribe", json.dumps(spec)], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen([*command, "publish", json.dumps(spec)], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent = _role_result(publisher, "publisher", timeout_s)
    got = _role_result(subscriber, "subscriber", timeout_s)
    latencies = np.asarray(got.pop("latencies_ns"), dtype=np.int64)
    figures = {
        "width": width, "height": height, "encoding": "rgb8", "mb_per_frame": width * height * 3 / 1e6,
        "target_rate_hz": rate, "seconds": seconds,
        "fastdds_profile": str(DDS_PROFILE) if profile else None,
        "sent": sent["sent"], "received": got["received"], "dropped": sent["sent"] - got["received"],
        "drop_rate": (sent["sent"] - got["received"]) / sent["sent"] if sent["sent"] else None,
        "out_of_order": got["out_of_order"],
        "publish_rate_hz": sent["rate_hz"], "receive_rate_hz": got["rate_hz"],
        "latency": latency_ms(latencies),
    }
    if keep_samples:
        figures["latency_samples_ms"] = (latencies / 1e6).round(3).tolist()
    return figures


def _role_result(process: subprocess.Popen, role: str, timeout_s: float) -> dict:
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise RuntimeError(f"image transport {role} still running after {timeout_s:.0f} s: {stderr[-2000:]}") from None
    lines = stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"image transport {role} exited {process.returncode}: {(stderr or stdout)[-2000:]}")
    return json.loads(lines[-1])


def _publisher_role(spec: dict) -> dict:
    """Waits for the subscriber, then publishes for spec["seconds"]: header.stamp = system clock just before
    publish(), header.frame_id = the frame's sequence number."""
    import rclpy
    from drr_ros.wiring import SENSOR_QOS
    from sensor_msgs.msg import Image

    rclpy.init(args=[])
    node = rclpy.create_node("drr_bench_image_publisher")
    publisher = node.create_publisher(Image, spec["topic"], SENSOR_QOS)
    rng = np.random.default_rng(0)
    msg = Image(height=spec["height"], width=spec["width"], encoding="rgb8", is_bigendian=0, step=3 * spec["width"])
    msg.data = rng.integers(0, 256, spec["height"] * spec["width"] * 3, dtype=np.uint8).tobytes()
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"no subscriber on {spec['topic']} after {MATCH_TIMEOUT_S:g} s")
        time.sleep(0.02)
    time.sleep(0.3)  # the subscriber's side of the match settles too
    period, count = 1.0 / spec["rate"], max(1, round(spec["seconds"] * spec["rate"]))
    stamps, start = [], time.monotonic()
    for i in range(count):
        delay = start + i * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        msg.header.frame_id = str(i)
        publisher.publish(msg)
        stamps.append(now)
    time.sleep(0.5)  # frames in flight arrive before the subscriber sees the publisher leave
    node.destroy_node()
    rclpy.try_shutdown()
    return {"sent": count, "rate_hz": rate_hz(stamps)}


def _subscriber_role(spec: dict) -> dict:
    """Records (receive time, stamp, sequence number) of each image until the publisher has left."""
    import rclpy
    from drr_ros.wiring import SENSOR_QOS
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    received: list[tuple[int, int, int]] = []

    def on_image(msg: Image) -> None:
        now = time.time_ns()
        received.append((now, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                         int(msg.header.frame_id)))

    rclpy.init(args=[])
    node = rclpy.create_node("drr_bench_image_subscriber")
    subscription = node.create_subscription(Image, spec["topic"], on_image, SENSOR_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + MATCH_TIMEOUT_S + spec["seconds"] + 20.0
    matched = False
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        publishers = subscription.get_publisher_count()
        matched = matched or publishers > 0
        if matched and publishers == 0:
            break
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    sequence = [seq for _, _, seq in received]
    return {"received": len(received), "latencies_ns": [arrival - stamp for arrival, stamp, _ in received],
            "out_of_order": sum(b < a for a, b in zip(sequence, sequence[1:])),
            "rate_hz": rate_hz([arrival for arrival, _, _ in received]), "publisher_seen": matched}


# ---------------------------------------------------------------- 2. and 3.: taps on a running graph


class GraphTap:
    """Subscriptions of the bench's own node (a GraphSession) on the graph: arrival time (system
    clock, ns, at the start of the callback) and header stamp of each image, policy command and
    reward, and the latest /diagnostics values per node."""

    def __init__(self, node, images: bool = True, commands: bool = False, rewards: bool = False) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from drr_interfaces.msg import Reward
        from drr_ros.policy_node import IMAGE_TOPIC, TWIST_TOPIC
        from drr_ros.wiring import COMMAND_QOS, SENSOR_QOS
        from geometry_msgs.msg import TwistStamped
        from sensor_msgs.msg import Image

        self.images: list[tuple[int, int]] = []
        self.commands: list[tuple[int, int]] = []
        self.rewards: list[tuple[int, int]] = []
        self.diagnostics: dict[str, list[tuple[int, dict[str, str]]]] = {}
        if images:
            node.create_subscription(Image, IMAGE_TOPIC, self._recorder(self.images), SENSOR_QOS)
        if commands:
            node.create_subscription(TwistStamped, TWIST_TOPIC, self._recorder(self.commands), COMMAND_QOS)
        if rewards:
            node.create_subscription(Reward, "reward_node/reward", self._recorder(self.rewards), COMMAND_QOS)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, COMMAND_QOS)

    @staticmethod
    def _recorder(into: list):
        def record(msg) -> None:
            into.append((time.time_ns(), msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec))
        return record

    def _on_diagnostics(self, msg) -> None:
        now = time.time_ns()
        for status in msg.status:
            self.diagnostics.setdefault(status.name.lstrip("/"), []).append(
                (now, {kv.key: kv.value for kv in status.values}))

    def diagnostic(self, node: str, key: str, until_ns: int) -> str | None:
        """The latest value of `key` that `node` reported on /diagnostics by until_ns."""
        values = [v for t, v in self.diagnostics.get(node, []) if t <= until_ns and key in v]
        return values[-1][key] if values else None


def _graph_session(domain: int) -> tuple[int, bool]:
    """rclpy in this process, in `domain` (with the repository's Fast DDS profile unless one is set, as
    the graph's nodes): the domain it runs in, and True when this call initialised rclpy (and so
    should shut it down)."""
    import rclpy

    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(DDS_PROFILE))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if rclpy.ok():
        return rclpy.get_default_context().get_domain_id(), False
    rclpy.init(args=[], domain_id=domain)
    return domain, True


def measure_policy_path(seconds: float, log_dir: Path, domain: int, policy: str = "random",
                        keep_samples: bool = False) -> dict:
    """Image arrival -> policy command publish on the sim graph's policy path, one episode running."""
    import rclpy
    from drr_ros.session import GraphSession
    from std_srvs.srv import Trigger

    from robot.bringup import NodeProcesses, load_graph

    domain, owned = _graph_session(domain)
    graph = load_graph("sim", without=LEFT_OUT_OF_POLICY_PATH, overrides={
        "policy_node": {"policy": policy},
        # one episode that outlasts the measurement (sim.yaml's are 1.5 s long)
        "episode_node": {"episode_time_limit_s": float(seconds + 60.0), "auto_start": False, "num_episodes": 1}})
    try:
        with NodeProcesses(graph, log_dir, env={"ROS_DOMAIN_ID": str(domain)}) as nodes, \
                GraphSession(reward_topic=None) as session:
            tap = GraphTap(session, images=True, commands=True)
            session.wait_ready([n.name for n in graph.nodes], {"episode_node/start": Trigger,
                                                               "reset_node/reset": Trigger},
                               timeout_s=GRAPH_TIMEOUT_S, check=nodes.check)
            session.start(60.0, nodes.check)
            session.spin_for(WARMUP_S, nodes.check)
            start = time.time_ns()
            session.spin_for(seconds, nodes.check)
            end = time.time_ns()
            session.spin_for(0.3, nodes.check)  # commands published in the window, still in flight
    finally:
        if owned:
            rclpy.try_shutdown()
    figures = policy_figures(tap, start, end)
    figures.update(sim_real_time_factor=_float(tap.diagnostic("sim_arm_node", "real_time_factor", end)),
                   policy=policy, camera_rate_hz_configured=graph.params["sim_arm_node"]["camera_rate"],
                   control_rate_hz_configured=graph.params["policy_node"]["control_rate"],
                   image_size=_image_size(graph), log_dir=str(log_dir))
    if not keep_samples:
        figures.pop("latency_samples_ms")
    return figures


def policy_figures(tap: GraphTap, start: int, end: int) -> dict:
    """Commands published in [start, end] (by their stamp), each paired with the latest image that
    arrived here before its stamp."""
    arrivals = [arrival for arrival, _ in tap.images]
    commands = [(arrival, stamp) for arrival, stamp in tap.commands if start <= stamp <= end]
    latencies, image_age, acted_on = [], [], set()
    for _, stamp in commands:
        index = bisect.bisect_right(arrivals, stamp) - 1
        if index < 0:
            continue
        latencies.append(stamp - arrivals[index])
        image_age.append(stamp - tap.images[index][1])
        acted_on.add(index)
    window = [(a, s) for a, s in tap.images if start <= a <= end]
    seconds = (end - start) / 1e9
    return {
        "measured": "camera image arrival at a peer subscriber -> publish stamp of the next policy command "
                    "(each command paired with the latest image that arrived before it)",
        "window_s": seconds, "commands": len(commands), "images": len(window),
        "command_rate_hz": len(commands) / seconds, "camera_rate_hz": len(window) / seconds,
        "images_acted_on": len(acted_on),
        "latency": latency_ms(latencies),
        "latency_samples_ms": [round(v / 1e6, 3) for v in latencies],
        "command_delivery": latency_ms([a - s for a, s in commands]),  # policy_node publish -> arrival here
        "camera_leg": latency_ms([a - s for a, s in window]),  # image stamp (sim time) -> arrival here
        "image_stamp_to_command": latency_ms(image_age),  # sim-time stamp -> command: includes the sim's lag
    }


def measure_reward_stream(model: Path, seconds: float, log_dir: Path, domain: int,
                          keep_samples: bool = False) -> dict:
    """reward_node scoring the mirror camera's frames live."""
    import rclpy
    from drr_interfaces.srv import LabelEpisode
    from drr_ros.session import GraphSession

    from models.checkpoint import load_checkpoint
    from robot.bringup import NodeProcesses, load_graph

    preset = load_checkpoint(model).preset
    domain, owned = _graph_session(domain)
    everything = load_graph("sim")
    graph = load_graph("sim", overrides={"reward_node": {"model": str(model)}},
                       without=tuple(n.name for n in everything.nodes if n.name not in REWARD_GRAPH))
    try:
        with NodeProcesses(graph, log_dir, env={"ROS_DOMAIN_ID": str(domain)}) as nodes, \
                GraphSession(reward_topic=None) as session:
            tap = GraphTap(session, images=True, rewards=True)
            session.wait_ready([n.name for n in graph.nodes], {"reward_node/label_episode": LabelEpisode},
                               timeout_s=GRAPH_TIMEOUT_S, check=nodes.check)
            deadline = time.monotonic() + FIRST_REWARD_TIMEOUT_S
            while not tap.rewards:  # the first frames are slow (allocations, first-call set-up)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reward_node published no reward in {FIRST_REWARD_TIMEOUT_S:g} s")
                session.spin_for(0.2, nodes.check)
            session.spin_for(WARMUP_S, nodes.check)
            # The window runs from one of reward_node's /diagnostics reports to the first one `seconds`
            # later, so its dropped_frames counts over exactly the window.
            start = _next_report(session, tap, "reward_node", nodes.check)
            session.spin_for(seconds, nodes.check)
            end = _next_report(session, tap, "reward_node", nodes.check)
            # Until every frame of the window is scored or dropped (the queue is first in, first out).
            last = max((s for a, s in tap.images if start <= a <= end), default=0)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while not any(s >= last for _, s in tap.rewards) and time.monotonic() < deadline:
                session.spin_for(0.1, nodes.check)
    finally:
        if owned:
            rclpy.try_shutdown()
    figures = reward_figures(tap, start, end)
    params = graph.params["reward_node"]
    figures.update(sim_real_time_factor=_float(tap.diagnostic("sim_arm_node", "real_time_factor", end)),
                   model=str(model), preset=preset, kind=params.get("kind"), backend=params.get("backend"),
                   threads=params.get("threads"), queue_size=params.get("queue_size"),
                   camera_rate_hz_configured=graph.params["sim_arm_node"]["camera_rate"],
                   image_size=_image_size(graph), log_dir=str(log_dir))
    if not keep_samples:
        figures.pop("latency_samples_ms")
    return figures


def reward_figures(tap: GraphTap, start: int, end: int) -> dict:
    """Rewards that arrived in [start, end] (two of reward_node's /diagnostics reports), paired with their
    frames by stamp; the frames dropped as reward_node counted them between the two reports."""
    image_arrival = {stamp: arrival for arrival, stamp in tap.images}
    rewards = [(a, s) for a, s in tap.rewards if start <= a <= end]
    window_images = [(a, s) for a, s in tap.images if start <= a <= end]
    scored = {s for _, s in tap.rewards}
    seconds = (end - start) / 1e9
    dropped = [tap.diagnostic("reward_node", "dropped_frames", t) for t in (start, end)]
    return {
        "measured": "image stamp -> arrival of its Reward here; and the image's arrival here -> its Reward's",
        "window_s": seconds, "rewards": len(rewards), "images": len(window_images),
        "reward_rate_hz": len(rewards) / seconds, "camera_rate_hz": len(window_images) / seconds,
        "dropped_frames": int(dropped[1]) - int(dropped[0]) if None not in dropped else None,
        "dropped_frames_total": _int(dropped[1]),
        "scored_frames_total": _int(tap.diagnostic("reward_node", "scored_frames", end)),
        "frames_not_scored": sum(s not in scored for _, s in window_images),
        "latency": latency_ms([a - s for a, s in rewards]),
        "latency_samples_ms": [round((a - s) / 1e6, 3) for a, s in rewards],
        "arrival_to_reward": latency_ms([a - image_arrival[s] for a, s in rewards if s in image_arrival]),
        "camera_leg": latency_ms([a - s for a, s in window_images]),
    }


def _next_report(session, tap: GraphTap, node: str, check, timeout_s: float = 10.0) -> int:
    """Spins until `node`'s next /diagnostics report arrives; its arrival time (ns)."""
    seen, deadline = len(tap.diagnostics.get(node, [])), time.monotonic() + timeout_s
    while len(tap.diagnostics.get(node, [])) == seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no /diagnostics report from {node} in {timeout_s:g} s")
        session.spin_for(0.02, check)
    return tap.diagnostics[node][seen][0]


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _image_size(graph) -> str:
    params = graph.params["sim_arm_node"]
    width, height = params.get("image_width", 0), params.get("image_height", 0)
    return f"{width}x{height}" if width else "640x480 (calibrated)"


# ---------------------------------------------------------------- the benchmark


def run_ros_benchmark(out_dir: str | Path, seconds: float = 5.0, model: str | Path = DEFAULT_MODEL) -> dict:
    out = check_writable_dir(out_dir)
    if not 0 < seconds <= 600:
        raise ValueError(f"--seconds must be in (0, 600], got {seconds}")
    domain, model = ros_domain(), Path(model)
    figures: dict = {"seconds": seconds, "ros_domain_id": domain, "cpus": os.cpu_count(),
                     "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")}
    print(f"ROS 2 benchmark in domain {domain}, {seconds:g} s per measurement", flush=True)
    for key, profile in (("transport_fastdds_profile", True), ("transport_default_transports", False)):
        print(f"image transport {TRANSPORT_WIDTH}x{TRANSPORT_HEIGHT} rgb8 at {TRANSPORT_RATE_HZ:g} Hz, "
              f"{'launch/fastdds.xml' if profile else 'Fast DDS defaults'}", flush=True)
        figures[key] = _attempt(lambda p=profile: measure_image_transport(seconds=seconds, profile=p, domain=domain,
                                                                            keep_samples=True))
    print("camera -> policy command on the sim graph", flush=True)
    figures["policy_path"] = _attempt(lambda: measure_policy_path(seconds, out / "bench_ros_logs" / "policy", domain,
                                                                  keep_samples=True))
    if model.is_file():
        print(f"streaming reward of {model} on the sim graph", flush=True)
        figures["reward_stream"] = _attempt(lambda: measure_reward_stream(
            model, seconds, out / "bench_ros_logs" / "reward", domain, keep_samples=True))
    else:
        figures["reward_stream"] = {"skipped": f"no reward model at {model}: run `drr demo` (or `drr train video`) "
                                               "to train one, or pass --model PATH to a trained cpu video.ckpt"}
    print_table(figures)
    plot(figures, out / "bench_ros.png")
    figures["plot"] = str(out / "bench_ros.png")
    (out / "bench_ros.json").write_text(json.dumps(figures, indent=2))
    return _without_samples(figures)


def _attempt(measure) -> dict:
    """A measurement's figures, or {"error": ...} so the others still run."""
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 - one failed measurement is reported, not fatal
        return {"error": f"{type(error).__name__}: {error}"}


def _without_samples(figures: dict) -> dict:
    return {k: _without_samples(v) if isinstance(v, dict) else v for k, v in figures.items()
            if not k.endswith("_samples_ms")}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _hz(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table_rows(figures: dict) -> list[tuple[str, ...]]:
    """(measurement, n, p50 ms, p99 ms, rate, losses) per row; a failed or skipped part says so in
    `n` (the reason goes in the notes under the table)."""
    rows = []
    for key, label in (("transport_fastdds_profile", "fastdds.xml"), ("transport_default_transports", "DDS defaults")):
        t = figures[key]
        name = f"transport {TRANSPORT_WIDTH}x{TRANSPORT_HEIGHT}, {label}"
        if "error" in t:
            rows.append((name, "failed", "", "", "", ""))
            continue
        rows.append((name, f"{t['received']}/{t['sent']}", _ms(t["latency"]["p50_ms"]), _ms(t["latency"]["p99_ms"]),
                     f"{_hz(t['receive_rate_hz'])} of {t['target_rate_hz']:g}",
                     f"{t['dropped']} dropped ({t['drop_rate']:.0%})"))
    p = figures["policy_path"]
    if "error" in p:
        rows.append(("camera -> command", "failed", "", "", "", ""))
    else:
        rows.append((f"camera -> command ({p['policy']})", str(p["latency"]["n"]), _ms(p["latency"]["p50_ms"]),
                     _ms(p["latency"]["p99_ms"]), f"{_hz(p['command_rate_hz'])}, camera {_hz(p['camera_rate_hz'])}",
                     f"acted on {p['images_acted_on']} of {p['images']} frames"))
    r = figures["reward_stream"]
    if "skipped" in r or "error" in r:
        rows.append(("reward stream", "skipped" if "skipped" in r else "failed", "", "", "", ""))
    else:
        rows.append((f"reward ({r['preset']}): stamp -> reward", str(r["latency"]["n"]), _ms(r["latency"]["p50_ms"]),
                     _ms(r["latency"]["p99_ms"]), f"{_hz(r['reward_rate_hz'])}, camera {_hz(r['camera_rate_hz'])}",
                     f"{r['dropped_frames']} dropped (queue {r['queue_size']})"))
        a = r["arrival_to_reward"]
        rows.append((f"reward ({r['preset']}): arrival -> reward", str(a["n"]), _ms(a["p50_ms"]), _ms(a["p99_ms"]),
                     "", f"{r['frames_not_scored']} of {r['images']} not scored"))
    return rows


def table_notes(figures: dict) -> list[str]:
    """What each row measures, and why a part failed or was skipped."""
    notes = ["transport: publisher process's publish() (system clock stamp) -> subscriber process's callback; "
             "n = received/sent; sensor QoS (best effort)."]
    for key in ("transport_fastdds_profile", "transport_default_transports"):
        if "error" in figures[key]:
            notes.append(f"{key}: failed: {figures[key]['error']}")
    p = figures["policy_path"]
    if "error" in p:
        notes.append(f"camera -> command: failed: {p['error']}")
    else:
        notes.append(f"camera -> command: {p['measured']}; policy_node stamps a command when it publishes it, not "
                     f"with the image's stamp. Rate: commands/s and camera frames/s seen here. Camera leg (sim "
                     f"stamp -> arrival here) p50 {_ms(p['camera_leg']['p50_ms'])} ms (mirror at "
                     f"{p['sim_real_time_factor']}x real time); command delivery p50 "
                     f"{_ms(p['command_delivery']['p50_ms'])} ms.")
    r = figures["reward_stream"]
    if "skipped" in r or "error" in r:
        notes.append(f"reward stream: {'skipped' if 'skipped' in r else 'failed'}: {r.get('skipped', r.get('error'))}")
    else:
        notes.append(f"reward: {r['kind']} reward, {r['backend']}, {r['threads']} thread(s), {r['model']}. "
                     f"stamp -> reward: the frame's sim-time stamp -> its Reward's arrival here (includes the "
                     f"camera leg, p50 {_ms(r['camera_leg']['p50_ms'])} ms, mirror at {r['sim_real_time_factor']}x "
                     f"real time); arrival -> reward: the frame's arrival here -> its Reward's. Dropped: reward_node's "
                     f"/diagnostics dropped_frames over the window ({r['window_s']:.1f} s).")
    return notes


def print_table(figures: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ROS 2 graph on {figures['cpus']} CPU(s), {figures['rmw']}, "
                        f"{figures['seconds']:g} s per measurement")
    for column in ("measurement", "n", "p50 ms", "p99 ms", "rate Hz", "losses"):
        table.add_column(column, justify="left" if column in ("measurement", "losses") else "right")
    for row in table_rows(figures):
        table.add_row(*row)
    console = Console(width=120)
    console.print(table)
    for note in table_notes(figures):
        console.print(note, highlight=False)


def plot(figures: dict, path: Path) -> Path:
    """Latency CDFs of every measurement (log time axis)."""
    from robot.plots import pyplot, save_figure

    plt = pyplot()
    series = {
        "transport, fastdds.xml": figures["transport_fastdds_profile"].get("latency_samples_ms"),
        "transport, Fast DDS defaults": figures["transport_default_transports"].get("latency_samples_ms"),
        "camera -> policy command": figures["policy_path"].get("latency_samples_ms"),
        "image stamp -> reward": figures["reward_stream"].get("latency_samples_ms"),
    }
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, samples in series.items():
        if samples:
            values = np.sort(np.maximum(np.asarray(samples), 1e-3))
            ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post",
                    label=f"{label} (n={len(values)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of messages")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path, dpi=120)


if __name__ == "__main__":  # the two ends of the image transport measurement
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    roles = {"publish": _publisher_role, "subscribe": _subscriber_role}
    if role not in roles:
        sys.exit(f"usage: python -m bench.ros publish|subscribe JSON (got {role!r})")
    print(json.dumps(roles[role](spec)), flush=True)
