"""How a hippocampus MRI model holds up on scans unlike the MSD crops (simulated scanner shift).

No labelled hippocampus MRI from other sources is available here, so the MSD volumes are
changed the way other scanners and protocols differ, and the model is scored (Dice per label)
against the original labels (a prediction made on another grid is resized back, linearly,
before the argmax):

* acquisition: Gaussian noise (sigma 5 % of the 99th intensity percentile), a smooth bias field
  (x0.7 to x1.3 across the crop), blur (sigma 1 voxel), 2 mm slices along the first axis
  (pairs of slices averaged, then interpolated back), gamma 0.7 / 1.5, other intensity units
  (x3 + 100);
* resolution: the volume resampled to 0.67 mm voxels (x1.5 the voxels) with that spacing
  recorded, scored with the automatic resampling to the model's spacing (the default) and
  without it;
* storage order: the volume stored the way a sagittal (voxel axes "PIL") or coronal ("RSA")
  acquisition is, its NIfTI header telling so (the MSD crops are "RAS"), scored with the
  reorientation by header (the default), without a header (the axis-order search) and as
  stored (no reorientation); "none" without a header checks that the search keeps the MSD
  order.

Every volume carries its NIfTI header (affine) unless a row says otherwise.

    python -m benchmarks.mri_shift --model hippocampus --split val --json out/mri_shift.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import MSD_HIPPOCAMPUS, add_data_option, split_msd
from .shifts import MRI_SHIFTS as SHIFTS
from .shifts import REORDERED, RESAMPLED, MriShift, add_shift_options, chosen_shifts, write_json

#: how each shift is scored: (row label, resample, header, axis_order)
MODES = {"resample": ("auto", True, True, "auto"), "no resample": ("off", False, True, "auto"),
         "header": ("by header", True, True, "auto"), "search": ("no header: search", True,
                                                                 False, "auto"),
         "stored": ("as stored", True, True, "keep")}


def modes_of(name: str) -> list[str]:
    if name in REORDERED:
        return ["header", "search", "stored"]
    if name == "none":
        return ["resample", "search"]
    return ["resample", "no resample"] if name in RESAMPLED else ["resample"]


def reordered_affine(affine: np.ndarray, order: tuple, flips: tuple, shape: tuple) -> np.ndarray:
    """Affine (nibabel voxel order) of a ``(Z, Y, X)`` array transformed like
    ``AxisOrder(order, flips).apply`` (``shape``: the new spatial shape)."""
    def old_index(m: np.ndarray) -> np.ndarray:  # new nibabel index -> old nibabel index
        n, o = m[::-1], np.empty(3)
        for a in range(3):
            o[order[a]] = shape[a] - 1 - n[a] if a in flips else n[a]
        return o[::-1]

    origin = old_index(np.zeros(3))
    cols = [old_index(np.eye(3)[j]) - origin for j in range(3)]
    to_old = np.eye(4)
    to_old[:3, :3], to_old[:3, 3] = np.stack(cols, axis=1), origin
    return np.asarray(affine, np.float64) @ to_old


def shifted_image(c, shift: MriShift, resample: bool = True, header: bool = True,
                  reorder: tuple | None = None) -> tuple:
    """``(ImageData, AxisOrder)``: case ``c``'s volume shifted, stored in the ``reorder`` axis
    order (the AxisOrder restores the original), with spacing and header as asked."""
    from napari_drunet.core.image.io import ImageData
    from napari_drunet.core.infer.orientation import AxisOrder

    spacing = tuple(c.image.spacing or (1.0,) * 3)
    vol, sp = shift(np.asarray(c.image.array[0], np.float32), spacing)
    affine = c.image.affine
    stored = AxisOrder(*reorder) if reorder else AxisOrder()
    if reorder:
        vol = stored.apply(vol[None])[0]
        sp = tuple(sp[a] for a in stored.order)
        affine = reordered_affine(affine, *reorder, vol.shape)
    return ImageData(vol[None], spacing=sp if resample else None,
                     affine=affine if header else None), stored


def score(model, cases, shift: MriShift, resample: bool = True, header: bool = True,
          axis_order: str = "auto", reorder: tuple | None = None) -> dict[str, float]:
    from skimage.transform import resize

    from napari_drunet.core.evaluation.metrics import confusion_metrics

    labels = range(1, model.out_channels)
    dice: dict[int, list[float]] = {k: [] for k in labels}
    for c in cases:
        image, stored = shifted_image(c, shift, resample, header, reorder)
        prob = stored.restore(model.predict(image, axis_order=axis_order).probabilities)
        if prob.shape[1:] != c.label.shape:  # back to the original grid
            prob = resize(prob, prob.shape[:1] + c.label.shape, order=1, anti_aliasing=False)
        mask = np.argmax(prob, axis=0)
        for k in labels:
            dice[k].append(confusion_metrics(mask == k, c.label == k)["dice"])
    out = {f"dice_{k}": float(np.mean(v)) for k, v in dice.items()}
    out["dice_mean"] = float(np.mean(list(out.values())))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hippocampus", help="packaged name or checkpoint")
    add_data_option(ap, "--root", MSD_HIPPOCAMPUS)
    ap.add_argument("--split", choices=("val", "test"), default="val",
                    help="val: the 26 validation volumes; test: the 59 test volumes")
    ap.add_argument("--spacing", default=None,
                    help="training voxel spacing (mm, e.g. 1,1,1) for a checkpoint that does not "
                    "record it (package_model.py records 1,1,1 for the hippocampus)")
    ap.add_argument("--adapt", type=int, default=0, metavar="N",
                    help="also score the model adapted without labels (drunet adapt: batch-norm "
                    "statistics) to the first N shifted MSD training volumes")
    add_shift_options(ap, SHIFTS)
    args = ap.parse_args(argv)

    import torch

    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import load_dataset

    torch.set_num_threads(args.threads)
    names = chosen_shifts(ap, args, SHIFTS)
    with tempfile.TemporaryDirectory() as tmp:
        split_msd(args.root, Path(tmp))
        json_path, split = ((Path(tmp) / "val.json", "training") if args.split == "val"
                            else (Path(tmp) / "all.json", "test"))
        cases, _ = load_dataset(json_path, split=split, allow_outside=True)
        site = []
        if args.adapt:
            site, _ = load_dataset(Path(tmp) / "train.json", split="training",
                                   allow_outside=True)
            site = site[: args.adapt]
    cases = cases[: args.limit] if args.limit else cases
    model = load_model(args.model, device="cpu")
    if args.spacing:
        model.meta["preprocess"] = {**(model.meta.get("preprocess") or {}),
                                    "spacing": [float(v) for v in args.spacing.split(",")]}
    rows = []
    print(f"{args.model} on {len(cases)} hippocampus {args.split} volumes")
    print(f"{'shift':<17} {'handling':<17} {'anterior':>9} {'posterior':>9} {'mean':>7} "
          f"{'s':>6}")
    for name in names:
        for key in modes_of(name):
            label, resample, header, axis_order = MODES[key]
            t0 = time.perf_counter()
            r = score(model, cases, SHIFTS[name], resample, header, axis_order,
                      REORDERED.get(name))
            r.update(shift=name, resample=resample, handling=label,
                     seconds=time.perf_counter() - t0)
            rows.append(r)
            print(f"{name:<17} {label:<17} {r.get('dice_1', 0):9.4f} {r.get('dice_2', 0):9.4f} "
                  f"{r['dice_mean']:7.4f} {r['seconds']:6.1f}", flush=True)
        if site:  # the site's own (unlabelled) volumes adapt the model's statistics
            from napari_drunet.core.train.adapt import adapt_batchnorm

            label, resample, header, axis_order = MODES[modes_of(name)[0]]
            t0 = time.perf_counter()
            vols = [shifted_image(c, SHIFTS[name], resample, header, REORDERED.get(name))[0]
                    for c in site]
            adapted = adapt_batchnorm(model, vols, axis_order=axis_order)
            r = score(adapted, cases, SHIFTS[name], resample, header, axis_order,
                      REORDERED.get(name))
            r.update(shift=name, resample=resample, handling=f"{label}, adapted",
                     adapted=len(site), seconds=time.perf_counter() - t0)
            rows.append(r)
            print(f"{name:<17} {'adapted':<17} {r.get('dice_1', 0):9.4f} "
                  f"{r.get('dice_2', 0):9.4f} {r['dice_mean']:7.4f} {r['seconds']:6.1f}",
                  flush=True)
    write_json(args.json, {"model": args.model, "split": args.split, "volumes": len(cases),
                           "adapt_volumes": len(site), "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
