"""BraTS 2015 (6 cases) with the project's own CLI: a 2-channel (FLAIR + T1c), 5-class 3D model.

Split (fixed by the source, see ``../shared/data/BraTS2015_6/SOURCE.txt``): the 2 train and 2
validation cases are all training data (too few to hold any out; the last weights are kept), the
2 test cases are scored once. Under the CPU budget the network learns from copies resampled to
``--spacing`` mm (default 2: 78x120x120 voxels instead of 155x240x240; the channels linear,
the labels nearest, as the model itself resamples, in ``<out>/data``); the checkpoint records
that spacing (``preprocess = {"spacing": ...}``), so a 1 mm study is resampled by the model and
its label map returned on the 1 mm grid. The test studies are read as one image from their two
channel files (``napari_drunet.core.image.study``) and segmented at their original 1 mm size; scored
with the BraTS regions: whole tumour (labels 1-4), tumour core (1, 3, 4), enhancing tumour (4):
Dice and HD95 (mm) per case. Also measured: predict time and the process's peak memory for one
240x240x155 x 2-channel study.

    python -m benchmarks.brats_accuracy --time-budget 1500 --out runs/brats
    python -m benchmarks.brats_accuracy --skip-train --out runs/brats     # re-score model.ckpt

Writes ``<out>/model.ckpt``, ``<out>/test_metrics.json`` and ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from .brats_data import brats_cases, make_brats_dataset, region_scores, resample_brats
from .common import add_cycle_options, add_data_option, add_run_options, drunet


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def score_test(model, root: str | Path, tta: bool = False) -> dict:
    """Segment each test study at its stored 1 mm size and score the regions."""
    from napari_drunet.core.image.io import read_label
    from napari_drunet.core.image.study import read_study

    cases = {}
    for entry in brats_cases(root, "test"):
        image = read_study(entry["image"])
        truth, geom = read_label(entry["label"])
        before, t0 = peak_rss_mb(), time.time()
        pred = model.predict(image, tta=tta)
        seconds = time.time() - t0
        cases[entry["name"]] = {
            "regions": region_scores(pred.mask, truth, geom.spacing),
            "predict_seconds": round(seconds, 1), "shape": list(image.array.shape),
            "peak_rss_mb_before": round(before), "peak_rss_mb_after": round(peak_rss_mb()),
            "warnings": pred.info.get("warnings", [])}
    return cases


def full_size_cost(model, root: str | Path) -> dict:
    """Time and peak memory to run the network on the first test study at its stored 1 mm
    size (no resampling: 155x240x240 x 2 channels, the default 96^3 tiles; the labels are not
    scored, the network learnt at the coarser spacing). Run last: the peak only grows."""
    from napari_drunet.core.image.study import read_study

    entry = brats_cases(root, "test")[0]
    image = read_study(entry["image"])
    plain = model.copy()
    plain.meta["preprocess"] = {}
    before, t0 = peak_rss_mb(), time.time()
    plain.predict(image)
    return {"case": entry["name"], "shape": list(image.array.shape),
            "predict_seconds": round(time.time() - t0, 1), "peak_rss_mb_before": round(before),
            "peak_rss_mb_after": round(peak_rss_mb()),
            "input_mb": round(image.array.astype(np.float32).nbytes / 1e6)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, "--brats", "BraTS2015_6")
    ap.add_argument("--spacing", type=float, default=2.0, help="training voxel size (mm)")
    ap.add_argument("--features", default="8,16,32,64")
    ap.add_argument("--patch-size", default="48,48,48")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--fg-fraction", type=float, default=0.5)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds (wall clock)")
    ap.add_argument("--max-steps", type=int, default=100000)
    add_run_options(ap)
    add_cycle_options(ap, init=False)
    ap.add_argument("--full-size-check", action="store_true",
                    help="also time the network on a 1 mm study without resampling")
    args = ap.parse_args(argv)

    from napari_drunet.core.models.model import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, reached = resample_brats(args.brats, out / "data", args.spacing,
                                   ("train", "validation"))
    train_json = make_brats_dataset(data, out / "train.json", ("train", "validation"))
    make_brats_dataset(args.brats, out / "test.json", ("test",), key="test")  # drunet predict --data
    ckpt = out / "model.ckpt"
    t0 = time.time()
    if not args.skip_train:
        drunet("train", "--arch", "drunet", "--dims", "3", "--features", args.features,
               "--data", str(train_json), "--allow-outside", "--val-fraction", "0",
               "--patch-size", args.patch_size, "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--fg-fraction", str(args.fg_fraction),
               "--normalization", "none",  # the channels are z-scored inside the brain already
               "--epochs", "1000", "--steps-per-epoch", "50", "--max-steps", str(args.max_steps),
               "--seed", str(args.seed), "--threads", str(args.threads), "--device", "auto",
               *(["--time-budget", str(args.time_budget)] if args.time_budget else []),
               "--out", str(ckpt))
    train_s = time.time() - t0
    if args.skip_train and (out / "summary.json").exists():  # keep the training run's time
        train_s = json.loads((out / "summary.json").read_text()).get("train_seconds", train_s)
    # the spacing it learnt at: the model resamples any study there and the labels back
    load_model(ckpt, device="cpu").save(ckpt, preprocess={"spacing": reached})
    model = load_model(ckpt, device="cpu")
    cases = score_test(model, args.brats, args.tta)
    (out / "test_metrics.json").write_text(json.dumps(cases, indent=2))
    history = model.meta.get("training", {}).get("history") or [{}]
    summary = {
        "features": args.features, "spacing_mm": reached, "patch_size": args.patch_size,
        "params": sum(p.numel() for p in model.network.parameters()),
        "train_seconds": round(train_s, 1), "steps": history[-1].get("step"), "tta": args.tta,
        "test": {name: {r: round(v["dice"], 4) for r, v in c["regions"].items()}
                 for name, c in cases.items()},
        "test_hd95_mm": {name: {r: round(v["hd95"], 1) for r, v in c["regions"].items()}
                         for name, c in cases.items()},
        "predict_seconds": {name: c["predict_seconds"] for name, c in cases.items()},
        "peak_rss_mb": max(c["peak_rss_mb_after"] for c in cases.values()),
        "device": os.environ.get("DRUNET_DEVICE_NOTE", "cpu (2 cores, shared)"),
    }
    if args.full_size_check:
        summary["full_size_1mm"] = full_size_cost(model, args.brats)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
