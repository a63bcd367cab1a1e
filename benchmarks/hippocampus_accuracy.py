"""MSD Task04 Hippocampus with the project's own CLI: train (2D slice-wise or 3D) -> test.

Split (fixed): test = cases whose number is divisible by 5; of the remaining cases, every 8th
(in sorted order) is validation (model selection), the rest training.

    python -m benchmarks.hippocampus_accuracy --dims 3 --max-steps 1200 --patch-size 32,48,32 --out runs/hippo3d
    python -m benchmarks.hippocampus_accuracy --dims 2 --max-steps 1200 --out runs/hippo2d
    python -m benchmarks.hippocampus_accuracy --init runs/hippo3d/model.ckpt --lr 1e-3 \
        --max-steps 2000 --patch-size 32,48,32 --tta --out runs/hippo3d_cont

``--init`` continues training from a checkpoint (``drunet finetune`` with the training recipe:
no L2-SP pull, weight decay 1e-4); the starting weights stay a candidate for the best validation
checkpoint. ``--tta`` averages the 8 axis flips (4 for ``--dims 2``) at test time.

Writes ``<out>/model.ckpt``, ``<out>/test_metrics.json`` (Dice and HD95 in mm per label) and
``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import (
    MSD_HIPPOCAMPUS,
    add_accuracy_options,
    add_data_option,
    drunet,
    recipe_flags,
    recipe_summary,
    split_msd,
    write_summary,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, "--root", MSD_HIPPOCAMPUS)
    ap.add_argument("--dims", type=int, choices=(2, 3), default=3)
    ap.add_argument("--arch", default="drunet")
    ap.add_argument("--features", default="16,32,64,128")
    add_accuracy_options(ap, max_steps=1200, epochs=1000, patch_size=None, batch_size=None,
                         lr=2e-3)
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val, test = split_msd(args.root, out)
    test_dir, truth_dir = out / "test_images", out / "test_labels"
    for d in (test_dir, truth_dir):
        d.mkdir(exist_ok=True)
    for e in test:  # symlinks: the CLI takes folders; no data is copied
        for key, d in (("image", test_dir), ("label", truth_dir)):
            src = Path(e[key]) if Path(e[key]).is_absolute() else (out / e[key])
            link = d / src.name
            if not link.exists():
                link.symlink_to(src.resolve())
    print(f"train {len(train)}, validation {len(val)}, test {len(test)} volumes", flush=True)

    patch = args.patch_size or ("48,64,48" if args.dims == 3 else "64,64")
    batch = args.batch_size or (4 if args.dims == 3 else 32)
    ckpt = out / "model.ckpt"
    t0 = time.time()
    if args.init:  # same recipe, starting from the given weights
        start = ["finetune", "--model", args.init, "--l2sp", "0", "--weight-decay", "1e-4",
                 *([] if args.time_budget else ["--time-budget", "1e9"])]
    else:
        start = ["train", "--arch", args.arch, "--dims", str(args.dims), "--features", args.features]
    if not args.skip_train:
        drunet(*start, "--data", str(out / "train.json"), *recipe_flags(args, out / "val.json"),
               "--allow-outside", "--patch-size", patch, "--batch-size", str(batch),
               "--lr", str(args.lr), "--epochs", str(args.epochs), "--fg-fraction", "0.5",
               "--max-steps", str(args.max_steps), "--seed", str(args.seed),
               *(["--time-budget", str(args.time_budget)] if args.time_budget else []),
               "--threads", str(args.threads), "--out", str(ckpt))
    train_s = time.time() - t0
    if args.skip_train and (out / "summary.json").exists():  # keep the training run's time
        train_s = json.loads((out / "summary.json").read_text()).get("train_seconds", train_s)
    pred = out / "test_pred"
    t1 = time.time()
    drunet("predict", "--model", str(ckpt), "--input", str(test_dir), "--output", str(pred),
           "--threads", str(args.threads), *(["--tta"] if args.tta else []))
    predict_s = time.time() - t1
    drunet("evaluate", "--pred", str(pred), "--truth", str(truth_dir), "--json",
           str(out / "test_metrics.json"))
    res = json.loads((out / "test_metrics.json").read_text())
    per_class = res["mean"]["per_class"]
    summary = {
        "arch": args.arch, "dims": args.dims, "features": args.features,
        "train_volumes": len(train), "val_volumes": len(val), "test_volumes": len(test),
        "init": args.init, "tta": args.tta, **recipe_summary(args),
        "train_seconds": round(train_s, 1), "predict_seconds": round(predict_s, 1),
        "test": {str(lab): {m: per_class[lab][m]["mean"] for m in ("dice", "hd95")}
                 for lab in per_class},
    }
    write_summary(out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
