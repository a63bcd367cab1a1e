"""How a fundus vessel model holds up on photographs unlike DRIVE's (simulated camera shift).

No labelled fundus images from other sources are available here, so the DRIVE images are
changed the way other cameras and sites differ, and the model is scored against the equally
transformed 1st_manual labels inside the (transformed) FOV:

* resolution: the photograph (and labels, FOV) resized by x0.6 / x1.5 / x2.5 (STARE is about
  x1.2 of DRIVE's FOV, CHASE_DB1 x1.8, HRF x5); each scored with the automatic FOV rescaling
  (``meta["preprocess"]["fov_diameter"]``, the default) and without it;
* intensity: gamma 0.6 / 1.6, half contrast, a left-to-right illumination ramp (x0.55 to x1.15),
  a colour cast (channel gains 1.15 / 0.85 / 0.6), Gaussian noise (sigma 8 grey levels);
* optics and storage: Gaussian blur (sigma 1.2 px), JPEG quality 20.

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

Shift = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _resize(factor: float) -> Shift:
    def f(img, lab, fov):
        from skimage.transform import resize

        shape = tuple(int(round(s * factor)) for s in lab.shape)
        img = resize(img, shape + (img.shape[-1],), order=1, preserve_range=True,
                     anti_aliasing=factor < 1)
        lab = resize(lab.astype(np.float32), shape, order=1) >= 0.5
        fov = resize(fov.astype(np.float32), shape, order=1) >= 0.5
        return np.clip(np.round(img), 0, 255).astype(np.uint8), lab, fov
    return f


def _pixels(fn: Callable[[np.ndarray], np.ndarray]) -> Shift:
    def f(img, lab, fov):
        out = fn(img.astype(np.float32))
        return np.clip(np.round(out), 0, 255).astype(np.uint8), lab, fov
    return f


def _gamma(g: float) -> Shift:
    return _pixels(lambda x: 255.0 * (x / 255.0) ** g)


def _contrast(x: np.ndarray) -> np.ndarray:
    mean = x.reshape(-1, x.shape[-1]).mean(0)
    return mean + 0.5 * (x - mean)


def _ramp(x: np.ndarray) -> np.ndarray:
    return x * np.linspace(0.55, 1.15, x.shape[1], dtype=np.float32)[None, :, None]


def _noise(x: np.ndarray) -> np.ndarray:
    return x + np.random.default_rng(0).normal(0.0, 8.0, x.shape)


def _blur(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(1.2, 1.2, 0))


def _jpeg(img, lab, fov):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=20)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), lab, fov


SHIFTS: dict[str, Shift] = {
    "none": lambda img, lab, fov: (img, lab, fov),
    "size x0.6": _resize(0.6),
    "size x1.5": _resize(1.5),
    "size x2.5": _resize(2.5),
    "gamma 0.6": _gamma(0.6),
    "gamma 1.6": _gamma(1.6),
    "half contrast": _pixels(_contrast),
    "illumination ramp": _pixels(_ramp),
    "colour cast": _pixels(lambda x: x * np.array([1.15, 0.85, 0.6], np.float32)),
    "noise sigma 8": _pixels(_noise),
    "blur sigma 1.2": _pixels(_blur),
    "jpeg q20": _jpeg,
}
#: Shifts also scored without the automatic FOV rescaling.
RESIZED = ("size x0.6", "size x1.5", "size x2.5")


def without_rescale(model):
    """A copy of ``model`` that predicts at the image's own scale (FOV masking kept)."""
    plain = model.copy()
    pre = dict(plain.meta.get("preprocess") or {})
    pre.pop("fov_diameter", None)
    plain.meta["preprocess"] = pre
    return plain


def score(model, cases, shift: Shift) -> dict[str, float]:
    from napari_drunet.core.metrics import confusion_metrics, roc_auc

    f1, auc = [], []
    for c in cases:
        img = np.ascontiguousarray(np.moveaxis(np.asarray(c.image.array), 0, -1))
        img, lab, fov = shift(img, c.label > 0, c.mask.astype(bool))
        pred = model.predict(img, is_rgb=True)
        f1.append(confusion_metrics(pred.mask > 0, lab, fov)["dice"])
        auc.append(roc_auc(pred.probabilities[0], lab, fov))
    return {"f1": float(np.mean(f1)), "f1_std": float(np.std(f1)), "auc": float(np.mean(auc))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="retina-vessels", help="packaged name or checkpoint")
    ap.add_argument("--drive", default=str(REPO.parent / "shared" / "data" / "DRIVE"))
    ap.add_argument("--split", choices=("test", "val", "train"), default="test",
                    help="test: the 20 test images; val: 37-40; train: 21-36")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--shifts", default=None, help="comma-separated subset of: "
                    + ", ".join(SHIFTS))
    ap.add_argument("--fov-diameter", type=float, default=None,
                    help="training FOV diameter for a checkpoint that does not record it "
                    "(package_model.py records it: 539 px for DRIVE)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    import tempfile

    import torch

    from napari_drunet.core.dataset import load_dataset, make_drive_dataset
    from napari_drunet.core.model import load_model

    torch.set_num_threads(args.threads)
    names = list(SHIFTS) if args.shifts is None else [s.strip() for s in args.shifts.split(",")]
    unknown = [n for n in names if n not in SHIFTS]
    if unknown:
        ap.error(f"unknown shift(s) {unknown}; choose from {list(SHIFTS)}")
    split, ids = {"test": ("test", None), "val": ("training", VAL_IDS),
                  "train": ("training", TRAIN_IDS)}[args.split]
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_drive_dataset(args.drive, Path(tmp) / "ds.json", split, subset=ids)
        cases, _ = load_dataset(ds, split=split, allow_outside=True)
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
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"model": args.model, "split": args.split, "images": len(cases),
             "threshold": model.threshold, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
