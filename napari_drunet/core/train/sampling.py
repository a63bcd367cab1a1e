"""Training patches: random and foreground-biased patch sampling, and data augmentation.

The sampler works on :class:`PreparedCase` records (already normalised float32 images, integer
label maps, optional loss-weight, region and focus maps) and returns numpy batches; training
turns them into tensors. Everything is driven by a ``numpy.random.Generator`` so a seed fixes the
whole sequence of patches.

* Patch centres are either uniform over the case (restricted to the *region*: the region-of-
  interest mask and the counted pixels of the loss weight, when given) or, with probability
  ``fg_fraction``, *foreground-biased*: a random voxel of a random foreground class present in
  the region of the case -- or of the case's *focus* map (edited / reviewed pixels of a corrected
  mask), which counts as one more "class" so corrected regions are visited often.
* Patches crossing the border are padded: reflection for the image, label 0 with loss weight 0
  for the padded pixels (they never count). A patch larger than the image is padded the same way.
* A 2D model trained on 3D volumes gets 2D slices taken across ``slice_axis`` (spatial axis).
* Augmentation is :class:`~napari_drunet.core.train.augment.Augmenter` (re-exported here); a patch it
  rotates or zooms is resampled from a larger window around the same centre.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, InputError
from ..models.recipe import InputRecipe
from ..progress import run_to_end
from .augment import Augmenter, as_rng, source_window, warp_window

if TYPE_CHECKING:
    from torch import nn

    from ..infer.orientation import AxisOrder
    from ..infer.predict import InferenceConfig
    from .dataset import Case

__all__ = ["Augmenter", "Batch", "PatchSampler", "PreparedCase", "as_rng", "crop_padded",
           "prepare_case", "split_cases"]


@dataclass
class PreparedCase:
    """One training case ready for sampling.

    Parameters
    ----------
    name : str
        Case name (reported with each patch).
    image : ndarray
        Normalised float32 image ``(C, *spatial)``.
    label : ndarray
        Integer class map ``(*spatial)`` (0 = background).
    weight : ndarray or None
        Loss weight ``(*spatial)``; 0 = pixel not counted. ``None`` counts every pixel.
    mask : ndarray or None
        Region of interest ``(*spatial)``: patch centres are drawn inside it.
    focus : ndarray or None
        Pixels to visit more often (e.g. edited / reviewed pixels of a corrected mask).
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    weight: np.ndarray | None = None
    mask: np.ndarray | None = None
    focus: np.ndarray | None = None

    def __post_init__(self) -> None:
        spatial = self.image.shape[1:]
        if self.image.ndim < 3:
            raise InputError(f"case '{self.name}': image must be (C, *spatial), "
                             f"got shape {self.image.shape}")
        for what in ("label", "weight", "mask", "focus"):
            arr = getattr(self, what)
            if arr is not None and tuple(arr.shape) != tuple(spatial):
                raise InputError(f"case '{self.name}': {what} shape {tuple(arr.shape)} does not "
                                 f"match image spatial shape {tuple(spatial)}")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])


def prepare_case(case: Case, spec: dict | None = None, only_weighted: bool = False,
                 preprocess: dict | None = None,
                 orient: Callable[[np.ndarray, np.ndarray | None], AxisOrder] | None = None, *,
                 recipe: InputRecipe | None = None, network: nn.Module | None = None,
                 cfg: InferenceConfig | None = None) -> PreparedCase:
    """Prepare a ``dataset.Case`` once with the model's input recipe and derive its sampling
    and loss maps.

    The image goes through ``recipe.prepare`` (:mod:`.recipe`), the very steps
    :meth:`Model.predict` takes: channels, normalisation, rescaling to the model's training
    scale, and, given the ``network`` (and inference ``cfg``) that predicts, the axis order it
    predicts the volume in. Labels and maps follow by nearest neighbour; a detected field of
    view becomes the region mask when the case has none. Without ``recipe``, ``spec`` (a
    normalisation spec) and ``preprocess`` (``meta["preprocess"]``) make one; ``orient(image,
    affine)`` (e.g. :meth:`Model.find_axis_order`) gives the axis order when no ``network``
    is given.

    The region mask (e.g. a field of view) becomes the loss weight (0 outside) and bounds the
    patch centres. The case weight map (edited / reviewed pixels) becomes the *focus* of
    foreground-biased sampling and, with ``only_weighted``, multiplies the loss weight (only
    pixels with weight > 0 count).

    Raises
    ------
    DataError
        If the case has no label map, or its image does not fit the recipe (channels).
    """
    if case.label is None:
        raise DataError(f"case {case.name} has no label map; it cannot be used for training")
    if recipe is None:
        recipe = InputRecipe.from_meta({"normalization": spec, "preprocess": preprocess})
    try:
        prepared = run_to_end(recipe.prepare_iter(case.image, network=network, cfg=cfg))
    except InputError as exc:
        raise DataError(f"case {case.name}: {exc}") from None
    if orient is not None and network is None and prepared.array.ndim == 4:
        order = orient(prepared.array, getattr(case.image, "affine", None))
        prepared = replace(prepared, array=order.apply(prepared.array), order=order)
    mask = None if case.mask is None else np.asarray(case.mask, bool)
    weight = None if mask is None else mask.astype(np.float32)
    focus = None if case.weight is None else np.asarray(case.weight) > 0
    if only_weighted and case.weight is not None:
        w = np.asarray(case.weight, np.float32)
        weight = w if weight is None else weight * w
    if mask is None and prepared.fov is not None:
        mask = prepared.fov
        weight = mask.astype(np.float32) if weight is None else weight * mask
    label = prepared.to_network_grid(np.asarray(case.label).astype(np.int64))
    mask, weight, focus = (None if a is None else prepared.to_network_grid(a)
                           for a in (mask, weight, focus))
    return PreparedCase(case.name, prepared.array, label, weight, mask, focus)


def split_cases(cases: Sequence, fraction: float, seed: int = 0) -> tuple[list, list]:
    """Random ``(train, validation)`` split by case: ``round(n * fraction)`` validation cases,
    at least 1 when ``fraction > 0`` and ``n >= 2``, and always at least one training case."""
    cases = list(cases)
    if fraction <= 0 or len(cases) < 2:
        return cases, []
    n_val = min(len(cases) - 1, max(1, int(round(len(cases) * fraction))))
    val = {int(i) for i in np.random.default_rng(seed).permutation(len(cases))[:n_val]}
    return ([c for i, c in enumerate(cases) if i not in val],
            [c for i, c in enumerate(cases) if i in val])


@dataclass
class Batch:
    """A batch of patches: ``image (B, C, *patch)`` float32, ``label (B, *patch)`` int64,
    ``weight (B, *patch)`` float32 (0 = not counted), and the case name of each patch."""

    image: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    names: list[str]


def _flat_locations(selection: np.ndarray, rng: np.random.Generator, limit: int) -> np.ndarray:
    """Flat indices of the true voxels of ``selection`` (a random subset of at most ``limit``)."""
    idx = np.flatnonzero(selection)
    if idx.size > limit:
        idx = np.sort(rng.choice(idx, size=limit, replace=False))
    return idx


def crop_padded(arr: np.ndarray, start: Sequence[int], size: Sequence[int],
                mode: str = "constant") -> np.ndarray:
    """Crop the last ``len(size)`` axes of ``arr`` at ``start`` with padding where outside.

    ``mode`` is an :func:`numpy.pad` mode (``'reflect'`` for images, ``'constant'`` (0) for
    labels and weights). The window must overlap the array.
    """
    lead = arr.ndim - len(size)
    src, pads = [], []
    for s, n, dim in zip(start, size, arr.shape[lead:], strict=True):
        lo, hi = max(int(s), 0), min(int(s) + int(n), dim)
        if hi <= lo:
            raise ValueError("crop window does not overlap the array")
        src.append(slice(lo, hi))
        pads.append((lo - int(s), int(s) + int(n) - hi))
    out = arr[(Ellipsis, *src)]
    if any(p for pair in pads for p in pair):
        out = np.pad(out, [(0, 0)] * lead + pads, mode=mode)
    return out


class PatchSampler:
    """Draw training patches (random or foreground-biased) from prepared cases.

    Parameters
    ----------
    cases : sequence of PreparedCase
        Cases to sample from (each drawn with equal probability).
    patch_size : sequence of int
        Patch size per spatial axis of the *model* (2 or 3 entries).
    batch_size : int
        Patches per :meth:`sample` call.
    fg_fraction : float
        Probability that a patch is centred (up to a jitter of a quarter patch) on a random voxel
        of a random foreground class (or of the case's focus map) instead of a random voxel.
    rng : Generator or int or None
        Random source (or seed): equal seeds give equal patch sequences.
    spatial_dims : int or None
        Spatial dimensions of the model (default ``len(patch_size)``); a 2D model on 3D volumes
        gets slices across ``slice_axis``.
    slice_axis : int
        Spatial axis sliced when a 2D model is trained on 3D volumes.
    augmenter : Augmenter or None
        Applied to every patch when given.
    max_locations : int
        At most this many candidate voxels are kept per class and case (memory bound).

    Examples
    --------
    >>> case = PreparedCase("a", np.zeros((1, 20, 20), np.float32), np.zeros((20, 20), np.int64))
    >>> batch = PatchSampler([case], (16, 16), batch_size=2, rng=0).sample()
    >>> batch.image.shape, batch.label.shape, batch.weight.shape
    ((2, 1, 16, 16), (2, 16, 16), (2, 16, 16))
    """

    def __init__(self, cases: Sequence[PreparedCase], patch_size: Sequence[int],
                 batch_size: int = 4, fg_fraction: float = 0.33,
                 rng: np.random.Generator | int | None = None, spatial_dims: int | None = None,
                 slice_axis: int = 0, augmenter: Augmenter | None = None,
                 max_locations: int = 100_000) -> None:
        self.cases = list(cases)
        if not self.cases:
            raise InputError("no training cases to sample patches from")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.spatial_dims = int(spatial_dims or len(self.patch_size))
        if self.spatial_dims not in (2, 3) or len(self.patch_size) != self.spatial_dims \
                or min(self.patch_size) < 1:
            raise InputError(f"patch size {self.patch_size} does not fit a "
                             f"{self.spatial_dims}D model")
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        if not 0.0 <= fg_fraction <= 1.0:
            raise InputError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
        self.batch_size, self.fg_fraction = int(batch_size), float(fg_fraction)
        self.slice_axis, self.augmenter = int(slice_axis), augmenter
        self.rng = as_rng(rng)
        self._locations = [self._index(c, max_locations) for c in self.cases]

    def _index(self, case: PreparedCase, limit: int) -> dict:
        nd = len(case.spatial_shape)
        if nd < self.spatial_dims:
            raise InputError(f"case '{case.name}' is {nd}D but the model is "
                             f"{self.spatial_dims}D")
        if nd > self.spatial_dims + 1 or (nd == self.spatial_dims + 1 and self.spatial_dims != 2):
            raise InputError(f"case '{case.name}' has {nd} spatial axes; cannot train a "
                             f"{self.spatial_dims}D model on it")
        if nd != self.spatial_dims and not 0 <= self.slice_axis < nd:
            raise InputError(f"slice_axis {self.slice_axis} is out of range for case "
                             f"'{case.name}' ({nd}D)")
        region = None
        if case.mask is not None:
            region = np.asarray(case.mask, bool)
        if case.weight is not None:
            counted = np.asarray(case.weight) > 0
            region = counted if region is None else region & counted
        # foreground targets only where pixels count: patches then never depend on labels
        # outside the counted region (those labels are unknown / untrusted)
        label = case.label if region is None else np.where(region, case.label, 0)
        classes = [int(c) for c in np.unique(label) if c > 0]
        targets = [_flat_locations(label == c, self.rng, limit) for c in classes]
        if case.focus is not None and np.any(case.focus):
            targets.append(_flat_locations(np.asarray(case.focus, bool), self.rng, limit))
        region_idx = None
        if region is not None and not region.all():
            region_idx = _flat_locations(region, self.rng, limit) if region.any() else None
        return {"targets": [t for t in targets if t.size], "region": region_idx}

    def _centre(self, k: int, biased: bool) -> tuple[tuple[int, ...], bool]:
        """A centre voxel of case ``k`` (full case coordinates) and whether it is a target."""
        loc, shape = self._locations[k], self.cases[k].spatial_shape
        pool = None
        if biased and loc["targets"]:
            pool = loc["targets"][int(self.rng.integers(len(loc["targets"])))]
        elif loc["region"] is not None:
            pool = loc["region"]
        if pool is None:
            return tuple(int(self.rng.integers(n)) for n in shape), False
        flat = int(pool[int(self.rng.integers(pool.size))])
        return tuple(int(i) for i in np.unravel_index(flat, shape)), biased

    def sample_patch(self, biased: bool | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray, str]:
        """One patch ``(image (C, *p), label (*p), weight (*p), case name)``.

        ``biased`` forces (True) or forbids (False) foreground bias; default: random with
        probability ``fg_fraction``.
        """
        rng = self.rng
        k = int(rng.integers(len(self.cases)))
        case = self.cases[k]
        if biased is None:
            biased = bool(rng.random() < self.fg_fraction)
        centre, on_target = self._centre(k, biased)
        image, label, weight = case.image, case.label, case.weight
        if len(centre) != self.spatial_dims:  # 2D model on a 3D volume: take one slice
            ax, z = self.slice_axis, centre[self.slice_axis]
            image = np.take(image, z, axis=ax + 1)
            label = np.take(label, z, axis=ax)
            weight = None if weight is None else np.take(weight, z, axis=ax)
            centre = centre[:ax] + centre[ax + 1:]
        start = []
        for c, p, n in zip(centre, self.patch_size, label.shape, strict=True):
            if p >= n:  # the whole axis fits: place it at a random offset inside the patch
                start.append(-int(rng.integers(p - n + 1)))
                continue
            jitter = int(rng.integers(-(p // 4), p // 4 + 1)) if on_target and p >= 4 else 0
            start.append(c - p // 2 + jitter)
        matrix = None if self.augmenter is None else self.augmenter.draw_matrix(len(start))
        if matrix is not None:  # rotate / zoom about the patch's middle (source coordinates)
            mid = np.asarray(start, float) + (np.asarray(self.patch_size) - 1) / 2.0
            lo, size = source_window(mid, self.patch_size, matrix)
            if any(s + n <= 0 or s >= d for s, n, d in zip(lo, size, label.shape, strict=True)):
                matrix = None  # tiny case far inside a huge patch: window misses the image
        if matrix is None:
            img, lab, w = self._crop(image, label, weight, start, self.patch_size)
        else:  # crop the window the map needs, then resample it
            img, lab, w = self._crop(image, label, weight, lo, size)
            img = warp_window(img, lo, mid, self.patch_size, matrix, order=1)
            lab = warp_window(lab, lo, mid, self.patch_size, matrix, order=0)
            w = warp_window(w, lo, mid, self.patch_size, matrix, order=0)
        if self.augmenter is not None:
            img, lab, w = self.augmenter(img, lab, w)
        return img, lab, w, case.name

    @staticmethod
    def _crop(image, label, weight, start, size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (reflect-padded), label and weight (0 on padding) windows at ``start``."""
        img = crop_padded(image, start, size, mode="reflect").astype(np.float32)
        lab = crop_padded(label, start, size).astype(np.int64)
        if weight is None:  # 1 inside the image, 0 on padding, without a full-size array
            w = np.zeros(tuple(size), np.float32)
            w[tuple(slice(max(0, -s), max(0, min(p, n - s)))
                    for s, p, n in zip(start, size, label.shape, strict=True))] = 1.0
        else:  # padding is constant 0, so padded pixels never count
            w = crop_padded(np.asarray(weight), start, size).astype(np.float32)
        return img, lab, w

    def sample(self, n: int | None = None, biased: bool | None = None) -> Batch:
        """A :class:`Batch` of ``n`` patches (default ``batch_size``)."""
        patches = [self.sample_patch(biased) for _ in range(n or self.batch_size)]
        return Batch(image=np.stack([p[0] for p in patches]),
                     label=np.stack([p[1] for p in patches]),
                     weight=np.stack([p[2] for p in patches]),
                     names=[p[3] for p in patches])

    def __iter__(self):
        while True:
            yield self.sample()
