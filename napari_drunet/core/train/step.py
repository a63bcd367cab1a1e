"""One optimisation step of a training run (:mod:`napari_drunet.core.train.loop`).

:func:`build_batches` makes the run's patch streams (training patches plus a share of
replayed ones, one stream per rank), :func:`build_optimiser` the AdamW optimiser with the
fine-tuning guards (frozen encoder, L2-SP anchor), the cosine / constant schedule and AMP;
:func:`next_batch` draws a batch and :func:`optimise` makes one step with it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..device import autocast_dtype
from ..errors import InputError
from ..memory import is_out_of_memory
from . import distributed as ddp
from .config import TrainConfig
from .sampling import Augmenter, PatchSampler, PreparedCase
from .setup import lr_schedule


@dataclass
class Batches:
    """The patch streams: training patches plus (on average) ``replay_fraction`` replayed
    ones in every batch of ``size``."""

    sampler: PatchSampler
    replay: PatchSampler | None
    mix_rng: np.random.Generator
    size: int
    replay_fraction: float


@dataclass
class Optimiser:
    """What one optimisation step uses: the (DDP-wrapped) network, loss, optimiser, AMP."""

    model: torch.nn.Module
    loss_fn: Callable[..., torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: no autocast
    trainable: list[tuple[str, torch.nn.Parameter]]
    anchor: dict[str, torch.Tensor]  # L2-SP start weights (empty: no penalty)
    l2sp: float


def build_batches(train_p: list[PreparedCase], replay_p: list[PreparedCase], cfg: TrainConfig,
                  rank: int) -> Batches:
    """One patch stream per rank, deterministic given ``cfg.seed``.

    Parameters
    ----------
    train_p, replay_p : list of PreparedCase
        Training cases and earlier (replayed) ones; no replay without either of
        ``replay_p`` and ``cfg.replay_fraction``.
    cfg : TrainConfig
        The completed configuration (patch size set).
    rank : int
        Process rank under DDP (0 alone): every rank draws its own patches.

    Returns
    -------
    Batches
    """
    dims, patch = cfg.spatial_dims, tuple(cfg.patch_size)
    aug = Augmenter(rotate=cfg.rotate, scale=cfg.scale, degrade=cfg.degrade,
                    rng=np.random.default_rng([cfg.seed, rank, 1])) if cfg.augment else None
    sampler = PatchSampler(train_p, patch, cfg.batch_size, cfg.fg_fraction,
                           np.random.default_rng([cfg.seed, rank, 0]), dims, cfg.slice_axis, aug)
    replay = PatchSampler(replay_p, patch, cfg.batch_size, cfg.fg_fraction,
                          np.random.default_rng([cfg.seed, rank, 2]), dims, cfg.slice_axis,
                          aug) if replay_p and cfg.replay_fraction > 0 else None
    return Batches(sampler, replay, np.random.default_rng([cfg.seed, rank, 3]),
                   cfg.batch_size, cfg.replay_fraction)


def build_optimiser(net: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                    plan: dict[str, int]) -> Optimiser:
    """AdamW over the trainable weights with the fine-tuning guards, the learning-rate
    schedule of :func:`~napari_drunet.core.train.setup.lr_schedule` and mixed precision where
    the device runs it fast (:func:`~napari_drunet.core.device.autocast_dtype`).

    Parameters
    ----------
    net : torch.nn.Module
        The network, on ``device``; with ``cfg.freeze_encoder`` its encoder stops taking
        gradients here (its norm statistics are the loop's train mode's business).
    cfg : TrainConfig
        The completed configuration.
    device : torch.device
        Where the network runs (DDP wraps it there when the run is distributed).
    plan : dict
        ``"total"`` and ``"warmup"`` steps; read by the schedule at every step, so a
        re-planned total changes the schedule.

    Returns
    -------
    Optimiser
    """
    from .losses import build_loss

    if cfg.freeze_encoder:
        net.encoder.requires_grad_(False)
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    anchor = {n: p.detach().clone() for n, p in trainable} if cfg.l2sp > 0 else {}
    model = ddp.wrap(net, device)
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    amp_dtype = autocast_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg, plan))
    return Optimiser(model, build_loss(cfg.loss), optimizer, scheduler, scaler,
                     amp_dtype, trainable, anchor, cfg.l2sp)


def next_batch(batches: Batches, device: torch.device,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image, label and weight tensors of the next batch, on ``device``."""
    n_replay = 0
    if batches.replay is not None:
        expected = batches.replay_fraction * batches.size
        n_replay = int(expected) + int(batches.mix_rng.random() < expected - int(expected))
    parts = [batches.sampler.sample(batches.size - n_replay)] if n_replay < batches.size else []
    if n_replay:
        parts.append(batches.replay.sample(n_replay))
    x, y, w = (torch.from_numpy(np.concatenate([getattr(b, k) for b in parts])).to(device)
               for k in ("image", "label", "weight"))
    return x, y, w


def optimise(opt: Optimiser, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
             ) -> tuple[float, float]:
    """Forward, loss (+ L2-SP), backward and step on one batch.

    Parameters
    ----------
    opt : Optimiser
    x, y, w : torch.Tensor
        Images ``(N, C, *patch)``, labels ``(N, *patch)`` and loss weights ``(N, *patch)``.

    Returns
    -------
    (float, float)
        The loss on this rank and the learning rate the step used.

    Raises
    ------
    InputError
        Out of memory (CUDA or CPU), saying what to lower.
    """
    device = x.device
    if opt.amp_dtype is not None and device.type == "cpu":
        # oneDNN's fast bf16 kernels want channels-last activations (1.9-2.3x per step with
        # AMX, benchmarks/precision.py); the weights keep their layout
        x = x.contiguous(memory_format=torch.channels_last if x.ndim == 4
                         else torch.channels_last_3d)
    try:
        with torch.autocast(device.type, dtype=opt.amp_dtype) if opt.amp_dtype \
                else nullcontext():
            logits = opt.model(x)
        loss = opt.loss_fn(logits.float(), y, w)
        if opt.anchor:
            loss = loss + opt.l2sp * sum(((p - opt.anchor[n]) ** 2).sum()
                                         for n, p in opt.trainable)
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        opt.optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise InputError(f"out of memory on {device} training {x.shape[0]} patch(es) of "
                         f"{tuple(x.shape[2:])}; lower batch_size or patch_size") from None
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    lr = opt.optimizer.param_groups[0]["lr"]
    opt.scheduler.step()
    return float(loss.detach()), lr
