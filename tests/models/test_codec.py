"""VQGAN codec: shapes, input checks, config round trip, a tiny training run, cost of the paper preset."""

import itertools
import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.codec import (
    VQGAN,
    CodecConfig,
    CodecLoss,
    PatchDiscriminator,
    foreground_mask,
    postprocess,
    preprocess,
    static_background,
    train_codec_steps,
)

TRAIN_STEPS = 70  # the tiny preset's disc_start is 50: the run covers both phases



def squares(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Coloured squares at different places on a grey table: a stand-in for objects in a scene."""
    rng = np.random.default_rng(seed)
    frames = np.full((n, size, size, 3), 60, np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 20, 2)
        frames[i, y : y + 20, x : x + 20] = rng.integers(80, 256, 3)
    return frames


def tiny() -> tuple[VQGAN, PatchDiscriminator, CodecLoss]:
    cfg = CodecConfig.preset("tiny")
    return VQGAN(cfg), PatchDiscriminator(cfg.disc_channels, cfg.disc_layers), CodecLoss(cfg)


def eval_l1(model: VQGAN, images: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(images).reconstruction - images).abs().mean())


@pytest.fixture(scope="module")
def trained(one_torch_thread):
    torch.manual_seed(0)
    model, disc, loss = tiny()
    images = preprocess(squares(8))
    disc_before = [p.detach().clone() for p in disc.parameters()]
    initial = eval_l1(model, images)
    history = train_codec_steps(model, disc, loss, itertools.repeat(images), steps=TRAIN_STEPS, lr=2e-3)
    return model, disc, disc_before, images, initial, history


@pytest.mark.parametrize("name", ["tiny", "cpu", "paper"])
def test_every_preset_maps_64x64_frames_to_8x8_tokens(name):
    cfg = CodecConfig.preset(name)
    model = VQGAN(cfg).eval()
    with torch.no_grad():
        tokens = model.encode(torch.zeros(2, 3, 64, 64))
    assert tokens.shape == (2, 8, 8) and tokens.dtype == torch.int64
    assert model.grid == (8, 8) and model.tokens_per_frame == 64
    assert int(tokens.max()) < cfg.codebook_size


def test_paper_preset_has_the_papers_codebook_and_encode_cost():
    cfg = CodecConfig.preset("paper")
    assert (cfg.codebook_size, cfg.embed_dim) == (1024, 64)
    model = VQGAN(cfg).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encode(torch.zeros(1, 3, 64, 64))
    gflop = counter.get_total_flops() / 1e9
    assert abs(gflop - 11.7) / 11.7 < 0.25, gflop


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="cpu.*paper.*tiny"):
        CodecConfig.preset("huge")


def test_preprocess_postprocess_round_trip():
    frames = squares(3)
    images = preprocess(frames)
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.float32
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    np.testing.assert_array_equal(postprocess(images), frames)
    np.testing.assert_array_equal(postprocess(preprocess(torch.from_numpy(frames))), frames)


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 32, 32, 3), np.uint8),  # wrong size
        np.zeros((2, 64, 64, 3), np.float32),  # wrong dtype
        np.zeros((64, 64, 3), np.uint8),  # no batch axis
        np.zeros((2, 3, 64, 64), np.uint8),  # channels first
    ],
)
def test_preprocess_names_the_expected_shape(frames):
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\) uint8.*got shape"):
        preprocess(frames)


def test_encode_decode_types_and_shapes():
    torch.manual_seed(0)
    model, _, _ = tiny()
    model.eval()
    with torch.no_grad():
        tokens = model.encode(preprocess(squares(2)))
        images = model.decode(tokens)
        vectors = model.embed(tokens)
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    assert vectors.shape == (2, 16, 8, 8)
    assert postprocess(images).shape == (2, 64, 64, 3) and postprocess(images).dtype == np.uint8
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        model.encode(torch.zeros(2, 64, 64, 3))
    with pytest.raises(ValueError, match=r"\(N, 8, 8\)"):
        model.decode(torch.zeros(2, 64, dtype=torch.long))


def test_tiny_training_reconstructs_and_uses_many_codes(trained):
    model, _, _, images, initial, history = trained
    final = eval_l1(model, images)
    assert final < 0.5 * initial, (initial, final)
    with torch.no_grad():
        assert model.encode(images).unique().numel() > 1
    assert history[-1]["codes_used"] > 1


def test_adversarial_loss_only_from_disc_start(trained):
    _, disc, disc_before, _, _, history = trained
    start = CodecConfig.preset("tiny").disc_start
    before, after = history[:start], history[start:]
    assert len(before) == start and len(after) == TRAIN_STEPS - start
    assert all(h["adversarial"] == 0 and h["adaptive_weight"] == 0 and h["disc_loss"] == 0 for h in before)
    assert all(h["adaptive_weight"] > 0 and h["disc_loss"] > 0 for h in after)
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, disc.parameters()))


def test_discriminator_untouched_before_disc_start():
    torch.manual_seed(0)
    model, disc, loss = tiny()
    before = [p.detach().clone() for p in disc.parameters()]
    train_codec_steps(model, disc, loss, [preprocess(squares(2))], steps=1, lr=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(before, disc.parameters()))


def test_nan_batch_raises_before_any_update():
    torch.manual_seed(0)
    model, disc, loss = tiny()
    good = preprocess(squares(2))
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    state = {k: v.clone() for k, v in itertools.chain(model.state_dict().items(), disc.state_dict().items())}
    start = loss.config.disc_start  # both optimizers would step here
    with pytest.raises(FloatingPointError, match="not finite"):
        train_codec_steps(model, disc, loss, [bad, good], steps=2, lr=1e-3, start_step=start)
    after = dict(itertools.chain(model.state_dict().items(), disc.state_dict().items()))
    assert all(torch.equal(state[k], after[k]) for k in state)


def test_config_dict_round_trip_and_bad_keys():
    cfg = CodecConfig.preset("cpu")
    assert CodecConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    d = cfg.to_dict()
    d["codebook_sise"] = d.pop("codebook_size")
    with pytest.raises(ValueError, match="codebook_sise.*codebook_size"):
        CodecConfig.from_dict(d)
    with pytest.raises(ValueError, match="perceptual"):
        CodecConfig.from_dict({**cfg.to_dict(), "perceptual": "lpips"})


def test_a_config_written_before_foreground_weighting_loads_as_trained():
    older = CodecConfig.preset("cpu").to_dict()
    del older["foreground_weight"]
    assert CodecConfig.from_dict(older).foreground_weight == 0.0  # plain L1, as that file was trained


def test_foreground_pixels_weigh_more_in_the_reconstruction_loss():
    # Frames of a grey table where a marker visits one pixel in one frame: the median is the table.
    frames = torch.full((5, 3, 8, 8), -0.5)
    frames[2, :, 3, 4] = 0.9
    background = static_background(frames)
    assert torch.equal(background, torch.full((3, 8, 8), -0.5))
    assert foreground_mask(frames, background).sum() == 1 and foreground_mask(frames, background)[2, 0, 3, 4] == 1
    config = CodecConfig.preset("tiny")
    weighted, plain = CodecLoss(config, background), CodecLoss(config)
    missed_marker, missed_table = frames.clone(), frames.clone()
    missed_marker[2, :, 3, 4] = -0.5  # the codec drops the marker ...
    missed_table[2, :, 0, 0] = 0.9  # ... or errs as much on a table pixel
    assert plain.reconstruction_l1(frames, missed_marker) == plain.reconstruction_l1(frames, missed_table)
    ratio = weighted.reconstruction_l1(frames, missed_marker) / weighted.reconstruction_l1(frames, missed_table)
    assert ratio == pytest.approx(1.0 + config.foreground_weight)


def test_foreground_weight_must_not_be_negative():
    with pytest.raises(ValueError, match="foreground_weight=-1.0: must be >= 0"):
        CodecConfig(foreground_weight=-1.0)
