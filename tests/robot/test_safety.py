"""The safety gate: limits validation, e-stop, watchdog, priority, and a property test
that drives a kinematic arm with arbitrary command streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration import WorkspaceBox
from robot.safety import SafetyGate, SafetyLimits
from robot.types import ArmCommand

BOX = WorkspaceBox(min=(0.25, -0.35, 0.02), max=(0.80, 0.35, 0.50))
LIMITS = SafetyLimits(BOX)
CENTER = np.array([0.5, 0.0, 0.25])
L = LIMITS.lookahead_s
TIMEOUT = LIMITS.watchdog_timeout_s


def cmd(linear=(0.0, 0.0, 0.0), angular=(0.0, 0.0, 0.0), gripper=0.0) -> ArmCommand:
    return ArmCommand(np.array(linear, float), np.array(angular, float), gripper)


def is_zero_twist(out: ArmCommand) -> bool:
    return not np.any(out.linear) and not np.any(out.angular)


def settled(gate: SafetyGate, command: ArmCommand, t0: float, source="policy", steps=10,
            ee=CENTER) -> ArmCommand:
    """Run the gate at 10 Hz long enough for the accel limit to reach the command."""
    out = None
    for k in range(steps):
        out = gate.step(command, ee, t0 + k * L, source)
    return out


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("name", ["max_linear_speed", "max_angular_speed", "max_linear_accel",
                                  "max_angular_accel", "watchdog_timeout_s", "lookahead_s"])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, True, "0.5", None])
def test_limits_reject_bad_values_naming_the_field(name, bad):
    with pytest.raises(ValueError, match=rf"SafetyLimits\.{name} must be a finite number > 0"):
        SafetyLimits(BOX, **{name: bad})


def test_limits_reject_inverted_box():
    with pytest.raises(ValueError, match="workspace"):
        SafetyLimits(WorkspaceBox(min=(0.8, 0.0, 0.0), max=(0.2, 1.0, 1.0)))


def test_limits_from_dict_coerces_and_rejects_unknown_keys():
    limits = SafetyLimits.from_dict(BOX, {"max_linear_speed": 1, "lookahead_s": 0.05})
    assert limits.max_linear_speed == 1.0 and isinstance(limits.max_linear_speed, float)
    assert limits.lookahead_s == 0.05 and limits.max_angular_speed == 1.0
    with pytest.raises(ValueError, match=r"\['max_speed', 'timeout'\].*accepted.*lookahead_s"):
        SafetyLimits.from_dict(BOX, {"max_speed": 1.0, "timeout": 0.2})
    with pytest.raises(ValueError, match="max_linear_accel"):
        SafetyLimits.from_dict(BOX, {"max_linear_accel": -2.0})


# ---------------------------------------------------------------- inputs


def test_nonfinite_commands_are_rejected_counted_and_not_stored():
    gate = SafetyGate(LIMITS)
    good = cmd(linear=(0.1, 0.0, 0.0), gripper=0.5)
    assert settled(gate, good, 0.0).linear[0] == pytest.approx(0.1)
    for bad in (cmd(linear=(math.nan, 0, 0)), cmd(angular=(0, math.inf, 0)),
                cmd(gripper=-math.inf)):
        assert gate.submit(bad, 1.0) is False
    assert gate.status.rejected_nonfinite == 3
    out = gate.compute(1.0)  # the last good command still rules
    assert out.linear[0] == pytest.approx(0.1) and out.gripper == 0.5
    with pytest.raises(ValueError, match="unknown command source 'joystick'"):
        gate.submit(good, 1.0, source="joystick")


def test_gripper_is_clamped_and_speed_clamp_keeps_direction():
    gate = SafetyGate(LIMITS)
    out = settled(gate, cmd(linear=(3.0, 4.0, 0.0), angular=(0, 0, -5.0), gripper=7.0), 0.0)
    np.testing.assert_allclose(out.linear, [0.15, 0.2, 0.0])  # norm 0.25, direction 3:4
    np.testing.assert_allclose(out.angular, [0.0, 0.0, -1.0])
    assert out.gripper == 1.0 and gate.status.clipped_speed
    assert settled(gate, cmd(gripper=-3.0), 1.0).gripper == 0.0


def test_huge_finite_command_is_clamped_not_zeroed():
    gate = SafetyGate(LIMITS)
    out = settled(gate, cmd(linear=(1e308, 1e308, 0.0)), 0.0)
    np.testing.assert_allclose(out.linear, [0.25 / math.sqrt(2)] * 2 + [0.0])


# ---------------------------------------------------------------- e-stop and watchdog


def test_estop_latches_until_cleared_and_blocks_every_source():
    gate = SafetyGate(LIMITS)
    assert settled(gate, cmd(linear=(0.1, 0, 0), gripper=0.8), 0.0).linear[0] > 0
    gate.engage_estop("operator button")
    gate.engage_estop("second press")
    for k, source in enumerate(gate.sources * 3):
        out = gate.step(cmd(linear=(0.2, 0, 0), gripper=0.0), CENTER, 1.0 + k * L, source)
        assert is_zero_twist(out) and out.gripper == 0.8  # held, not opened
    status = gate.status
    assert status.estop_latched and status.estop_reason == "operator button"
    gate.reset_motion()
    assert gate.status.estop_latched
    gate.clear_estop()
    assert not gate.status.estop_latched and gate.status.estop_reason == ""
    gate.update_state(CENTER, 3.0)
    assert is_zero_twist(gate.compute(3.0))  # commands from before the stop are gone
    out = gate.step(cmd(linear=(0.2, 0, 0)), CENTER, 3.1, "policy")
    assert out.linear[0] == pytest.approx(LIMITS.max_linear_accel * L)  # ramps up from rest


def test_watchdog_zeroes_stale_command():
    gate = SafetyGate(LIMITS)
    assert is_zero_twist(gate.compute(0.0)) and gate.status.watchdog_tripped
    settled(gate, cmd(linear=(0.1, 0, 0), gripper=0.3), 0.0)
    late = 9 * L + TIMEOUT + 1e-9  # just past the timeout after the last submit
    gate.update_state(CENTER, late - 0.1)
    assert not is_zero_twist(gate.compute(late - 0.1)) and not gate.status.watchdog_tripped
    gate.update_state(CENTER, late)
    out = gate.compute(late)
    assert is_zero_twist(out) and out.gripper == 0.3
    assert gate.status.watchdog_tripped and gate.status.active_source == ""


def test_watchdog_zeroes_stale_or_nonfinite_state():
    gate = SafetyGate(LIMITS)
    settled(gate, cmd(linear=(0.1, 0, 0)), 0.0)
    late = 9 * L + TIMEOUT + 1e-9  # just past the timeout after the last state
    gate.submit(cmd(linear=(0.1, 0, 0)), late)
    assert is_zero_twist(gate.compute(late)) and gate.status.watchdog_tripped
    gate.update_state(CENTER, 1.5)
    assert not is_zero_twist(gate.compute(1.5))
    gate.update_state(np.array([0.5, math.nan, 0.2]), 1.6)
    assert is_zero_twist(gate.compute(1.6)) and gate.status.watchdog_tripped


def test_priority_teleop_over_reset_over_policy_with_fallback():
    gate = SafetyGate(LIMITS)
    gate.update_state(CENTER, 0.0)
    gate.submit(cmd(linear=(0.05, 0, 0)), 0.0, "policy")
    gate.submit(cmd(linear=(0, 0.05, 0)), 0.0, "reset")
    gate.submit(cmd(linear=(0, 0, 0.05)), 0.0, "teleop")
    assert gate.compute(0.0).linear[2] > 0 and gate.status.active_source == "teleop"
    # Teleop goes quiet, reset keeps talking: reset takes over, policy still waits.
    for t in np.arange(0.1, 0.8, 0.1):
        gate.update_state(CENTER, t)
        gate.submit(cmd(linear=(0.05, 0, 0)), t, "policy")
        gate.submit(cmd(linear=(0, 0.05, 0)), t, "reset")
        out = gate.compute(t)
        expected = "teleop" if t < TIMEOUT else "reset"
        assert gate.status.active_source == expected, t
    np.testing.assert_allclose(out.linear, [0, 0.05, 0])
    # Reset goes quiet too: policy gets control back.
    for t in np.arange(0.9, 1.5, 0.1):
        gate.update_state(CENTER, t)
        gate.submit(cmd(linear=(0.05, 0, 0)), t, "policy")
        out = gate.compute(t)
    assert gate.status.active_source == "policy"
    np.testing.assert_allclose(out.linear, [0.05, 0, 0])


def test_custom_sources_and_bad_source_lists():
    gate = SafetyGate(LIMITS, sources=("spacemouse", "policy"))
    gate.update_state(CENTER, 0.0)
    gate.submit(cmd(linear=(0.1, 0, 0)), 0.0, "policy")
    gate.submit(cmd(linear=(0, 0.1, 0)), 0.0, "spacemouse")
    assert gate.compute(0.0).linear[1] > 0
    with pytest.raises(ValueError, match="distinct"):
        SafetyGate(LIMITS, sources=("policy", "policy"))
    with pytest.raises(ValueError, match="distinct"):
        SafetyGate(LIMITS, sources=())


# ---------------------------------------------------------------- motion limits


def test_accel_limit_ramps_and_reset_motion_restarts_from_rest():
    gate = SafetyGate(LIMITS)
    speeds = [gate.step(cmd(linear=(0.25, 0, 0)), CENTER, 0.01 * k).linear[0] for k in range(20)]
    # First output from rest over one lookahead period, then 2 m/s^2 * 10 ms per step.
    np.testing.assert_allclose(speeds[:4], [0.2, 0.22, 0.24, 0.25])
    assert gate.status.clipped_accel is False
    gate.reset_motion()
    out = gate.step(cmd(linear=(0.25, 0, 0)), CENTER, 0.2)
    assert out.linear[0] == pytest.approx(0.2) and gate.status.clipped_accel
    # A commanded zero is a normal command: decelerate, don't slam.
    assert gate.step(cmd(), CENTER, 0.21).linear[0] == pytest.approx(0.18)


def test_accel_limit_after_a_long_pause_allows_one_period_of_change():
    gate = SafetyGate(LIMITS)
    assert gate.step(cmd(), CENTER, 0.0).linear[0] == 0.0
    out = gate.step(cmd(linear=(0.25, 0, 0)), CENTER, 0.3)  # the control loop hiccuped
    assert out.linear[0] == pytest.approx(LIMITS.max_linear_accel * L)


def test_time_going_backwards_means_no_change():
    gate = SafetyGate(LIMITS)
    before = settled(gate, cmd(linear=(0.1, 0, 0)), 0.0)
    out = gate.step(cmd(linear=(-0.1, 0, 0)), CENTER, 0.3)  # earlier than t=0.9
    np.testing.assert_allclose(out.linear, before.linear)
    with pytest.raises(ValueError, match="now_s"):
        gate.compute(math.nan)


def test_workspace_box_cuts_toward_walls_and_lets_the_arm_back():
    gate = SafetyGate(LIMITS)
    near_wall = np.array([BOX.max[0] - 0.01, 0.0, BOX.min[2] + 0.002])
    out = settled(gate, cmd(linear=(0.2, 0.1, -0.1)), 0.0, ee=near_wall)
    np.testing.assert_allclose(out.linear, [0.1, 0.1, -0.02])  # 1 cm and 2 mm in 0.1 s
    assert gate.status.clipped_workspace
    outside = np.array([BOX.max[0] + 0.05, 0.0, 0.25])
    out = settled(gate, cmd(linear=(0.1, 0.0, 0.0)), 2.0, ee=outside)
    assert out.linear[0] == 0.0  # no further out
    out = settled(gate, cmd(linear=(-0.1, 0.05, 0.0)), 4.0, ee=outside)
    np.testing.assert_allclose(out.linear, [-0.1, 0.05, 0.0])  # back in is fine
    below = np.array([0.5, 0.0, BOX.min[2] - 0.05])
    out = settled(gate, cmd(linear=(0.0, 0.0, -0.1)), 6.0, ee=below)
    assert out.linear[2] == 0.0  # not further down, and not yanked up either


def test_box_holds_without_fresh_state_by_dead_reckoning():
    """State arriving late is fine: the gate advances its estimate by what it sent."""
    gate = SafetyGate(LIMITS)
    p, t = np.array([BOX.max[0] - 0.03, 0.0, 0.25]), 0.0
    gate.update_state(p, t)
    for _ in range(4):  # state only at the start, well within the watchdog
        gate.submit(cmd(linear=(0.25, 0, 0)), t)
        out = gate.compute(t)
        p, t = p + out.linear * L, t + L
    assert p[0] <= BOX.max[0] + 1e-12


# ---------------------------------------------------------------- property test

SOURCES = ("teleop", "reset", "policy")
wild = st.one_of(
    st.floats(-1.0, 1.0),
    st.sampled_from([0.0, 1e9, -1e9, 1e308, -1e308, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
)
commands = st.builds(lambda lin, ang, g: ArmCommand(np.array(lin), np.array(ang), g),
                     st.tuples(wild, wild, wild), st.tuples(wild, wild, wild), wild)
steps = st.tuples(
    st.one_of(st.floats(0.0, L), st.just(0.0), st.just(L)),  # control tick (contract: <= L)
    st.one_of(st.none(), commands),  # sources may go quiet for a while
    st.sampled_from(SOURCES),
    st.booleans(),  # robot state arrives this tick
    st.sampled_from(["", "", "", "", "", "", "estop", "clear", "reset_motion"]),
)
inside = st.tuples(*(st.floats(lo, hi) for lo, hi in zip(BOX.min, BOX.max)))


def _reach(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.minimum((np.array(BOX.min) - p) / L, 0.0),
            np.maximum((np.array(BOX.max) - p) / L, 0.0))


def _linear_change_needed(out, ref, p) -> float:
    """Smallest change from ref of a command whose box cut is `out`: on an axis cut at a
    bound, the command may have lain anywhere beyond it (braking is always allowed)."""
    low, high = _reach(p)
    at_high, at_low = np.isclose(out, high, atol=1e-9), np.isclose(out, low, atol=1e-9)
    gap = out - ref
    gap = np.where(at_high, np.maximum(gap, 0.0), gap)
    gap = np.where(at_low, np.minimum(gap, 0.0), gap)
    return float(np.linalg.norm(gap))


@settings(max_examples=1000, deadline=None)
@given(start=inside, program=st.lists(steps, min_size=1, max_size=40))
def test_property_arm_stays_safe_under_any_command_stream(start, program):
    gate = SafetyGate(LIMITS, SOURCES)
    p, t = np.array(start), 0.0
    out, ref = ArmCommand.zero(), None  # ref: (previous output, its time) or None from rest
    last_cmd: dict[str, float] = {}
    last_state, estop, rejected = None, False, 0
    for dt, command, source, state_arrives, event in program:
        t_new = t + dt
        p = p + out.linear * (t_new - t)  # the arm executes the last output for one tick
        t = t_new
        assert BOX.contains(p, tolerance=1e-9), p
        if state_arrives:
            gate.update_state(p, t)
            last_state = t
        if event == "estop":
            gate.engage_estop("test")
            estop = True
        elif event == "clear":
            gate.clear_estop()
            estop, last_cmd = False, {}
        elif event == "reset_motion":
            gate.reset_motion()
            ref = None
        if command is not None:
            assert gate.submit(command, t, source) == command.is_finite()
            if command.is_finite():
                last_cmd[source] = t
            else:
                rejected += 1

        previous, out = out, gate.compute(t)
        status = gate.status
        fresh = [s for s in SOURCES if s in last_cmd and t - last_cmd[s] < TIMEOUT]
        stale = not fresh or last_state is None or t - last_state >= TIMEOUT
        assert status.rejected_nonfinite == rejected
        assert status.active_source == (fresh[0] if fresh else "")
        assert status.estop_latched == estop and status.watchdog_tripped == stale
        assert out.is_finite() and 0.0 <= out.gripper <= 1.0
        assert np.linalg.norm(out.linear) <= LIMITS.max_linear_speed + 1e-9
        assert np.linalg.norm(out.angular) <= LIMITS.max_angular_speed + 1e-9
        if estop or stale:
            assert is_zero_twist(out) and out.gripper == previous.gripper
        else:
            ref_out, ref_s = ref or (ArmCommand.zero(), t - L)
            dt_ref = min(t - ref_s, L)
            assert (_linear_change_needed(out.linear, ref_out.linear, p)
                    <= LIMITS.max_linear_accel * dt_ref + 1e-9)
            assert (np.linalg.norm(out.angular - ref_out.angular)
                    <= LIMITS.max_angular_accel * dt_ref + 1e-9)
        np.testing.assert_array_equal(status.last_output.linear, out.linear)
        ref = (out, t)
    # Nothing fresh after the watchdog period: the arm stands still.
    t += TIMEOUT + 1e-9
    gate.update_state(p, t)
    assert is_zero_twist(gate.compute(t)) and gate.status.watchdog_tripped


def test_control_period_must_fit_in_the_lookahead():
    LIMITS.check_control_period(L)
    LIMITS.check_control_period(L / 10)
    for bad in (L * 1.01, 0.0, -L, math.nan):
        with pytest.raises(ValueError, match=r"SafetyLimits\.lookahead_s .* control period"):
            LIMITS.check_control_period(bad)


def test_watchdog_reason_says_what_is_stale():
    gate = SafetyGate(LIMITS)
    assert gate.status.watchdog_reason == "no fresh command and no fresh robot state"
    gate.compute(0.0)
    assert gate.status.watchdog_reason == "no fresh command and no fresh robot state"
    gate.update_state(CENTER, 0.0)
    gate.compute(0.0)
    assert gate.status.watchdog_reason == "no fresh command"
    gate.submit(cmd(linear=(0.1, 0, 0)), 0.1)
    gate.compute(0.1)
    assert gate.status.watchdog_reason == "" and not gate.status.watchdog_tripped
    gate.submit(cmd(linear=(0.1, 0, 0)), TIMEOUT + 0.05)
    gate.compute(TIMEOUT + 0.05)
    assert gate.status.watchdog_reason == "no fresh robot state"
