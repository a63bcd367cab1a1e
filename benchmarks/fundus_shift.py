"""How a fundus vessel model holds up on photographs unlike DRIVE's (simulated camera shift).

No labelled fundus images from other sources are available here, so the DRIVE photographs are
changed the way other cameras and sites differ, and each prediction is scored against the
original 1st_manual labels inside the original FOV (a prediction made at another size is
resized back, linearly, before thresholding):

* resolution: the photograph resized by x0.6 / x1.5 / x2.5 (STARE is about x1.2 of DRIVE's FOV,
  CHASE_DB1 x1.8, HRF x5); each scored with the automatic FOV rescaling
  (``meta["preprocess"]["fov_diameter"]``, the default) and without it;
* intensity: gamma 0.6 / 1.6, half contrast, a left-to-right illumination ramp (x0.55 to x1.15),
  a colour cast (channel gains 1.15 / 0.85 / 0.6), Gaussian noise (sigma 4 and 8 grey levels);
* optics and storage: Gaussian blur (sigma 1.2 px), JPEG quality 50 and 20.

Every image goes through ``Model.predict`` as a user's RGB photograph would (FOV detection
included); F1 at the model's threshold and AUC, per-image mean.

    python -m benchmarks.fundus_shift --model retina-vessels --split test --json out/shift.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .common import TRAIN_IDS, VAL_IDS, add_data_option
from .shifts import FUNDUS_SHIFTS as SHIFTS
from .shifts import (
    RESIZED,
    FundusShift,
    add_shift_options,
    chosen_shifts,
    photo,
    shifted,
    write_json,
)


def without_rescale(model):
    """A copy of ``model`` that predicts at the image's own scale (FOV masking kept)."""
    plain = model.copy()
    pre = dict(plain.meta.get("preprocess") or {})
    pre.pop("fov_diameter", None)
    plain.meta["preprocess"] = pre
    return plain


def score(model, cases, shift: FundusShift) -> dict[str, float]:
    from skimage.transform import resize

    from napari_drunet.core.evaluation.metrics import confusion_metrics, roc_auc

    f1, auc = [], []
    for c in cases:
        prob = model.predict(shifted(photo(c), shift), is_rgb=True).probabilities[0]
        if prob.shape != c.label.shape:  # back to the original grid
            prob = resize(prob, c.label.shape, order=1, anti_aliasing=False)
        f1.append(confusion_metrics(prob >= model.threshold, c.label > 0, c.mask)["dice"])
        auc.append(roc_auc(prob, c.label > 0, c.mask))
    return {"f1": float(np.mean(f1)), "f1_std": float(np.std(f1)), "auc": float(np.mean(auc))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="retina-vessels", help="packaged name or checkpoint")
    add_data_option(ap, "--drive", "DRIVE")
    ap.add_argument("--split", choices=("test", "val", "train"), default="test",
                    help="test: the 20 test images; val: 37-40; train: 21-36")
    ap.add_argument("--fov-diameter", type=float, default=None,
                    help="training FOV diameter for a checkpoint that does not record it "
                    "(package_model.py records it: 539 px for DRIVE)")
    ap.add_argument("--adapt", type=int, default=0, metavar="N",
                    help="also score the model adapted without labels (drunet adapt: batch-norm "
                    "statistics) to N shifted DRIVE training images 21.. (with --split val/test)")
    add_shift_options(ap, SHIFTS)
    args = ap.parse_args(argv)
    if args.adapt and (args.split == "train" or not 0 < args.adapt <= len(TRAIN_IDS)):
        ap.error(f"--adapt takes 1-{len(TRAIN_IDS)} training images, with --split val or test")

    import tempfile

    import torch

    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import load_dataset

    from .datasets import make_drive_dataset

    torch.set_num_threads(args.threads)
    names = chosen_shifts(ap, args, SHIFTS)
    split, ids = {"test": ("test", None), "val": ("training", VAL_IDS),
                  "train": ("training", TRAIN_IDS)}[args.split]
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_drive_dataset(args.drive, Path(tmp) / "ds.json", split, subset=ids)
        cases, _ = load_dataset(ds, split=split, allow_outside=True)
        site = []
        if args.adapt:
            ds = make_drive_dataset(args.drive, Path(tmp) / "site.json", "training",
                                    subset=TRAIN_IDS[: args.adapt])
            site, _ = load_dataset(ds, split="training", allow_outside=True)
    cases = cases[: args.limit] if args.limit else cases
    model = load_model(args.model, device="cpu")
    if args.fov_diameter:
        model.meta["preprocess"] = {**(model.meta.get("preprocess") or {}),
                                    "fov_diameter": args.fov_diameter, "mask_outside_fov": True}
    plain = without_rescale(model)
    rows = []
    print(f"{args.model} on {len(cases)} DRIVE {args.split} images, threshold {model.threshold}")
    print(f"{'shift':<22} {'rescale':<8} {'F1':>7} {'sd':>6} {'AUC':>7} {'s':>6}")
    for name in names:
        for rescale, m in ((True, model), (False, plain)):
            if not rescale and name not in RESIZED:
                continue
            t0 = time.perf_counter()
            r = score(m, cases, SHIFTS[name])
            r.update(shift=name, rescale=rescale, seconds=time.perf_counter() - t0)
            rows.append(r)
            print(f"{name:<22} {'auto' if rescale else 'off':<8} {r['f1']:7.4f} "
                  f"{r['f1_std']:6.3f} {r['auc']:7.4f} {r['seconds']:6.1f}", flush=True)
        if site:  # the site's own (unlabelled) photographs adapt the model's statistics
            from napari_drunet.core.train.adapt import adapt_batchnorm

            t0 = time.perf_counter()
            rgb = [shifted(photo(c), SHIFTS[name]) for c in site]
            r = score(adapt_batchnorm(model, rgb, is_rgb=True), cases, SHIFTS[name])
            r.update(shift=name, rescale=True, adapted=len(site),
                     seconds=time.perf_counter() - t0)
            rows.append(r)
            print(f"{name:<22} {'adapted':<8} {r['f1']:7.4f} {r['f1_std']:6.3f} "
                  f"{r['auc']:7.4f} {r['seconds']:6.1f}", flush=True)
    write_json(args.json, {"model": args.model, "split": args.split, "images": len(cases),
                           "threshold": model.threshold, "adapt_images": len(site),
                           "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
