"""Data augmentation of training patches.

:class:`Augmenter` draws random flips, 90-degree rotations, intensity changes and (optionally)
image-quality degradation (blur, noise, JPEG) and applies them to a cropped patch. Rotations by
any angle and zoom need pixels from outside the patch, so the sampler (:mod:`.sampling`) asks
:meth:`Augmenter.draw_matrix` for a map, crops a window large enough for it and resamples that
window with :func:`warp_window` (linear for images, nearest for labels and loss weights; pixels
mapped from outside the window get loss weight 0).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["Augmenter", "as_rng", "degrade_quality", "jpeg_roundtrip", "source_window",
           "warp_window"]


def as_rng(rng: np.random.Generator | int | Sequence[int] | None) -> np.random.Generator:
    """Return ``rng`` if it is a Generator, else a new Generator seeded with it."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def source_window(centre: Sequence[float], patch: Sequence[int],
                  matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(start, size)`` of the source window that a patch of size ``patch`` centred on
    ``centre`` (source coordinates) covers under ``matrix``, with a one-pixel margin."""
    half = (np.asarray(patch, float) - 1.0) / 2.0
    corners = np.array(list(itertools.product(*[(-h, h) for h in half])))
    src = corners @ matrix.T + np.asarray(centre, float)
    lo = np.floor(src.min(0)).astype(int) - 1
    return lo, np.ceil(src.max(0)).astype(int) + 2 - lo


def warp_window(window: np.ndarray, start: np.ndarray, centre: Sequence[float],
                patch: Sequence[int], matrix: np.ndarray, order: int) -> np.ndarray:
    """Resample ``window`` (last ``len(patch)`` axes; it begins at source index ``start``) onto
    a patch centred on ``centre``: ``source = centre + matrix @ (index - (patch - 1) / 2)``.
    Points outside the window read 0."""
    from scipy.ndimage import affine_transform

    half = (np.asarray(patch, float) - 1.0) / 2.0
    offset = np.asarray(centre, float) - start - matrix @ half
    nd = len(patch)
    lead = window.shape[:-nd]
    flat = window.reshape((-1,) + window.shape[-nd:])
    dtype = np.float32 if order else window.dtype
    out = np.stack([affine_transform(np.asarray(w, dtype), matrix, offset, tuple(patch),
                                     order=order, mode="constant", cval=0.0, prefilter=False)
                    for w in flat])
    return out.reshape(lead + tuple(patch))


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """``image (C, H, W)`` (C = 1 or 3, any range) JPEG-compressed at ``quality`` and decoded,
    each channel mapped to 0-255 over its own min-max range and back."""
    from PIL import Image

    lo = image.reshape(len(image), -1).min(1)[:, None, None]
    span = image.reshape(len(image), -1).max(1)[:, None, None] - lo
    span = np.where(span > 0, span, 1.0)
    u8 = np.clip(np.round((image - lo) / span * 255.0), 0, 255).astype(np.uint8)
    pil = Image.fromarray(u8[0] if len(image) == 1 else np.moveaxis(u8, 0, -1))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32)
    out = out[None] if out.ndim == 2 else np.moveaxis(out, -1, 0)
    return (out / 255.0 * span + lo).astype(np.float32)


def degrade_quality(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, noise and/or JPEG compression of ``image (C, *spatial)`` (see ``Augmenter``)."""
    from scipy.ndimage import gaussian_filter

    jpeg_ok = image.ndim == 3 and image.shape[0] in (1, 3)
    use = rng.random(3) < 0.5
    if not use[: 3 if jpeg_ok else 2].any():
        use[int(rng.integers(3 if jpeg_ok else 2))] = True
    if use[0]:  # 3D: one sigma per axis, so that thick slices are covered too
        nd = image.ndim - 1
        sigma = (rng.uniform(0.5, 1.5),) * 2 if nd == 2 else tuple(rng.uniform(0.3, 1.5, nd))
        image = gaussian_filter(image, sigma=(0, *sigma))
    if use[1]:
        image = image + rng.normal(0.0, rng.uniform(0.05, 0.3), image.shape).astype(np.float32)
    if use[2] and jpeg_ok:
        image = jpeg_roundtrip(image, int(rng.integers(15, 81)))
    return image


class Augmenter:
    """Random flips, 90-degree rotations, intensity scale/shift, gamma and noise; optionally
    rotations by any angle and zoom (applied by the sampler while it crops, see
    :meth:`draw_matrix`).

    Geometric transforms are applied identically to image, label and weight; intensity
    transforms to the image only. 90-degree rotations turn the last two spatial axes and only
    happen when they have equal size (square patches).

    Parameters
    ----------
    flip : bool
        Flip each spatial axis with probability 0.5.
    rot90 : bool
        Rotate by a random multiple of 90 degrees in-plane.
    intensity : float
        Per-channel scale ``1 + U(-s, s)`` and shift ``U(-s, s)`` (0 disables).
    noise : float
        Gaussian noise with standard deviation ``U(0, noise)`` (0 disables).
    gamma : float
        Gamma ``exp(U(-g, g))`` on the per-channel min-max range (0 disables).
    rotate : float
        Largest rotation angle in degrees (2D: in-plane; 3D: about each axis); 0 disables.
    scale : float
        Zoom by a factor ``exp(U(-log(1 + s), log(1 + s)))``, the same on every axis (0
        disables).
    spatial_prob : float
        Probability that a patch is rotated (and, independently, zoomed).
    degrade : float
        Probability that a patch gets worse image quality, as images from other cameras,
        scanners and sites have: each of Gaussian blur (2D: sigma 0.5-1.5 px; 3D: 0.3-1.5
        voxel drawn per axis, thick slices included), Gaussian noise (sigma 0.05-0.3 of the
        normalised intensities) and, for 2D patches of 1 or 3 channels, JPEG compression
        (quality 15-80) with probability 0.5, at least one of them (0 disables).
    rng : Generator or int or None
        Random source (or seed).

    Examples
    --------
    >>> aug = Augmenter(rng=0)
    >>> img, lab, w = aug(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), np.int64),
    ...                   np.ones((8, 8), np.float32))
    >>> img.shape, lab.shape, w.shape
    ((1, 8, 8), (8, 8), (8, 8))
    """

    def __init__(self, flip: bool = True, rot90: bool = True, intensity: float = 0.1,
                 noise: float = 0.02, gamma: float = 0.0, rotate: float = 0.0,
                 scale: float = 0.0, spatial_prob: float = 0.3, degrade: float = 0.0,
                 rng: np.random.Generator | int | None = None) -> None:
        for name, value in (("intensity", intensity), ("noise", noise), ("gamma", gamma),
                            ("rotate", rotate), ("scale", scale)):
            if not value >= 0:
                raise InputError(f"augmentation {name} must be >= 0, got {value!r}")
        for name, value in (("spatial_prob", spatial_prob), ("degrade", degrade)):
            if not 0.0 <= value <= 1.0:
                raise InputError(f"augmentation {name} must be in [0, 1], got {value!r}")
        self.flip, self.rot90 = bool(flip), bool(rot90)
        self.intensity, self.noise, self.gamma = float(intensity), float(noise), float(gamma)
        self.rotate, self.scale, self.spatial_prob = float(rotate), float(scale), float(spatial_prob)
        self.degrade = float(degrade)
        self.rng = as_rng(rng)

    def draw_matrix(self, nd: int) -> np.ndarray | None:
        """A random ``(nd, nd)`` map from patch offsets to source offsets (rotation / zoom), or
        None when this patch is neither rotated nor zoomed (the plain crop is then used)."""
        rng, m = self.rng, np.eye(nd)
        if self.rotate > 0 and rng.random() < self.spatial_prob:
            planes = [(0, 1)] if nd == 2 else [(1, 2), (0, 2), (0, 1)]
            for a, b in planes:
                t = np.deg2rad(rng.uniform(-self.rotate, self.rotate))
                r = np.eye(nd)
                r[a, a] = r[b, b] = np.cos(t)
                r[a, b], r[b, a] = -np.sin(t), np.sin(t)
                m = r @ m
        if self.scale > 0 and rng.random() < self.spatial_prob:
            bound = np.log1p(self.scale)
            m = m / np.exp(rng.uniform(-bound, bound))  # zoom > 1: structures look larger
        return None if np.array_equal(m, np.eye(nd)) else m

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment one patch: ``image (C, *s)``, ``label (*s)``, ``weight (*s)``."""
        rng = self.rng
        nd = label.ndim
        if self.flip:
            axes = [d for d in range(nd) if rng.random() < 0.5]
            if axes:
                image = np.flip(image, axis=[d + 1 for d in axes])
                label, weight = np.flip(label, axis=axes), np.flip(weight, axis=axes)
        if self.rot90 and nd >= 2 and label.shape[-1] == label.shape[-2]:
            k = int(rng.integers(4))
            if k:
                image = np.rot90(image, k, axes=(-2, -1))
                label = np.rot90(label, k, axes=(-2, -1))
                weight = np.rot90(weight, k, axes=(-2, -1))
        image = np.array(image, dtype=np.float32)  # contiguous copy, safe to modify
        channels = image.shape[0]
        bshape = (channels,) + (1,) * nd
        if self.gamma > 0:
            g = np.exp(rng.uniform(-self.gamma, self.gamma, channels)).reshape(bshape)
            lo = image.reshape(channels, -1).min(1).reshape(bshape)
            span = image.reshape(channels, -1).max(1).reshape(bshape) - lo
            span = np.where(span > 0, span, 1.0)
            image = ((image - lo) / span) ** g * span + lo
        if self.intensity > 0:
            s = self.intensity
            image = image * (1.0 + rng.uniform(-s, s, channels)).reshape(bshape) \
                + rng.uniform(-s, s, channels).reshape(bshape)
        if self.noise > 0:
            sigma = rng.uniform(0.0, self.noise)
            image = image + rng.normal(0.0, sigma, image.shape)
        if self.degrade > 0 and rng.random() < self.degrade:
            image = degrade_quality(image, rng)
        return (np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label),
                np.ascontiguousarray(weight))
