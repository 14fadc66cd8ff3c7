"""What every frame source delivers, and the interface they share.

A camera node holds one `FrameSource` (a live RealSense, a .db3 recording) and calls
`read` from its timer; everything after that (CameraInfo, image messages, the reward)
sees only `Frame`s.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np


class CameraError(RuntimeError):
    """A camera or recording cannot be opened or read; the message says which and why."""


class EndOfStream(CameraError):
    """A recording played to its end (and does not loop)."""


@dataclass(frozen=True)
class Frame:
    """One color image, with depth aligned to it when the source streams depth.

    color: uint8 (H, W, 3) RGB. depth: uint16 (H, W) on the color image's pixel grid,
    in units of `depth_scale_m` metres (0 = no measurement). timestamp_ns: the camera's
    own clock (hardware or global time, see `timestamp_domain`), not the host's receive time.
    """

    color: np.ndarray
    timestamp_ns: int
    frame_number: int
    depth: np.ndarray | None = None
    depth_scale_m: float = 0.001
    timestamp_domain: str = "hardware_clock"

    def __post_init__(self) -> None:
        color = self.color
        if not (isinstance(color, np.ndarray) and color.dtype == np.uint8
                and color.ndim == 3 and color.shape[2] == 3):
            raise ValueError(f"Frame.color must be a uint8 (H, W, 3) RGB array, got {_describe(color)}")
        depth = self.depth
        if depth is not None and not (isinstance(depth, np.ndarray) and depth.dtype == np.uint16
                                      and depth.shape == color.shape[:2]):
            raise ValueError(f"Frame.depth must be None or a uint16 {color.shape[:2]} array aligned to "
                             f"color, got {_describe(depth)}")

    @property
    def height(self) -> int:
        return self.color.shape[0]

    @property
    def width(self) -> int:
        return self.color.shape[1]


class FrameSource(abc.ABC):
    """open() -> read(timeout_s) ... -> close(); a context manager and an iterator.

    `read` returns the next frame, or None when none arrived within the timeout (a live
    camera keeps going; a lost one is reconnected behind the scenes). A recording that has
    played to its end raises EndOfStream.
    """

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def read(self, timeout_s: float = 1.0) -> Frame | None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        """Frames until EndOfStream; a live camera never ends."""
        while True:
            try:
                frame = self.read()
            except EndOfStream:
                return
            if frame is not None:
                yield frame


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
