"""Frame sources. PlaybackSource reads real .db3 files that librealsense's recorder writes
here from synthetic frames (no camera); RealSenseSource is tested for its configuration
checks and, over a fake pipeline, for reconnecting after an unplug."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from robot.cameras import (
    CameraError,
    EndOfStream,
    Frame,
    PlaybackSource,
    RealSenseConfig,
    RealSenseSource,
    write_recording,
)
from robot.cameras.librealsense import require_pyrealsense2

# Through the stack's import, never a bare one: it loads ROS 2's Fast DDS first (see there).
if importlib.util.find_spec("pyrealsense2") is None:
    pytest.skip("pyrealsense2 is not installed (the realsense extra)", allow_module_level=True)
rs = require_pyrealsense2()

H, W = 48, 64
PERIOD_NS = 33_333_333


def synthetic_frames(count: int = 5, depth: bool = False, domain: str = "hardware_clock") -> list[Frame]:
    rng = np.random.default_rng(count)
    return [Frame(color=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                  depth=np.full((H, W), 700 + 10 * i, np.uint16) if depth else None,
                  timestamp_ns=5_000_000_000 + i * PERIOD_NS, frame_number=i + 1, timestamp_domain=domain)
            for i in range(count)]


# ---------------------------------------------------------------- recording and playback


def test_playback_returns_the_recorded_pixels_timestamps_and_frame_numbers(tmp_path):
    frames = synthetic_frames(domain="global_time")
    path = write_recording(tmp_path / "session.db3", frames)
    assert path.is_file() and not list(tmp_path.glob("*.partial.db3"))
    with PlaybackSource(path) as source:
        played = list(source)
    assert [f.frame_number for f in played] == [1, 2, 3, 4, 5]
    assert [f.timestamp_ns for f in played] == [f.timestamp_ns for f in frames]
    assert {f.timestamp_domain for f in played} == {"global_time"}
    for recorded, got in zip(frames, played):
        np.testing.assert_array_equal(got.color, recorded.color)
        assert got.depth is None


def test_playback_aligns_depth_to_color(tmp_path):
    frames = synthetic_frames(depth=True)
    with PlaybackSource(write_recording(tmp_path / "depth.db3", frames), depth=True) as source:
        played = list(source)
    assert [f.frame_number for f in played] == [1, 2, 3, 4, 5]  # each color frame once
    for recorded, got in zip(frames, played):
        np.testing.assert_array_equal(got.color, recorded.color)
        assert got.depth_scale_m == pytest.approx(0.001)
        # rs.align re-projects every depth pixel; with identical cameras it lands on the same
        # pixel, except for a few rounding holes (0 = no depth) that librealsense leaves.
        measured = got.depth != 0
        np.testing.assert_array_equal(got.depth[measured], recorded.depth[measured])
        assert measured.mean() > 0.9


def test_playback_that_starts_late_is_not_taken_for_its_end(tmp_path):
    """On a loaded machine the first polls may find no frame and a "stopped" status before
    playback has started; that is not the end of the recording."""
    with PlaybackSource(write_recording(tmp_path / "late.db3", synthetic_frames(2))) as source:
        pipeline, playback, polls = source._pipeline, source._playback, []
        stopped = source._rs.playback_status.stopped

        class NotStartedYet:
            def try_wait_for_frames(self, wait_ms):
                polls.append(wait_ms)
                return (False, None) if len(polls) <= 3 else pipeline.try_wait_for_frames(wait_ms)

            def current_status(self):
                return stopped if len(polls) <= 3 else playback.current_status()

            def stop(self):
                pipeline.stop()

        source._pipeline = source._playback = NotStartedYet()
        assert [f.frame_number for f in source] == [1, 2]


def test_playback_loops_when_asked(tmp_path):
    path = write_recording(tmp_path / "loop.db3", synthetic_frames(3))
    with PlaybackSource(path, loop=True) as source:
        numbers = [source.read(timeout_s=2.0).frame_number for _ in range(7)]
    assert numbers == [1, 2, 3, 1, 2, 3, 1]


def test_playback_ends_with_end_of_stream(tmp_path):
    source = PlaybackSource(write_recording(tmp_path / "short.db3", synthetic_frames(2)))
    with pytest.raises(CameraError, match="read before open"):
        source.read()
    with source:
        assert source.read().frame_number == 1
        assert source.read().frame_number == 2
        with pytest.raises(EndOfStream, match="end of recording"):
            source.read()


def test_playback_errors_name_the_file_and_what_it_holds(tmp_path):
    with pytest.raises(CameraError, match="missing.db3: recording not found"):
        PlaybackSource(tmp_path / "missing.db3").open()
    color_only = write_recording(tmp_path / "color.db3", synthetic_frames(2))
    with pytest.raises(CameraError, match=r"cannot play color \+ depth .*recorded streams: \['color rgb8'\]"):
        PlaybackSource(color_only, depth=True).open()


def test_write_recording_checks_its_input(tmp_path):
    frames = synthetic_frames(2)
    with pytest.raises(ValueError, match=r"must end in \.db3"):
        write_recording(tmp_path / "x.bag", frames)
    with pytest.raises(ValueError, match="at least one frame"):
        write_recording(tmp_path / "x.db3", [])
    with pytest.raises(ValueError, match=r"frames\[1\] differs from frames\[0\]"):
        write_recording(tmp_path / "x.db3", [frames[0], synthetic_frames(2, depth=True)[1]])
    with pytest.raises(ValueError, match="timestamp_domain 'wall' is not one of"):
        write_recording(tmp_path / "x.db3", synthetic_frames(1, domain="wall"))


# ---------------------------------------------------------------- RealSense configuration


def test_realsense_defaults_are_640x480_at_30_rgb8():
    config = RealSenseConfig()
    assert (config.width, config.height, config.fps, config.color_format, config.depth) == (640, 480, 30, "rgb8",
                                                                                              False)


@pytest.mark.parametrize(("values", "message"), [
    ({"width": 641}, r"width/height 641x480 is not a color resolution of the D400 family; accepted: 320x180"),
    ({"fps": 90}, r"fps 90 is not available for color at 640x480; accepted: 6, 15, 30, 60"),
    ({"width": 1920, "height": 1080, "fps": 60}, r"fps 60 is not available for color at 1920x1080"),
    ({"depth": True, "depth_width": 1920, "depth_height": 1080}, r"depth_width/depth_height 1920x1080 is not a depth"),
    ({"width": "640"}, r"RealSenseConfig.width must be a positive int, got '640'"),
    ({"color_format": "yuyv"}, r"color_format 'yuyv' is not supported; accepted: rgb8, bgr8"),
    ({"serial": 12345678901}, r"serial must be a string \(quote it in YAML\)"),
    ({"serial": "12-34"}, r"serial '12-34' is not a RealSense serial number: expected 8 to 16 letters or digits"),
    ({"stall_timeout_s": 0}, r"stall_timeout_s must be a finite number of seconds > 0"),
    ({"reconnect_backoff_s": 2.0, "reconnect_backoff_max_s": 1.0}, r"reconnect_backoff_max_s \(1.0\) must be >="),
    ({"depth": 1}, r"RealSenseConfig.depth must be true or false"),
])
def test_realsense_config_errors_name_the_field_and_what_is_accepted(values, message):
    with pytest.raises(ValueError, match=message):
        RealSenseConfig(**values)


def test_realsense_config_from_parameters():
    config = RealSenseConfig.from_dict({"serial": "_012345678901", "depth": True, "fps": 15})
    assert config.serial == "012345678901"  # realsense2_camera's leading '_' keeps YAML from making it a number
    with pytest.raises(ValueError, match=r"unknown RealSense parameter\(s\) \['fsp'\]; accepted: \['serial'"):
        RealSenseConfig.from_dict({"fsp": 30})


# ---------------------------------------------------------------- reconnecting (fake pipeline)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeCamera:
    """One camera that can be unplugged; every pipeline it makes streams from it."""

    def __init__(self, clock: FakeClock, serial: str = "123456789012") -> None:
        self.clock, self.serial = clock, serial
        self.plugged, self.raise_when_unplugged = True, False
        self.frame_number = 0
        self.starts: list[float] = []  # clock times of every start attempt

    def pipeline(self) -> FakePipeline:
        return FakePipeline(self)


class FakePipeline:
    """The parts of rs.pipeline RealSenseSource uses."""

    def __init__(self, camera: FakeCamera) -> None:
        self.camera = camera

    def start(self, config):
        self.camera.starts.append(self.camera.clock.now)
        if not self.camera.plugged:
            raise RuntimeError("No device connected")
        sensor = SimpleNamespace(supports=lambda option: True, set_option=lambda option, value: None)
        device = SimpleNamespace(get_info=lambda info: self.camera.serial, query_sensors=lambda: [sensor])
        return SimpleNamespace(get_device=lambda: device)

    def try_wait_for_frames(self, timeout_ms: int):
        camera = self.camera
        if not camera.plugged:
            if camera.raise_when_unplugged:
                raise RuntimeError("Frame didn't arrive within 5000")
            camera.clock.now += timeout_ms / 1000
            return False, None
        camera.clock.now += 1 / 30
        camera.frame_number += 1
        return True, FakeFrameset(camera.frame_number)

    def stop(self) -> None:
        if not self.camera.plugged:
            raise RuntimeError("device disconnected")  # must not escape


class FakeFrameset:
    def __init__(self, number: int) -> None:
        color = SimpleNamespace(
            get_data=lambda: np.full((H, W, 3), number, np.uint8),
            get_profile=lambda: SimpleNamespace(format=lambda: SimpleNamespace(name="rgb8")),
            get_frame_number=lambda: number, get_timestamp=lambda: 1000.0 + number * 1000 / 30,
            get_frame_timestamp_domain=lambda: SimpleNamespace(name="global_time"))
        self.get_color_frame = lambda: color
        self.get_depth_frame = lambda: None


class RecordingConfig:
    """Stands in for rs.config to see which camera the source asks for."""

    requested_serials: list[str] = []

    def enable_device(self, serial: str) -> None:
        RecordingConfig.requested_serials.append(serial)

    def enable_stream(self, *args) -> None:
        pass


@pytest.fixture
def camera(monkeypatch):
    RecordingConfig.requested_serials = []
    monkeypatch.setattr(rs, "config", RecordingConfig)
    return FakeCamera(FakeClock())


def make_source(camera: FakeCamera, **config) -> RealSenseSource:
    return RealSenseSource(RealSenseConfig(stall_timeout_s=1.0, reconnect_backoff_s=0.5, reconnect_backoff_max_s=4.0,
                                           **config),
                           pipeline_factory=camera.pipeline, clock=camera.clock, sleep=camera.clock.sleep)


def test_live_frames_carry_the_device_timestamp_in_ns(camera):
    with make_source(camera) as source:
        frame = source.read(0.1)
    assert (frame.frame_number, frame.timestamp_ns, frame.timestamp_domain) == (1, 1_033_333_333, "global_time")
    assert frame.color.shape == (H, W, 3) and frame.color[0, 0, 0] == 1
    assert source.status.frames == 1


def test_an_unplugged_camera_is_reopened_by_its_serial_with_backoff(camera):
    source = make_source(camera)  # no serial configured: the first camera's is kept
    source.open()
    assert [source.read(0.1).frame_number for _ in range(3)] == [1, 2, 3]
    camera.plugged = False
    lost_at = None
    while source.status.connected:  # reads time out until the stall timeout
        assert source.read(0.1) is None
        lost_at = camera.clock.now
    assert lost_at == pytest.approx(0.1 + 1.1, abs=0.05)
    assert "no frame for 1 s" in source.status.last_error
    while camera.clock.now < lost_at + 20.0:
        assert source.read(0.1) is None
    # Attempts after 0.5 s, then waits doubling up to the 4 s cap.
    gaps = np.diff([lost_at, *camera.starts[1:]])
    np.testing.assert_allclose(gaps[:6], [0.5, 1.0, 2.0, 4.0, 4.0, 4.0], atol=0.11)
    assert "re-open of 123456789012 failed: No device connected" in source.status.last_error
    camera.plugged = True
    while not source.status.connected:
        source.read(0.1)
    assert source.status.reconnects == 1
    assert source.read(0.1) is not None
    assert RecordingConfig.requested_serials and set(RecordingConfig.requested_serials) == {"123456789012"}


def test_librealsense_raising_means_the_camera_is_lost_at_once(camera):
    with make_source(camera, serial="123456789012") as source:
        source.read(0.1)
        camera.plugged, camera.raise_when_unplugged = False, True
        assert source.read(0.1) is None
        assert not source.status.connected and "Frame didn't arrive" in source.status.last_error
        camera.plugged = True
        camera.clock.sleep(1.0)
        source.read(0.1)
        assert source.status.connected and source.status.reconnects == 1


def test_a_camera_absent_at_open_fails_loudly(camera):
    camera.plugged = False
    with pytest.raises(CameraError, match=r"RealSense 123456789012: could not start color 640x480@30 rgb8: "
                                          r"No device connected; connected: \["):
        make_source(camera, serial="123456789012").open()
    with pytest.raises(CameraError, match="read before open"):
        make_source(camera).read()
