"""Data-parallel training over the processes torchrun starts (one per GPU; several on CPU too).

`torchrun --nproc_per_node N -m robot.cli train video ...` runs N copies of the command and tells
each its place through the environment (RANK, WORLD_SIZE, LOCAL_RANK). Every rank holds the whole
model and trains on its own minibatches; gradients are averaged over the ranks during backward, so
all ranks take the same optimizer step and stay identical. Without torchrun (WORLD_SIZE unset or 1)
nothing here communicates and training runs as a single process always did.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Worker:
    """This process's place among the training processes, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and figures, and shows progress."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _device(local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK when CUDA is present (one GPU per process), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {local_rank} needs GPU {local_rank}, but only {torch.cuda.device_count()} "
                         "are visible: start at most that many processes per node")
    return torch.device("cuda", local_rank)


@contextmanager
def process_group() -> Iterator[Worker]:
    """This process's Worker for one training run. With several processes it joins torchrun's
    process group (NCCL with one GPU per process, gloo on CPU) and leaves it at the end; a group
    someone else opened is used as it is and left open."""
    local_rank = _env_int("LOCAL_RANK", 0)
    device = _device(local_rank)
    opened = False
    if not dist.is_initialized() and _env_int("WORLD_SIZE", 1) > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        opened = True
    if not dist.is_initialized():
        yield Worker(device=device)
        return
    try:
        yield Worker(dist.get_rank(), dist.get_world_size(), device)
        dist.barrier()  # on success no rank leaves while another may still need it
    finally:
        if opened:
            dist.destroy_process_group()


def _parallel() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def broadcast_weights(*modules: nn.Module) -> None:
    """Rank 0's parameters and buffers to every rank, so all continue from the same values."""
    if not _parallel():
        return
    with torch.no_grad():
        for tensor in itertools.chain.from_iterable(itertools.chain(m.parameters(), m.buffers()) for m in modules):
            dist.broadcast(tensor.detach(), src=0)


@contextmanager
def averaged_gradients(*modules: nn.Module) -> Iterator[None]:
    """While open, every backward pass ends by averaging the gradients it accumulated over the
    ranks, so every rank's optimizer steps on the gradient of the global batch (batch x ranks).

    One all-reduce per backward pass, not one per parameter (~2 ms each on gloo), over the
    parameters in module order, so ranks line up whatever order backward reached them in.
    """
    # Hooks, not DDP: DDP's reducer mishandles the codec's autograd.grad GAN weight and its backward into two models.
    if not _parallel():
        yield
        return
    world_size = dist.get_world_size()
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    position = {p: i for i, p in enumerate(parameters)}
    arrived: list[torch.Tensor] = []

    def average_arrived() -> None:
        grads = [p.grad for p in sorted(arrived, key=position.__getitem__)]
        arrived.clear()
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)  # gloo has no AVG: sum, then divide
        flat.div_(world_size)
        for grad, average in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(average.view_as(grad))

    def arrive(parameter: torch.Tensor) -> None:
        if not arrived:  # the first gradient of this pass: average them all once backward has finished
            torch.autograd.Variable._execution_engine.queue_callback(average_arrived)  # as DDP does
        arrived.append(parameter)

    handles = [p.register_post_accumulate_grad_hook(arrive) for p in parameters]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def all_finite(value: torch.Tensor) -> bool:
    """Whether `value` is finite on every rank: the same answer on all, so all stop together."""
    finite = torch.isfinite(value).all()
    if _parallel():
        flag = finite.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        finite = flag.bool()
    return bool(finite)


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` (any picklable object) on every rank."""
    if not _parallel():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not _parallel():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
