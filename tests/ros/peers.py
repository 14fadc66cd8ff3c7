"""The other ends of tests/ros/test_interfaces.py: each role runs in a process of its own.

    python peers.py talker   PREFIX JSON   publishes a Reward and an EpisodeEvent (fields from JSON) once a
                                           listener is matched; exits when it has gone
    python peers.py listener PREFIX        prints the first Reward and EpisodeEvent it receives, as JSON
    python peers.py server   SERVICE       answers one LabelEpisode call, prints the request as JSON
    python peers.py client   SERVICE PATH  calls LabelEpisode, prints the response as JSON

Each role gives up after TIMEOUT_S and exits non-zero. The last line a role prints is one JSON object.
"""

import json
import sys
import time

import rclpy
from drr_interfaces.msg import EpisodeEvent, Reward
from drr_interfaces.srv import LabelEpisode
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

TIMEOUT_S = 15.0
# Rewards and events are reliable; transient local so that a listener matched a moment late still gets them.
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# What the server answers for any episode path.
LABELS = {"stamps_ns": [0, 100_000_000, -(2**63), 2**63 - 1], "total": [0.5, -1.25, 3.0, 2**-10],
          "standardized": [0.25, -0.5, 1.0, 2.0], "raw": [-10.5, -11.0, -9.75, -12.0]}


def to_dict(message) -> dict:
    """A message as plain JSON-able values (nested messages as dicts, arrays as lists)."""
    out = {}
    for name in message.get_fields_and_field_types():
        value = getattr(message, name)
        if hasattr(value, "get_fields_and_field_types"):
            value = to_dict(value)
        elif not isinstance(value, str | bytes | bool | int | float):
            value = [v.item() if hasattr(v, "item") else v for v in value]
        out[name] = value
    return out


def fill(message, fields: dict):
    """Sets a message's fields from a dict as to_dict writes it; returns the message."""
    for name, value in fields.items():
        if isinstance(value, dict):
            fill(getattr(message, name), value)
        else:
            setattr(message, name, value)
    return message


def spin_until(node, done, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not done():
        if time.monotonic() > deadline:
            sys.exit(f"{node.get_name()}: timed out after {TIMEOUT_S:.0f} s waiting for {what}")
        rclpy.spin_once(node, timeout_sec=0.05)


def talker(prefix: str, spec: str) -> dict:
    fields = json.loads(spec)
    node = rclpy.create_node("talker")
    publishers = [(node.create_publisher(Reward, f"{prefix}/reward", QOS), fill(Reward(), fields["reward"])),
                  (node.create_publisher(EpisodeEvent, f"{prefix}/event", QOS), fill(EpisodeEvent(), fields["event"]))]
    spin_until(node, lambda: all(p.get_subscription_count() for p, _ in publishers), "a listener")
    for publisher, message in publishers:
        publisher.publish(message)
    spin_until(node, lambda: not any(p.get_subscription_count() for p, _ in publishers), "the listener to finish")
    return {"published": len(publishers)}


def listener(prefix: str) -> dict:
    node = rclpy.create_node("listener")
    received: dict = {}
    node.create_subscription(Reward, f"{prefix}/reward", lambda m: received.setdefault("reward", to_dict(m)), QOS)
    node.create_subscription(EpisodeEvent, f"{prefix}/event", lambda m: received.setdefault("event", to_dict(m)), QOS)
    spin_until(node, lambda: len(received) == 2, "a Reward and an EpisodeEvent")
    return received


def server(service: str) -> dict:
    node = rclpy.create_node("label_server")
    requests: list = []

    def label(request, response):
        requests.append(to_dict(request))
        return fill(response, {"success": True, "message": f"scored {request.episode_path}", **LABELS})

    node.create_service(LabelEpisode, service, label)
    spin_until(node, lambda: requests, "a call")
    # Let the response go out before the process ends.
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    return requests[0]


def client(service: str, path: str) -> dict:
    node = rclpy.create_node("label_client")
    label = node.create_client(LabelEpisode, service)
    if not label.wait_for_service(timeout_sec=TIMEOUT_S):
        sys.exit(f"label_client: no {service} service after {TIMEOUT_S:.0f} s")
    future = label.call_async(LabelEpisode.Request(episode_path=path))
    spin_until(node, future.done, "the response")
    return to_dict(future.result())


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    rclpy.init()
    try:
        result = {"talker": talker, "listener": listener, "server": server, "client": client}[role](*args)
        print(json.dumps(result), flush=True)
    finally:
        rclpy.try_shutdown()
