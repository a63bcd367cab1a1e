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
:mod:`napari_drunet.core.train.setup`, one optimisation step (batches, optimiser, out-of-memory
error) in :mod:`napari_drunet.core.train.step`, validation in
:mod:`napari_drunet.core.train.validation`; here the loop is short functions over one
``_Run`` state.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import CheckpointError, DataError, InputError
from ..memory import check_fits, training_bytes
from ..progress import Progress, run_to_end
from . import distributed as ddp
from .config import TrainConfig, TrainResult, default_finetune_config
from .sampling import PreparedCase, split_cases
from .setup import replan_step, setup_run
from .step import Batches, Optimiser, build_batches, build_optimiser, next_batch, optimise
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


@dataclass
class _Kept:
    """The weights a run keeps: the best by validation Dice so far (else the last)."""

    dice: float | None = None
    state: dict[str, torch.Tensor] | None = None
    since: int = 0  # validations since the Dice last improved (early stopping)
    path: str | None = None  # the checkpoint written, if any


@dataclass
class _Recipe:
    """What the saved model's meta takes from the start model and the run's cases."""

    init_meta: dict[str, Any]
    inference: dict[str, Any]
    provenance: dict[str, Any]


@dataclass
class _Run:
    """The state of one run: fixed parts from the setup and what the steps change."""

    cfg: TrainConfig
    net: torch.nn.Module
    device: torch.device
    val_p: list[PreparedCase]
    recipe: _Recipe
    out: str | os.PathLike | None
    should_stop: Callable[[], bool] | None
    is_main: bool
    started: float
    steps_per_epoch: int
    planned: int  # steps before any time-budget re-plan
    plan: dict[str, int]  # "total" (re-planned in a time budget), "warmup": read by the schedule
    step: int = 0
    losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    kept: _Kept = field(default_factory=_Kept)
    t_train: float = 0.0  # when the steps began (speed for the eta and the re-plan)
    stopped: bool = False  # validation was cancelled
    reason: str = "completed"


def _loop(cases: list[Case], cfg: TrainConfig, init: Model | None,
          val_cases: Sequence[Case] | None, replay_cases: Sequence[Case] | None,
          out: str | os.PathLike | None, should_stop: Callable[[], bool] | None, rank: int,
          local_rank: int) -> Generator[Progress, None, TrainResult]:
    run, opt, batches = _set_up(cases, cfg, init, val_cases, replay_cases, out, should_stop,
                                rank, local_rank)
    closed = False
    try:
        if init is not None and run.val_p and run.is_main:  # the start weights are a candidate
            run.history.append({"epoch": 0, "step": 0})
            run.stopped = yield from _validate(run, run.history[-1])
        _train_mode(run)
        run.t_train = time.perf_counter()
        while run.step < run.plan["total"]:
            why = _stop_reason(run)
            if ddp.any_rank(why is not None):  # all ranks leave the loop at the same step
                run.reason = why or "cancelled"
                break
            loss, lr = optimise(opt, *next_batch(batches, run.device))
            run.step += 1
            value = ddp.all_reduce_mean(loss)
            run.losses.append(value)
            if not math.isfinite(value):  # diverged: the weights are NaN/Inf from here on
                run.reason = "diverged"
                break
            _replan(run)
            yield _progress(run, value, lr)
            if run.step % run.steps_per_epoch == 0 or run.step == run.plan["total"]:
                yield from _end_of_epoch(run, lr)
    except GeneratorExit:  # gen.close(): finish below without yielding
        run.reason, closed = "cancelled", True
    return _finish(run, closed)


def _set_up(cases: list[Case], cfg: TrainConfig, init: Model | None,
            val_cases: Sequence[Case] | None, replay_cases: Sequence[Case] | None,
            out: str | os.PathLike | None, should_stop: Callable[[], bool] | None, rank: int,
            local_rank: int) -> tuple[_Run, Optimiser, Batches]:
    """Cases, network, optimiser, patch streams and step plan, in this order: the order of
    the random draws, so that a seeded run gives the same weights every time."""
    from ..device import get_device

    started = time.perf_counter()
    device = get_device(cfg.device)
    if ddp.is_distributed() and device.type == "cuda":
        device = torch.device("cuda", local_rank)
    if val_cases is None:
        cases, val_cases = split_cases(cases, cfg.val_fraction, cfg.seed)
    net, train_p, replay_p, val_p = setup_run(cases, cfg, init, list(val_cases),
                                              list(replay_cases or []))
    patch = tuple(cfg.patch_size)
    check_fits(training_bytes(net.config.get("features", (64,)), patch, cfg.batch_size,
                              sum(p.numel() for p in net.parameters())), device,
               f"training {cfg.batch_size} patch(es) of {patch}",
               "lower batch_size or patch_size (or the features)")
    net.to(device)
    spe = cfg.steps_per_epoch or max(10, math.ceil(
        sum(int(np.prod(p.image.shape[1:])) for p in train_p) / (cfg.batch_size * np.prod(patch))))
    planned = spe * cfg.epochs if cfg.max_steps is None else min(spe * cfg.epochs, cfg.max_steps)
    plan = {"total": planned, "warmup": cfg.warmup_steps if cfg.warmup_steps is not None
            else min(50, planned // 20)}
    opt = build_optimiser(net, cfg, device, plan)
    batches = build_batches(train_p, replay_p, cfg, rank)
    torch.manual_seed(cfg.seed + 7919 * rank)  # dropout masks differ per rank
    run = _Run(cfg, net, device, val_p, _recipe(init, cfg, cases), out, should_stop,
               rank == 0, started, spe, planned, plan)
    return run, opt, batches


def _recipe(init: Model | None, cfg: TrainConfig, cases: list[Case]) -> _Recipe:
    from ..models.checkpoint import file_sha256

    init_meta = dict(getattr(init, "meta", None) or {})
    parent = getattr(init, "path", None)
    provenance = {"parent": file_sha256(parent) if parent and os.path.isfile(parent) else None,
                  "parent_name": getattr(init, "name", None), "data": [c.name for c in cases]}
    inference = dict(init_meta.get("inference") or {})
    inference.update(mode=f"{cfg.spatial_dims}d", tile_size=list(cfg.patch_size),
                     slice_axis=cfg.slice_axis)
    return _Recipe(init_meta, inference, provenance)


#: the norm layers ``freeze_norm`` keeps in inference mode (instance and group norms keep no
#: running statistics)
_BATCH_NORMS = (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


def _train_mode(run: _Run) -> None:
    run.net.train()
    if run.cfg.freeze_encoder:  # frozen: its norm statistics too
        run.net.encoder.eval()
    if run.cfg.freeze_norm:
        for module in run.net.modules():
            if isinstance(module, _BATCH_NORMS):
                module.eval()


def _stop_reason(run: _Run) -> str | None:
    """Why the run ends before the next step, or None."""
    cfg = run.cfg
    if run.stopped or (run.should_stop is not None and run.should_stop()):
        return "cancelled"
    if cfg.time_budget is not None and time.perf_counter() - run.started >= cfg.time_budget:
        return "time_budget"
    if cfg.early_stop_patience and run.kept.since >= cfg.early_stop_patience:
        return "early_stopping"
    return None


def _replan(run: _Run) -> None:
    """Fit a cosine schedule in the time budget, re-planned as the speed is measured better
    (a busy machine at the start must not cut a long run short)."""
    cfg = run.cfg
    if cfg.time_budget is None or cfg.schedule != "cosine" or not replan_step(run.step):
        return
    per_step = (time.perf_counter() - run.t_train) / run.step
    left = cfg.time_budget - (time.perf_counter() - run.started)
    fit = min(run.planned, run.step + max(1, int(left / per_step * 0.95)))
    run.plan["total"] = ddp.all_reduce_min(fit)  # every rank runs the same steps


def _progress(run: _Run, value: float, lr: float) -> Progress:
    """The record of the step just made (loss, lr, epoch, eta); no message off rank 0."""
    step, total, budget = run.step, run.plan["total"], run.cfg.time_budget
    epoch = (step - 1) // run.steps_per_epoch + 1
    eta = (time.perf_counter() - run.t_train) / step * (total - step)
    if budget is not None:  # the budget ends the run whatever the plan says
        eta = min(eta, max(0.0, budget - (time.perf_counter() - run.started)))
    message = f"epoch {epoch} step {step}/{total} loss {value:.4f}" if run.is_main else ""
    return Progress(step, total, message, {"loss": value, "lr": lr, "epoch": epoch, "eta_s": eta})


def _end_of_epoch(run: _Run, lr: float) -> Generator[Progress, None, None]:
    """The epoch's history entry, then its validation when one is due."""
    spe, step = run.steps_per_epoch, run.step
    epoch = (step - 1) // spe + 1
    ddp.average_buffers(run.net)
    run.history.append({"epoch": epoch, "step": step, "lr": lr,
                        "loss": float(np.mean(run.losses[(epoch - 1) * spe:])),
                        "seconds": time.perf_counter() - run.started})
    due = epoch % run.cfg.val_every == 0 or step == run.plan["total"]
    if run.val_p and run.is_main and due:
        run.stopped = yield from _validate(run, run.history[-1])


def _validate(run: _Run, entry: dict[str, Any]) -> Generator[Progress, None, bool]:
    """Validate into ``entry`` (rank 0); keep and save improved weights. True = stopped."""
    t0 = time.perf_counter()
    result = yield from run_validation(run.net, run.val_p, run.cfg, tuple(run.cfg.patch_size),
                                       run.device, run.should_stop, entry["step"],
                                       run.plan["total"])
    _train_mode(run)
    if result is None:
        return True
    dice, per_class = result
    entry.update(val_dice=dice, val_dice_per_class=per_class,
                 val_seconds=time.perf_counter() - t0)
    kept = run.kept
    if kept.dice is None or dice > kept.dice:
        kept.dice, kept.since = dice, 0
        _keep_current(run)
        _save(run)
    else:
        kept.since += 1
    yield Progress(entry["step"], run.plan["total"], f"epoch {entry['epoch']}: validation Dice "
                   f"{dice:.4f} (best {kept.dice:.4f})",
                   {"val_dice": dice, "best_val_dice": kept.dice, "epoch": entry["epoch"]})
    return False


def _keep_current(run: _Run) -> None:
    run.kept.state = {k: v.detach().to("cpu", copy=True) for k, v in run.net.state_dict().items()}


def _meta(run: _Run) -> dict[str, Any]:
    """The model's meta: the start model's entries (but its file format and architecture)
    with this run's recipe, history, best Dice and provenance."""
    cfg, recipe = run.cfg, run.recipe
    skip = {"format_version", "package_version", "arch", "arch_kwargs"}
    meta = {k: copy.deepcopy(v) for k, v in recipe.init_meta.items() if k not in skip}
    meta.update(normalization=cfg.normalization, label_names=cfg.label_names,
                threshold=cfg.threshold, inference=recipe.inference,
                training={"config": cfg.to_dict(), "history": copy.deepcopy(run.history)},
                metrics={"val_dice": run.kept.dice}, provenance=dict(recipe.provenance))
    return meta


def _save(run: _Run) -> None:
    from ..models.checkpoint import save_checkpoint

    if run.out is not None and run.is_main:
        run.kept.path = str(save_checkpoint(run.out, run.net, _meta(run)))


def _finish(run: _Run, closed: bool) -> TrainResult:
    """Load the kept weights, save them and return the result (a diverged run raises)."""
    from ..models.model import Model

    kept, reason = run.kept, run.reason
    if reason == "completed" and run.step < run.planned:
        reason = "time_budget"  # the schedule was shortened to fit the budget
    if not closed:  # (a closed generator may be alone: no collective operations then)
        ddp.average_buffers(run.net)
    if reason == "diverged":  # never returned or saved as a result: a NaN model predicts nothing
        kept_note = (f"; {kept.path} keeps the best weights validated before (Dice "
                     f"{kept.dice:.4f})" if kept.path else "; nothing was saved")
        raise InputError(f"the training diverged at step {run.step} (loss {run.losses[-1]}): "
                         f"lower the learning rate (lr {run.cfg.lr:g}){kept_note}")
    if kept.state is None or not any("val_dice" in h for h in run.history):
        _keep_current(run)  # no (finished) validation: keep the last weights
    run.net.load_state_dict(kept.state)
    run.net.requires_grad_(True)
    _save(run)
    if not closed:
        ddp.barrier()
    return TrainResult(Model(run.net.eval(), _meta(run), device=run.device), run.history,
                       kept.dice, run.step, time.perf_counter() - run.started,
                       reason != "completed", reason, kept.path)


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
