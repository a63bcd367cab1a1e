"""Geometry of sliding-window inference (used by :mod:`napari_drunet.core.infer.predict`).

Pure geometry, no inference options and no network: evenly spread tile windows that cover the
image (balanced tiles with a margin in pixels when the plan is automatic), the Gaussian
importance map used to blend overlapping tiles, the tile loop itself
(:func:`sliding_window_iter`, which takes a *predictor callable* as MONAI's
``sliding_window_inference`` does), the axis-flip combinations of test-time augmentation
(:func:`flip_averaged` wraps a predictor with them) and the network's dimensionality.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Sequence
from typing import Protocol, TypeAlias

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..progress import Progress, run_to_end

#: probabilities ``(N, K, *tile)`` of a batch of tiles ``(N, C, *tile)`` (float32, CPU in)
Predictor: TypeAlias = Callable[[torch.Tensor], torch.Tensor]
_SLAB_ELEMENTS = 1 << 22  # weight-map slab (16 MB) used to normalise blended tiles


class TileSource(Protocol):
    """What the tile loop reads tiles from: ``(C, N, *spatial)``, indexed with a tuple of a
    channel slice, an image index and window slices -- a numpy array, or the lazy view of
    :class:`~napari_drunet.core.infer.lazy.LazyVolume` (each tile read when needed)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: tuple) -> np.ndarray: ...


class TiledVolume(Protocol):
    """An image ``(C, *spatial)`` that is not in memory but gives the tiler its own view
    (:class:`~napari_drunet.core.infer.lazy.LazyVolume`)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def tile_view(self, axis: int | None) -> TileSource: ...


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


def flip_averaged(predictor: Predictor, spatial_dims: int) -> Predictor:
    """``predictor`` averaged over every flip of the spatial axes (test-time augmentation):
    each flipped batch is predicted and flipped back."""
    flips = flip_sets(spatial_dims)

    def averaged(x: torch.Tensor) -> torch.Tensor:
        total = None
        for axes in flips:
            dims_t = [a + 2 for a in axes]
            prob = predictor(torch.flip(x, dims_t) if axes else x)
            prob = torch.flip(prob, dims_t) if axes else prob
            total = prob if total is None else total.add_(prob)
        return total / len(flips)

    return averaged


def sliding_window_iter(view: TileSource, windows: Sequence[tuple[slice, ...]],
                        tile: Sequence[int], predictor: Predictor, batch_size: int = 1,
                        importance: np.ndarray | None = None,
                        alloc: Callable[[int], np.ndarray] | None = None,
                        ) -> Generator[Progress, None, np.ndarray]:
    """Blend ``predictor``'s output on every window of ``view`` into one probability map.

    Parameters
    ----------
    view : ndarray or array-like
        ``(C, N, *spatial)``: ``N`` independent images (the slices of a volume seen by a 2D
        network, else 1) indexed like a numpy array (a lazy view reads each tile there).
    windows : sequence of tuple of slice
        Tile windows over ``spatial`` (:func:`tile_slices`, :func:`pixel_windows`), each at
        most ``tile``; a window smaller than ``tile`` (an image smaller than the tile) is
        padded with zeros and its prediction cropped back.
    tile : sequence of int
        The tile shape the predictor receives.
    predictor : callable
        Probabilities ``(B, K, *tile)`` of a float32 CPU batch ``(B, C, *tile)`` (on any
        device), e.g. a network with its activation.
    batch_size : int
        Tiles per predictor call.
    importance : ndarray, optional
        Weight of each tile pixel in the blend (shape ``tile``; default: equal weights). The
        output is the importance-weighted mean of the tiles covering each pixel.
    alloc : callable, optional
        ``alloc(K)`` returns the zeroed output ``(K, N, *spatial)`` (default: a new array).

    Returns
    -------
    ndarray
        float32 ``(K, N, *spatial)``; a progress record is yielded after every batch.
    """
    tile = tuple(int(t) for t in tile)
    single = len(windows) == 1
    if importance is None or single:
        importance = np.ones(tile, dtype=np.float32)
    if alloc is None:
        def alloc(k: int) -> np.ndarray:
            return np.zeros((k,) + tuple(view.shape[1:]), dtype=np.float32)
    jobs = [(n, win) for n in range(view.shape[1]) for win in windows]
    total = len(jobs)
    out: np.ndarray | None = None
    done = 0
    for start in range(0, total, batch_size):
        chunk = jobs[start:start + batch_size]
        arrays = []
        for n, win in chunk:
            patch = view[(slice(None), n) + win]
            pad = [(0, 0)] + [(0, t - p) for t, p in zip(tile, patch.shape[1:], strict=True)]
            if any(p[1] for p in pad):
                patch = np.pad(patch, pad)
            arrays.append(np.ascontiguousarray(patch, dtype=np.float32))
        prob = predictor(torch.from_numpy(np.stack(arrays))).cpu().numpy()
        if out is None:
            out = alloc(prob.shape[1])
        for p, (n, win) in zip(prob, chunk, strict=True):
            crop = (slice(None),) + tuple(slice(0, w.stop - w.start) for w in win)
            if single:
                out[(slice(None), n) + win] = p[crop]
            else:
                out[(slice(None), n) + win] += p[crop] * importance[crop[1:]]
        done += len(chunk)
        yield Progress(done, total, f"tile {done}/{total}", {"tiles": done, "tiles_total": total})
    assert out is not None
    if not single:  # weight slabs of at most one tile batch: memory stays output + a batch
        divide_by_weight(out, windows, importance,
                         min(_SLAB_ELEMENTS, batch_size * math.prod(tile)))
    return out


def sliding_window(image: np.ndarray, tile: Sequence[int], predictor: Predictor,
                   overlap: float = 0.25, batch_size: int = 1, blend: str = "gaussian",
                   sigma_scale: float = 0.125) -> np.ndarray:
    """Probabilities ``(K, *spatial)`` of ``image`` ``(C, *spatial)`` predicted tile by tile.

    The shape of MONAI's ``sliding_window_inference(inputs, roi_size, sw_batch_size,
    predictor, overlap)``: tiles of ``tile`` overlapping by ``overlap`` (a fraction), run in
    batches of ``batch_size`` through ``predictor`` and blended with a Gaussian
    (``blend="gaussian"``) or equal (``"constant"``) importance.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).random((1, 50, 40)).astype(np.float32)
    >>> out = sliding_window(image, (16, 16), lambda x: torch.sigmoid(x), overlap=0.5)
    >>> bool(np.allclose(out, 1 / (1 + np.exp(-image)), atol=1e-6))
    True
    """
    image = np.asarray(image, dtype=np.float32)
    windows = tile_slices(image.shape[1:], tile, overlap)
    importance = gaussian_importance_map(tile, sigma_scale) if blend == "gaussian" else None
    out = run_to_end(sliding_window_iter(image[:, None], windows, tile, predictor, batch_size,
                                         importance))
    return out[:, 0]


def divide_by_weight(out: np.ndarray, windows: Sequence[tuple[slice, ...]],
                     importance: np.ndarray, max_elements: int | None = None) -> None:
    """Divide ``out`` ``(K, N, *spatial)`` in place by the summed tile importance, rebuilding the
    weight map slab by slab along the first spatial axis (memory: one slab, not the volume)."""
    spatial = out.shape[2:]
    max_elements = max_elements or _SLAB_ELEMENTS
    step = max(1, max_elements // max(1, math.prod(spatial[1:])))
    buffer = np.empty((min(step, spatial[0]),) + tuple(spatial[1:]), dtype=np.float32)
    for z0 in range(0, spatial[0], step):
        z1 = min(spatial[0], z0 + step)
        weight = buffer[: z1 - z0]
        weight.fill(0.0)
        for win in windows:
            a, b = max(win[0].start, z0), min(win[0].stop, z1)
            if a < b:
                crop = (slice(a - win[0].start, b - win[0].start),) + tuple(
                    slice(0, w.stop - w.start) for w in win[1:])
                weight[(slice(a - z0, b - z0),) + tuple(win[1:])] += importance[crop]
        out[:, :, z0:z1] /= weight
