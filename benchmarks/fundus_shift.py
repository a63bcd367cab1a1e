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

    python benchmarks/fundus_shift.py --model retina-vessels --split test --json out/shift.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from drive_accuracy import TRAIN_IDS, VAL_IDS  # noqa: E402

Shift = Callable[[np.ndarray], np.ndarray]  # RGB (H, W, 3) float32 0-255 -> RGB (h, w, 3)


def _resize(factor: float) -> Shift:
    def f(x):
        from skimage.transform import resize

        shape = tuple(int(round(s * factor)) for s in x.shape[:2]) + (x.shape[-1],)
        return resize(x, shape, order=1, preserve_range=True, anti_aliasing=factor < 1)
    return f


def _gamma(g: float) -> Shift:
    return lambda x: 255.0 * (x / 255.0) ** g


def _contrast(x: np.ndarray) -> np.ndarray:
    mean = x.reshape(-1, x.shape[-1]).mean(0)
    return mean + 0.5 * (x - mean)


def _ramp(x: np.ndarray) -> np.ndarray:
    return x * np.linspace(0.55, 1.15, x.shape[1], dtype=np.float32)[None, :, None]


def _noise(sigma: float) -> Shift:
    return lambda x: x + np.random.default_rng(0).normal(0.0, sigma, x.shape)


def _blur(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(1.2, 1.2, 0))


def _jpeg(quality: int) -> Shift:
    def f(x):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8)).save(
            buf, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)
    return f


SHIFTS: dict[str, Shift] = {
    "none": lambda x: x,
    "size x0.6": _resize(0.6),
    "size x1.5": _resize(1.5),
    "size x2.5": _resize(2.5),
    "gamma 0.6": _gamma(0.6),
    "gamma 1.6": _gamma(1.6),
    "half contrast": _contrast,
    "illumination ramp": _ramp,
    "colour cast": lambda x: x * np.array([1.15, 0.85, 0.6], np.float32),
    "noise sigma 4": _noise(4.0),
    "noise sigma 8": _noise(8.0),
    "blur sigma 1.2": _blur,
    "jpeg q50": _jpeg(50),
    "jpeg q20": _jpeg(20),
}
#: Shifts also scored without the automatic FOV rescaling.
RESIZED = ("size x0.6", "size x1.5", "size x2.5")


def photo(case) -> np.ndarray:
    """The RGB photograph ``(H, W, 3)`` of a DRIVE case (its image is channel-first)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(case.image.array), 0, -1))


def shifted(img: np.ndarray, shift: Shift) -> np.ndarray:
    """``shift`` applied to an RGB uint8 photograph ``(H, W, 3)``, rounded back to uint8."""
    return np.clip(np.round(shift(img.astype(np.float32))), 0, 255).astype(np.uint8)


def add_shift_options(ap: argparse.ArgumentParser, shifts: dict) -> None:
    """Options shared with ``mri_shift.py``: ``--limit``, ``--shifts``, ``--threads``, ``--json``."""
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--shifts", default=None, help="comma-separated subset of: "
                    + ", ".join(shifts))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the results here")


def chosen_shifts(ap: argparse.ArgumentParser, args: argparse.Namespace, shifts: dict) -> list:
    """The shift names asked for with ``--shifts`` (all by default)."""
    names = list(shifts) if args.shifts is None else [s.strip() for s in args.shifts.split(",")]
    unknown = [n for n in names if n not in shifts]
    if unknown:
        ap.error(f"unknown shift(s) {unknown}; choose from {list(shifts)}")
    return names


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1))


def without_rescale(model):
    """A copy of ``model`` that predicts at the image's own scale (FOV masking kept)."""
    plain = model.copy()
    pre = dict(plain.meta.get("preprocess") or {})
    pre.pop("fov_diameter", None)
    plain.meta["preprocess"] = pre
    return plain


def score(model, cases, shift: Shift) -> dict[str, float]:
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
    ap.add_argument("--drive", default=str(REPO.parent / "shared" / "data" / "DRIVE"))
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
    from napari_drunet.core.train.dataset import load_dataset, make_drive_dataset

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
