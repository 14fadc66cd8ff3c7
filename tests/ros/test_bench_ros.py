"""`drr bench ros`'s image transport measurement: a publisher process and a subscriber process over
Fast DDS (launch/fastdds.xml), small images for about a second; the figures must be sane."""

import pytest

pytest.importorskip("rclpy")

from bench.ros import latency_ms, measure_image_transport, rate_hz, table_notes, table_rows  # noqa: E402


def test_image_transport_small_images():
    figures = measure_image_transport(width=64, height=48, rate=20.0, seconds=1.0, profile=True)
    assert figures["sent"] == 20
    assert 0 < figures["received"] <= figures["sent"]
    assert figures["dropped"] == figures["sent"] - figures["received"]
    latency = figures["latency"]
    assert latency["n"] == figures["received"]
    assert 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"] < 1000
    assert 5.0 < figures["publish_rate_hz"] < 40.0
    assert figures["fastdds_profile"].endswith("fastdds.xml")


def test_figures_helpers():
    assert latency_ms([]) == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    figures = latency_ms([1_000_000, 2_000_000, 3_000_000])
    assert figures["n"] == 3 and figures["p50_ms"] == 2.0 and figures["max_ms"] == 3.0
    assert rate_hz([0, 500_000_000, 1_000_000_000]) == pytest.approx(2.0)
    assert rate_hz([5]) is None


def test_table_reports_a_skipped_reward_and_a_failed_part():
    transport = {"received": 9, "sent": 10, "dropped": 1, "drop_rate": 0.1, "target_rate_hz": 30.0,
                 "receive_rate_hz": 29.5, "latency": {"p50_ms": 1.0, "p99_ms": 2.0}}
    figures = {"transport_fastdds_profile": transport, "transport_default_transports": transport,
               "policy_path": {"error": "TimeoutError: the graph was not up"},
               "reward_stream": {"skipped": "no reward model at x.ckpt"}}
    rows, notes = table_rows(figures), "\n".join(table_notes(figures))
    assert rows[0][1:4] == ("9/10", "1.0", "2.0")
    assert rows[2][1] == "failed" and "TimeoutError: the graph was not up" in notes
    assert rows[3][1] == "skipped" and "no reward model at x.ckpt" in notes
