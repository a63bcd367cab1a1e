"""Options of sliding-window inference and the tile plan they give an image.

:class:`InferenceConfig` holds every option of
:func:`napari_drunet.core.infer.predict.predict_iter`; :func:`plan_tile` turns it into
the tile shape for one image (the whole image when it fits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..errors import InputError
from .tiling import balanced_tile, pixel_windows, tile_slices

DEFAULT_MAX_PIXELS = {2: 1024 * 1024, 3: 128 ** 3}
# overlap of planned tiles, in pixels: blending margin past the zero-padding border effect of
# the network (2D DRU-Net: 5 levels; 3D: 4), not a fraction of the tile
OVERLAP_PX = {2: 64, 3: 16}
DEFAULT_MAX_IMAGE_PIXELS = 2 ** 28  # the size guard of InferenceConfig.max_image_pixels


@dataclass
class InferenceConfig:
    """Options of :func:`predict_iter`.

    Parameters
    ----------
    tile_size : int or tuple of int, optional
        Tile shape (one value per network spatial axis). ``None``: the whole image (slice) in one
        pass when it has at most ``max_tile_pixels`` pixels, else tiles of 512 (2D) / 96 (3D).
    overlap : float
        Fraction of a tile shared with its neighbour, in ``[0, 1)``.
    batch_size : int
        Tiles (or slices) per forward pass.
    tta : bool
        Average over all axis-flip combinations (4 in 2D, 8 in 3D).
    mode : {'auto', '2d', '3d'}
        ``'auto'`` follows the network; a 2D network on a 3D volume runs slice by slice.
    slice_axis : int
        Spatial axis along which a volume is sliced for a 2D network.
    device : str
        ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
    amp : bool
        Mixed precision where the device runs it fast: bf16 (else fp16) on CUDA, bf16 on CPUs
        with AMX (:func:`~napari_drunet.core.device.autocast_dtype`); float32 elsewhere.
    threshold : float
        Foreground threshold for binary models (used by :func:`probabilities_to_labels`).
    blend : {'gaussian', 'constant'}
        Weighting of overlapping tiles.
    sigma_scale : float
        Gaussian sigma as a fraction of the tile size.
    channels_last : bool
        Use the channels-last memory format (default on: about 1.5x faster for 2D networks on
        CPU; for 3D ones 1.2-1.7x on volumes of 96³ and more at 2 threads, level at 1 thread
        and on small crops, docs/performance.md).
    fold_bn : bool
        Fold batch norms into the convolutions (on a cached copy of the network; default on).
    cudnn_benchmark : bool
        Let cuDNN pick the fastest convolution algorithms for the tile shape (CUDA only).
    compile : bool
        ``torch.compile`` the network (cached with the folded copy; first call is slow).
    max_tile_pixels : int, optional
        Largest image run in one pass when ``tile_size`` is ``None`` (default 1024² / 128³).
    mc_dropout : bool
        Keep dropout layers active (Monte-Carlo dropout sampling).
    largest_object : bool
        Keep only the largest connected object of each class, holes filled
        (:mod:`~napari_drunet.core.infer.postprocess`; for one-object images such as dermoscopy).
    max_image_pixels : int, optional
        Size guard: larger images (pixels or voxels, all slices) are refused with a clear
        message instead of running for many minutes; ``None`` lifts it (default 2**28, e.g.
        16000^2 or 645^3). Images whose probabilities would not fit in the free memory are
        refused either way.
    """

    tile_size: int | tuple[int, ...] | None = None
    overlap: float = 0.25
    batch_size: int = 4
    tta: bool = False
    mode: str = "auto"
    slice_axis: int = 0
    device: str = "auto"
    amp: bool = True
    threshold: float = 0.5
    blend: str = "gaussian"
    sigma_scale: float = 0.125
    channels_last: bool = True
    fold_bn: bool = True
    cudnn_benchmark: bool = True
    compile: bool = False
    max_tile_pixels: int | None = None
    mc_dropout: bool = False
    largest_object: bool = False
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.overlap) < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}")
        if int(self.batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.mode not in ("auto", "2d", "3d"):
            raise InputError(f"mode must be auto, 2d or 3d; got {self.mode!r}")
        if self.blend not in ("gaussian", "constant"):
            raise InputError(f"blend must be gaussian or constant; got {self.blend!r}")
        if float(self.sigma_scale) <= 0:
            raise InputError(f"sigma_scale must be > 0, got {self.sigma_scale}")
        if self.tile_size is not None:
            sizes = [self.tile_size] if isinstance(self.tile_size, int) else list(self.tile_size)
            if not sizes or any(int(s) < 1 for s in sizes):
                raise InputError(f"tile_size must be positive, got {self.tile_size}")

    @classmethod
    def from_options(cls, **opts: Any) -> InferenceConfig:
        """Build from keyword options, with a clear error for unknown names."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(opts) - names)
        if unknown:
            raise InputError(f"unknown inference option(s): {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(names))}")
        if isinstance(opts.get("tile_size"), list):
            opts["tile_size"] = tuple(opts["tile_size"])
        return cls(**opts)


def plan_tile(cfg: InferenceConfig, shape: Sequence[int], dims: int,
              multiple: int = 1) -> tuple[int, ...]:
    """Tile shape for an image of ``shape``: never larger than the image rounded up to the
    network's ``multiple`` (a 4x4 image is not zero-padded to a 576^2 tile). Without an explicit
    ``tile_size`` the whole image runs in one pass when it fits ``max_tile_pixels``, else it is
    cut into balanced tiles (:func:`balanced_tile`)."""
    if cfg.tile_size is None:
        limit = cfg.max_tile_pixels or DEFAULT_MAX_PIXELS[dims]
        if math.prod(shape) <= limit:
            return tuple(int(s) for s in shape)
        return balanced_tile(shape, limit, OVERLAP_PX[dims], multiple)
    tile = cfg.tile_size
    tile = (tile,) * dims if isinstance(tile, int) else tuple(int(t) for t in tile)
    if len(tile) != dims:
        raise InputError(f"tile_size {tile} must have {dims} values for a {dims}D network")
    return tuple(min(t, multiple * math.ceil(int(s) / multiple))
                 for t, s in zip(tile, shape, strict=True))


def tile_windows(cfg: InferenceConfig, shape: Sequence[int],
            tile: Sequence[int]) -> list[tuple[slice, ...]]:
    """The tile windows of an image of ``shape``: ``cfg.overlap`` (a fraction of the tile) for
    an explicit ``tile_size``, else the fixed margin :data:`OVERLAP_PX` of planned tiles."""
    if cfg.tile_size is not None:
        return tile_slices(shape, tile, cfg.overlap)
    return pixel_windows(shape, tile, [OVERLAP_PX[len(tile)]] * len(tile))
