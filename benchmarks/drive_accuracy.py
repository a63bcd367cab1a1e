"""DRIVE experiment with the project's own CLI: train -> tune threshold on validation -> test.

Split (fixed, documented in docs/results.md): DRIVE training images 21-36 train, 37-40
validation (model selection and threshold), the 20 official test images (01-20) evaluated once
against 1st_manual inside the FOV mask. ``--train-cases 20`` trains on all 20 training images
(21-40); the validation images 37-40 are then part of the training set, so the checkpoint and
threshold are chosen on training images (still no test data).

    python -m benchmarks.drive_accuracy --arch drunet --max-steps 1500 --out runs/drive_drunet
    python -m benchmarks.drive_accuracy --arch unet --train-cases 2 --max-steps 600 ...
    python -m benchmarks.drive_accuracy --init runs/drive_drunet/model.ckpt --lr 1e-3 \
        --max-steps 1500 --tta --out runs/drive_drunet_cont   # a second cosine cycle, flip TTA

``--init`` continues training from a checkpoint (``drunet finetune`` with the training recipe:
no L2-SP pull, weight decay 1e-4, every pixel counts); the starting weights stay a candidate for
the best validation checkpoint. ``--tta`` averages the 4 flips of each image, both for the
validation threshold and the test predictions.

Writes ``<out>/model.ckpt`` (threshold tuned), ``<out>/test_metrics.json`` and ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from .common import (
    TRAIN_IDS,
    VAL_IDS,
    add_accuracy_options,
    add_data_option,
    drunet,
    recipe_flags,
    recipe_summary,
    write_summary,
)


def tune_threshold(ckpt: Path, val_json: Path, tta: bool = False) -> tuple[float, float]:
    """Threshold maximising mean F1 (inside FOV) over the validation images."""
    from napari_drunet.core.evaluation.metrics import confusion_metrics
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import load_dataset

    model = load_model(ckpt, device="cpu")
    cases, _ = load_dataset(val_json, allow_outside=True)
    probs = [(model.predict(c.image, tta=tta).probabilities[0], c.label > 0, c.mask)
             for c in cases]
    grid = np.round(np.arange(0.20, 0.81, 0.02), 2)
    scores = [np.mean([confusion_metrics(p >= t, y, m)["dice"] for p, y, m in probs]) for t in grid]
    best = int(np.argmax(scores))
    return float(grid[best]), float(scores[best])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, "--drive", "DRIVE")
    ap.add_argument("--arch", default="drunet")
    ap.add_argument("--features", default="16,32,64,128,256")
    ap.add_argument("--train-cases", type=int, default=16,
                    help="first N of images 21-40 (over 16: validation images included)")
    add_accuracy_options(ap, max_steps=1500, epochs=400, patch_size="256", batch_size=4, lr=2e-3)
    args = ap.parse_args()

    from .datasets import make_drive_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_json = make_drive_dataset(args.drive, out / "train.json", "training",
                                    subset=(TRAIN_IDS + VAL_IDS)[: args.train_cases])
    if args.train_cases > len(TRAIN_IDS):
        print("note: validation images 37-40 are in the training set", flush=True)
    val_json = make_drive_dataset(args.drive, out / "val.json", "training", subset=VAL_IDS)
    ckpt = out / "model.ckpt"
    t0 = time.time()
    if not args.skip_train:
        if args.init:  # same recipe, starting from the given weights
            start = ["finetune", "--model", args.init, "--l2sp", "0", "--weight-decay", "1e-4",
                     "--fg-fraction", "0.33"]
            if not args.time_budget:
                start += ["--time-budget", "1e9"]
        else:
            start = ["train", "--arch", args.arch, "--dims", "2", "--features", args.features]
        drunet(*start, "--data", str(train_json), *recipe_flags(args, val_json), "--allow-outside",
               "--patch-size", args.patch_size, "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--epochs", str(args.epochs),
               "--max-steps", str(args.max_steps), "--seed", str(args.seed),
               *(["--time-budget", str(args.time_budget)] if args.time_budget else []),
               "--threads", str(args.threads), "--device", "auto", "--out", str(ckpt))
    train_s = time.time() - t0
    if args.skip_train and (out / "summary.json").exists():  # keep the training run's time
        train_s = json.loads((out / "summary.json").read_text()).get("train_seconds", train_s)

    thr, val_f1 = tune_threshold(ckpt, val_json, args.tta)
    from napari_drunet.core.models.model import load_model

    model = load_model(ckpt, device="cpu")
    model.save(ckpt, threshold=thr)
    print(f"validation-tuned threshold {thr:.2f} (val F1 {val_f1:.4f})", flush=True)

    test = Path(args.drive) / "test"
    pred, prob = out / "test_pred", out / "test_prob"
    t1 = time.time()
    drunet("predict", "--model", str(ckpt), "--input", str(test / "images"),
           "--output", str(pred), "--prob", str(prob), "--threads", str(args.threads),
           *(["--tta"] if args.tta else []))
    predict_s = time.time() - t1
    drunet("evaluate", "--pred", str(pred), "--truth", str(test / "1st_manual"),
           "--mask", str(test / "mask"), "--prob", str(prob), "--json",
           str(out / "test_metrics.json"))
    res = json.loads((out / "test_metrics.json").read_text())
    mean = res["mean"]["mean"]
    meta = model.meta
    summary = {
        "arch": args.arch, "features": args.features, "train_cases": args.train_cases,
        "params": sum(p.numel() for p in model.network.parameters()),
        "train_seconds": round(train_s, 1), "predict_seconds_20_images": round(predict_s, 1),
        "threshold": thr, "val_f1": val_f1, "tta": args.tta, "init": args.init,
        **recipe_summary(args),
        "best_val_dice_training": meta.get("metrics", {}).get("val_dice"),
        "steps": (meta.get("training", {}).get("history") or [{}])[-1].get("step"),
        "epochs": len(meta.get("training", {}).get("history", [])),
        "test": {k: mean[k]["mean"] for k in mean if isinstance(mean[k], dict) and "mean" in mean[k]},
        "test_pooled": res.get("pooled", {}).get("1"),  # all test pixels together
        "device": os.environ.get("DRUNET_DEVICE_NOTE", "cpu (2 cores)"),
    }
    write_summary(out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
