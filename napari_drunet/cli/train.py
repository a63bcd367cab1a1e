"""``drunet train`` (a network from scratch) and ``drunet finetune`` (a model on new or corrected cases)."""

from __future__ import annotations

import argparse
import functools
import os
import time

from ..core.atomic import check_writable
from ..core.errors import InputError
from .options import SEED, THREADS, bounded, features, set_threads, tuple_of_ints
from .progress import drive


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``train`` and ``finetune`` sub-commands."""
    for name, finetune, text in (("train", False, "train a network from scratch"),
                                 ("finetune", True, "fine-tune a model on new/corrected cases")):
        p = sub.add_parser(name, help=text)
        _add_train_options(p, finetune=finetune)
        p.set_defaults(run=functools.partial(run, finetune=finetune))


def _add_train_options(p: argparse.ArgumentParser, finetune: bool) -> None:
    p.add_argument("--data", required=True, help="MSD-style dataset.json")
    p.add_argument("--allow-outside", action="store_true",
                   help="allow dataset paths outside the dataset.json folder")
    p.add_argument("--val-data", help="dataset.json of validation cases (default: --val-fraction "
                   "of --data held out)")
    p.add_argument("--out", required=True, help="output checkpoint (.ckpt / .safetensors)")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--steps-per-epoch", type=int, help="optimizer steps per epoch")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--time-budget", type=float, help="stop after this many seconds (keeps the best)")
    p.add_argument("--patch-size", type=tuple_of_ints, help="e.g. 256 or 96,96,96")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=bounded(float, 0.0, None, "learning rate"),
                   help="learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--loss", help="bce, dice, bce_dice, ce, focal, ce_dice or auto")
    p.add_argument("--val-fraction", type=float, help="fraction of cases held out for validation")
    p.add_argument("--fg-fraction", type=float, help="fraction of foreground-centred patches")
    p.add_argument("--no-augment", action="store_true", help="disable augmentation")
    p.add_argument("--rotate", type=float,
                   help="augment: largest rotation in degrees (30%% of patches; 0 = off)")
    p.add_argument("--scale", type=float,
                   help="augment: largest zoom, e.g. 0.25 = x0.8 to x1.25 (30%% of patches)")
    p.add_argument("--degrade", type=float,
                   help="augment: share of patches given blur / noise / JPEG artefacts, as from "
                   "other cameras (0 = off)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed-precision steps where the device runs them fast (CUDA; bf16 on "
                   "CPUs with AMX, ~2x); --no-amp: float32 (default: on)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--threads", type=THREADS, help="CPU threads for torch")
    if finetune:
        p.add_argument("--model", required=True, help="packaged model name or checkpoint file")
        p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
        p.add_argument("--freeze-norm", action="store_true",
                       help="keep the batch-norm statistics of the starting model")
        p.add_argument("--l2sp", type=float, help="L2-SP strength toward the start weights")
        p.add_argument("--replay", help="dataset.json of earlier cases to replay (forgetting guard)")
        p.add_argument("--replay-fraction", type=float, help="share of each batch from --replay")
        p.add_argument("--only-weighted", action="store_true",
                       help="count only pixels of each case's 'weight' map (edited/reviewed)")
        p.add_argument("--keep-threshold", action="store_true",
                       help="keep the model's binary threshold (default: re-chosen on the "
                       "labelled cases, the --val-data ones when given)")
        p.add_argument("--normalization",
                       help="continue under another input normalisation (e.g. fundus_local): "
                       "the model's batch-norm statistics are first re-estimated on --data")
    else:
        p.add_argument("--arch", default="drunet", help="network (see `drunet models`)")
        p.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2D or 3D network")
        p.add_argument("--features", type=features, help="channels per level, e.g. 16,32,64,128")
        p.add_argument("--dropout", type=float)
        p.add_argument("--act", choices=("relu", "prelu", "leakyrelu"))
        p.add_argument("--norm", choices=("batch", "instance", "group", "none"))
        p.add_argument("--normalization", help="percentile_zscore, zscore, minmax or none")


def run(args: argparse.Namespace, finetune: bool) -> int:
    """Run ``drunet train`` or, with ``finetune``, ``drunet finetune``; returns the exit status."""
    from ..core.train.dataset import load_dataset
    from ..core.train.loop import TrainConfig, train_iter

    set_threads(args.threads)
    check_writable(args.out, "model file")
    cases, label_names = load_dataset(args.data, allow_outside=args.allow_outside)
    if not cases:
        raise InputError(f"{args.data}: no training cases")
    init = replay = val = None
    if args.val_data:
        val, _ = load_dataset(args.val_data, allow_outside=args.allow_outside)
    if finetune:
        from ..core.models.model import load_model

        init = load_model(args.model, device=args.device)
        if args.normalization:
            init = _renormalized(init, args.normalization, cases)
        if args.replay:
            replay, _ = load_dataset(args.replay, allow_outside=args.allow_outside)
        cfg = _round_config(init, replay=bool(replay))
    else:
        cfg = TrainConfig(arch=args.arch, spatial_dims=args.dims)
    overrides = {
        "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "max_steps": args.max_steps,
        "time_budget": args.time_budget, "patch_size": args.patch_size,
        "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "loss": args.loss, "val_fraction": args.val_fraction, "fg_fraction": args.fg_fraction,
        "rotate": args.rotate, "scale": args.scale, "degrade": args.degrade,
        "device": args.device, "seed": args.seed, "amp": args.amp,
    }
    if args.no_augment:
        overrides["augment"] = False
    if finetune:
        # the threshold is re-chosen after training: validate each step at its own best
        overrides["val_threshold"] = "fixed" if args.keep_threshold else "best"
        overrides.update(freeze_encoder=args.freeze_encoder or None,
                         freeze_norm=args.freeze_norm or None, l2sp=args.l2sp,
                         replay_fraction=args.replay_fraction,
                         only_weighted=args.only_weighted or None)
    else:
        overrides.update(features=args.features, dropout=args.dropout, act=args.act,
                         norm=args.norm)
        if args.normalization:
            overrides["normalization"] = {"mode": args.normalization}
        if label_names:
            overrides["label_names"] = label_names
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    if cfg.patch_size and len(cfg.patch_size) == 1:  # "--patch-size 64" = 64 on every axis
        dims = init.spatial_dims if init is not None else cfg.spatial_dims
        cfg.patch_size = cfg.patch_size * dims
    t0 = time.time()
    is_main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    result = drive(train_iter(cases, cfg, init=init, val_cases=val, replay_cases=replay,
                               out=args.out),
                    "fine-tune" if finetune else "train", quiet=not is_main)
    if result is None or not is_main:
        return 0
    best = result.best_val_dice
    best_txt = f"{best:.4f}" if best is not None else "n/a"
    if finetune and not args.keep_threshold:
        _rechoose_threshold(result.model, val or cases, init.threshold, args.out)
    print(f"saved {args.out}: {result.steps} steps in {time.time() - t0:.0f} s, "
          f"best validation Dice {best_txt}")
    return 0


def _round_config(model, replay: bool):
    """The fine-tuning options of a correction round (``default_round_settings``, the one
    place of the defaults: steps, learning rate, patch, guards), counting every labelled pixel
    unless ``--only-weighted``."""
    from ..core.correction.round import default_round_settings

    cfg = default_round_settings(model).train_config(replay, spatial_dims=model.spatial_dims)
    cfg.only_weighted = False
    return cfg


def _renormalized(model, mode: str, cases):
    """``model`` under normalisation ``mode``, its batch-norm statistics re-estimated on the
    training ``cases`` (the old ones describe inputs the network will no longer see)."""
    from ..core.train.adapt import renormalize_iter

    new = drive(renormalize_iter(model, {"mode": mode}, [c.image for c in cases]),
                f"statistics under {mode}")
    print(f"normalisation {mode}: batch-norm statistics re-estimated on {len(cases)} case(s)")
    return new


def _rechoose_threshold(model, cases, parent: float, out: str) -> None:
    """The binary threshold re-chosen on the labelled ``cases`` (the validation cases when
    given), as a correction round does; the model file ``out`` is written again with it."""
    from ..core.correction.threshold import choose_threshold_iter

    choice = drive(choose_threshold_iter(model, cases, parent), "threshold")
    if choice is None:  # multi-class: arg-max, no threshold
        return
    choice.apply(model)
    model.save(out)
    print(f"threshold {choice.threshold:g}" + ("" if choice.chosen else " kept") +
          f": {choice.reason}")
