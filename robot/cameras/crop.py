"""Camera image -> model input: the crop a node takes as a parameter, and crop + resize of one
live frame exactly as robot.episodes.read_episode does for recorded ones (so a model sees the
same pixels streamed and replayed).

    crop = parse_crop("center")            # or "none", or "top,left,height,width" in pixels
    check_crop(crop, height=480, width=640)
    model_input = crop_and_resize(rgb, crop, (64, 64))
"""

from __future__ import annotations

import cv2
import numpy as np

from robot.episodes.reader import CENTER_SQUARE

Crop = str | tuple[int, int, int, int] | None  # CENTER_SQUARE, (top, left, height, width), or None: whole image
NO_CROP = "none"
CROP_HELP = (f"{CENTER_SQUARE!r} (the largest centred square), {NO_CROP!r} (the whole image), "
             "or 'top,left,height,width' in pixels")


def parse_crop(text: str) -> Crop:
    """A crop from its parameter text; ValueError naming what is accepted."""
    if not isinstance(text, str):
        raise ValueError(f"crop must be a string: {CROP_HELP}; got {text!r}")
    value = text.strip().lower()
    if value == CENTER_SQUARE:
        return CENTER_SQUARE
    if value in (NO_CROP, ""):
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"crop {text!r} is not {CROP_HELP}")
    top, left, height, width = (int(p) for p in parts)
    if height == 0 or width == 0:
        raise ValueError(f"crop {text!r}: height and width must be > 0")
    return top, left, height, width


def crop_box(crop: Crop, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the crop in a height x width image; ValueError if it does not fit."""
    if crop is None:
        return 0, 0, height, width
    if crop == CENTER_SQUARE:
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side
    top, left, crop_h, crop_w = crop
    if min(top, left) < 0 or crop_h <= 0 or crop_w <= 0 or top + crop_h > height or left + crop_w > width:
        raise ValueError(f"crop (top, left, height, width)={tuple(crop)} does not fit in the {height}x{width} "
                         "image (height x width)")
    return top, left, crop_h, crop_w


def check_crop(crop: Crop, height: int, width: int) -> None:
    crop_box(crop, height, width)


def crop_and_resize(frame: np.ndarray, crop: Crop, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> the crop resized to size = (height, width) with INTER_AREA, a new array."""
    top, left, crop_h, crop_w = crop_box(crop, *frame.shape[:2])
    patch = frame[top:top + crop_h, left:left + crop_w]
    out_h, out_w = size
    if (crop_h, crop_w) == (out_h, out_w):
        return np.array(patch)
    return cv2.resize(np.ascontiguousarray(patch), (out_w, out_h), interpolation=cv2.INTER_AREA)
