"""Multi-process data-parallel training (``torchrun``) helpers.

``drunet train`` runs unchanged under ``torchrun --nproc_per_node N``: :func:`init_distributed`
reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by ``torchrun``) and joins the process
group (``nccl`` on CUDA, ``gloo`` on CPU). :func:`napari_drunet.core.train.loop.train_iter` then
wraps the network in :class:`~torch.nn.parallel.DistributedDataParallel`, gives every rank its own
patch stream (seed offset by the rank), averages the logged loss over ranks, lets only rank 0
validate and write checkpoints, and agrees on stopping (all ranks stop at the same step).

Without those variables (or with ``WORLD_SIZE=1``) everything here is a no-op: rank 0 of 1.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..errors import InputError

__all__ = ["all_reduce_mean", "all_reduce_min", "any_rank", "average_buffers", "barrier",
           "broadcast_bool", "cleanup", "env_world_size", "init_distributed", "is_distributed",
           "rank", "unwrap", "wrap"]


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def init_distributed(backend: str | None = None,
                     timeout_s: float = 1800.0) -> tuple[int, int, int]:
    """Join the ``torchrun`` process group if the environment describes one.

    Parameters
    ----------
    backend : str, optional
        ``'gloo'`` or ``'nccl'``; default ``nccl`` when CUDA is available, else ``gloo``.
    timeout_s : float
        Collective timeout (rank 0 validates while the others wait).

    Returns
    -------
    tuple of int
        ``(rank, world_size, local_rank)``; ``(0, 1, 0)`` without a process group.
    """
    world = env_world_size()
    if world <= 1 or not dist.is_available():
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise InputError(f"WORLD_SIZE={world} but {var} is not set; "
                                 "launch with torchrun --nproc_per_node N")
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size(), local_rank


def cleanup() -> None:
    """Leave the process group (no-op when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: float) -> float:
    """Mean of ``value`` over all ranks (``value`` itself when not distributed)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def all_reduce_min(value: int) -> int:
    """Smallest ``value`` over all ranks (``value`` itself when not distributed)."""
    if not is_distributed():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one rank."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def average_buffers(network: nn.Module) -> None:
    """Average floating-point buffers (batch-norm running statistics) over all ranks.

    DDP broadcasts rank 0's buffers before each forward pass, but the statistics updated by the
    last pass differ per rank; averaging them makes every replica identical (and uses every
    rank's data) before validation and saving.
    """
    if not is_distributed():
        return
    world = dist.get_world_size()
    for buf in unwrap(network).buffers():
        if torch.is_floating_point(buf):
            dist.all_reduce(buf.data, op=dist.ReduceOp.SUM)
            buf.data.div_(world)


def broadcast_bool(flag: bool, src: int = 0) -> bool:
    """``flag`` as seen by rank ``src``, on every rank."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.broadcast(t, src=src)
    return bool(t.item() > 0)


def wrap(network: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(network)`` when distributed, else ``network`` unchanged."""
    if not is_distributed():
        return network
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(network, device_ids=ids)


def unwrap(network: nn.Module) -> nn.Module:
    """The plain network inside a ``DistributedDataParallel`` wrapper (or ``network``)."""
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) \
        else network
