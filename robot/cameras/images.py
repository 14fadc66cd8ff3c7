"""Checking an image before using it: consumers (reward, policy, recorder) take RGB uint8
(H, W, 3) and say exactly what was wrong with anything else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ACCEPTED_ENCODINGS = ("rgb8", "bgr8")
_BYTES_PER_PIXEL = 3


class ImageError(ValueError):
    """An image has the wrong encoding, size, step or data length."""


def check_image(image: Any, *, width: int | None = None, height: int | None = None,
                encoding: str | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a numpy array (taken as rgb8), a sensor_msgs/Image-like object
    (encoding, height, width, step, data attributes) or the tuple (encoding, height, width,
    step, data). bgr8 is converted to RGB; rows padded past width * 3 bytes are cropped.

    width/height: the size the consumer expects (None: any). encoding: require this one
    of ACCEPTED_ENCODINGS (None: either).
    """
    if encoding is not None and encoding not in ACCEPTED_ENCODINGS:
        raise ValueError(f"encoding {encoding!r} cannot be required; accepted: {', '.join(ACCEPTED_ENCODINGS)}")
    if isinstance(image, np.ndarray):
        rgb = _check_array(image, encoding)
    else:
        rgb = _decode(*_fields(image), required=encoding)
    got_height, got_width = rgb.shape[:2]
    if (width is not None and got_width != width) or (height is not None and got_height != height):
        raise ImageError(f"image is {got_width}x{got_height} (width x height); expected "
                         f"{width if width is not None else 'any'}x{height if height is not None else 'any'}")
    return rgb


def _check_array(image: np.ndarray, required: str | None) -> np.ndarray:
    if required not in (None, "rgb8"):
        raise ImageError(f"a bare array is taken as rgb8, but {required} is required: pass (encoding, height, "
                         "width, step, data) to say what it holds")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"image array must be uint8 (H, W, 3) RGB, got {image.dtype} of shape {image.shape}")
    return image


def _fields(image: Any) -> tuple[Any, ...]:
    if isinstance(image, Sequence) and not isinstance(image, (str, bytes)):
        if len(image) != 5:
            raise ImageError(f"an image tuple must be (encoding, height, width, step, data), got {len(image)} items")
        return tuple(image)
    try:
        return image.encoding, image.height, image.width, image.step, image.data
    except AttributeError:
        raise ImageError("image must be a uint8 (H, W, 3) array, a sensor_msgs/Image-like message or "
                         f"(encoding, height, width, step, data); got {type(image).__name__}") from None


def _decode(encoding: Any, height: Any, width: Any, step: Any, data: Any, required: str | None) -> np.ndarray:
    if encoding not in ACCEPTED_ENCODINGS or (required is not None and encoding != required):
        accepted = required or ", ".join(ACCEPTED_ENCODINGS)
        raise ImageError(f"image encoding {encoding!r} is not accepted; accepted: {accepted}")
    for name, value in (("height", height), ("width", width), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ImageError(f"image {name} must be a positive int, got {value!r}")
    row_bytes = width * _BYTES_PER_PIXEL
    if step < row_bytes:
        raise ImageError(f"image step {step} is too small for width {width} in {encoding} "
                         f"({_BYTES_PER_PIXEL} bytes per pixel): at least {row_bytes}")
    buffer = _as_bytes(data)
    if buffer.size != step * height:
        raise ImageError(f"image data has {buffer.size} bytes; step {step} x height {height} needs {step * height}")
    pixels = buffer.reshape(height, step)[:, :row_bytes].reshape(height, width, _BYTES_PER_PIXEL)
    return np.ascontiguousarray(pixels[..., ::-1] if encoding == "bgr8" else pixels)


def _as_bytes(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageError(f"image data must be bytes (uint8), got a {data.dtype} array")
        return data.reshape(-1)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)  # bytes, array.array('B'), ...
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)  # a list of ints
