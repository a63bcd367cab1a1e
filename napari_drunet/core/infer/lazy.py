"""Segment images that are not in memory (dask, zarr, h5py, memory-mapped arrays) tile by tile.

A napari layer backed by a dask or zarr array (an OME-Zarr image, a big TIFF opened lazily)
reaches :meth:`napari_drunet.core.models.model.Model.predict` as such an array. Converting it with
``np.asarray`` would hold the whole volume twice (raw and normalised float32) before the first
tile runs; instead :class:`LazyVolume` is handed to the tiler of
:mod:`napari_drunet.core.infer.predict`, which reads each tile from the array, normalises it with
statistics measured once on an even subsample, and blends the tile's probabilities into the
preallocated output. Peak memory is the output (float32 probabilities and the uint8 mask) plus
about two tile batches, whatever the size of the input.

Not applied to lazy arrays: the model's rescaling to its training voxel spacing / fundus scale
and the axis-order search or header reorientation (each needs the whole image in memory); the
prediction notes it when the model asks for them. NaN/Inf are replaced per tile.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..image.normalization import apply_normalization, fit_normalization
from ..progress import Progress

if TYPE_CHECKING:
    from torch import nn

    from .config import InferenceConfig

STAT_VOXELS = 1_000_000  # voxels per channel sampled for the normalisation statistics
_STAT_SLICES = 32


def is_lazy(array: Any) -> bool:
    """True for an array-like that is not a numpy array (dask, zarr, h5py ...)."""
    if isinstance(array, np.ndarray) or type(array).__module__.startswith("torch"):
        return False
    return all(hasattr(array, a) for a in ("shape", "dtype", "__getitem__")) and \
        len(getattr(array, "shape", ())) >= 2


class ChannelFirst:
    """A lazy ``(*spatial)`` array seen as ``(1, *spatial)`` (reads stay lazy)."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = (1, *(int(s) for s in array.shape))
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        head, rest = (key[0], key[1:]) if key else (slice(None), ())
        data = np.asarray(self.array[rest] if rest else self.array[...])
        return data[np.newaxis][head]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # explicit loads still work
        data = np.asarray(self.array)[np.newaxis]
        return data if dtype is None else data.astype(dtype)


class TileView:
    """``(C, N, *spatial)`` view of a :class:`LazyVolume` as the tiler indexes it: ``N`` = 1 for
    a network of the volume's dimension, else the slices along ``axis``."""

    def __init__(self, volume: LazyVolume, axis: int | None) -> None:
        self.volume, self.axis = volume, axis
        c, *spatial = volume.shape
        if axis is None:
            self.shape = (c, 1, *spatial)
        else:
            self.shape = (c, spatial[axis], *(s for i, s in enumerate(spatial) if i != axis))

    def __getitem__(self, key: tuple) -> np.ndarray:
        channels, n, *window = key
        if self.axis is None:
            return self.volume.read((channels, *window))
        window.insert(self.axis, int(n))
        return self.volume.read((channels, *window))


class LazyVolume:
    """A lazy channel-first array ``(C, *spatial)``, normalised tile by tile.

    Parameters
    ----------
    array : array-like
        ``(C, *spatial)``; indexing with a tuple of slices must return (or ``np.asarray``
        convert) only that block -- dask, zarr, h5py and ``np.memmap`` do.
    spec : dict
        Normalisation spec (the model's ``meta["normalization"]``).
    """

    def __init__(self, array: Any, spec: dict[str, Any] | None) -> None:
        self.array, self.spec = array, spec
        self.shape = tuple(int(s) for s in array.shape)
        self.ndim = len(self.shape)
        if self.ndim not in (3, 4):
            raise InputError(f"a lazy image must be (C, *spatial) with 2 or 3 spatial axes, got "
                             f"shape {self.shape}")
        self.params = fit_normalization(self.sample(), spec)

    def sample(self, voxels: int = STAT_VOXELS) -> np.ndarray:
        """An even subsample ``(C, k, h, w)`` of at most about ``voxels`` voxels per channel:
        up to 32 evenly spaced planes along the first spatial axis, each strided evenly
        (the whole image when it is that small, so small images normalise as in memory)."""
        first, *plane = self.shape[1:]
        per_plane = math.prod(plane)
        if first * per_plane <= voxels:
            return np.asarray(self.array[...])
        count = min(first, _STAT_SLICES)
        stride = max(1, math.ceil(math.sqrt(per_plane * count / voxels)))
        picks = np.linspace(0, first - 1, count).round().astype(int)
        planes = [np.asarray(self.array[(slice(None), int(i))])[(slice(None),)
                                                                 + (slice(None, None, stride),) * len(plane)]
                  for i in picks]
        return np.stack(planes, axis=1)

    def read(self, key: tuple) -> np.ndarray:
        """One block, normalised (float32)."""
        return apply_normalization(np.asarray(self.array[key]), self.spec, self.params)

    def tile_view(self, axis: int | None) -> TileView:
        """The layout :func:`napari_drunet.core.infer.predict.predict_iter` tiles."""
        return TileView(self, axis)


def as_channel_first(array: Any, spatial_dims: int, in_channels: int) -> Any:
    """A lazy image as ``(C, *spatial)``: a bare ``(*spatial)`` volume gets a channel axis."""
    if len(array.shape) == spatial_dims or (len(array.shape) == 3 and spatial_dims == 2
                                            and array.shape[0] != in_channels):
        return ChannelFirst(array)
    return array


def predict_lazy_iter(network: nn.Module, array: Any, cfg: InferenceConfig,
                      meta: dict[str, Any]
                      ) -> Generator[Progress, None, tuple[np.ndarray, dict[str, Any]]]:
    """Probabilities ``(K, *spatial)`` of a lazy ``(C, *spatial)`` image, read tile by tile.

    ``cfg`` is an :class:`~napari_drunet.core.infer.config.InferenceConfig`, ``meta`` the model's
    recipe (normalisation, preprocessing). Returns ``(probabilities, info)``.
    """
    from .predict import predict_iter

    channels = getattr(network, "in_channels", None)
    if channels is not None and int(array.shape[0]) != channels:
        raise InputError(f"network expects {channels} channel(s), the lazy image has "
                         f"{array.shape[0]} (shape {tuple(array.shape)})")
    info: dict[str, Any] = {"warnings": [], "lazy": True}
    pre = meta.get("preprocess") or {}
    skipped = sorted(k for k in ("spacing", "fov_diameter", "orientation", "axis_search")
                     if pre.get(k))
    if skipped:
        info["warnings"].append("lazy (dask/zarr) image predicted at its stored scale and axis "
                                f"order: the model's {', '.join(skipped)} preprocessing needs "
                                "the image in memory")
    volume = LazyVolume(array, meta.get("normalization"))
    prob = yield from predict_iter(network, volume, cfg, info)
    return prob, info
