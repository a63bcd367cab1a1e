"""A new site: leave-one-site-out on two real fundus sets, DRIVE <-> STARE, one command.

For each direction (``drive-stare``: a model from DRIVE meets STARE; ``stare-drive``: the
reverse) the script scores, inside each image's field of view (F1, Se, Sp, AUC, MCC; per-image
mean), on the target site's test images:

1. **zero-shot** -- the given model (``--model``, default the packaged ``retina-vessels``) or one
   it trains on the source site first (``--train-steps N``: continued training from ``--init``
   with the recipe options below, best checkpoint by the source site's validation images);
2. **adapted without labels** -- batch-norm statistics re-estimated on the target site's
   unlabelled images (``core.adapt.adapt_batchnorm``, as *Adapt to the project's images*);
3. **k corrected images** (``--corrected 1,2,3,5``) -- one correction round of the product
   (``core.correction_round.correction_round`` with ``default_round_settings()``, the widget's
   defaults) on the first k images of the target's correction pool, with their reference
   labels as the corrected masks; wall time of each round.

Splits (fixed): DRIVE training 21-36 train, 37-40 validation, test 01-20; the correction pool
at DRIVE is 21-25, its tuning images 26-28. STARE (20 photographs, in a seeded order): the first
5 are the correction pool, the next 3 (``--tune-images``) the tuning images, the last 12 the test
images; as a training source, 4 of the pool validate and the other 16 train. ``--tune`` scores
the rounds on the tuning images (the round defaults are chosen there); test images are never
used for a choice.

    python -m benchmarks.new_site --out runs/new_site                  # packaged model
    python -m benchmarks.new_site --out runs/lcn --directions drive-stare --train-steps 600 \
        --normalization fundus_local --scale 0.25 --time-budget 900   # train one, then score
    python -m benchmarks.new_site --out runs/s2d --directions stare-drive --init none \
        --train-steps 1500 --lr 2e-3 --normalization fundus_local   # from scratch on STARE
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import add_data_option

DRIVE_TRAIN, DRIVE_VAL, DRIVE_POOL = list(range(21, 37)), [37, 38, 39, 40], [21, 22, 23, 24, 25]
DRIVE_TUNE = [26, 27, 28]
STARE_POOL, STARE_TUNE, STARE_SEED = 5, 3, 0
METRICS = ("dice", "sensitivity", "specificity", "auc", "mcc")


class Site:
    """One site's labelled photographs, split for training, correction, tuning the round's
    defaults and testing."""

    def __init__(self, name: str, train: list, val: list, pool: list, test: list,
                 tune: list | None = None) -> None:
        self.name, self.train, self.val, self.pool, self.test = name, train, val, pool, test
        self.tune = tune or []


def _stare_case(root: Path, stem: str):
    from napari_drunet.core.train.dataset import case_from_files

    return case_from_files(root / "images" / f"{stem}.png", root / "labels-ah" / f"{stem}.ah.png",
                           root / "fov" / f"{stem}.png", name=f"stare_{stem}")


def stare_order(root: Path) -> list[str]:
    """STARE's image stems in the script's fixed, seeded order (pool first, test last)."""
    stems = sorted(p.stem for p in (Path(root) / "images").glob("*.png"))
    return [stems[i] for i in np.random.default_rng(STARE_SEED).permutation(len(stems))]


def load_stare(root: Path, pool: int = STARE_POOL, tune: int = 0) -> Site:
    """STARE (``images/``, ``labels-ah/``, ``fov/``): pool = first ``pool`` of the seeded
    order, tuning = the next ``tune`` (fewer when the folder is small; one test image is
    kept), test = the rest; as a source, 4 pool images validate and the rest train."""
    order = stare_order(root)
    if len(order) <= pool:
        raise SystemExit(f"STARE at {root}: {len(order)} images, need more than {pool}")
    cases = [_stare_case(Path(root), s) for s in order]
    n_val, tune = min(4, pool), max(0, min(tune, len(order) - pool - 1))
    return Site("STARE", cases[n_val:], cases[:n_val], cases[:pool], cases[pool + tune:],
                cases[pool:pool + tune])


def load_drive(root: Path, tmp: Path) -> Site:
    """DRIVE with the project's split (docs/results.md): pool = training 21-25, tuning
    images 26-28."""
    from napari_drunet.core.train.dataset import load_dataset

    from .datasets import make_drive_dataset

    def part(split: str, ids: Sequence[int] | None, tag: str) -> list:
        ds = make_drive_dataset(root, tmp / f"drive_{tag}.json", split, subset=ids)
        return load_dataset(ds, split=split, allow_outside=True)[0]

    return Site("DRIVE", part("training", DRIVE_TRAIN, "train"), part("training", DRIVE_VAL, "val"),
                part("training", DRIVE_POOL, "pool"), part("test", None, "test"),
                part("training", DRIVE_TUNE, "tune"))


def score(model, cases: Sequence, threshold: float | None = None) -> dict[str, float]:
    """Per-image mean of F1 (``dice``), Se, Sp, AUC and MCC inside each case's FOV mask, at the
    model's threshold unless ``threshold`` is given."""
    from napari_drunet.core.evaluation.metrics import confusion_metrics, roc_auc

    thr = model.threshold if threshold is None else threshold
    rows = []
    for c in cases:
        prob = model.predict(c.image).probabilities[0]
        truth = np.asarray(c.label) > 0
        row = confusion_metrics(prob >= thr, truth, c.mask)
        row["auc"] = roc_auc(prob, truth, c.mask)
        rows.append(row)
    out = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
    out["f1_sd"] = float(np.std([r["dice"] for r in rows]))
    return out


def source_model(site_train: Sequence, site_val: Sequence, args: argparse.Namespace, out: Path):
    """The model of the source site(s): ``args.init`` with the recipe options (another
    normalisation: its batch-norm statistics re-estimated on the source's training images, as
    :func:`~napari_drunet.core.train.adapt.adapt_batchnorm` does for a site), then ``--train-steps``
    of continued training (best checkpoint by validation Dice) and the threshold chosen on the
    validation images; saved to ``out``. ``--init none`` trains a new ``--arch`` /
    ``--features`` network from scratch instead (no weights from any site)."""
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.progress import run_to_end
    from napari_drunet.core.train.adapt import renormalize_iter
    from napari_drunet.core.train.config import TrainConfig
    from napari_drunet.core.train.loop import train_iter

    scratch = args.init.lower() == "none"
    if scratch and not args.train_steps:
        raise SystemExit("--init none (from scratch) needs --train-steps")
    model = None if scratch else load_model(args.init, device="cpu")
    spec = ({"mode": args.normalization, **({"sigma": args.sigma} if args.sigma else {})}
            if args.normalization else None)
    info: dict = {"init": args.init}
    if spec and model is not None:
        t0 = time.perf_counter()
        model = run_to_end(renormalize_iter(model, spec, [c.image for c in site_train]))
        info["recalibrate_seconds"] = time.perf_counter() - t0
    if args.train_steps:
        cfg = TrainConfig(lr=args.lr, weight_decay=1e-4, epochs=10_000,
                          max_steps=args.train_steps, steps_per_epoch=args.steps_per_epoch,
                          time_budget=args.time_budget, patch_size=(args.patch_size,) * 2,
                          batch_size=args.batch_size, rotate=args.rotate, scale=args.scale,
                          degrade=args.degrade, seed=args.seed, device="cpu",
                          num_threads=args.threads, arch=args.arch,
                          features=tuple(int(f) for f in args.features.split(",")),
                          normalization=spec if scratch else None)
        t0 = time.perf_counter()

        def log(p) -> None:
            if "val_dice" in p.metrics:
                print(f"  step {p.step}: val Dice {p.metrics['val_dice']:.4f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)

        result = run_to_end(train_iter(list(site_train), cfg, init=model,
                                       val_cases=list(site_val), out=out), log)
        print(f"trained {result.steps} steps in {result.seconds:.0f} s ({result.stop_reason}), "
              f"best val Dice {result.best_val_dice}", flush=True)
        model = load_model(out, device="cpu")
        info.update(steps=result.steps, seconds=result.seconds, stop_reason=result.stop_reason,
                    val_dice=result.best_val_dice)
    info["threshold"] = best_threshold(model, site_val)
    model.save(out, threshold=info["threshold"])
    print(f"source model {out.name}: {info}", flush=True)
    return load_model(out, device="cpu"), info


def best_threshold(model, cases: Sequence) -> float:
    """Threshold (0.20-0.80) maximising mean F1 inside the FOV over ``cases``."""
    from napari_drunet.core.evaluation.metrics import confusion_metrics

    probs = [(model.predict(c.image).probabilities[0], np.asarray(c.label) > 0, c.mask)
             for c in cases]
    grid = np.round(np.arange(0.20, 0.81, 0.02), 2)
    f1 = [np.mean([confusion_metrics(p >= t, y, m)["dice"] for p, y, m in probs]) for t in grid]
    return float(grid[int(np.argmax(f1))])


def round_project(folder: Path, model, pool: Sequence, k: int):
    """A corrections project at the new site, as the clinician leaves it before pressing
    Start fine-tuning: every pool photograph segmented by ``model``, the first ``k`` corrected
    (their reference label) and marked reviewed, the others left as predicted."""
    import shutil

    from napari_drunet.core.correction.project import Project

    if folder.exists():  # a fresh project per run
        shutil.rmtree(folder)
    project = Project.create(folder)
    project.versions.add(model, parent=None, metrics={}, data=[], source=model.name)
    for i, case in enumerate(pool):
        pred = model.predict(case.image)
        project.add_case(case.name, case.image, pred.mask, pred.probabilities,
                         model_version=project.versions.active)
        if i < k:
            project.save_correction(case.name, (np.asarray(case.label) > 0).astype(np.uint8))
            project.mark_reviewed(case.name, "all")
    return project


def round_settings(model, project, changes: Sequence[str] = ()):
    """The widget's defaults (``default_round_settings``) with ``KEY=VALUE`` changes (JSON
    values, e.g. ``steps=100``, ``adapt_first=true``)."""
    from dataclasses import replace

    from napari_drunet.core.correction.round import default_round_settings

    base = default_round_settings(model, project)
    updates = {}
    for item in changes:
        key, _, value = item.partition("=")
        if not hasattr(base, key):
            raise SystemExit(f"unknown round setting {key!r}")
        updates[key] = json.loads(value)
    return replace(base, **updates)


def correction_rounds(model, target: Site, ks: Sequence[int], folder: Path,
                      changes: Sequence[str] = (), tune: bool = False) -> list[dict]:
    """One correction round of the product per k (``correction_round`` with the widget's
    defaults, plus ``changes``), each from ``model`` in its own project; the new version is
    scored on the target's test images whatever the held-back comparison recommends
    (``tune``: on the target's tuning images instead, where the defaults are chosen). Each row
    has the round's wall time, the held-back Dice of both versions and the load average."""
    from napari_drunet.core.correction.round import correction_round
    from napari_drunet.core.progress import drive

    rows = []
    for k in ks:
        project = round_project(folder / f"{target.name}_k{k}", model, target.pool, k)
        t0 = time.perf_counter()
        outcome = drive(correction_round(project, model, round_settings(model, project, changes)))
        seconds = time.perf_counter() - t0
        rows.append({"stage": f"{k} corrected", "k": k, "seconds": seconds,
                     "train_seconds": outcome.train_seconds, "steps": outcome.steps,
                     "stop_reason": outcome.stop_reason, "recommend": outcome.recommend,
                     "holdout_dice": outcome.holdout_dice,
                     "holdout_dice_parent": outcome.holdout_dice_parent,
                     "kept_step": kept_step(outcome),
                     "threshold": outcome.model.threshold, "load": os.getloadavg()[0],
                     **score(outcome.model, target.tune if tune else target.test)})
        print(f"  {k} corrected: F1 {rows[-1]['dice']:.4f} AUC {rows[-1]['auc']:.4f} "
              f"({seconds:.0f} s, {outcome.steps} steps, {outcome.stop_reason}, kept step "
              f"{rows[-1]['kept_step']})", flush=True)
    return rows


def kept_step(outcome) -> int | None:
    """The training step whose weights the round kept (best held-back validation Dice; 0 =
    the starting weights, None = the last weights, nothing was validated)."""
    history = outcome.model.meta.get("training", {}).get("history", [])
    best = [h["step"] for h in history if h.get("val_dice") == outcome.best_val_dice]
    return best[0] if best and outcome.best_val_dice is not None else None


def run_direction(model, source: str, target: Site, ks: Sequence[int], folder: Path,
                  adapt: bool = True, changes: Sequence[str] = (), tune: bool = False,
                  rounds_only: bool = False) -> list[dict]:
    """Zero-shot, AdaBN and the correction rounds of ``model`` at ``target`` (``rounds_only``:
    the rounds alone; ``tune``: the rounds alone, scored on the tuning images)."""
    if tune or rounds_only:
        rows = [{"stage": "start model", "threshold": model.threshold, "seconds": 0.0,
                 **score(model, target.tune)}] if tune else []
        rows += correction_rounds(model, target, ks, folder, changes, tune=tune)
        where = " (tuning images)" if tune else ""
        return [{"direction": f"{source} -> {target.name}{where}", **r} for r in rows]
    from napari_drunet.core.train.adapt import adapt_batchnorm

    t0 = time.perf_counter()
    rows = [{"stage": "zero-shot", "threshold": model.threshold, **score(model, target.test)}]
    rows[0].update(seconds=time.perf_counter() - t0, load=os.getloadavg()[0])
    print(f"{source} -> {target.name}, zero-shot: F1 {rows[0]['dice']:.4f} "
          f"AUC {rows[0]['auc']:.4f}", flush=True)
    if adapt:  # the site's own photographs without labels (the pool; never the test images)
        t0 = time.perf_counter()
        adapted = adapt_batchnorm(model, [c.image for c in target.pool])
        seconds = time.perf_counter() - t0
        rows.append({"stage": "AdaBN (no labels)", "seconds": seconds,
                     "load": os.getloadavg()[0], "threshold": adapted.threshold,
                     **score(adapted, target.test)})
        print(f"  AdaBN: F1 {rows[-1]['dice']:.4f} AUC {rows[-1]['auc']:.4f}", flush=True)
    if ks:
        rows += correction_rounds(model, target, ks, folder, changes)
    return [{"direction": f"{source} -> {target.name}", **r} for r in rows]


def markdown(rows: Sequence[dict]) -> str:
    """The results as a markdown table (docs/results.md)."""
    head = ("| direction | stage | thr | F1 | Se | Sp | AUC | MCC | time (s) | load |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"| {r['direction']} | {r['stage']} | {r['threshold']:.2f} | {r['dice']:.4f} "
             f"± {r['f1_sd']:.3f} | {r['sensitivity']:.4f} | {r['specificity']:.4f} | "
             f"{r['auc']:.4f} | {r['mcc']:.4f} | {r['seconds']:.0f} | "
             f"{r.get('load', float('nan')):.1f} |" for r in rows]
    return "\n".join([head, *lines])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, "--drive", "DRIVE")
    add_data_option(ap, "--stare", "STARE")
    ap.add_argument("--out", required=True, help="folder for models and results.json")
    ap.add_argument("--directions", default="drive-stare,stare-drive")
    ap.add_argument("--model", default="retina-vessels",
                    help="packaged name or checkpoint scored zero-shot (without --train-steps)")
    ap.add_argument("--corrected", default="1,2,3,5",
                    help="numbers of corrected images, one round each ('' = none)")
    ap.add_argument("--no-adapt", action="store_true", help="skip the AdaBN row")
    ap.add_argument("--round-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="change a round default, e.g. steps=100 adapt_first=true")
    ap.add_argument("--rounds-only", action="store_true",
                    help="only the correction rounds (no zero-shot / AdaBN rows)")
    ap.add_argument("--tune", action="store_true",
                    help="only the rounds, scored on the target's tuning images (for "
                    "choosing the round defaults)")
    ap.add_argument("--tune-images", type=int, default=STARE_TUNE,
                    help="STARE images after the pool kept for tuning (not tested on)")
    ap.add_argument("--limit", type=int, default=None, help="first N test images per site")
    ap.add_argument("--threads", type=int, default=2)
    tr = ap.add_argument_group("training on the source site (instead of --model)")
    tr.add_argument("--train-steps", type=int, default=0, help="optimizer steps (0 = no training)")
    tr.add_argument("--train-on", choices=("source", "both"), default="source",
                    help="both: one model on DRIVE + STARE (then not zero-shot at either)")
    tr.add_argument("--init", default="retina-vessels",
                    help="starting weights; 'none' = from scratch (--arch, --features)")
    tr.add_argument("--arch", default="drunet", help="network of a run from scratch")
    tr.add_argument("--features", default="16,32,64,128,256",
                    help="channels per level of a run from scratch")
    tr.add_argument("--time-budget", type=float, default=None, help="seconds per training run")
    tr.add_argument("--lr", type=float, default=5e-4)
    tr.add_argument("--batch-size", type=int, default=4)
    tr.add_argument("--patch-size", type=int, default=256)
    tr.add_argument("--steps-per-epoch", type=int, default=50, help="steps between validations")
    tr.add_argument("--normalization", default=None,
                    help="e.g. fundus_local (default: init's); the batch-norm statistics are "
                    "then re-estimated on the source's training images before training")
    tr.add_argument("--sigma", type=float, default=None, help="fundus_local: sigma / FOV diameter")
    tr.add_argument("--rotate", type=float, default=0.0)
    tr.add_argument("--scale", type=float, default=0.0)
    tr.add_argument("--degrade", type=float, default=0.0)
    tr.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    import tempfile

    import torch

    from napari_drunet.core.models.model import load_model

    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ks = [int(k) for k in args.corrected.split(",") if k.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        sites = {"drive": load_drive(Path(args.drive), Path(tmp)),
                 "stare": load_stare(Path(args.stare), max([STARE_POOL, *ks]),
                                     args.tune_images)}
    if args.limit:
        for s in sites.values():
            s.test = s.test[: args.limit]
    rows, trained = [], {}
    for direction in [d.strip() for d in args.directions.split(",") if d.strip()]:
        source, target = direction.split("-")
        make = bool(args.train_steps or args.normalization)
        if make and args.train_on == "both":
            key = "both"
            if key not in trained:
                trained[key] = source_model(sites["drive"].train + sites["stare"].train,
                                        sites["drive"].val + sites["stare"].val, args,
                                        out / "model_both.ckpt")
        elif make:
            key = source
            if key not in trained:
                trained[key] = source_model(sites[source].train, sites[source].val, args,
                                        out / f"model_{source}.ckpt")
        model = trained[key][0] if make else load_model(args.model, device="cpu")
        rows += run_direction(model, sites[source].name, sites[target], ks,
                              out / f"projects_{direction}", adapt=not args.no_adapt,
                              changes=args.round_set, tune=args.tune,
                              rounds_only=args.rounds_only)
        (out / "results.json").write_text(json.dumps(
            {"args": vars(args), "training": {k: v[1] for k, v in trained.items()},
             "rows": rows}, indent=1))
    table = markdown(rows)
    (out / "table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
