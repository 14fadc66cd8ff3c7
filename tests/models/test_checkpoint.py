import dataclasses
import subprocess
from importlib import metadata

import pytest
import torch
from torch import nn

from models import checkpoint as ck
from models.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    code_version,
    data_fingerprint,
    load_checkpoint,
    load_state_checked,
    save_checkpoint,
)
from models.rewards import RND, RewardStats, RNDConfig


def _net(width: int = 5) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2))


def _codec_ckpt() -> Checkpoint:
    return Checkpoint(kind="codec", preset="tiny", config={"grid": (8, 8), "codebook": 16},
                      state_dict=_net(4).state_dict(), data_fingerprint="abc", step=7)


def _video_ckpt(net: nn.Module) -> Checkpoint:
    ema = {k: v * 0.5 for k, v in net.state_dict().items()}
    return Checkpoint(kind="video", preset="tiny", config={"layers": 2, "dims": [16, 32], "skip": (1,), "x": None},
                      state_dict=net.state_dict(), ema_state_dict=ema,
                      stats={"entropy": RewardStats.from_rewards([1.0, 2.0, 4.0]).to_dict()},
                      codec=_codec_ckpt().to_dict(), data_fingerprint=data_fingerprint(["ep1", "ep2"]),
                      step=1234, extra={"note": "hello", "losses": [0.5, 0.25]})


def _no_temp_files(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_round_trip_with_ema_stats_and_embedded_codec(tmp_path):
    net = _net()
    ckpt = _video_ckpt(net)
    path = save_checkpoint(ckpt, tmp_path / "sub" / "video.pt")
    assert path.is_file() and _no_temp_files(path.parent)

    back = load_checkpoint(path, expect_kind="video", expect_preset="tiny")
    assert (back.kind, back.preset, back.step, back.extra) == ("video", "tiny", 1234, ckpt.extra)
    assert back.config == ckpt.config and back.config["skip"] == (1,)  # tuples survive weights_only loading
    assert back.code_version == code_version() and back.data_fingerprint == ckpt.data_fingerprint
    assert RewardStats.from_dict(back.stats["entropy"]) == RewardStats.from_rewards([1.0, 2.0, 4.0])
    fresh = _net(5)
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    load_state_checked(fresh, back.state_dict, "video")
    x = torch.randn(4, 3)
    assert torch.equal(fresh(x), net(x))
    assert all(torch.equal(back.ema_state_dict[k], v * 0.5) for k, v in net.state_dict().items())

    codec = Checkpoint.from_dict(back.codec)
    assert (codec.kind, codec.step, codec.config["grid"]) == ("codec", 7, (8, 8))
    load_state_checked(_net(4), codec.state_dict, "embedded codec")


def test_rnd_round_trip_keeps_target_and_running_std(tmp_path):
    cfg = RNDConfig.preset("tiny")
    rnd = RND(cfg)
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    rnd.update(images, rnd.make_optimizer())
    save_checkpoint(Checkpoint(kind="rnd", preset="tiny", config=cfg.to_dict(), state_dict=rnd.state_dict()),
                    tmp_path / "rnd.pt")
    back = load_checkpoint(tmp_path / "rnd.pt", expect_kind="rnd")
    other = RND(RNDConfig.from_dict(back.config | {"seed": 3}))  # a different random target before loading
    load_state_checked(other, back.state_dict, "rnd")
    assert other.running.state_dict() == rnd.running.state_dict()
    assert torch.equal(other.novelty(images), rnd.novelty(images))


@pytest.mark.parametrize("where", ["state_dict", "ema", "codec", "stats"])
def test_nonfinite_save_is_refused_and_leaves_the_last_good_file_byte_identical(tmp_path, where):
    path = save_checkpoint(_video_ckpt(_net()), tmp_path / "video.pt")
    good = path.read_bytes()
    broken = _video_ckpt(_net())
    if where == "state_dict":
        broken.state_dict["0.weight"][1, 2] = float("nan")
        name = "state_dict.0.weight"
    elif where == "ema":
        broken.ema_state_dict["2.bias"][0] = float("inf")
        name = "ema_state_dict.2.bias"
    elif where == "codec":
        broken.codec["state_dict"]["0.bias"][0] = float("nan")
        name = "codec.state_dict.0.bias"
    else:
        broken.stats["entropy"]["std"] = float("nan")
        name = "stats.entropy.std"
    with pytest.raises(ValueError, match=rf"refusing to save .*non-finite values in {name}"):
        save_checkpoint(broken, path)
    assert path.read_bytes() == good and _no_temp_files(tmp_path)


def test_a_payload_that_would_not_load_is_refused_before_replacing(tmp_path):
    path = save_checkpoint(_video_ckpt(_net()), tmp_path / "video.pt")
    good = path.read_bytes()
    bad = _video_ckpt(_net())
    bad.config = {"rnd": RNDConfig()}  # a dataclass object: not loadable with weights_only
    with pytest.raises(ValueError, match="refusing to save .*does not load back.*other than tensors.*RNDConfig"):
        save_checkpoint(bad, path)
    assert path.read_bytes() == good and _no_temp_files(tmp_path)


def test_kind_preset_and_format_mismatches_name_both_sides(tmp_path):
    path = save_checkpoint(_codec_ckpt(), tmp_path / "codec.pt")
    with pytest.raises(ValueError, match="is a 'codec' checkpoint, expected 'video'"):
        load_checkpoint(path, expect_kind="video")
    with pytest.raises(ValueError, match="preset 'tiny', expected preset 'paper'"):
        load_checkpoint(path, expect_preset="paper")

    payload = _codec_ckpt().to_dict() | {"format": CHECKPOINT_FORMAT + 1}
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ValueError, match=rf"format {CHECKPOINT_FORMAT + 1} .*reads format {CHECKPOINT_FORMAT}"):
        load_checkpoint(tmp_path / "future.pt")
    del payload["step"]
    payload["format"] = CHECKPOINT_FORMAT
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['step'\]"):
        load_checkpoint(tmp_path / "old.pt")


def test_not_a_checkpoint_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"definitely not a zip or a pickle")
    good = save_checkpoint(_codec_ckpt(), tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])  # e.g. a copy that died halfway
    for name in ("junk.pt", "cut.pt"):
        with pytest.raises(ValueError, match="is not a checkpoint file"):
            load_checkpoint(tmp_path / name)
    torch.save({"model": torch.zeros(2)}, tmp_path / "foreign.pt")  # some other torch.save output
    with pytest.raises(ValueError, match="is not a diffusion-reward-robot checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_load_state_checked_lists_shapes_missing_and_unexpected():
    state = _net(4).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["2.bias"]
    with pytest.raises(ValueError) as err:
        load_state_checked(_net(5), state, "video model")
    msg = str(err.value)
    assert msg.startswith("video model: the saved weights do not fit the model")
    assert "0.weight: file (4, 3) vs model (5, 3)" in msg and "2.weight: file (2, 4) vs model (2, 5)" in msg
    assert "missing keys (in the model, not in the file): 2.bias" in msg
    assert "unexpected keys (in the file, not in the model): extra.weight" in msg


def test_data_fingerprint_is_order_and_folder_independent(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "ep0.mcap").write_bytes(b"x" * 10)
        (tmp_path / folder / "ep1.mcap").write_bytes(b"y" * 20)
    a = [tmp_path / "a" / "ep0.mcap", tmp_path / "a" / "ep1.mcap"]
    b = [str(tmp_path / "b" / "ep1.mcap"), str(tmp_path / "b" / "ep0.mcap")]
    assert data_fingerprint(a) == data_fingerprint(b) and len(data_fingerprint(a)) == 64
    (tmp_path / "b" / "ep1.mcap").write_bytes(b"y" * 21)
    assert data_fingerprint(a) != data_fingerprint(b)
    assert data_fingerprint([tmp_path / "a"]) != data_fingerprint([tmp_path / "b"])  # folders: files + sizes
    assert data_fingerprint(["ep-1", "ep-2"]) == data_fingerprint(["ep-2", "ep-1"]) != data_fingerprint(["ep-1"])
    with pytest.raises(ValueError, match="no episodes"):
        data_fingerprint([])


@pytest.mark.parametrize("failure", [FileNotFoundError("git"), subprocess.CalledProcessError(128, "git")])
def test_code_version_never_fails_outside_git(monkeypatch, failure):
    def broken_run(*args, **kwargs):
        raise failure

    monkeypatch.setattr(ck.subprocess, "run", broken_run)
    assert code_version.__wrapped__() == metadata.version("diffusion-reward-robot")
    assert code_version().startswith(metadata.version("diffusion-reward-robot"))


def test_checkpoint_fields_are_validated():
    with pytest.raises(ValueError, match="Checkpoint.kind"):
        Checkpoint(kind="", preset="tiny", config={}, state_dict={})
    with pytest.raises(ValueError, match="Checkpoint.step"):
        Checkpoint(kind="rnd", preset="tiny", config={}, state_dict={}, step=-1)
    assert {f.name for f in dataclasses.fields(Checkpoint)} | {"magic", "format"} == set(_codec_ckpt().to_dict())
