"""Sliding-window inference shared by the GUI, the CLI and evaluation.

The image (``(C, *spatial)``, already normalised) is cut into overlapping tiles that are run in
batches; tile probabilities are blended with a Gaussian importance map (nnU-Net / MONAI style)
into a preallocated float32 output and weight map, so memory stays bounded by the output size.
Tiles at the borders are shifted inward; only an image smaller than the tile is padded (zeros)
and cropped back. A 2D network on a 3D volume runs slice by slice (slices batched together),
writing into the output volume directly.

:func:`predict_iter` is a generator yielding :class:`~napari_drunet.core.progress.Progress`
after every batch (so a GUI Stop is responsive) and returning probabilities ``(K, *spatial)``:
sigmoid for ``K == 1``, softmax for ``K >= 2``. CUDA out-of-memory errors are retried with half
tiles and batch 1, then on the CPU; each fallback is recorded in ``info["warnings"]``.

Fast paths (see ``docs/performance.md``): forward passes run under ``torch.inference_mode``; by
default batch norms are folded into the convolutions and the networks use the channels-last memory
format, both on a private copy of the network that is cached until its weights change (the
caller's network is never modified). Autocast: bf16/fp16 on CUDA, bf16 on CPUs with AMX
(:func:`~napari_drunet.core.device.autocast_dtype`). On CUDA also ``cudnn.benchmark``; optionally
``torch.compile``. Peak memory is the input, the output and one batch of tiles: the
overlap weight map is rebuilt slab by slab rather than stored for the whole volume.

Tile geometry (plan, windows, Gaussian map, TTA flips) and the tile loop, which takes a
predictor callable (:func:`~napari_drunet.core.infer.tiling.sliding_window_iter`), live in
:mod:`napari_drunet.core.infer.tiling`; here the network becomes that callable
(:func:`network_predictor`: activation, TTA, autocast, channels-last). The cached prepared
network and the out-of-memory fallback are in :mod:`napari_drunet.core.infer.fastpaths`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from ..device import autocast_dtype, get_device
from ..errors import InputError
from ..memory import check_fits
from ..progress import Progress, mapped, run_to_end
from .config import InferenceConfig, plan_tile, tile_windows
from .fastpaths import prepared_network, run_with_oom_fallback, set_modes
from .tiling import (
    Predictor,
    TiledVolume,
    TileSource,
    flip_averaged,
    gaussian_importance_map,
    network_dims,
    sliding_window_iter,
)

_MIN_TILE = 16


# ------------------------------------------------------------------------------------ running
def _activate(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def network_predictor(net: nn.Module, cfg: InferenceConfig, dims: int, device: torch.device,
                      channels_last: bool = False) -> Predictor:
    """``net`` as the tiler's predictor: a CPU batch ``(N, C, *tile)`` in, probabilities
    (sigmoid / softmax; averaged over flips with ``cfg.tta``) on ``device`` out, under
    ``torch.inference_mode``, with autocast when ``cfg.amp`` and the device has a fast
    mixed-precision type (:func:`~napari_drunet.core.device.autocast_dtype`) and the
    channels-last memory format when ``channels_last``."""
    dtype = autocast_dtype(device, cfg.amp)
    layout = torch.channels_last if dims == 2 else torch.channels_last_3d

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            if tuple(out.shape[2:]) != tuple(x.shape[2:]):
                raise InputError(f"network output {tuple(out.shape)} does not match its "
                                 f"input {tuple(x.shape)}")
            return _activate(out)

    predictor = flip_averaged(probabilities, dims) if cfg.tta else probabilities

    @torch.inference_mode()
    def predict_batch(x: torch.Tensor) -> torch.Tensor:
        return predictor(x)

    return predict_batch


def _tiles_gen(predictor: Predictor, view: TileSource, cfg: InferenceConfig,
               tile: tuple[int, ...], batch: int, device: torch.device, info: dict[str, Any],
               alloc: Callable[[int], np.ndarray] | None = None,
               ) -> Generator[Progress, None, np.ndarray]:
    """Blend tiles of ``view`` ``(C, N, *spatial)`` into probabilities ``(K, N, *spatial)``,
    reporting the device and any out-of-memory fallback with every record."""
    windows = tile_windows(cfg, view.shape[2:], tile)
    importance = (None if cfg.blend == "constant" or len(windows) == 1
                  else gaussian_importance_map(tile, cfg.sigma_scale))
    jobs = view.shape[1] * len(windows)
    info.update(tiles=jobs, tile_size=list(tile), batch_size=batch, device=str(device))

    def report(rec: Progress) -> Progress:
        metrics: dict[str, Any] = {**rec.metrics, "device": str(device)}
        if info.get("warnings"):
            metrics["warnings"] = list(info["warnings"])
        return Progress(rec.step, rec.total, rec.message, metrics)

    return (yield from mapped(sliding_window_iter(view, windows, tile, predictor, batch,
                                                  importance, alloc), report))


def check_image_size(shape: tuple[int, ...], out_channels: int, cfg: InferenceConfig) -> None:
    """Refuse an image ``(C, *spatial)`` above ``cfg.max_image_pixels`` or whose input copy
    and probability maps (float32, ``C + 2 * K`` values per pixel) exceed the free memory."""
    pixels = math.prod(shape[1:])
    limit = cfg.max_image_pixels
    if limit and pixels > limit:
        raise InputError(f"image of {' x '.join(map(str, shape[1:]))} = {pixels / 1e6:.0f} M "
                         f"pixels is above the size guard of {limit / 1e6:.0f} M; crop or "
                         "downsample it, or lift the guard (max_image_pixels=None; CLI: "
                         "--max-pixels 0)")
    need = pixels * (shape[0] + 2 * max(1, out_channels)) * 4
    # the blended probabilities live in host memory whatever the device
    check_fits(need, "cpu", f"an image of {pixels / 1e6:.0f} M pixels", "crop or downsample it")


def predict_iter(network: nn.Module, image: np.ndarray | TiledVolume, cfg: InferenceConfig | None = None,
                 info: dict[str, Any] | None = None) -> Generator[Progress, None, np.ndarray]:
    """Run ``network`` over ``image`` tile by tile, yielding progress after every batch.

    Parameters
    ----------
    network : nn.Module
        2D or 3D segmentation network returning logits ``(N, K, *spatial)``.
    image : ndarray or LazyVolume
        Normalised image ``(C, *spatial)``, or a :class:`~napari_drunet.core.infer.lazy.LazyVolume`
        (a dask / zarr array read and normalised tile by tile, never loaded whole).
    cfg : InferenceConfig, optional
        Options (defaults when omitted).
    info : dict, optional
        Filled with run details: ``tiles``, ``tile_size``, ``batch_size``, ``device``, ``mode``,
        ``seconds``, ``warnings`` (out-of-memory fallbacks).

    Returns
    -------
    ndarray
        float32 probabilities ``(K, *spatial)``.

    Notes
    -----
    The network's train/eval flags and device are restored afterwards, also when the generator
    is closed early (cancelled).
    """
    cfg = cfg or InferenceConfig()
    info = {} if info is None else info
    info.setdefault("warnings", [])
    lazy = hasattr(image, "tile_view")  # core.lazy.LazyVolume: tiles read when needed
    image = image if lazy else np.asarray(image, dtype=np.float32)
    dims, slicewise = check_input(network, image.shape, cfg)
    # 2D network on a volume: the sliced axis becomes axis 1 of the view (one slice per "n")
    axis = 1 + cfg.slice_axis % 3 if slicewise else None
    view = tiler_view(image, axis)
    info["mode"] = "2d-slices" if slicewise else f"{dims}d"
    device = get_device(cfg.device)
    check_image_size(image.shape, int(getattr(network, "config", {}).get("out_channels", 1)), cfg)
    tile = plan_tile(cfg, view.shape[2:], dims, int(getattr(network, "multiple", 1)))
    attempts = fallback_attempts(tile, int(cfg.batch_size), device)
    channels_last = bool(cfg.channels_last)
    # a private copy (cached) when folding or compiling; channels-last then applies to it only
    private = cfg.fold_bn or cfg.compile
    net = prepared_network(network, cfg.fold_bn, channels_last and private, cfg.compile)
    info["fast_paths"] = {"inference_mode": True, "fold_bn": bool(cfg.fold_bn),
                          "channels_last": channels_last, "compile": bool(cfg.compile)}
    alloc = output_allocator(image.shape[1:], axis)
    relayout = channels_last and not private

    def run(attempt: dict[str, Any]) -> Generator[Progress, None, np.ndarray]:
        _place(net, attempt["device"], dims if relayout else None)
        dtype = autocast_dtype(attempt["device"], cfg.amp)
        info["fast_paths"]["amp"] = str(dtype).removeprefix("torch.") if dtype else False
        if attempt["device"].type == "cuda":
            info["fast_paths"]["cudnn_benchmark"] = cfg.cudnn_benchmark
            torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
        predictor = network_predictor(net, cfg, dims, attempt["device"], channels_last)
        return _tiles_gen(predictor, view, cfg, attempt["tile"], attempt["batch"],
                          attempt["device"], info, alloc)

    started = time.perf_counter()
    # inference_mode is entered inside the predictor only: a context held across a ``yield``
    # would leak into the caller's code between steps.
    with _network_state(net, cfg.mc_dropout, relayout):
        out = yield from run_with_oom_fallback(run, attempts, info["warnings"])
    info["seconds"] = time.perf_counter() - started
    # the output was allocated in the image's own layout: the view moves back without a copy
    return out[:, 0] if axis is None else np.ascontiguousarray(np.moveaxis(out, 1, axis))


def check_input(network: nn.Module, shape: tuple[int, ...], cfg: InferenceConfig,
                ) -> tuple[int, bool]:
    """``(network spatial dims, slice by slice?)`` for an image of ``shape`` ``(C, *spatial)``;
    :class:`InputError` when the network cannot segment it with ``cfg``."""
    dims = network_dims(network)
    spatial_ndim = len(shape) - 1
    if spatial_ndim not in (2, 3):
        raise InputError(f"image must be (C, *spatial) with 2 or 3 spatial axes, got shape "
                         f"{tuple(shape)}")
    expected_c = getattr(network, "in_channels", None)
    if expected_c is not None and shape[0] != expected_c:
        raise InputError(f"network expects {expected_c} channel(s), image has {shape[0]}")
    if cfg.mode == "3d" and dims != 3:
        raise InputError("mode '3d' needs a 3D network")
    if cfg.mode == "2d" and dims != 2:
        raise InputError("mode '2d' needs a 2D network")
    if dims == 3 and spatial_ndim == 2:
        raise InputError("a 3D network cannot segment a 2D image")
    slicewise = dims == 2 and spatial_ndim == 3
    if slicewise and not -3 <= cfg.slice_axis < 3:
        raise InputError(f"slice_axis must be 0, 1 or 2, got {cfg.slice_axis}")
    return dims, slicewise


def tiler_view(image: np.ndarray | TiledVolume, axis: int | None) -> TileSource:
    """``image`` ``(C, *spatial)`` as the tiler reads it, ``(C, N, *plane)``: the sliced
    ``axis`` moved to 1 (a view, no copy), or a new axis of length 1 when ``axis`` is None; a
    :class:`~napari_drunet.core.infer.lazy.LazyVolume` gives its own lazy view."""
    if hasattr(image, "tile_view"):
        return image.tile_view(None if axis is None else axis - 1)
    return image[:, None] if axis is None else np.moveaxis(image, axis, 1)


def fallback_attempts(tile: tuple[int, ...], batch: int, device: torch.device,
                      ) -> list[dict[str, Any]]:
    """The runs tried in turn when memory runs out: as planned, then half tiles and batch 1,
    then (from a GPU) on the CPU."""
    half = tuple(min(t, max(_MIN_TILE, t // 2)) for t in tile)
    attempts = [{"tile": tile, "batch": batch, "device": device},
                {"tile": half, "batch": 1, "device": device}]
    if device.type != "cpu":
        attempts.append({**attempts[0], "device": torch.device("cpu")})
    elif half == tile and batch == 1:
        attempts.pop()  # the retry would be the same run
    return attempts


def output_allocator(spatial: tuple[int, ...], axis: int | None,
                     ) -> Callable[[int], np.ndarray]:
    """``alloc(K)``: zeroed probabilities ``(K, *spatial)`` seen as the tiler's view
    ``(K, N, *plane)``: the sliced ``axis`` (of the channel-first array) moved to 1, or a
    new axis 1 of length 1 when ``axis`` is None."""
    def alloc(k: int) -> np.ndarray:
        full = np.zeros((k, *spatial), dtype=np.float32)
        return full[:, None] if axis is None else np.moveaxis(full, axis, 1)
    return alloc


def _place(net: nn.Module, device: torch.device, channels_last_dims: int | None) -> None:
    """Move ``net`` to ``device`` and, given its dims, to the channels-last memory format."""
    params = list(net.parameters())
    if params and params[0].device != device:
        net.to(device)
    if channels_last_dims is not None:
        net.to(memory_format=torch.channels_last if channels_last_dims == 2
               else torch.channels_last_3d)


@contextmanager
def _network_state(net: nn.Module, mc_dropout: bool, relayout: bool) -> Iterator[None]:
    """Eval mode (dropout kept on for MC dropout) inside; the train/eval flags, the device,
    the memory format and ``cudnn.benchmark`` restored afterwards, also when the generator
    holding it is closed early."""
    params = list(net.parameters())
    home = params[0].device if params else torch.device("cpu")
    saved = set_modes(net, mc_dropout)
    old_benchmark = torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
        for m, flag in saved.items():
            m.train(flag)
        if params and params[0].device != home:
            net.to(home)
        if relayout:
            net.to(memory_format=torch.contiguous_format)


def predict(network: nn.Module, image: np.ndarray | TiledVolume, cfg: InferenceConfig | None = None,
            callback: Callable[[Progress], None] | None = None,
            info: dict[str, Any] | None = None) -> np.ndarray:
    """Run :func:`predict_iter` to the end; ``callback`` receives every progress record."""
    return run_to_end(predict_iter(network, image, cfg, info), callback)


def probabilities_to_labels(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label map from probabilities ``(K, *spatial)``: ``prob >= threshold`` for ``K == 1``,
    else the arg-max class. ``uint8`` for up to 255 classes, else ``int32``."""
    prob = np.asarray(prob)
    if prob.ndim < 3:
        raise InputError(f"probabilities must be (K, *spatial), got shape {prob.shape}")
    if prob.shape[0] == 1:  # written straight into uint8: no volume-sized bool temporary
        return np.greater_equal(prob[0], threshold, out=np.empty(prob.shape[1:], np.uint8))
    labels = np.argmax(prob, axis=0)
    return labels.astype(np.uint8 if prob.shape[0] <= 255 else np.int32)

