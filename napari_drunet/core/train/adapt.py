"""Adapting a model to a new site's images without labels: batch-norm statistics (AdaBN).

A network trained on one camera or scanner normalises every layer with the mean and variance it
saw in training. Images from another site (other optics, compression, noise, slice thickness)
shift those statistics, and the network's later layers get inputs they never saw. Re-estimating
the running statistics of every batch-norm layer on the new site's own images (Li et al.,
"Revisiting batch normalization for practical domain adaptation", 2016) keeps all learned
weights and needs no corrections: the images only go through the network once.

The images are prepared exactly as :meth:`Model.predict` prepares them (channels, normalisation,
rescaling to the model's FOV diameter or voxel spacing, axis order of 3D volumes from the header
or the search, tiling), so the statistics are those the network meets at prediction time; an
image smaller than the tile is padded by reflection, as training patches are, instead of the
zeros inference pads with (zeros would enter the statistics: on the MSD hippocampus crops they
cost 0.013 Dice). Each layer normalises every batch of tiles with that batch's own statistics
while they are recorded, as in training, and each batch counts once in the new running
averages (``momentum=None``). On in-distribution images the result is close to the trained
statistics (see docs/results.md: "Another site").

>>> adapted = adapt_batchnorm(model, [image_1, image_2])   # doctest: +SKIP
>>> adapted.predict(image_3)                                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from torch import nn

from ..errors import InputError
from ..infer.predict import predict_iter
from ..progress import Progress, relay, run_to_end

if TYPE_CHECKING:
    from ..models.model import Model
    from ..models.recipe import ImageInput

T = TypeVar("T")
_BN = nn.modules.batchnorm._BatchNorm
#: Smallest side (pixels) of an image the statistics are estimated on: a tiny image gives the
#: deepest layers one value per channel, whose variance is undefined.
MIN_SIDE = 8


def batchnorm_layers(network: nn.Module) -> list[nn.Module]:
    """The batch-norm layers of ``network`` that keep running statistics."""
    return [m for m in network.modules() if isinstance(m, _BN) and m.track_running_stats]


class LazyImages(Sequence):
    """``load(item)`` for each of ``items``, read only when asked for (a folder or project of
    many volumes is adapted to without holding them all in memory)."""

    def __init__(self, items: Sequence[T], load: Callable[[T], ImageInput]):
        self.items, self.load = list(items), load

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> ImageInput:  # type: ignore[override]
        return self.load(self.items[i])


def _reflect_to_tile(arr: np.ndarray, tile: Any) -> np.ndarray:
    """``arr`` (``(C, *spatial)``) padded by reflection up to ``tile`` where it is smaller, as
    the training patches are padded (inference pads zeros, which would enter the statistics)."""
    if tile is None:
        return arr
    spatial = arr.shape[1:]
    sizes = [int(tile)] * len(spatial) if isinstance(tile, int) else [int(t) for t in tile]
    if len(sizes) != len(spatial):
        return arr
    pad = [(0, 0)] + [((t - n) // 2, t - n - (t - n) // 2) if t > n else (0, 0)
                      for t, n in zip(sizes, spatial, strict=True)]
    if not any(p for pair in pad for p in pair):
        return arr
    return np.pad(arr, pad, mode="reflect")  # numpy reflects again when a pad exceeds the axis


def adapt_batchnorm_iter(model: Model, images: Sequence[ImageInput], *, is_rgb: bool | None = None,
                         **opts: Any) -> Generator[Progress, None, Model]:
    """Re-estimate the batch-norm statistics of a copy of ``model`` on ``images``.

    ``images``: a sequence of anything :meth:`Model.predict` accepts (``ImageData`` keeps its
    spacing and header), used one at a time (a lazy sequence keeps memory flat). ``opts``:
    :class:`~napari_drunet.core.infer.config.InferenceConfig` fields for the tiling
    (``tile_size``, ``batch_size``, ``device`` ...) and ``axis_order``; test-time augmentation,
    Monte-Carlo dropout and the batch-norm folding fast path are turned off. Yields progress
    per image; returns the adapted :class:`~napari_drunet.core.models.model.Model` (``model`` is not
    changed), whose ``meta["adaptation"]`` records what was done.
    """
    if not len(images):
        raise InputError("no images to adapt the model to")
    new = model.copy()
    layers = batchnorm_layers(new.network)
    if not layers:
        raise InputError(f"model '{model.name}' has no batch-norm layers; its statistics "
                         "cannot be re-estimated (fine-tune it on corrected cases instead)")
    axis_mode = opts.pop("axis_order", "auto")
    # statistics in float32: a bf16 autocast would put its rounding into the running means
    cfg = new.inference_config({**opts, "tta": False, "mc_dropout": False, "fold_bn": False,
                                "compile": False, "amp": False})
    recipe = model.recipe
    # the axis order is found with the original model: a search must see the old statistics
    search = model.inference_config()

    def prepared(i: int, image: Any) -> np.ndarray:
        """As :meth:`Model.predict` prepares it, padded by reflection up to the tile."""
        _check_finite(i, image)
        arr = recipe.prepare(image, is_rgb=is_rgb, network=model.network, cfg=search,
                             axis_order=axis_mode, name=model.name).array
        _check_usable(i, image, arr)
        return _reflect_to_tile(arr, cfg.tile_size)

    momentum = {m: m.momentum for m in layers}
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches of tiles

    def batch_statistics(module: nn.Module, _inputs: Any) -> None:
        module.train()  # inference set eval(); the layer normalises with, and records, the batch

    hooks = [m.register_forward_pre_hook(batch_statistics) for m in layers]
    try:
        for i, image in enumerate(images):  # one at a time: a project may hold many volumes
            yield from relay(predict_iter(new.network, prepared(i, image), cfg, {}), i, len(images),
                             f"adapting to image {i + 1}/{len(images)}")
    finally:
        for h in hooks:
            h.remove()
        for m, value in momentum.items():
            m.momentum = value
        new.network.eval()
    _check_statistics(layers, model.name)
    batches = int(layers[0].num_batches_tracked)
    new.meta["adaptation"] = {
        "method": "batch-norm statistics re-estimated on the site's images (AdaBN)",
        "images": len(images), "batches": batches, "layers": len(layers),
        "source": model.name}
    return new


def _name(i: int, image: Any) -> str:
    return str(getattr(image, "path", None) or f"image {i + 1}")


def _check_finite(i: int, image: Any) -> None:
    arr = np.asarray(getattr(image, "array", image))
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).any():
        raise InputError(f"{_name(i, image)}: no finite pixel values (all NaN/Inf); cannot "
                         "adapt to it")


def _check_usable(i: int, image: Any, arr: np.ndarray) -> None:
    """Refuse a prepared image ``(C, *spatial)`` that cannot give batch-norm statistics (they
    would ruin the model: zero variance makes every later activation explode)."""
    if min(arr.shape[1:]) < MIN_SIDE:
        raise InputError(f"{_name(i, image)}: {tuple(arr.shape[1:])} pixels is too small to "
                         f"adapt to (at least {MIN_SIDE} per side)")
    if float(arr.min()) == float(arr.max()):
        raise InputError(f"{_name(i, image)}: constant image; it holds no statistics to adapt "
                         "to")


def _check_statistics(layers: Sequence[nn.Module], name: str) -> None:
    for m in layers:
        stats = (m.running_mean, m.running_var)
        if any(not bool(t.isfinite().all()) for t in stats) or not bool((m.running_var > 0).any()):
            raise InputError(f"adapting '{name}' gave unusable batch-norm statistics (NaN or zero "
                             "variance); the images are unusable: use other images")


def adapt_batchnorm(model: Model, images: Sequence[ImageInput], **opts: Any) -> Model:
    """:func:`adapt_batchnorm_iter` run to the end."""
    return run_to_end(adapt_batchnorm_iter(model, images, **opts))


def renormalize_iter(model: Model, spec: dict[str, Any], images: Sequence[Any],
                     **opts: Any) -> Generator[Progress, None, Model]:
    """A copy of ``model`` that takes its input under another normalisation ``spec``.

    The weights are kept; the batch-norm statistics are re-estimated on ``images`` prepared
    the new way (:func:`adapt_batchnorm_iter`), since the old statistics describe inputs the
    network will no longer see. This is how continued training from a checkpoint with a new
    normalisation starts (``drunet finetune --normalization``).

    Parameters
    ----------
    model : Model
        The starting model (not changed).
    spec : dict
        The new normalisation (see :func:`~napari_drunet.core.image.normalization.validate_spec`),
        e.g. ``{"mode": "fundus_local"}``.
    images : sequence
        Images of the training site, as :func:`adapt_batchnorm_iter` takes them.
    **opts
        As in :func:`adapt_batchnorm_iter`.

    Yields
    ------
    Progress
        One record per image.

    Returns
    -------
    Model
        The copy, with ``meta["normalization"]`` = ``spec`` (completed) and
        ``meta["adaptation"]`` saying which normalisation it was re-estimated for.
    """
    from ..image.normalization import validate_spec

    start = model.copy()
    start.meta["normalization"] = validate_spec(spec)
    new = yield from adapt_batchnorm_iter(start, images, **opts)
    new.meta["adaptation"]["normalization"] = new.meta["normalization"]["mode"]
    return new
