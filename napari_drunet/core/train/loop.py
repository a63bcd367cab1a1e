"""Training and fine-tuning: one readable loop driven by a :class:`TrainConfig`.

:func:`train_iter` is a generator (see ``docs/architecture.md``): it yields a
:class:`~napari_drunet.core.progress.Progress` after every optimisation step (``metrics``: loss,
lr, epoch, eta_s) and during validation, and *returns* a :class:`TrainResult`.

* Cases are normalised once; patches come from :class:`~napari_drunet.core.train.sampling.PatchSampler`
  (foreground-biased, augmented). The region mask of a case (e.g. a field of view) limits the
  loss and the patch centres; its weight map (edited / reviewed pixels) makes sampling prefer
  those pixels and, with ``only_weighted``, is the loss weight (0 = pixel ignored).
* The network is new, or a deep copy of ``init.network`` (``init`` is never modified, so the GUI
  can keep using it). AdamW, cosine schedule with a short warm-up (or constant), AMP on CUDA.
* At the end of every ``val_every``-th epoch the validation cases are predicted whole with
  sliding-window inference and scored (Dice per foreground class within the region mask). The
  best weights by validation Dice are kept -- including the starting weights when fine-tuning --
  and, with ``out``, saved atomically as a checkpoint. Without validation cases the last weights
  are kept.
* Stopping keeps the best weights so far: ``should_stop()`` returning True, the time budget or
  early-stopping patience end the run at the next step and *return* the result.
  Closing the generator (``gen.close()``) also stops it and writes the best checkpoint to
  ``out``, but Python (< 3.13) discards the return value -- pass ``should_stop`` to get it.
* Fine-tuning guards: frozen encoder, L2-SP penalty toward the start weights, replay of earlier
  training cases in every batch, loss only on weighted pixels.
* Under ``torchrun`` the network is wrapped in DDP (see :mod:`.distributed`); only rank 0
  validates, saves and fills ``Progress.message`` (other ranks yield records with an empty
  message), and all ranks stop at the same step.

The run's setup (cases, network, learning-rate schedule) is in
:mod:`napari_drunet.core.train.setup`, validation in :mod:`napari_drunet.core.train.validation`.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import CheckpointError, DataError, InputError
from ..memory import check_fits, is_out_of_memory, training_bytes
from ..progress import Progress, run_to_end
from . import distributed as ddp
from .config import TrainConfig, TrainResult, default_finetune_config
from .sampling import Augmenter, PatchSampler, split_cases
from .setup import (
    fit_channels,  # noqa: F401 - re-exported
    lr_schedule,
    replan_step,
    setup_run,
)
from .validation import run_validation

if TYPE_CHECKING:
    from ..models.model import Model
    from .dataset import Case

__all__ = ["TrainConfig", "TrainResult", "default_finetune_config", "finetune", "finetune_iter",
           "train", "train_iter"]

# ----------------------------------------------------------------------------------- the loop
def train_iter(cases: Sequence[Case], cfg: TrainConfig | None = None, init: Model | None = None,
               val_cases: Sequence[Case] | None = None, replay_cases: Sequence[Case] | None = None,
               out: str | os.PathLike | None = None,
               should_stop: Callable[[], bool] | None = None,
               ) -> Generator[Progress, None, TrainResult]:
    """Train a network (or fine-tune a copy of ``init``) on ``cases``.

    Parameters
    ----------
    cases : sequence of dataset.Case
        Training cases (image, label; optional region mask and weight map).
    cfg : TrainConfig, optional
        Options (defaults when omitted); not modified (the completed copy is in the result's
        ``model.meta["training"]["config"]``).
    init : model.Model, optional
        Starting model; its network is deep-copied, never modified.
    val_cases : sequence of dataset.Case, optional
        Validation cases; default: ``cfg.val_fraction`` of ``cases`` held out (by case).
    replay_cases : sequence of dataset.Case, optional
        Earlier training cases; ``cfg.replay_fraction`` of each batch is drawn from them.
    out : path-like, optional
        Checkpoint written atomically whenever the validation Dice improves and at the end.
    should_stop : callable, optional
        Polled every step (and during validation); returning True stops the run, which then
        returns the best model so far.

    Yields
    ------
    Progress
        After every step (``metrics``: loss, lr, epoch, eta_s) and during / after validation
        (``metrics``: val_dice, best_val_dice, epoch).

    Returns
    -------
    TrainResult
    """
    cfg = copy.deepcopy(cfg or TrainConfig())
    if init is not None:  # the starting model decides 2D / 3D
        cfg.spatial_dims = int(init.network.config["spatial_dims"])
    cfg.validate()
    cases = list(cases)
    if not cases:
        raise DataError("no training cases")
    if out is not None:  # fail now, not after the run
        from ..atomic import check_writable

        try:
            check_writable(out, "model file")
        except InputError as exc:  # the API promises CheckpointError for a bad model path
            raise CheckpointError(str(exc)) from None
    joined = not ddp.is_distributed()
    rank, world, local_rank = ddp.init_distributed()
    old_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    try:
        return (yield from _loop(cases, cfg, init, val_cases, replay_cases, out, should_stop,
                                 rank, local_rank))
    finally:
        torch.set_num_threads(old_threads)
        if joined and world > 1:  # leave the process group this call joined
            ddp.cleanup()


def _loop(cases, cfg, init, val_cases, replay_cases, out, should_stop, rank, local_rank):
    from ..device import get_device
    from ..models.checkpoint import file_sha256, save_checkpoint
    from ..models.model import Model
    from .losses import build_loss

    started = time.perf_counter()
    device = get_device(cfg.device)
    if ddp.is_distributed() and device.type == "cuda":
        device = torch.device("cuda", local_rank)
    if val_cases is None:
        cases, val_cases = split_cases(cases, cfg.val_fraction, cfg.seed)
    net, train_p, replay_p, val_p = setup_run(cases, cfg, init, list(val_cases),
                                              list(replay_cases or []))
    dims, patch, is_main = cfg.spatial_dims, tuple(cfg.patch_size), rank == 0
    check_fits(training_bytes(net.config.get("features", (64,)), patch, cfg.batch_size,
                              sum(p.numel() for p in net.parameters())), device,
               f"training {cfg.batch_size} patch(es) of {patch}",
               "lower batch_size or patch_size (or the features)")
    net.to(device)

    # fine-tuning guards: frozen encoder (weights and norm statistics), L2-SP anchor
    if cfg.freeze_encoder:
        net.encoder.requires_grad_(False)
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    anchor = {n: p.detach().clone() for n, p in trainable} if cfg.l2sp > 0 else {}

    def train_mode() -> None:
        net.train()
        if cfg.freeze_encoder:
            net.encoder.eval()

    model = ddp.wrap(net, device)
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    loss_fn = build_loss(cfg.loss)
    use_amp = bool(cfg.amp and device.type == "cuda")
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    # patch streams: one per rank, deterministic given the seed
    aug = Augmenter(rotate=cfg.rotate, scale=cfg.scale, degrade=cfg.degrade,
                    rng=np.random.default_rng([cfg.seed, rank, 1])) if cfg.augment else None
    sampler = PatchSampler(train_p, patch, cfg.batch_size, cfg.fg_fraction,
                           np.random.default_rng([cfg.seed, rank, 0]), dims, cfg.slice_axis, aug)
    replay = PatchSampler(replay_p, patch, cfg.batch_size, cfg.fg_fraction,
                          np.random.default_rng([cfg.seed, rank, 2]), dims, cfg.slice_axis,
                          aug) if replay_p and cfg.replay_fraction > 0 else None
    mix_rng = np.random.default_rng([cfg.seed, rank, 3])
    torch.manual_seed(cfg.seed + 7919 * rank)  # dropout masks differ per rank

    pixels = sum(int(np.prod(p.image.shape[1:])) for p in train_p)
    spe = cfg.steps_per_epoch or max(10, math.ceil(pixels / (cfg.batch_size * np.prod(patch))))
    planned = spe * cfg.epochs if cfg.max_steps is None else min(spe * cfg.epochs, cfg.max_steps)
    plan = {"total": planned, "warmup": cfg.warmup_steps if cfg.warmup_steps is not None
            else min(50, planned // 20)}
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg, plan))

    # what is kept: best weights by validation Dice (else the last), and the recipe
    history: list[dict[str, Any]] = []
    kept: dict[str, Any] = {"dice": None, "state": None, "since": 0, "path": None}
    init_meta = dict(getattr(init, "meta", None) or {})
    parent = getattr(init, "path", None)
    provenance = {"parent": file_sha256(parent) if parent and os.path.isfile(parent) else None,
                  "parent_name": getattr(init, "name", None), "data": [c.name for c in cases]}
    inference = dict(init_meta.get("inference") or {})
    inference.update(mode=f"{dims}d", tile_size=list(patch), slice_axis=cfg.slice_axis)

    def make_meta() -> dict[str, Any]:
        skip = {"format_version", "package_version", "arch", "arch_kwargs"}
        meta = {k: copy.deepcopy(v) for k, v in init_meta.items() if k not in skip}
        meta.update(normalization=cfg.normalization, label_names=cfg.label_names,
                    threshold=cfg.threshold, inference=inference,
                    training={"config": cfg.to_dict(), "history": copy.deepcopy(history)},
                    metrics={"val_dice": kept["dice"]}, provenance=dict(provenance))
        return meta

    def keep_current() -> None:
        kept["state"] = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}

    def save() -> None:
        if out is not None and is_main:
            kept["path"] = str(save_checkpoint(out, net, make_meta()))

    def validate(entry: dict[str, Any]):
        """Validate into ``entry`` (rank 0); keep and save improved weights. True = stopped."""
        t0 = time.perf_counter()
        result = yield from run_validation(net, val_p, cfg, patch, device, should_stop,
                                      entry["step"], plan["total"])
        train_mode()
        if result is None:
            return True
        dice, per_class = result
        entry.update(val_dice=dice, val_dice_per_class=per_class,
                     val_seconds=time.perf_counter() - t0)
        if kept["dice"] is None or dice > kept["dice"]:
            kept["dice"], kept["since"] = dice, 0
            keep_current()
            save()
        else:
            kept["since"] += 1
        yield Progress(entry["step"], plan["total"], f"epoch {entry['epoch']}: validation Dice "
                       f"{dice:.4f} (best {kept['dice']:.4f})",
                       {"val_dice": dice, "best_val_dice": kept["dice"], "epoch": entry["epoch"]})
        return False

    step, reason, stopped, closed, losses = 0, "completed", False, False, []
    try:
        if init is not None and val_p and is_main:  # the starting weights are a candidate too
            history.append({"epoch": 0, "step": 0})
            stopped = yield from validate(history[-1])
        train_mode()
        t_train = time.perf_counter()
        while step < plan["total"]:
            # 1. stop? (all ranks agree, so they leave the loop at the same step)
            why = None
            if stopped or (should_stop is not None and should_stop()):
                why = "cancelled"
            elif cfg.time_budget is not None and time.perf_counter() - started >= cfg.time_budget:
                why = "time_budget"
            elif cfg.early_stop_patience and kept["since"] >= cfg.early_stop_patience:
                why = "early_stopping"
            if ddp.any_rank(why is not None):
                reason = why or "cancelled"
                break
            # 2. batch: training patches plus (on average) replay_fraction replayed ones
            n_replay = 0
            if replay is not None:
                expected = cfg.replay_fraction * cfg.batch_size
                n_replay = int(expected) + int(mix_rng.random() < expected - int(expected))
            parts = [sampler.sample(cfg.batch_size - n_replay)] if n_replay < cfg.batch_size \
                else []
            if n_replay:
                parts.append(replay.sample(n_replay))
            x, y, w = (torch.from_numpy(np.concatenate([getattr(b, k) for b in parts])).to(device)
                       for k in ("image", "label", "weight"))
            # 3. forward, loss (+ L2-SP), backward, step
            try:
                with torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext():
                    logits = model(x)
                loss = loss_fn(logits.float(), y, w)
                if anchor:
                    loss = loss + cfg.l2sp * sum(((p - anchor[n]) ** 2).sum()
                                                 for n, p in trainable)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                optimizer.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                raise InputError(f"out of memory on {device} training {cfg.batch_size} patch(es) "
                                 f"of {tuple(patch)}; lower batch_size or patch_size") from None
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            sched.step()
            step += 1
            # 4. report
            value = ddp.all_reduce_mean(float(loss.detach()))
            losses.append(value)
            if not math.isfinite(value):  # diverged: the weights are NaN/Inf from here on
                reason = "diverged"
                break
            epoch = (step - 1) // spe + 1
            if cfg.time_budget is not None and cfg.schedule == "cosine" and replan_step(step):
                # fit the schedule in the budget; re-planned as the speed is measured better
                # (a busy machine at the start must not cut a long run short)
                per_step = (time.perf_counter() - t_train) / step
                left = cfg.time_budget - (time.perf_counter() - started)
                fit = min(planned, step + max(1, int(left / per_step * 0.95)))
                plan["total"] = ddp.all_reduce_min(fit)  # every rank runs the same steps
            eta = (time.perf_counter() - t_train) / step * (plan["total"] - step)
            if cfg.time_budget is not None:  # the budget ends the run whatever the plan says
                eta = min(eta, max(0.0, cfg.time_budget - (time.perf_counter() - started)))
            message = f"epoch {epoch} step {step}/{plan['total']} loss {value:.4f}" \
                if is_main else ""
            yield Progress(step, plan["total"], message,
                           {"loss": value, "lr": lr, "epoch": epoch, "eta_s": eta})
            # 5. end of epoch: history, validation
            if step % spe == 0 or step == plan["total"]:
                ddp.average_buffers(net)
                history.append({"epoch": epoch, "step": step, "lr": lr,
                                "loss": float(np.mean(losses[(epoch - 1) * spe:])),
                                "seconds": time.perf_counter() - started})
                if val_p and is_main and (epoch % cfg.val_every == 0 or step == plan["total"]):
                    stopped = yield from validate(history[-1])
    except GeneratorExit:  # gen.close(): finish below without yielding
        reason, closed = "cancelled", True
    if reason == "completed" and step < planned:
        reason = "time_budget"  # the schedule was shortened to fit the budget
    if not closed:  # (a closed generator may be alone: no collective operations then)
        ddp.average_buffers(net)
    if reason == "diverged":  # never returned or saved as a result: a NaN model predicts nothing
        kept_note = (f"; {kept['path']} keeps the best weights validated before (Dice "
                     f"{kept['dice']:.4f})" if kept["path"] else "; nothing was saved")
        raise InputError(f"the training diverged at step {step} (loss {losses[-1]}): lower the "
                         f"learning rate (lr {cfg.lr:g}){kept_note}")
    if kept["state"] is None or not any("val_dice" in h for h in history):
        keep_current()  # no (finished) validation: keep the last weights
    net.load_state_dict(kept["state"])
    net.requires_grad_(True)
    save()
    if not closed:
        ddp.barrier()
    return TrainResult(Model(net.eval(), make_meta(), device=device), history, kept["dice"],
                       step, time.perf_counter() - started, reason != "completed", reason,
                       kept["path"])


def train(cases: Sequence[Case], cfg: TrainConfig | None = None, init: Model | None = None,
          callback: Callable[[Progress], None] | None = None, **kwargs: Any) -> TrainResult:
    """Run :func:`train_iter` to the end (``callback`` gets every progress record)."""
    return run_to_end(train_iter(cases, cfg, init, **kwargs), callback)


def finetune_iter(model: Model, cases: Sequence[Case], cfg: TrainConfig | None = None,
                  replay_cases: Sequence[Case] | None = None, **kwargs: Any,
                  ) -> Generator[Progress, None, TrainResult]:
    """Fine-tune a copy of ``model`` on ``cases``; ``cfg`` defaults to
    :func:`default_finetune_config`. ``model`` itself is never modified."""
    return train_iter(cases, cfg or default_finetune_config(), init=model,
                      replay_cases=replay_cases, **kwargs)


def finetune(model: Model, cases: Sequence[Case], cfg: TrainConfig | None = None,
             callback: Callable[[Progress], None] | None = None, **kwargs: Any) -> TrainResult:
    """Run :func:`finetune_iter` to the end."""
    return run_to_end(finetune_iter(model, cases, cfg, **kwargs), callback)
