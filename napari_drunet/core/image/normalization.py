"""Intensity normalization of channel-first images, stored as a plain dict in checkpoints.

A *spec* is ``{"mode": ..., "lower": ..., "upper": ..., "mask_nonzero": ...}``:

* ``percentile_zscore`` (default): per channel, clip to the ``lower``/``upper`` percentiles
  (default 0.5 / 99.5), then subtract the mean and divide by the standard deviation of the
  clipped values.
* ``zscore``: per channel mean/std, no clipping.
* ``minmax``: per channel, map [min, max] to [0, 1].
* ``none``: cast to float32 only.
* ``fundus_local``: colour fundus photographs (2D). Inside the field of view (found as in
  :func:`~napari_drunet.core.image.rescale.fov_mask`), each channel minus its local mean, divided by
  its local standard deviation, both Gaussian-weighted over the FOV only (normalised
  convolution, so the dark border does not leak in) with ``sigma`` = that fraction of the FOV
  diameter (default 0.05); clipped to +-``clip`` (default 4); ``-2 * clip`` outside the FOV
  (below every value inside, so the FOV is found again on the normalised image when it is
  rescaled, as on a raw photograph, and it reads as the dark border it is). Illumination,
  contrast and colour balance of the camera are removed; vessel contrast stays. The scale is
  relative to the FOV, so the same photograph at another resolution gives the same input.

With ``mask_nonzero=True`` (MRI convention, as nnU-Net) statistics are computed over the voxels
that are nonzero in any channel, and voxels outside that region are set to 0. A constant
channel becomes zeros (no division by zero). NaN/Inf are replaced by finite values first
(:func:`sanitize`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError

MODES: tuple[str, ...] = ("percentile_zscore", "zscore", "minmax", "none", "fundus_local")
MAX_STAT_SAMPLES = 10_000_000  # voxels used for percentiles / mean / std (bounded memory)
_KEYS = {"mode", "lower", "upper", "mask_nonzero", "sigma", "clip"}
#: ``fundus_local`` options and their defaults (only that mode has them)
LOCAL_DEFAULTS: dict[str, float] = {"sigma": 0.05, "clip": 4.0}
_EPS = 1e-8


def default_spec(modality: str | None = None) -> dict[str, Any]:
    """Default normalization for a modality (``None``, ``'mri'``, ``'ct'``, ``'photo'``/``'fundus'``).

    MRI uses statistics over the nonzero (head) region; the others use the whole image.
    """
    key = (modality or "").lower()
    if key not in ("", "mri", "ct", "photo", "fundus", "rgb", "microscopy"):
        raise InputError(f"unknown modality {modality!r}; use mri, ct, photo, fundus or microscopy")
    spec = {"mode": "percentile_zscore", "lower": 0.5, "upper": 99.5, "mask_nonzero": False}
    if key == "mri":
        spec["mask_nonzero"] = True
    return spec


def validate_spec(spec: dict[str, Any] | None) -> dict[str, Any]:
    """Return a complete copy of ``spec`` (defaults filled in) or raise :class:`InputError`."""
    if spec is None:
        return default_spec()
    if not isinstance(spec, dict):
        raise InputError(f"normalization must be a dict, got {type(spec).__name__}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise InputError(f"unknown normalization option(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    out = default_spec()
    out.update(spec)
    if out["mode"] not in MODES:
        raise InputError(f"unknown normalization mode {out['mode']!r}; use one of {', '.join(MODES)}")
    try:
        lo, hi = float(out["lower"]), float(out["upper"])
    except (TypeError, ValueError):
        raise InputError("normalization percentiles must be numbers") from None
    if not (0.0 <= lo < hi <= 100.0):
        raise InputError(f"normalization percentiles need 0 <= lower < upper <= 100, got {lo}, {hi}")
    out["lower"], out["upper"] = lo, hi
    out["mask_nonzero"] = bool(out["mask_nonzero"])
    if out["mode"] != "fundus_local":
        for key in LOCAL_DEFAULTS:
            out.pop(key, None)
        return out
    for key, default in LOCAL_DEFAULTS.items():
        try:
            out[key] = float(out.get(key, default))
        except (TypeError, ValueError):
            raise InputError(f"normalization {key} must be a number") from None
    if not (0.0 < out["sigma"] <= 0.5 and out["clip"] > 0.0):
        raise InputError("fundus_local normalization needs 0 < sigma <= 0.5 (fraction of the "
                         f"FOV diameter) and clip > 0, got {out['sigma']}, {out['clip']}")
    return out


def check_finite(image: np.ndarray) -> int:
    """Number of NaN/Inf values in ``image`` (0 for integer/bool arrays)."""
    a = np.asarray(image)
    if not np.issubdtype(a.dtype, np.floating):
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def sanitize(image: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 copy of a ``(C, *spatial)`` image with NaN/Inf replaced, per channel.

    NaN and -Inf become the channel's smallest finite value, +Inf its largest; a channel with no
    finite value becomes zeros. Returns ``(array, number_replaced)``.
    """
    a = np.asarray(image)
    if not np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32), 0
    bad = check_finite(a)
    if bad:
        a = a.copy()
        for c in range(a.shape[0]):
            ch = a[c]
            fin = np.isfinite(ch)
            if fin.all():
                continue
            if not fin.any():
                ch[...] = 0.0
                continue
            lo, hi = ch[fin].min(), ch[fin].max()
            ch[np.isnan(ch) | (ch == -np.inf)] = lo
            ch[ch == np.inf] = hi
    if a.dtype.itemsize > 4:  # float64 beyond float32's range would become Inf
        f32 = np.finfo(np.float32)
        a = np.clip(a, f32.min, f32.max)
    return a.astype(np.float32), bad


def normalize(image: np.ndarray, spec: dict[str, Any] | None = None,
              fov: np.ndarray | None = None) -> np.ndarray:
    """Normalize a ``(C, *spatial)`` image of any dtype to float32 following ``spec``.

    Parameters
    ----------
    image : np.ndarray
        Channel-first image (bool, integer or float).
    spec : dict, optional
        See the module docstring; ``None`` means :func:`default_spec`.
    fov : np.ndarray, optional
        ``fundus_local`` only: the photograph's FOV mask when the caller has found it already
        (:func:`~.rescale.fov_mask` of this image), so that it is not searched twice.

    Returns
    -------
    np.ndarray
        float32 array of the same shape, finite everywhere.
    """
    spec = validate_spec(spec)
    a = np.asarray(image)
    if a.ndim < 2:
        raise InputError(f"normalize expects a (C, *spatial) image, got shape {a.shape}")
    out, _ = sanitize(a.astype(np.uint8) if a.dtype == bool else a)
    if spec["mode"] == "none":
        return out
    if spec["mode"] == "fundus_local":
        return _local_contrast(out, spec, fov)
    return _apply(out, spec, _fit(out, spec))


def fit_normalization(sample: np.ndarray, spec: dict[str, Any] | None = None) -> list[list[float]]:
    """Per-channel ``[clip_low, clip_high, shift, scale]`` of ``spec`` measured on ``sample``
    ``(C, ...)`` (e.g. a subsample of a volume too large to load), for
    :func:`apply_normalization`; :func:`normalize` is both steps on one image."""
    spec = validate_spec(spec)
    if spec["mode"] == "fundus_local":  # local statistics need the whole photograph
        raise InputError("fundus_local normalization works on whole photographs, not on a "
                         "subsample or tile by tile")
    a = np.asarray(sample)
    out, _ = sanitize(a.astype(np.uint8) if a.dtype == bool else a)
    return _fit(out, spec)


def apply_normalization(image: np.ndarray, spec: dict[str, Any] | None,
                        params: list[list[float]]) -> np.ndarray:
    """Normalize ``image`` ``(C, *spatial)`` (e.g. one tile) with :func:`fit_normalization`'s
    parameters: float32, finite everywhere."""
    spec = validate_spec(spec)
    a = np.asarray(image)
    out, _ = sanitize(a.astype(np.uint8) if a.dtype == bool else a)
    return out if spec["mode"] == "none" else _apply(out, spec, params)


def _region(out: np.ndarray, spec: dict[str, Any]) -> np.ndarray | None:
    region = np.any(out != 0, axis=0) if spec["mask_nonzero"] else None
    return None if region is not None and not region.any() else region


def _fit(out: np.ndarray, spec: dict[str, Any]) -> list[list[float]]:
    if spec["mode"] == "none":
        return [[-np.inf, np.inf, 0.0, 1.0] for _ in range(out.shape[0])]
    region = _region(out, spec)
    params = []
    for c in range(out.shape[0]):
        ch = out[c]
        vals = ch[region] if region is not None else ch.reshape(-1)
        if vals.size > MAX_STAT_SAMPLES:  # statistics from an even, deterministic subsample
            vals = vals[:: -(-vals.size // MAX_STAT_SAMPLES)]
        vals = vals.astype(np.float64)  # float64 statistics: no overflow near float32's limits
        lo, hi = -np.inf, np.inf
        if spec["mode"] == "percentile_zscore":
            lo, hi = (float(v) for v in np.percentile(vals, [spec["lower"], spec["upper"]]))
            np.clip(vals, lo, hi, out=vals)
        if spec["mode"] == "minmax":
            vmin, vmax = float(vals.min()), float(vals.max())
            shift = vmin
            scale = (vmax - vmin) if vmax - vmin > _EPS * max(1.0, abs(vmin), abs(vmax)) else 0.0
        else:
            shift, scale = float(vals.mean()), float(vals.std())
            scale = scale if scale > _EPS * max(1.0, abs(shift)) else 0.0
        params.append([lo, hi, shift, scale])
    return params


def _apply(out: np.ndarray, spec: dict[str, Any], params: list[list[float]]) -> np.ndarray:
    """Normalise the float32 working copy ``out`` in place (see :func:`normalize`)."""
    region = _region(out, spec)
    for c, (lo, hi, shift, scale) in enumerate(params):
        ch = out[c]  # float32 view of the working copy: normalised in place
        if np.isfinite(lo) or np.isfinite(hi):
            np.clip(ch, lo, hi, out=ch)
        if scale == 0.0:
            ch[...] = 0.0
        elif np.abs(ch).max(initial=0.0) > 1e30:  # extreme values: float64 for this channel
            ch[...] = (ch.astype(np.float64) - shift) / scale
        else:
            ch -= np.float32(shift)
            ch *= np.float32(1.0 / scale)
        if region is not None:
            ch[~region] = 0.0
    return out


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2D map; for a wide ``sigma`` computed on a grid decimated by about
    ``sigma / 4`` (block means) and interpolated back, 10-20x faster and within a few % of
    the full-resolution blur (the result is smooth at that scale anyway)."""
    from scipy.ndimage import gaussian_filter

    from .rescale import resize_linear

    step = int(sigma // 4)
    if step < 2:
        return gaussian_filter(x, sigma, truncate=3.0)
    h, w = x.shape
    ph, pw = -h % step, -w % step
    padded = np.pad(x, ((0, ph), (0, pw)), mode="edge")
    small = padded.reshape(padded.shape[0] // step, step, -1, step).mean(axis=(1, 3))
    small = gaussian_filter(small, sigma / step, truncate=3.0)
    return resize_linear(small[None], (small.shape[0] * step, small.shape[1] * step))[0, :h, :w]


def _local_contrast(out: np.ndarray, spec: dict[str, Any],
                    fov: np.ndarray | None = None) -> np.ndarray:
    """``fundus_local`` (see the module docstring) of the float32 working copy ``out``."""
    from .rescale import fov_diameter, fov_mask

    if out.ndim != 3:
        raise InputError(f"fundus_local normalization is for 2D photographs (C, H, W), got "
                         f"shape {out.shape}")
    fov = fov_mask(out) if fov is None else fov
    sigma = spec["sigma"] * (fov_diameter(fov) or float(max(out.shape[1:])))
    # normalised convolution: Gaussian averages over FOV pixels only
    weight = np.maximum(_smooth(fov.astype(np.float32), sigma), 1e-3)
    for c in range(out.shape[0]):
        ch = out[c]
        mean = _smooth(np.where(fov, ch, 0.0).astype(np.float32), sigma) / weight
        dev = np.where(fov, ch - mean, 0.0).astype(np.float32)
        std = np.sqrt(np.maximum(_smooth(dev * dev, sigma), 0.0) / weight)
        # a floor keeps flat, noisy areas (a saturated or nearly black channel) from being
        # blown up to full contrast
        floor = max(0.5 * float(np.median(std[fov])) if fov.any() else 0.0, _EPS)
        ch[...] = np.clip(dev / np.maximum(std, floor), -spec["clip"], spec["clip"])
        ch[~fov] = -2.0 * spec["clip"]
    return out
