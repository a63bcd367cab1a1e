"""Label efficiency of the correction loop on DRIVE, with a simulated clinician.

A model trained from scratch on DRIVE images 21-22 (or ``--start CKPT``) is the project's first
version. Each round takes the next ``k`` unused training images (23..36, in order); for each the
active model predicts, the "clinician" replaces the prediction by the 1st_manual ground truth
(how much had to change is measured inside the FOV mask, *before* any fine-tuning on it), and the
case goes into a :class:`~napari_drunet.core.correction.project.Project` exactly as the napari GUI stores it.
Then the round of the GUI's Fine-tune widget runs: the core's
:func:`~napari_drunet.core.correction.round.correction_round` with the widget's defaults
(held-back case, L2-SP, replay of uncorrected cases, best weights by held-back Dice, threshold
re-chosen on the training cases), which compares the new model with the previous version on the
held-back case(s) and saves it as a new project version; it is promoted only if not worse. After every round the active
model is scored (Dice inside the FOV) on DRIVE test images; the baseline trains from scratch on
the same cumulative images with the compute the loop has spent so far.

    python -m benchmarks.label_efficiency --out runs/label_eff            # full experiment
    python -m benchmarks.label_efficiency --out runs/label_eff_steps --initial-steps 600 \\
        --round-budget 0                        # reproducible: step counts, baseline by steps
    python -m benchmarks.label_efficiency --out /tmp/le --features 8,16 --patch 64 \\
        --initial-budget 3 --round-budget 3 --max-steps 20 --rounds 1 --k 1 --test-ids 1 \\
        --threads 1 --device cpu                                           # smoke run (~20 s)
    python -m benchmarks.label_efficiency --out runs/label_eff_v2 \
        --start runs/label_eff/initial.safetensors --initial-steps 300 --round-budget 0 \
        --max-steps 100 --rounds 3 --k 2 --full-test --preload --order uncertain --holdout 2 \
        --baseline-last                       # folder preloaded, most uncertain first (run 2)

Fine-tuning settings are compared with ``--score-on val`` (scores DRIVE training images 37-40, which
no model here trains on, in the ``test_dice`` columns) and ``--ft-lr`` / ``--no-guard`` (the
widget's learning rate and forgetting-guard checkbox); only the chosen setting is then run on the
test set.

With ``--preload`` the 14 pool images are loaded into the project up front (uncorrected, predicted
by the active model and re-predicted whenever a new version is promoted), as a clinician opening a
folder would; the GUI's replay of uncorrected cases then has data, and ``--order uncertain`` takes
the Corrections widget's "next most uncertain case" instead of the next image number.

Simulation notes (without ``--preload``): every case gets corrected, so the GUI's replay of
*uncorrected* cases has nothing to draw from and the widget itself sets ``replay_fraction`` to 0;
earlier corrected cases are re-used in every round instead. Project cases carry no FOV mask, so fine-tuning and the
held-back comparison use whole images (the from-scratch trainings use the FOV as region mask).
The fine-tune runs ``--max-steps`` optimizer steps (default: the widget's) unless the
``--round-budget`` time cap stops it first (``stop_reason`` "time_cap"; since the round moved to
the core the cap no longer shortens the learning-rate schedule, so a round with a budget that
binds differs from one of the earlier runs). Test images are scored with each version's own
threshold, which the round re-chooses.

Writes ``<out>/label_efficiency.json`` (config and one row per round),
``<out>/label_efficiency.csv``, ``<out>/initial.safetensors`` (reusable with ``--start``) and
the project in ``<out>/project``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import TRAIN_IDS, VAL_IDS, add_data_option, add_run_options
from .rounds import (
    adapt_project,
    gui_finetune_round,
    next_cases,
    refresh_predictions,
    start_run,
    store_prediction,
)
from .shifts import FUNDUS_SHIFTS, RESIZED, photo, shifted

INITIAL_IDS = TRAIN_IDS[:2]  # 21, 22
POOL_IDS = TRAIN_IDS[2:]  # 23-36; the validation images 37-40 (VAL_IDS) are scored with
#                           --score-on val and never trained on here
CSV_FIELDS = ["round", "n_labeled", "new_cases", "changed_pct_fov", "fix_dice_fov",
              "finetune_steps", "finetune_s", "round_s", "version", "recommend", "promoted",
              "active_version", "test_dice", "candidate_test_dice", "loop_compute_s",
              "loop_actual_s", "loop_steps", "baseline_test_dice", "baseline_s",
              "baseline_steps"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, "--drive", "DRIVE")
    ap.add_argument("--out", required=True, help="output folder (its project/ must not exist)")
    ap.add_argument("--start", help="initial model file (skip the from-scratch initial training)")
    ap.add_argument("--k", type=int, default=2, help="new images corrected per round")
    ap.add_argument("--rounds", type=int, help="number of rounds (default: until 23-36 run out)")
    ap.add_argument("--initial-budget", type=float, default=240.0,
                    help="seconds of the initial training (also its compute in the baseline)")
    ap.add_argument("--initial-steps", type=int,
                    help="fixed optimizer steps for the initial training, no time limit "
                         "(reproducible; replaces --initial-budget)")
    ap.add_argument("--round-budget", type=float, default=120.0,
                    help="fine-tuning time cap per round (GUI 'time cap'; 0 = no limit)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="GUI 'steps' (default: the round's, default_round_settings)")
    ap.add_argument("--holdout", type=int, default=None,
                    help="GUI 'held-back cases' (default: the widget's, 1 in 5, at least 1)")
    ap.add_argument("--preload", action="store_true",
                    help="load all pool images (23-36) into the project first, uncorrected, as a "
                         "clinician opening a folder: the GUI's replay of uncorrected cases then "
                         "has data, and --order can pick the next cases")
    ap.add_argument("--order", choices=("sequential", "uncertain"), default="sequential",
                    help="with --preload: next cases in image order, or the GUI's 'next most "
                         "uncertain case' (mean predictive entropy of the active model)")
    ap.add_argument("--no-review", action="store_true",
                    help="do not mark corrected cases reviewed: with the GUI's 'only edited / "
                         "reviewed regions count' only the changed pixels are trained on")
    ap.add_argument("--promote-unknown", choices=("yes", "no"), default="yes",
                    help="promote when there is no held-back case to compare on (default yes)")
    ap.add_argument("--features", default="16,32,64,128,256")
    ap.add_argument("--patch", type=int, default=256, help="patch size of from-scratch training")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3, help="from-scratch learning rate")
    ap.add_argument("--epochs", type=int, default=400, help="from-scratch epochs (budget binds)")
    ap.add_argument("--test-ids", default="1,2,3,4,5", help="DRIVE test images scored per round")
    ap.add_argument("--full-test", action="store_true", help="score all 20 test images")
    ap.add_argument("--score-on", choices=("test", "val"), default="test",
                    help="'val': score on DRIVE training images 37-40 instead of the test set "
                    "(to choose fine-tuning settings without looking at the test images)")
    ap.add_argument("--ft-lr", type=float, default=None, help="fine-tune learning rate "
                    "(default: the widget's, default_round_settings)")
    ap.add_argument("--no-guard", action="store_true",
                    help="uncheck the widget's forgetting guard (no L2-SP, no replay)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--baseline-last", action="store_true",
                    help="train the from-scratch baseline only after the last round")
    ap.add_argument("--baseline-compute", choices=("auto", "budget", "actual", "steps"),
                    default="auto", help="baseline compute = the loop's sum of time budgets, "
                    "its seconds spent, or its optimizer steps (auto: steps with "
                    "--initial-steps, else budget)")
    ap.add_argument("--shift", default=None,
                    help="another site: apply this simulated camera shift of fundus_shift.py "
                         "(e.g. 'jpeg q20', 'noise sigma 8', 'blur sigma 1.2'; sizes excluded) "
                         "to the pool and scored images (labels and FOV unchanged); use with "
                         "--start retina-vessels to adapt the packaged model to the site")
    ap.add_argument("--adapt", action="store_true",
                    help="with --preload: press the Fine-tune widget's 'Adapt to the project's "
                         "images (no labels)' before the first round (the adapted version is "
                         "kept, scored in round 0's adapted_test_dice)")
    add_run_options(ap, device="auto", out=False)
    args = ap.parse_args(argv)
    if args.adapt and not args.preload:
        ap.error("--adapt needs --preload (the project's images to adapt to)")
    if args.shift is not None:
        if args.shift not in FUNDUS_SHIFTS or args.shift in RESIZED:
            ap.error(f"--shift must be one of {[n for n in FUNDUS_SHIFTS if n not in RESIZED]}")
    if args.k < 1:
        ap.error("--k must be >= 1")
    if args.order != "sequential" and not args.preload:
        ap.error("--order uncertain needs --preload")
    if args.baseline_compute == "auto":
        args.baseline_compute = "steps" if args.initial_steps else "budget"
    if args.baseline_compute == "budget" and not args.round_budget and not args.no_baseline:
        ap.error("--round-budget 0 (no limit) needs --baseline-compute steps or actual")
    return args


# ------------------------------------------------------------------------------ data, metrics
def load_drive(drive: str, ids: list[int], split: str, out_json: Path) -> list:
    """DRIVE cases (image, 1st_manual label, FOV mask) in the order of ``ids``."""
    from napari_drunet.core.train.dataset import load_dataset

    from .datasets import make_drive_dataset

    json_path = make_drive_dataset(drive, out_json, split, subset=ids)
    cases, _ = load_dataset(json_path, split, allow_outside=True)
    by_name = {c.name: c for c in cases}
    return [by_name[f"drive_{i:02d}"] for i in ids]


def apply_shift(cases: list, name: str | None) -> list:
    """``cases`` with ``shifts.FUNDUS_SHIFTS[name]`` applied to their RGB photographs (the label,
    FOV mask and geometry kept): the images of another site. ``None`` returns ``cases``."""
    if name is None:
        return cases
    from dataclasses import replace

    out = []
    for c in cases:
        arr = np.ascontiguousarray(np.moveaxis(shifted(photo(c), FUNDUS_SHIFTS[name]), -1, 0))
        out.append(replace(c, image=replace(c.image, array=arr, path=None)))
    return out


def fov_scores(pred: np.ndarray, case: Any) -> dict[str, float]:
    """What the clinician changed inside the FOV: % of pixels and Dice(prediction, truth)."""
    from napari_drunet.core.evaluation.metrics import confusion_metrics

    fov, truth, p = case.mask, case.label > 0, np.asarray(pred) > 0
    return {"changed_pct_fov": 100.0 * float(np.mean(p[fov] != truth[fov])),
            "fix_dice_fov": float(confusion_metrics(p, truth, fov)["dice"])}


def test_dice(model: Any, cases: list) -> float:
    """Mean Dice (F1) inside the FOV of ``model`` (its own threshold) on ``cases``."""
    return float(np.mean([fov_scores(model.predict(c.image).mask, c)["fix_dice_fov"]
                          for c in cases]))


# ------------------------------------------------------------------------------ training
def train_scratch(cases: list, args: argparse.Namespace, budget: float | None = None,
                  steps: int | None = None) -> tuple[Any, Any]:
    """Train a new network on ``cases`` for ``budget`` seconds or exactly ``steps`` optimizer
    steps (no validation: the last weights are kept). Returns ``(model, TrainResult)``."""
    from napari_drunet.core.progress import run_to_end
    from napari_drunet.core.train.loop import TrainConfig, train_iter

    cfg = TrainConfig(arch="drunet", spatial_dims=2,
                      features=tuple(int(f) for f in args.features.split(",")),
                      patch_size=(args.patch, args.patch), batch_size=args.batch_size,
                      lr=args.lr, epochs=args.epochs, max_steps=steps,
                      time_budget=None if budget is None else float(budget),
                      val_fraction=0.0, seed=args.seed, device=args.device)
    result = run_to_end(train_iter(cases, cfg))
    return result.model, result


# ------------------------------------------------------------------------------ output
def _fmt(v: Any) -> str:
    """Table cell: Dice-like values with 4 decimals, seconds and percentages with 2."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return str(v)


def _cell(v: Any) -> Any:
    """CSV cell: numbers kept (rounded), lists space-separated, None empty."""
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return "" if v is None else v


def write_outputs(out: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    from napari_drunet.core.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out / "label_efficiency.json", {"config": config, "rows": rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in CSV_FIELDS})
    atomic_write_text(out / "label_efficiency.csv", buf.getvalue())


TABLE = [("round", 5), ("n_labeled", 9), ("changed_pct_fov", 15), ("fix_dice_fov", 12),
         ("finetune_s", 10), ("round_s", 8), ("active_version", 14), ("promoted", 8),
         ("test_dice", 9), ("baseline_test_dice", 18), ("loop_compute_s", 14),
         ("loop_steps", 10)]


def print_row(row: dict[str, Any] | None) -> None:
    """One line of the results table (``None``: the header)."""
    cells = [(name if row is None else _fmt(row.get(name))).rjust(w) for name, w in TABLE]
    print("  ".join(cells), flush=True)


# ------------------------------------------------------------------------------ experiment
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from napari_drunet.core.correction.project import Project
    from napari_drunet.core.models.model import load_model

    out = start_run(args)
    n_rounds = len(POOL_IDS) // args.k if args.rounds is None else args.rounds
    if n_rounds * args.k > len(POOL_IDS):
        raise SystemExit(f"error: {n_rounds} rounds of {args.k} need more than the "
                         f"{len(POOL_IDS)} images 23-36")
    if args.score_on == "val":
        test_ids = list(VAL_IDS)
        test_cases = load_drive(args.drive, test_ids, "training", out / "test.json")
    else:
        test_ids = list(range(1, 21)) if args.full_test else \
            [int(s) for s in args.test_ids.split(",") if s.strip()]
        test_cases = load_drive(args.drive, test_ids, "test", out / "test.json")
    test_cases = apply_shift(test_cases, args.shift)
    initial = load_drive(args.drive, INITIAL_IDS, "training", out / "initial.json")
    pool_ids = POOL_IDS if args.preload else POOL_IDS[: n_rounds * args.k]
    pool = apply_shift(load_drive(args.drive, pool_ids, "training", out / "pool.json"), args.shift)
    by_name = {c.name: c for c in pool}
    labelled: list = []
    config = {k: v for k, v in vars(args).items()} | {"initial_ids": INITIAL_IDS,
                                                       "test_ids": test_ids, "rounds": n_rounds}
    project = Project.create(out / "project")
    timed = not args.initial_steps and bool(args.round_budget)  # sums of budgets make sense

    if args.start:
        model = load_model(args.start, args.device)
        initial_s, source = 0.0, f"start: {args.start}"
        history = (model.meta.get("training") or {}).get("history") or [{}]
        initial_steps = int(args.initial_steps or history[-1].get("step") or 0)
    else:
        if args.initial_steps:
            model, res0 = train_scratch(initial, args, steps=args.initial_steps)
        else:
            model, res0 = train_scratch(initial, args, budget=args.initial_budget)
        model.save(out / "initial.safetensors")
        initial_s, source = res0.seconds, "trained from scratch on drive_21, drive_22"
        initial_steps = res0.steps
    # the GUI registers the model that made the first result as a parentless version
    project.versions.add(model, parent=None, metrics={}, data=[c.name for c in initial],
                         source=source)
    score = test_dice(model, test_cases)
    n_initial = 0 if args.shift else len(initial)  # labelled images of the (shifted) site
    rows = [{"round": 0, "n_labeled": n_initial, "new_cases": [], "version":
             project.versions.active, "active_version": project.versions.active,
             "initial_train_s": round(initial_s, 1), "test_dice": score,
             "loop_compute_s": args.initial_budget if timed else None,
             "loop_steps": initial_steps,
             "baseline_test_dice": score}]
    write_outputs(out, config, rows)
    print_row(None)
    print_row(rows[0])
    spent_budget, spent_actual = args.initial_budget, (initial_s or args.initial_budget)
    spent_steps = initial_steps
    if args.preload:  # the clinician opens the whole folder: every case predicted, uncorrected
        refresh_predictions(project, model, pool)
    if args.adapt:  # "Adapt to the project's images (no labels)", then Promote
        model = adapt_project(project, model, pool, args.device)
        rows[0]["adapted_test_dice"] = test_dice(model, test_cases)
        rows[0]["active_version"] = project.versions.active
        write_outputs(out, config, rows)
        print(f"adapted to the {len(pool)} project images ({project.versions.active}): "
              f"{rows[0]['adapted_test_dice']:.4f}", flush=True)

    for r in range(1, n_rounds + 1):
        t_round = time.perf_counter()
        if args.preload:
            new = [by_name[n] for n in next_cases(project, args.order, args.k)]
        else:
            new = pool[(r - 1) * args.k: r * args.k]
        labelled += new
        fixes = []
        for case in new:  # segment with the active model, clinician corrects, case is stored
            if args.preload:  # already predicted by the active model (refresh_predictions)
                mask = project.load_case(case.name).prediction
            else:
                mask = store_prediction(project, model, case)
            fix = {"case": case.name, **fov_scores(mask, case)}
            stats = project.save_correction(case.name, (case.label > 0).astype(np.uint8))
            if not args.no_review:
                project.mark_reviewed(case.name, "all")
            fix.update(changed_pct_image=100.0 * stats["changed_fraction"],
                       fix_dice_image=stats["fix_dice"])
            fixes.append(fix)
        ft = gui_finetune_round(project, model, args)
        candidate = ft.pop("model")
        if ft["promoted"]:
            model = candidate
            if args.preload:  # uncorrected cases shown (and replayed) with the new version
                refresh_predictions(project, model, pool)
        round_s = time.perf_counter() - t_round
        spent_budget += args.round_budget
        spent_actual += ft["finetune_s"]
        spent_steps += ft["finetune_steps"]
        row = {"round": r, "n_labeled": n_initial + r * args.k,
               "new_cases": [c.name for c in new],
               "changed_pct_fov": float(np.mean([f["changed_pct_fov"] for f in fixes])),
               "fix_dice_fov": float(np.mean([f["fix_dice_fov"] for f in fixes])),
               "per_case": fixes, **ft, "round_s": round(round_s, 1),
               "active_version": project.versions.active, "test_dice": test_dice(model, test_cases),
               "candidate_test_dice": None, "loop_compute_s": spent_budget if timed else None,
               "loop_actual_s": round(spent_actual, 1), "loop_steps": spent_steps}
        if not ft["promoted"]:
            row["candidate_test_dice"] = test_dice(candidate, test_cases)
        if not args.no_baseline and (r == n_rounds or not args.baseline_last):
            mode = args.baseline_compute
            budget = {"budget": spent_budget, "actual": spent_actual}.get(mode)
            base_model, res = train_scratch(initial + labelled, args, budget=budget,
                                            steps=spent_steps if mode == "steps" else None)
            row.update(baseline_test_dice=test_dice(base_model, test_cases),
                       baseline_s=round(res.seconds, 1), baseline_steps=res.steps,
                       baseline_budget_s=budget)
        rows.append(row)
        write_outputs(out, config, rows)
        print_row(row)
    print(f"results: {out / 'label_efficiency.json'}, {out / 'label_efficiency.csv'}", flush=True)
    return 0


if __name__ == "__main__":
    from napari_drunet.core.errors import DrunetError

    try:
        raise SystemExit(main())
    except DrunetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
