"""Homing: the twist toward a home pose, its caps and tolerances, and a closed loop that gets there."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robot.homing import HomingConfig, homing_twist, rotation_vector_between

HOME = np.array([0.5, 0.0, 0.25])
DOWN = np.array([math.sqrt(0.5), math.sqrt(0.5), 0.0, 0.0])  # the mirror's home orientation (x, y, z, w)
CONFIG = HomingConfig()


def test_rotation_vector_matches_scipy_and_takes_the_short_way():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = Rotation.random(random_state=rng), Rotation.random(random_state=rng)
        expected = (b * a.inv()).as_rotvec()
        np.testing.assert_allclose(rotation_vector_between(a.as_quat(), b.as_quat()), expected, atol=1e-9)
        # q and -q are one orientation.
        np.testing.assert_allclose(rotation_vector_between(-a.as_quat(), b.as_quat()), expected, atol=1e-9)
    quarter_turn_z = Rotation.from_euler("z", 90, degrees=True).as_quat()
    np.testing.assert_allclose(rotation_vector_between([0, 0, 0, 1], quarter_turn_z), [0, 0, math.pi / 2])
    np.testing.assert_array_equal(rotation_vector_between(DOWN, DOWN), np.zeros(3))


def test_within_tolerance_is_arrived_and_still():
    step = homing_twist(HOME + [0.004, 0, 0], DOWN, HOME, DOWN, CONFIG)
    assert step.arrived and not np.any(step.linear) and not np.any(step.angular)
    assert step.position_error == pytest.approx(0.004)
    turned = (Rotation.from_rotvec([0, 0, 0.1]) * Rotation.from_quat(DOWN)).as_quat()
    step = homing_twist(HOME, turned, HOME, DOWN, CONFIG)  # in place, but turned too far
    assert not step.arrived
    np.testing.assert_allclose(step.angular, [0, 0, -0.2])  # gain 2/s * 0.1 rad, back the other way
    assert step.orientation_error == pytest.approx(0.1)


def test_far_away_moves_straight_home_at_the_capped_speed():
    step = homing_twist(HOME + [0.3, -0.4, 0], DOWN, HOME, DOWN, CONFIG)
    np.testing.assert_allclose(step.linear, [-0.06, 0.08, 0.0])  # 0.1 m/s toward home
    step = homing_twist(HOME + [0.02, 0, 0], DOWN, HOME, DOWN, CONFIG)
    np.testing.assert_allclose(step.linear, [-0.04, 0, 0])  # slows down near home: 2/s * 2 cm


def test_closed_loop_reaches_home_without_exceeding_the_caps():
    rng, dt = np.random.default_rng(1), 0.1
    for _ in range(20):
        position = HOME + rng.uniform(-0.3, 0.3, 3)
        orientation = Rotation.from_rotvec(rng.uniform(-1, 1, 3)) * Rotation.from_quat(DOWN)
        for _ in range(200):
            step = homing_twist(position, orientation.as_quat(), HOME, DOWN, CONFIG)
            if step.arrived:
                break
            assert np.linalg.norm(step.linear) <= CONFIG.max_linear_speed + 1e-12
            assert np.linalg.norm(step.angular) <= CONFIG.max_angular_speed + 1e-12
            position = position + step.linear * dt
            orientation = Rotation.from_rotvec(step.angular * dt) * orientation  # base-frame twist
        assert step.arrived, (position, orientation.as_quat())
        assert np.linalg.norm(position - HOME) <= CONFIG.position_tolerance


@pytest.mark.parametrize("name", ["position_tolerance", "orientation_tolerance", "max_linear_speed",
                                  "max_angular_speed", "gain"])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, True])
def test_config_rejects_bad_values_naming_the_field(name, bad):
    with pytest.raises(ValueError, match=rf"HomingConfig\.{name} must be a finite number > 0"):
        HomingConfig(**{name: bad})


def test_non_finite_pose_or_zero_quaternion_is_an_error():
    with pytest.raises(ValueError, match="finite pose"):
        homing_twist([math.nan, 0, 0], DOWN, HOME, DOWN, CONFIG)
    with pytest.raises(ValueError, match="non-zero quaternion"):
        homing_twist(HOME, [0, 0, 0, 0], HOME, DOWN, CONFIG)
