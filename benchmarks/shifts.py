"""Simulated site shifts of the benchmarks: camera / processing changes of a fundus
photograph (``fundus_shift``, ``label_efficiency``) and scanner / protocol changes of an MRI
volume (``mri_shift``, ``mri_adaptation``), with the options that choose them.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------- fundus photographs
#: RGB (H, W, 3) float32 0-255 -> RGB (h, w, 3)
FundusShift = Callable[[np.ndarray], np.ndarray]


def _photo_resize(factor: float) -> FundusShift:
    def f(x):
        from skimage.transform import resize

        shape = tuple(int(round(s * factor)) for s in x.shape[:2]) + (x.shape[-1],)
        return resize(x, shape, order=1, preserve_range=True, anti_aliasing=factor < 1)
    return f


def _photo_gamma(g: float) -> FundusShift:
    return lambda x: 255.0 * (x / 255.0) ** g


def _photo_contrast(x: np.ndarray) -> np.ndarray:
    mean = x.reshape(-1, x.shape[-1]).mean(0)
    return mean + 0.5 * (x - mean)


def _photo_ramp(x: np.ndarray) -> np.ndarray:
    return x * np.linspace(0.55, 1.15, x.shape[1], dtype=np.float32)[None, :, None]


def _photo_noise(sigma: float) -> FundusShift:
    return lambda x: x + np.random.default_rng(0).normal(0.0, sigma, x.shape)


def _photo_blur(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(1.2, 1.2, 0))


def _photo_jpeg(quality: int) -> FundusShift:
    def f(x):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8)).save(
            buf, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)
    return f


FUNDUS_SHIFTS: dict[str, FundusShift] = {
    "none": lambda x: x,
    "size x0.6": _photo_resize(0.6),
    "size x1.5": _photo_resize(1.5),
    "size x2.5": _photo_resize(2.5),
    "gamma 0.6": _photo_gamma(0.6),
    "gamma 1.6": _photo_gamma(1.6),
    "half contrast": _photo_contrast,
    "illumination ramp": _photo_ramp,
    "colour cast": lambda x: x * np.array([1.15, 0.85, 0.6], np.float32),
    "noise sigma 4": _photo_noise(4.0),
    "noise sigma 8": _photo_noise(8.0),
    "blur sigma 1.2": _photo_blur,
    "jpeg q50": _photo_jpeg(50),
    "jpeg q20": _photo_jpeg(20),
}
#: Fundus shifts also scored without the automatic FOV rescaling.
RESIZED = ("size x0.6", "size x1.5", "size x2.5")


def photo(case) -> np.ndarray:
    """The RGB photograph ``(H, W, 3)`` of a DRIVE case (its image is channel-first)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(case.image.array), 0, -1))


def shifted(img: np.ndarray, shift: FundusShift) -> np.ndarray:
    """``shift`` applied to an RGB uint8 photograph ``(H, W, 3)``, rounded back to uint8."""
    return np.clip(np.round(shift(img.astype(np.float32))), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- MRI volumes
#: (volume (Z, Y, X) float32, spacing) -> the same, shifted
MriShift = Callable[[np.ndarray, tuple], tuple[np.ndarray, tuple]]


def _volume_values(fn: Callable[[np.ndarray], np.ndarray]) -> MriShift:
    return lambda vol, sp: (fn(vol.astype(np.float32)).astype(np.float32), sp)


def _volume_noise(v: np.ndarray) -> np.ndarray:
    sigma = 0.05 * float(np.percentile(v, 99))
    return v + np.random.default_rng(0).normal(0.0, sigma, v.shape).astype(np.float32)


def _volume_bias(v: np.ndarray) -> np.ndarray:
    axes = np.meshgrid(*[np.linspace(-1, 1, s) for s in v.shape], indexing="ij")
    field = 1.0 + 0.3 * (0.6 * axes[0] + 0.8 * axes[1]) * (0.7 + 0.3 * axes[2])
    return v * np.clip(field, 0.7, 1.3)


def _volume_blur(v: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(v, 1.0)


def _volume_thick(v: np.ndarray) -> np.ndarray:
    from scipy.ndimage import zoom

    z = v.shape[0] // 2 * 2
    coarse = 0.5 * (v[0:z:2] + v[1:z:2])
    out = zoom(coarse, (z / coarse.shape[0], 1, 1), order=1)
    return np.concatenate([out, v[z:]], axis=0) if z < v.shape[0] else out


def _volume_gamma(g: float) -> Callable[[np.ndarray], np.ndarray]:
    def f(v: np.ndarray) -> np.ndarray:
        lo, hi = float(v.min()), float(v.max())
        return lo + (hi - lo) * ((v - lo) / max(hi - lo, 1e-6)) ** g
    return f


def _volume_finer(vol: np.ndarray, sp: tuple) -> tuple[np.ndarray, tuple]:
    from skimage.transform import resize

    shape = tuple(int(round(s * 1.5)) for s in vol.shape)
    vol = resize(vol, shape, order=1, preserve_range=True).astype(np.float32)
    return vol, tuple(s / 1.5 for s in sp)


MRI_SHIFTS: dict[str, MriShift] = {
    "none": lambda vol, sp: (vol, sp),
    "noise 5%": _volume_values(_volume_noise),
    "bias field": _volume_values(_volume_bias),
    "blur sigma 1": _volume_values(_volume_blur),
    "2 mm slices": _volume_values(_volume_thick),
    "gamma 0.7": _volume_values(_volume_gamma(0.7)),
    "gamma 1.5": _volume_values(_volume_gamma(1.5)),
    "units x3+100": _volume_values(lambda v: 3.0 * v + 100.0),
    "0.67 mm voxels": _volume_finer,
}
#: MRI shifts also scored without resampling to the model's spacing.
RESAMPLED = ("0.67 mm voxels",)
#: storage orders: (axis order, flipped axes) of the (Z, Y, X) array, as in
#: :class:`napari_drunet.core.infer.orientation.AxisOrder`
REORDERED = {"sagittal storage": ((2, 0, 1), (0, 1, 2)), "coronal storage": ((1, 0, 2), ())}
for _name in REORDERED:
    MRI_SHIFTS[_name] = MRI_SHIFTS["none"]


# -------------------------------------------------------------------------------- options
def add_shift_options(ap: argparse.ArgumentParser, shifts: dict) -> None:
    """``--limit``, ``--shifts`` (a subset of ``shifts``), ``--threads``, ``--json``."""
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    names = ", ".join(shifts).replace("%", "%%")  # argparse formats help strings with %
    ap.add_argument("--shifts", default=None, help=f"comma-separated subset of: {names}")
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
