"""Adapting the packaged hippocampus model to another scanner with a few corrected volumes.

The product's loop at a site whose scans differ from the MSD crops (simulated with one of
``mri_shift.py``'s intensity/acquisition shifts, e.g. blur, 2 mm slices, noise): the clinician
opens a folder of the site's volumes (``--pool`` MSD training volumes, shifted), the packaged
model predicts them all, and each round the clinician corrects the ``k`` cases the Corrections
widget ranks most uncertain (the MSD label plays the corrected mask). Then the Fine-tune widget's
round runs with its defaults (the core's ``correction_round``, through ``benchmarks/rounds.py``:
held-back cases, L2-SP + replay of uncorrected cases, best step by held-back Dice, promotion only
when not worse on the held-back cases). After every round the active model is scored on shifted volumes no
model here trains on: the 26 validation volumes (``--score-on val``, for choosing settings) or
the 59 test volumes (``--score-on test``), Dice per label against the original labels.

    python -m benchmarks.mri_adaptation --shift "blur sigma 1" --score-on test \\
        --reference hippocampus-robust --out runs/mri_adapt_blur

``changed %`` is the share of the crop's voxels the clinician had to change on the round's new
cases *before* fine-tuning on them; ``fix Dice`` the mean Dice (both labels) between the model's
prediction and the correction on them. Writes ``<out>/mri_adaptation.json`` and the project in
``<out>/project``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import MSD_HIPPOCAMPUS, add_data_option, add_run_options, split_msd
from .rounds import adapt_project, gui_finetune_round, next_cases, refresh_predictions, start_run
from .shifts import MRI_SHIFTS as SHIFTS
from .shifts import REORDERED, RESAMPLED

#: shifts that keep the voxel grid (the labels stay valid as they are)
GRID_SHIFTS = [n for n in SHIFTS if n not in RESAMPLED and n not in REORDERED]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, "--root", MSD_HIPPOCAMPUS)
    ap.add_argument("--out", required=True, help="output folder (its project/ must not exist)")
    ap.add_argument("--model", default="hippocampus", help="packaged name or checkpoint")
    ap.add_argument("--shift", default="blur sigma 1", choices=GRID_SHIFTS,
                    help="how the site's scans differ (mri_shift.py)")
    ap.add_argument("--pool", type=int, default=20,
                    help="the site's folder: the first N MSD training volumes (shifted)")
    ap.add_argument("--k", type=int, default=2, help="cases corrected per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--order", choices=("sequential", "uncertain"), default="uncertain")
    ap.add_argument("--holdout", type=int, default=None,
                    help="GUI 'held-back cases' (default: the widget's, 1 in 5, at least 1)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="GUI 'steps' (default: the round's, default_round_settings)")
    ap.add_argument("--round-budget", type=float, default=0.0,
                    help="GUI 'time cap' in seconds (0 = none: reproducible step counts)")
    ap.add_argument("--ft-lr", type=float, default=None,
                    help="the widget's learning rate (default: the round's)")
    ap.add_argument("--no-guard", action="store_true",
                    help="uncheck the widget's forgetting guard (no L2-SP, no replay)")
    ap.add_argument("--promote-unknown", choices=("yes", "no"), default="yes")
    ap.add_argument("--score-on", choices=("val", "test"), default="val")
    ap.add_argument("--limit", type=int, default=None, help="score the first N volumes only")
    ap.add_argument("--reference", action="append", default=[],
                    help="also score this model (packaged name or checkpoint) on the shifted "
                         "volumes, without adaptation (repeatable)")
    ap.add_argument("--adapt", action="store_true",
                    help="press 'Adapt to the project's images (no labels)' before the first "
                         "round (kept; scored in round 0's adapted_dice)")
    add_run_options(ap, device="cpu", out=False)
    args = ap.parse_args(argv)
    if args.k < 1 or args.rounds < 1:
        ap.error("--k and --rounds must be >= 1")
    if args.k * args.rounds > args.pool:
        ap.error(f"{args.rounds} rounds of {args.k} need more than --pool {args.pool} volumes")
    return args


def shifted_cases(cases: list, name: str) -> list:
    """``cases`` with the MRI shift ``name`` applied to their volumes (labels and header kept)."""
    from dataclasses import replace

    out = []
    for c in cases:
        vol, _ = SHIFTS[name](np.asarray(c.image.array[0], np.float32), c.image.spacing)
        out.append(replace(c, image=replace(c.image, array=vol[None], path=None)))
    return out


def label_dice(pred: np.ndarray, truth: np.ndarray, labels: range) -> list[float]:
    from napari_drunet.core.evaluation.metrics import confusion_metrics

    return [float(confusion_metrics(pred == k, truth == k)["dice"]) for k in labels]


def score(model: Any, cases: list) -> list[float]:
    """Mean Dice per foreground label of ``model`` over ``cases``."""
    labels = range(1, model.out_channels)
    per_case = [label_dice(model.predict(c.image).mask, c.label, labels) for c in cases]
    return [float(v) for v in np.mean(per_case, axis=0)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from napari_drunet.core.atomic import atomic_write_json
    from napari_drunet.core.correction.project import Project
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import load_dataset

    out = start_run(args)
    with tempfile.TemporaryDirectory() as tmp:
        split_msd(args.root, Path(tmp))
        train, _ = load_dataset(Path(tmp) / "train.json", "training", allow_outside=True)
        json_path, split = ((Path(tmp) / "val.json", "training") if args.score_on == "val"
                            else (Path(tmp) / "all.json", "test"))
        scored, _ = load_dataset(json_path, split, allow_outside=True)
    pool = shifted_cases(train[: args.pool], args.shift)
    scored = shifted_cases(scored[: args.limit] if args.limit else scored, args.shift)
    by_name = {c.name: c for c in pool}
    model = load_model(args.model, args.device)
    labels = range(1, model.out_channels)
    config = vars(args) | {"pool_cases": [c.name for c in pool], "scored": len(scored)}
    result: dict[str, Any] = {"config": config, "references": {}, "rows": []}

    for ref in args.reference:
        result["references"][ref] = score(load_model(ref, args.device), scored)
        print(f"reference {ref}: Dice {result['references'][ref]}", flush=True)
    project = Project.create(out / "project")
    project.versions.add(model, parent=None, metrics={}, data=[],
                         source=f"packaged model {args.model}")
    refresh_predictions(project, model, pool)  # the clinician opens the site's folder
    rows = result["rows"]
    rows.append({"round": 0, "n_labeled": 0, "dice": score(model, scored),
                 "active_version": project.versions.active})
    print(f"{'round':>5} {'labelled':>8} {'changed %':>9} {'fix Dice':>8} {'steps':>5} "
          f"{'ft s':>6} {'promoted':>8}  Dice per label ({args.score_on}, {args.shift})")
    print(f"{0:>5} {0:>8} {'-':>9} {'-':>8} {'-':>5} {'-':>6} {'-':>8}  {rows[0]['dice']}",
          flush=True)
    if args.adapt:
        model = adapt_project(project, model, pool, args.device)
        rows[0].update(adapted_dice=score(model, scored), active_version=project.versions.active)
        print(f"adapted to the {len(pool)} project volumes ({project.versions.active}): "
              f"{[round(d, 4) for d in rows[0]['adapted_dice']]}", flush=True)
    for r in range(1, args.rounds + 1):
        t_round = time.perf_counter()
        fixes = []
        for name in next_cases(project, args.order, args.k):
            case = by_name[name]
            pred = project.load_case(name).prediction
            fixes.append({"case": name,
                          "changed_pct": 100.0 * float(np.mean(pred != case.label)),
                          "fix_dice": float(np.mean(label_dice(pred, case.label, labels)))})
            project.save_correction(name, case.label.astype(np.uint8))
            project.mark_reviewed(name, "all")
        ft = gui_finetune_round(project, model, args)
        candidate = ft.pop("model")
        if ft["promoted"]:
            model = candidate
            refresh_predictions(project, model, pool)
        row = {"round": r, "n_labeled": r * args.k, "new_cases": [f["case"] for f in fixes],
               "changed_pct": float(np.mean([f["changed_pct"] for f in fixes])),
               "fix_dice": float(np.mean([f["fix_dice"] for f in fixes])), "per_case": fixes,
               **ft, "round_s": round(time.perf_counter() - t_round, 1),
               "active_version": project.versions.active, "dice": score(model, scored)}
        if not ft["promoted"]:
            row["candidate_dice"] = score(candidate, scored)
        rows.append(row)
        atomic_write_json(out / "mri_adaptation.json", result)
        print(f"{r:>5} {row['n_labeled']:>8} {row['changed_pct']:>9.2f} {row['fix_dice']:>8.4f} "
              f"{ft['finetune_steps']:>5} {ft['finetune_s']:>6.1f} {str(ft['promoted']):>8}  "
              f"{[round(d, 4) for d in row['dice']]}", flush=True)
    atomic_write_json(out / "mri_adaptation.json", result)
    print(f"results: {out / 'mri_adaptation.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
