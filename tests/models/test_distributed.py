"""Data-parallel training (models/distributed.py): ranks average their gradients and stay identical
(two gloo processes on the CPU), and torchrun runs `drr train codec` / `drr train video` with them."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models import distributed
from models.rewards import REWARD_KINDS
from models.train import STATS_MAX_FRAMES

REPO = Path(__file__).resolve().parents[2]
RANKS = 2


def train_linear(data_ranks: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """A linear model after 3 SGD steps on the batches of these ranks (8 samples each)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    distributed.broadcast_weights(model)
    batches = [torch.Generator().manual_seed(10 + rank) for rank in data_ranks]
    x = torch.cat([torch.randn(8, 3, generator=g) for g in batches])
    y = x.sum(1, keepdim=True) + torch.cat([torch.randn(8, 1, generator=g) for g in batches])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with distributed.averaged_gradients(model):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
    return model.state_dict()


def train_tiny_codec(rank: int) -> dict:
    """The tiny codec after 2 data-parallel steps on this rank's own images, with the adaptive GAN
    weight (autograd.grad) on from step 0 and half the codebook dead, so each rank restarts codes."""
    from models.codec import VQGAN, CodecConfig, CodecLoss, PatchDiscriminator
    from models.train import data_parallel_codec_steps

    config = dataclasses.replace(CodecConfig.preset("tiny"), disc_start=0)
    torch.manual_seed(0)
    model, discriminator = VQGAN(config), PatchDiscriminator(config.disc_channels, config.disc_layers)
    model.quantizer.usage[: config.codebook_size // 2] = 0.0
    images = torch.rand(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(20 + rank)) * 2 - 1
    logs = data_parallel_codec_steps(model, discriminator, CodecLoss(config), iter(images), 2, 1e-3)
    return {"model": model.state_dict(), "discriminator": discriminator.state_dict(),
            "adaptive_weight": logs[-1]["adaptive_weight"]}


def diverge_on_rank_1(rank: int) -> str:
    """The codec's error when rank 1's images are NaN: every rank must raise it, none may wait."""
    from models.codec import VQGAN, CodecConfig, CodecLoss, PatchDiscriminator
    from models.train import data_parallel_codec_steps

    config = CodecConfig.preset("tiny")
    images = torch.zeros(1, 2, 3, 64, 64)
    images[:, :, :, 0, 0] = torch.nan if rank == 1 else 0.0
    try:
        data_parallel_codec_steps(VQGAN(config), PatchDiscriminator(config.disc_channels, config.disc_layers),
                                  CodecLoss(config), iter(images), 1, 1e-3)
    except FloatingPointError as exc:
        return str(exc)
    return "no error"


def _rank_main(rank: int, port: int, out: Path) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(RANKS), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    # Opened here with a short timeout, so a rank left waiting fails the test instead of hanging it.
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    with distributed.process_group() as worker:
        assert (worker.rank, worker.world_size, worker.parallel) == (rank, RANKS, True)
        result = {"linear": train_linear((rank,)), "codec": train_tiny_codec(rank),
                  "finite": distributed.all_finite(torch.tensor(torch.nan if rank == 1 else 1.0)),
                  "diverged": diverge_on_rank_1(rank)}
    dist.destroy_process_group()
    torch.save(result, out / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks_trained(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank_main, args=(_free_port(), out), nprocs=RANKS)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(RANKS)]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.allclose(a[name], b[name]) for name in a)


def test_ranks_step_on_the_averaged_gradient(ranks_trained):
    first, second = (r["linear"] for r in ranks_trained)
    assert_same(first, second)
    alone = train_linear((0,))  # a single process: nothing averaged
    assert differs(first, alone)
    both = train_linear((0, 1))  # the mean loss over both batches has the averaged gradient
    for name in both:
        torch.testing.assert_close(first[name], both[name])


def test_codec_ranks_stay_identical_through_gan_weight_and_code_restarts(ranks_trained):
    first, second = (r["codec"] for r in ranks_trained)
    assert first["adaptive_weight"] > 0  # the autograd.grad path ran
    assert_same(first["model"], second["model"])  # codebook and usage included
    assert_same(first["discriminator"], second["discriminator"])
    alone = train_tiny_codec(0)
    assert differs(first["model"], alone["model"]) and differs(first["discriminator"], alone["discriminator"])


def test_a_non_finite_loss_on_one_rank_stops_every_rank(ranks_trained):
    assert [r["finite"] for r in ranks_trained] == [False, False]
    assert all("generator loss is not finite" in r["diverged"] for r in ranks_trained)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    from sim.record import record_episodes

    root = tmp_path_factory.mktemp("episodes")
    record_episodes("sim:reach", "expert", range(4), root, image_size=(64, 64), progress=False)
    return root


def torchrun_drr(*args: str) -> dict:
    """`torchrun --nproc_per_node 2 -m robot.cli ...`; rank 0's last JSON line."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(RANKS),
               "--local-ranks-filter", "0", "-m", "robot.cli", *args, "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def written_by_one_rank(run: Path, model: str) -> None:
    assert sorted(p.name for p in run.iterdir() if "ckpt" in p.name) == [f"{model}.ckpt"]  # no temp files left
    assert len(list((run / "tensorboard" / model).iterdir())) == 1  # one event file: rank 0's


def test_torchrun_trains_codec_and_video_data_parallel(episodes, tmp_path):
    from models.checkpoint import load_checkpoint

    codec = torchrun_drr("train", "codec", "--data", str(episodes), "--out", str(tmp_path / "codec"),
                         "--preset", "tiny", "--steps", "4")
    assert codec["world_size"] == RANKS and codec["steps"] == 4
    assert load_checkpoint(codec["checkpoint"]).step == 4
    written_by_one_rank(tmp_path / "codec", "codec")

    video = torchrun_drr("train", "video", "--data", str(episodes), "--codec", codec["checkpoint"],
                         "--out", str(tmp_path / "video"), "--preset", "tiny", "--steps", "4")
    assert video["world_size"] == RANKS and video["steps"] == 4
    # every chosen frame scored, by one rank or the other: every frame past the warm-up (the tiny preset's
    # likelihood reward leaves 2 out per episode)
    scored = video["train_pairs"] - 2 * video["train_episodes"]
    for kind in REWARD_KINDS:
        assert video["reward_stats"][kind]["count"] == min(scored, STATS_MAX_FRAMES)
    assert load_checkpoint(video["checkpoint"]).stats == video["reward_stats"]
    written_by_one_rank(tmp_path / "video", "video")
