"""Geometry of sliding-window inference (used by :mod:`napari_drunet.core.infer.predict`).

Pure geometry, no inference options: the network's dimensionality,
evenly spread tile windows that cover the image (balanced tiles with a margin in pixels when
the plan is automatic), the Gaussian importance map used to blend
overlapping tiles, and the axis-flip combinations of test-time augmentation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from torch import nn

from ..errors import InputError


def gaussian_importance_map(tile_size: Sequence[int], sigma_scale: float = 0.125,
                            min_value: float = 1e-6) -> np.ndarray:
    """Separable Gaussian centred on the tile, maximum 1, clipped below at ``min_value``."""
    axes = []
    for size in tile_size:
        x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        sigma = max(size * sigma_scale, 1e-3)
        axes.append(np.exp(-0.5 * (x / sigma) ** 2))
    weight = axes[0]
    for a in axes[1:]:
        weight = np.multiply.outer(weight, a)
    weight = weight / weight.max()
    return np.maximum(weight, min_value).astype(np.float32)


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Evenly spread tile origins covering ``[0, size)`` with an overlap of ``overlap`` (a
    fraction of the tile); the last tile ends at ``size``."""
    return even_starts(size, tile, tile - max(1, int(tile * (1.0 - overlap))))


def even_starts(size: int, tile: int, overlap_px: int) -> list[int]:
    """The fewest evenly spread tile origins covering ``[0, size)`` with tiles overlapping by at
    least ``overlap_px`` pixels; the last tile ends at ``size``."""
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap_px) / max(1, tile - overlap_px))
    n = max(n, 2)
    actual = (size - tile) / (n - 1)
    return [int(round(actual * i)) for i in range(n)]


def pixel_windows(shape: Sequence[int], tile: Sequence[int],
                  overlap_px: Sequence[int]) -> list[tuple[slice, ...]]:
    """All tile windows with at least ``overlap_px`` pixels of overlap per axis (clipped to
    ``shape`` when the image is smaller than the tile)."""
    per_axis = [[slice(s, min(s + t, n)) for s in even_starts(n, t, o)]
                for n, t, o in zip(shape, tile, overlap_px, strict=True)]
    return list(itertools.product(*per_axis))


def tile_slices(shape: Sequence[int], tile: Sequence[int],
                overlap: float) -> list[tuple[slice, ...]]:
    """All tile windows with an overlap of ``overlap`` (a fraction of the tile)."""
    return pixel_windows(shape, tile, [t - max(1, int(t * (1.0 - overlap))) for t in tile])


def flip_sets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Spatial axis combinations flipped for TTA (including no flip); axes count from 0."""
    axes = range(spatial_dims)
    return [c for r in range(spatial_dims + 1) for c in itertools.combinations(axes, r)]


def network_dims(network: nn.Module) -> int:
    """Spatial dimensionality of ``network`` (``.spatial_dims`` or its first convolution)."""
    dims = getattr(network, "spatial_dims", None)
    if dims in (2, 3):
        return int(dims)
    for m in network.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return 2
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            return 3
    raise InputError("cannot tell whether the network is 2D or 3D")


def balanced_tile(shape: Sequence[int], max_pixels: int, overlap_px: int,
                  multiple: int = 1) -> tuple[int, ...]:
    """The largest-first split of ``shape`` into equal tiles of at most ``max_pixels`` pixels.

    Each axis is cut into the fewest pieces that fit: a tile is the axis length plus the
    overlaps, shared evenly and rounded up to the network's ``multiple``. An image just over the
    limit is cut in two with ``overlap_px`` of overlap, not into fixed maximal tiles whose
    fixed-fraction overlaps and overhang would run the network over 2-4x the image.
    """
    shape = [int(s) for s in shape]
    pieces = [1] * len(shape)

    def edge(i: int) -> int:
        n = pieces[i]
        size = math.ceil((shape[i] + (n - 1) * overlap_px) / n)
        return min(multiple * math.ceil(size / multiple), multiple * math.ceil(shape[i] / multiple))

    tile = [edge(i) for i in range(len(shape))]
    while math.prod(tile) > max_pixels:
        # split the longest axis whose pieces are still well above the overlap
        candidates = [i for i in range(len(shape)) if tile[i] > 2 * overlap_px + multiple]
        if not candidates:
            break
        i = max(candidates, key=lambda j: tile[j])
        pieces[i] += 1
        tile[i] = edge(i)
    return tuple(tile)
