"""ISIC 2017 skin-lesion segmentation with the project's own CLI: train -> tune on val -> test.

Split: the official ISIC 2017 Part 1 split as stored in ``../shared/data/ISIC2017`` (2000 train,
150 validation, 600 test; 256x192 RGB dermoscopy with binary lesion masks, see its SOURCE.txt).
Under the 2-core CPU budget the network learns from a copy at ``1/--train-scale`` of the size
(default 2: 128x96, area-averaged, in ``<out>/data``); the checkpoint records the photograph
long side it learnt at (``preprocess = {"long_side": 128}``), so every photograph -- the
256x192 validation and test images here, a clinic's 700-6000 px ones elsewhere -- is brought to
that scale by the model itself and the mask returned on the photograph's grid. Validation and
test images are always scored at their original 256x192 size. The best checkpoint is chosen by validation Dice during training and the binarisation
threshold maximising the mean per-image validation Jaccard (the ISIC metric) over 0.20-0.80;
the 600 test images are then scored once, per image: Jaccard, Dice, sensitivity, specificity,
accuracy, HD95 (px), and the ISIC 2018 "thresholded Jaccard" (an image whose Jaccard is below
0.65 counts 0).

    python -m benchmarks.isic_accuracy --time-budget 2400 --out runs/isic
    python -m benchmarks.isic_accuracy --skip-train --out runs/isic      # re-score model.ckpt
    python -m benchmarks.isic_accuracy --init runs/isic/model.ckpt --lr 1e-3 --out runs/isic2

``--init`` continues training from a checkpoint (``drunet finetune`` with the training recipe,
as in ``drive_accuracy.py``); with ``--skip-train`` it only records the parent run. Writes
``<out>/model.ckpt`` (threshold tuned), ``<out>/test_metrics.json`` (per image) and
``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_drunet.core.infer.postprocess import keep_largest_objects

from .common import (
    add_cycle_options,
    add_data_option,
    add_recipe_options,
    add_run_options,
    recipe_flags,
    recipe_summary,
)
from .isic_data import downsample_isic, make_isic_dataset

#: Size (H, W) of the ISIC 2017 images as stored.
ISIC_SIZE = (192, 256)
#: ISIC 2018 Task 1: a per-image Jaccard below this counts 0 (a "failed" segmentation).
JACCARD_FLOOR = 0.65
THRESHOLDS = np.round(np.arange(0.20, 0.81, 0.02), 2)
METRICS = ("iou", "dice", "sensitivity", "specificity", "accuracy", "hd95")


def drunet(*args: str) -> None:
    print("+ drunet", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "napari_drunet", *args], check=True)


def thresholded_jaccard(jaccards: Sequence[float], floor: float = JACCARD_FLOOR) -> float:
    """Mean of the per-image Jaccards with those below ``floor`` set to 0 (ISIC 2018 Task 1)."""
    j = np.asarray(jaccards, dtype=float)
    return float(np.where(j >= floor, j, 0.0).mean())


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    """Jaccard of two binary masks; 1 when both are empty (nothing to find, nothing found)."""
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def foreground_probabilities(model, cases, tta: bool = False) -> list[np.ndarray]:
    """The model's lesion probability map of each case (``(H, W)`` float32)."""
    return [model.predict(c.image, tta=tta).probabilities[0] for c in cases]


def tune_threshold(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                   grid: Sequence[float] = THRESHOLDS, largest_object: bool = False
                   ) -> tuple[float, float]:
    """The threshold of ``grid`` with the best mean per-image Jaccard, and that Jaccard
    (masks cleaned up as the model's ``largest_object`` recipe would)."""
    def mask(p: np.ndarray, t: float) -> np.ndarray:
        return keep_largest_objects(p >= t) if largest_object else p >= t

    scores = [np.mean([jaccard(mask(p, t), y > 0) for p, y in zip(probs, truths, strict=True)])
              for t in grid]
    best = int(np.argmax(scores))
    return float(grid[best]), float(scores[best])


def score_images(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                 names: Sequence[str]) -> dict:
    """Per-image metrics and their summary (mean, sd; HD95 over images where both masks are
    non-empty, the others counted apart), plus the thresholded Jaccard."""
    from napari_drunet.core.evaluation.metrics import evaluate_case

    cases = {}
    for name, p, y in zip(names, preds, truths, strict=True):
        res = evaluate_case(p.astype(np.uint8), (y > 0).astype(np.uint8), labels=[1])
        row = {k: res["per_class"][1][k] for k in METRICS}
        row["iou"] = jaccard(p > 0, y > 0)  # defined (1) when both are empty
        cases[name] = row
    summary: dict[str, dict | float | int] = {}
    for k in METRICS:
        vals = np.array([r[k] for r in cases.values()], dtype=float)
        ok = vals[np.isfinite(vals)]
        summary[k] = {"mean": float(ok.mean()) if ok.size else math.nan,
                      "sd": float(ok.std()) if ok.size else math.nan,
                      "median": float(np.median(ok)) if ok.size else math.nan}
    hd = np.array([r["hd95"] for r in cases.values()], dtype=float)
    summary["hd95_undefined_images"] = int((~np.isfinite(hd)).sum())
    jac = [r["iou"] for r in cases.values()]
    summary["thresholded_jaccard"] = thresholded_jaccard(jac)
    summary["images_below_floor"] = int(sum(j < JACCARD_FLOOR for j in jac))
    summary["images"] = len(cases)
    return {"cases": cases, "summary": summary}


def evaluate_split(model, cases, threshold: float, tta: bool = False,
                   progress: Callable[[int], None] | None = None, largest_object: bool = False
                   ) -> dict:
    """Score ``model`` at ``threshold`` on labelled cases (see :func:`score_images`)."""
    preds = []
    for i, c in enumerate(cases):
        preds.append(model.predict(c.image, tta=tta, threshold=threshold,
                                   largest_object=largest_object).mask > 0)
        if progress is not None:
            progress(i)
    return score_images(preds, [c.label for c in cases], [c.name for c in cases])


def photograph_at(image: np.ndarray, factor: float) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 photograph enlarged ``factor`` times (bicubic), as a
    dermoscope with more pixels would take it."""
    from PIL import Image

    h, w = image.shape[:2]
    big = Image.fromarray(image).resize((round(w * factor), round(h * factor)),
                                        Image.Resampling.BICUBIC)
    return np.asarray(big)


def without_rescale(model):
    """A copy of ``model`` that segments photographs at the size given (no ``long_side``)."""
    plain = model.copy()
    plain.meta["preprocess"] = {}
    return plain


def size_shift(model, cases, factors: Sequence[float], off: Sequence[float] = ()) -> dict:
    """Dice (F1) and AUC against the enlarged masks of ``cases`` photographed ``factor`` times
    larger, with the model's own rescaling and, for ``off``, without it; also the Dice between
    each enlarged photograph's mask (brought back to 256x192, nearest) and the mask of the
    photograph as stored. Rows in the format of ``package_model.shift_section``."""
    from napari_drunet.core.evaluation.metrics import evaluate_case
    from napari_drunet.core.image.rescale import resize_nearest

    small = [model.predict(c.image).mask for c in cases]
    plain = without_rescale(model) if off else None
    rows = []
    for factor, rescale in [(f, True) for f in factors] + [(f, False) for f in off]:
        m = model if rescale else plain
        f1, auc, agree = [], [], []
        for c, ref in zip(cases, small, strict=True):
            photo = photograph_at(np.moveaxis(np.asarray(c.image.array), 0, -1), factor)
            pred = m.predict(photo, is_rgb=True)
            truth = resize_nearest(c.label.astype(np.uint8), photo.shape[:2])
            res = evaluate_case(pred.mask, truth, prob=pred.probabilities, labels=[1], hd=False)
            f1.append(res["per_class"][1]["dice"])
            auc.append(res["per_class"][1]["auc"])
            back = resize_nearest(pred.mask.astype(np.uint8), ref.shape)
            agree.append(evaluate_case(back, ref.astype(np.uint8), labels=[1],
                                       hd=False)["per_class"][1]["dice"])
        rows.append({"shift": f"size x{factor:g} ({photo.shape[1]} x {photo.shape[0]} px)",
                     "rescale": rescale, "f1": float(np.mean(f1)), "auc": float(np.mean(auc)),
                     "dice_to_stored_size_mask": float(np.mean(agree)),
                     "min_dice_to_stored_size_mask": float(np.min(agree))})
    return {"script": "isic_accuracy.py --size-check", "what": "dermatoscopes",
            "images": len(cases), "split": "test", "results": rows}


def _image_size(dataset_json: Path) -> tuple[int, int]:
    """``(width, height)`` of the first training image of a dataset.json."""
    from PIL import Image

    with Image.open(json.loads(dataset_json.read_text())["training"][0]["image"]) as im:
        return im.size


def train_command(args: argparse.Namespace, train_json: Path, val_json: Path,
                  ckpt: Path, init: Path | None = None) -> list[str]:
    """The ``drunet train`` (or ``finetune`` from ``init``) command line of this recipe."""
    if init:
        start = ["finetune", "--model", str(init), "--l2sp", "0", "--weight-decay", "1e-4"]
    else:
        start = ["train", "--arch", args.arch, "--dims", "2", "--features", args.features]
    budget = args.time_budget or (1e9 if init else None)  # finetune has its own default
    patch = args.patch_size or ",".join(str(s // args.train_scale) for s in ISIC_SIZE)
    return [*start, "--data", str(train_json), *recipe_flags(args, val_json), "--allow-outside",
            "--patch-size", patch, "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--epochs", str(args.epochs),
            "--steps-per-epoch", str(args.steps_per_epoch), "--max-steps", str(args.max_steps),
            "--seed", str(args.seed), *(["--time-budget", str(budget)] if budget else []),
            "--threads", str(args.threads), "--device", "auto", "--out", str(ckpt)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, "--isic", "ISIC2017")
    ap.add_argument("--arch", default="drunet")
    ap.add_argument("--features", default="8,16,32,64,128")
    ap.add_argument("--train-cases", type=int, default=None, help="first N training images")
    ap.add_argument("--val-cases", type=int, default=None, help="first N validation images")
    ap.add_argument("--test-cases", type=int, default=None, help="first N test images (checks)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds (wall clock)")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--steps-per-epoch", type=int, default=100, help="validation every N steps")
    ap.add_argument("--train-scale", type=int, default=2,
                    help="train on images shrunk by this factor (1 = as stored)")
    ap.add_argument("--patch-size", default=None,
                    help="default: the whole (shrunk) image, 96,128 at --train-scale 2")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    add_run_options(ap)
    add_cycle_options(ap)
    ap.add_argument("--largest-object", action="store_true",
                    help="keep the largest lesion of each mask, holes filled (the threshold is "
                    "tuned with it; recorded in the model's recipe)")
    ap.add_argument("--size-check", type=int, default=0, metavar="N",
                    help="also score the first N test images photographed 3-16x larger "
                    "(<out>/size_shift.json, for the model card)")
    add_recipe_options(ap)
    ap.set_defaults(rotate=30.0, scale=0.25)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import load_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsons = {s: make_isic_dataset(args.isic, out / f"{s}.json", s, n) for s, n in
             (("train", args.train_cases), ("val", args.val_cases), ("test", args.test_cases))}
    small = args.isic if args.train_scale == 1 else downsample_isic(
        args.isic, out / "data", args.train_scale)
    fit = {s: make_isic_dataset(small, out / f"{s}_fit.json", s, n) for s, n in
           (("train", args.train_cases), ("val", args.val_cases))}
    ckpt = out / "model.ckpt"
    # the scale it learns at: the model brings any photograph there and the mask back
    scale = {"long_side": float(max(_image_size(fit["train"])))}
    init = None
    if args.init and not args.skip_train:
        # finetune trains through the parent's recipe: without this, a parent that learnt at
        # another scale would shrink every training image to its own long side
        init = load_model(args.init, device="cpu").save(out / "init.ckpt", preprocess=scale)
    t0 = time.time()
    if not args.skip_train:
        drunet(*train_command(args, fit["train"], fit["val"], ckpt, init))
    train_s = time.time() - t0
    if args.skip_train and (out / "summary.json").exists():  # keep the training run's time
        train_s = json.loads((out / "summary.json").read_text()).get("train_seconds", train_s)

    load_model(ckpt, device="cpu").save(ckpt, preprocess=scale)
    model = load_model(ckpt, device="cpu")
    val, _ = load_dataset(jsons["val"], allow_outside=True)
    thr, val_jac = tune_threshold(foreground_probabilities(model, val, args.tta),
                                  [c.label for c in val], largest_object=args.largest_object)
    # the choices made on validation images become the model's defaults (CLI, GUI, API)
    inference = {**(model.meta.get("inference") or {}), "tta": args.tta,
                 "largest_object": args.largest_object}
    model.save(ckpt, threshold=thr, inference=inference)
    model = load_model(ckpt, device="cpu")
    print(f"validation-tuned threshold {thr:.2f} (val mean Jaccard {val_jac:.4f})", flush=True)

    test, _ = load_dataset(jsons["test"], allow_outside=True)
    t1 = time.time()
    res = evaluate_split(model, test, thr, args.tta, largest_object=args.largest_object)
    predict_s = time.time() - t1
    (out / "test_metrics.json").write_text(json.dumps(res, indent=1))
    meta, s = model.meta, res["summary"]
    history = meta.get("training", {}).get("history") or [{}]
    summary = {
        "arch": meta.get("arch", args.arch),  # the network trained (an --init one's own)
        "features": ",".join(map(str, (meta.get("arch_kwargs") or {}).get("features", ())))
        or args.features, "train_scale": args.train_scale,
        "train_cases": len(
            json.loads(jsons["train"].read_text())["training"]),
        "params": sum(p.numel() for p in model.network.parameters()),
        "train_seconds": round(train_s, 1), "predict_seconds": round(predict_s, 1),
        "threshold": thr, "val_jaccard": val_jac, "tta": args.tta,
        "largest_object": args.largest_object, "init": args.init,
        **recipe_summary(args),
        "best_val_dice_training": meta.get("metrics", {}).get("val_dice"),
        "steps": history[-1].get("step"), "epochs": len(history),
        "test": {k: s[k]["mean"] for k in METRICS} | {
            "thresholded_jaccard": s["thresholded_jaccard"]},
        "test_sd": {k: s[k]["sd"] for k in METRICS},
        "test_images": s["images"], "images_below_0.65": s["images_below_floor"],
        "hd95_undefined_images": s["hd95_undefined_images"],
        "device": os.environ.get("DRUNET_DEVICE_NOTE", "cpu (2 cores, shared)"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if args.size_check:
        shift = size_shift(model, test[: args.size_check], (1, 3, 8, 16), off=(3,))
        (out / "size_shift.json").write_text(json.dumps(shift, indent=2))
        print(json.dumps(shift["results"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
