"""robot.cameras.crop: the crop parameter, and live frames cropped as recorded episodes are read."""

import numpy as np
import pytest

from robot.cameras.crop import CENTER_SQUARE, check_crop, crop_and_resize, crop_box, parse_crop


@pytest.mark.parametrize(("text", "crop"), [("center", CENTER_SQUARE), (" Center ", CENTER_SQUARE), ("none", None),
                                            ("", None), ("10,20,30,40", (10, 20, 30, 40)),
                                            ("0, 0, 8, 8", (0, 0, 8, 8))])
def test_parse_crop(text, crop):
    assert parse_crop(text) == crop


@pytest.mark.parametrize("text", ["centre", "1,2,3", "1,2,3,4,5", "-1,0,4,4", "0,0,0,4", "a,b,c,d", "1.5,0,4,4"])
def test_parse_crop_names_what_it_accepts(text):
    with pytest.raises(ValueError, match="crop"):
        parse_crop(text)


def test_crop_box_and_fit():
    assert crop_box(CENTER_SQUARE, 48, 64) == (0, 8, 48, 48)
    assert crop_box(None, 48, 64) == (0, 0, 48, 64)
    check_crop((8, 8, 40, 56), 48, 64)
    with pytest.raises(ValueError, match="does not fit in the 48x64 image"):
        check_crop((10, 0, 40, 64), 48, 64)


def test_crop_and_resize_matches_read_episode(tmp_path):
    """The reward node's live frames are the pixels the model was trained on from episodes."""
    from robot.episodes import read_episode
    from sim.record import record_episodes

    summary = record_episodes("sim:reach", "random", [0], tmp_path, image_size=(48, 64), progress=False)
    full = read_episode(summary.files[0], image_size=None)
    for crop in (CENTER_SQUARE, (4, 10, 40, 40), None):
        episode = read_episode(summary.files[0], image_size=(32, 32), crop=crop)
        live = np.stack([crop_and_resize(frame, crop, (32, 32)) for frame in full.frames])
        np.testing.assert_array_equal(live, episode.frames)
