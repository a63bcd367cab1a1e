"""Bring an image to the scale a model was trained at, and the prediction back.

Models record what "scale" means for them in ``meta["preprocess"]``:

* ``{"fov_diameter": 540}`` -- fundus photographs: the circular field of view (FOV) is found
  and the image resized so that its diameter matches the training images'. Vessel widths in
  pixels then match what the network learnt, whatever the camera resolution (DRIVE 565 px,
  STARE 700 px, CHASE_DB1 999 px, HRF 3504 px). Predictions outside the FOV are set to
  background (``"mask_outside_fov": true``).
* ``{"long_side": 256}`` -- photographs of a fixed scale (dermoscopy: the ISIC images a
  skin-lesion model learns from are 256 x 192): a photograph of any size (700-6000 px from a
  clinic's dermoscope) is resized, aspect kept, so that its long side matches, and the
  prediction is resized back to the photograph's grid.
* ``{"spacing": [1.0, 1.0, 1.0]}`` -- volumes with physical voxel spacing (NIfTI) are resampled
  to the training spacing (the nnU-Net convention) when it differs by more than 15 %.

Images whose scale is already within 15 % of the target are not resampled, so results on data
like the training data are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOLERANCE = 0.15


def fov_mask(image: np.ndarray) -> np.ndarray:
    """Field of view of a fundus photograph ``(C, H, W)`` (normalised or raw): the largest
    bright connected region, holes filled."""
    from scipy import ndimage

    chan = image[0] if image.shape[0] >= 3 else image.mean(axis=0)  # red is brightest in a FOV
    chan = np.asarray(chan, np.float32)
    lo, hi = float(np.percentile(chan, 1)), float(np.percentile(chan, 99))
    if hi - lo <= 1e-6:
        return np.ones(chan.shape, bool)
    mask = chan > lo + 0.15 * (hi - lo)
    mask = ndimage.binary_opening(mask, iterations=2)
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.ones(chan.shape, bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


def fov_diameter(mask: np.ndarray) -> float | None:
    """Diameter in pixels of a FOV mask (largest bounding-box side), or None when the mask
    fills the image (a crop without visible FOV border: scale unknown)."""
    if mask.mean() > 0.95 or not mask.any():
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


@dataclass
class Rescale:
    """A planned resampling: ``apply`` to the network input, ``restore`` the probabilities."""

    shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    fov: np.ndarray | None = None
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.target_shape != self.shape

    def apply(self, image: np.ndarray) -> np.ndarray:
        if not self.active:
            return image
        return _resize(image, self.target_shape)

    def restore(self, prob: np.ndarray) -> np.ndarray:
        if self.active:
            prob = np.clip(_resize(prob, self.shape), 0.0, 1.0)
        if self.fov is not None:
            outside = ~self.fov
            if prob.ndim == self.fov.ndim + 1:
                prob[:, outside] = 0.0
                if prob.shape[0] >= 2:
                    prob[0, outside] = 1.0
        return prob


def plan_rescale(image: np.ndarray, preprocess: dict | None,
                 spacing: Sequence[float] | None = None) -> Rescale:
    """Plan how to bring ``image`` ``(C, *spatial)`` to the model's training scale."""
    shape = tuple(int(s) for s in image.shape[1:])
    pre = preprocess or {}
    if pre.get("fov_diameter") and len(shape) == 3:  # the FOV is found in single photographs
        return Rescale(shape, shape, None, f"a stack of {shape[0]} images: not rescaled to the "
                       f"model's FOV diameter {float(pre['fov_diameter']):.0f} px (done for "
                       "single photographs only); segment the photographs one by one")
    if pre.get("fov_diameter") and len(shape) == 2:
        mask = fov_mask(image)
        diameter = fov_diameter(mask)
        fov = mask if pre.get("mask_outside_fov", True) and diameter else None
        if diameter is None:
            return Rescale(shape, shape, None, "no FOV border found: not rescaled")
        factor = float(pre["fov_diameter"]) / diameter
        if abs(math.log(factor)) <= math.log1p(TOLERANCE):
            return Rescale(shape, shape, fov, "")
        target = tuple(max(8, round(s * factor)) for s in shape)
        return Rescale(shape, target, fov, f"FOV diameter {diameter:.0f} px rescaled x{factor:.2f} "
                       f"to the model's {float(pre['fov_diameter']):.0f} px")
    if pre.get("long_side"):
        return _plan_long_side(shape, float(pre["long_side"]))
    if pre.get("spacing") and spacing is not None and len(pre["spacing"]) == len(shape):
        factors = [float(s) / float(t) for s, t in zip(spacing, pre["spacing"], strict=True)]
        if all(abs(math.log(f)) <= math.log1p(TOLERANCE) for f in factors if f > 0):
            return Rescale(shape, shape)
        target = tuple(max(4, round(s * f)) for s, f in zip(shape, factors, strict=True))
        return Rescale(shape, target, None, f"resampled from spacing {tuple(spacing)} to the "
                       f"model's {tuple(pre['spacing'])}")
    return Rescale(shape, shape)


def _plan_long_side(shape: tuple[int, ...], long_side: float) -> Rescale:
    """Resize a photograph ``(H, W)``, aspect kept, so that its long side is ``long_side``."""
    if len(shape) != 2:  # a stack's slices are photographs of unknown relation: left alone
        return Rescale(shape, shape, None, f"a stack of {shape[0]} images: not rescaled to the "
                       f"model's {long_side:.0f} px long side (done for single photographs "
                       "only); segment the photographs one by one")
    factor = long_side / max(shape)
    if abs(math.log(factor)) <= math.log1p(TOLERANCE):
        return Rescale(shape, shape)
    target = tuple(max(8, round(s * factor)) for s in shape)
    return Rescale(shape, target, None, f"photograph of {shape[0]} x {shape[1]} px rescaled "
                   f"x{factor:.3g} to the model's {long_side:.0f} px long side")


def resize_nearest(arr: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of a label / mask / weight map ``(*spatial)`` (dtype kept)."""
    from skimage.transform import resize

    if tuple(arr.shape) == tuple(spatial):
        return arr
    out = resize(arr, spatial, order=0, anti_aliasing=False, preserve_range=True, mode="edge")
    return out.astype(arr.dtype, copy=False)


def _resize(arr: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Linear resize of ``(C, *spatial)`` channel by channel (anti-aliased when shrinking)."""
    from skimage.transform import resize

    out = np.empty((arr.shape[0], *spatial), np.float32)
    shrink = any(t < s for t, s in zip(spatial, arr.shape[1:], strict=True))
    for c in range(arr.shape[0]):
        out[c] = resize(arr[c].astype(np.float32, copy=False), spatial, order=1,
                        anti_aliasing=shrink, preserve_range=True, mode="edge")
    return out
