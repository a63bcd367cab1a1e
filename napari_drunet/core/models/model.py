"""A trained network plus its recipe: the object the GUI, the CLI and the Python API use.

>>> import napari_drunet                                          # doctest: +SKIP
>>> model = napari_drunet.load_model("path/to/model.safetensors")  # doctest: +SKIP
>>> pred = model.predict(image)                                   # doctest: +SKIP
>>> pred.mask, pred.probabilities                                  # doctest: +SKIP

Packaged models live in ``napari_drunet/weights/<name>.safetensors`` (with an optional model
card ``<name>.md``) and are loaded by name.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..device import get_device
from ..errors import CheckpointError, InputError
from ..infer.config import InferenceConfig
from ..infer.lazy import as_channel_first, is_lazy, predict_lazy_iter
from ..infer.orientation import AxisOrder, find_axis_order
from ..infer.postprocess import keep_largest_objects
from ..infer.predict import predict_iter, probabilities_to_labels
from ..progress import Progress, relay, run_to_end
from .checkpoint import load_checkpoint, read_meta, save_checkpoint
from .fit import ImageKind, check_fit, label_names
from .packaged import card_path, list_models, model_path
from .recipe import InputRecipe

if TYPE_CHECKING:
    from .recipe import ImageInput

_UNCERTAINTY = ("entropy", "std", "mutual_info")


@dataclass
class Prediction:
    """Result of :meth:`Model.predict`.

    Attributes
    ----------
    mask : ndarray
        Integer label map ``(*spatial)`` (``uint8`` up to 255 classes).
    probabilities : ndarray
        float32 ``(K, *spatial)``; for a binary model ``K == 1`` (foreground probability).
    info : dict
        Run details: ``tiles``, ``tile_size``, ``device``, ``mode``, ``seconds``, ``threshold``,
        ``warnings`` (input conversions, out-of-memory fallbacks), ``axis_order`` (3D volumes
        transposed / flipped for the model, see :mod:`.orientation`), ...
    """

    mask: np.ndarray
    probabilities: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


class Model:
    """A segmentation network with its recipe (normalisation, labels, threshold, history).

    Parameters
    ----------
    network : nn.Module
        Network built by ``build_model`` (has ``.config``).
    meta : dict, optional
        Checkpoint recipe (see ``docs/architecture.md``).
    device : str or torch.device
        Where the network runs (``'auto'`` = cuda, mps, cpu).
    name, path : optional
        Display name and source file.
    """

    def __init__(self, network: nn.Module, meta: dict[str, Any] | None = None,
                 device: str | torch.device = "auto", name: str | None = None,
                 path: str | os.PathLike | None = None) -> None:
        self.device = get_device(device)
        self.network = network.to(self.device).eval()
        self.meta: dict[str, Any] = copy.deepcopy(meta) if meta else {}
        config = dict(getattr(network, "config", {}) or {})
        if config:
            self.meta["arch"] = config.pop("arch", self.meta.get("arch"))
            self.meta["arch_kwargs"] = config
        self.path = Path(path) if path is not None else None
        self.name = name or (self.path.stem if self.path else str(self.meta.get("arch", "model")))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto",
                        name: str | None = None) -> Model:
        """Load a model file (see :mod:`napari_drunet.core.models.checkpoint`)."""
        network, meta = load_checkpoint(path, device=get_device(device))
        return cls(network, meta, device=device, name=name, path=path)

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, arch={self.meta.get('arch')!r}, {self.spatial_dims}D, "
                f"in={self.in_channels}, out={self.out_channels}, device={self.device})")

    # ------------------------------------------------------------------------ properties
    def _arch(self, key: str, default: Any) -> Any:
        return getattr(self.network, key, None) or self.meta.get("arch_kwargs", {}).get(key,
                                                                                        default)

    @property
    def spatial_dims(self) -> int:
        """2 or 3 (a 2D model segments volumes slice by slice)."""
        return int(self._arch("spatial_dims", 2))

    @property
    def in_channels(self) -> int:
        return int(self._arch("in_channels", 1))

    @property
    def out_channels(self) -> int:
        """``K``: 1 for binary (sigmoid), >= 2 for multi-class (softmax)."""
        return int(self._arch("out_channels", 1))

    @property
    def label_names(self) -> dict[int, str]:
        """Class index -> name, background included."""
        return label_names({**self.meta, "arch_kwargs": {"out_channels": self.out_channels}})

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @property
    def normalization(self) -> dict[str, Any] | None:
        """Normalisation spec used in training (``None``: the package default)."""
        return self.meta.get("normalization")

    def to(self, device: str | torch.device) -> Model:
        """Move the network to ``device`` (in place) and return ``self``."""
        self.device = get_device(device)
        self.network.to(self.device)
        return self

    @property
    def recipe(self) -> InputRecipe:
        """The input recipe (:mod:`.recipe`) read from ``meta`` (built on every access, so an
        edit of ``meta["preprocess"]`` takes effect at once)."""
        return InputRecipe.from_meta(self.meta, in_channels=self.in_channels,
                                     spatial_dims=self.spatial_dims, check=self._check_fit)

    def _check_fit(self, kind: ImageKind) -> None:
        check_fit(self.meta, kind, self.name)

    # ---------------------------------------------------------------------------- input
    def prepare(self, image: ImageInput, *, is_rgb: bool | None = None, channel_axis: int | None = None,
                normalized: bool = False) -> np.ndarray:
        """Turn an image into the network input ``(C, *spatial)`` float32, normalised.

        Accepted inputs (``C`` = model input channels):

        * :class:`~napari_drunet.core.image.io.ImageData` -- ``array`` is channel-first; its ``is_rgb``
          flag is used unless ``is_rgb`` is given.
        * ``channel_axis=k`` -- that axis holds the channels.
        * ``is_rgb=True`` -- colour on the last axis, ``(H, W, 3|4)`` (alpha dropped).
        * ``(*spatial)`` with 2 axes -- one channel.
        * 3 axes -- for a 3D model a one-channel volume ``(Z, Y, X)``; for a 2D model an RGB
          photo ``(H, W, 3|4)`` (RGB or 1-channel model), channel-first ``(C, H, W)`` if the
          first axis equals ``C``, else a one-channel volume segmented slice by slice; a shape
          that reads both ways raises :class:`InputError` (pass ``is_rgb`` / ``channel_axis``).
        * 4 axes -- channel-first volume ``(C, Z, Y, X)``.

        Channel fixes: an RGB image for a 1-channel model becomes luminance; a one-channel image
        for a 3-channel model is repeated. Any other mismatch, and an image the model's card
        does not cover (e.g. a volume for a 2D photo model, see :mod:`.fit`), raises
        :class:`InputError`. The
        result is normalised with ``meta['normalization']`` unless ``normalized=True``.
        """
        return self.recipe.network_input(image, is_rgb=is_rgb, channel_axis=channel_axis,
                                         normalized=normalized, name=self.name)[0]

    def inference_config(self, opts: dict[str, Any] | None = None) -> InferenceConfig:
        """:class:`InferenceConfig` of ``opts`` over the model's defaults (``meta['inference']``,
        threshold, device)."""
        opts = opts or {}
        names = set(InferenceConfig.__dataclass_fields__)
        # the stored tile_size is the training patch, not a limit: inference plans its own tiles
        defaults = {k: v for k, v in (self.meta.get("inference") or {}).items()
                    if k in names and k != "tile_size"}
        defaults.update(threshold=self.threshold, device=str(self.device))
        defaults.update(opts)
        return InferenceConfig.from_options(**defaults)

    # ------------------------------------------------------------------------ inference
    def predict_iter(self, image: ImageInput, *, is_rgb: bool | None = None,
                     channel_axis: int | None = None, normalized: bool = False,
                     **opts: Any) -> Generator[Progress, None, Prediction]:
        """Segment ``image``, yielding progress; returns a :class:`Prediction`.

        ``opts`` are :class:`~napari_drunet.core.infer.config.InferenceConfig` fields (tile_size,
        overlap, tta, batch_size, threshold, ...); defaults come from ``meta['inference']``,
        the model threshold and the model device. See :meth:`prepare` for accepted images.
        ``axis_order``: ``"auto"`` (3D volumes reoriented as the model asks, see
        :mod:`.orientation`), ``"search"`` (try the six axis orders) or ``"keep"``.
        """
        axis_mode = opts.pop("axis_order", "auto")
        cfg = self.inference_config(opts)
        data = image.array if hasattr(image, "array") and hasattr(image, "spacing") else image
        if is_lazy(data) and channel_axis in (None, 0) and not is_rgb:  # dask, zarr: core.lazy
            meta = {**self.meta, "normalization": {"mode": "none"}} if normalized else self.meta
            prob, info = yield from predict_lazy_iter(self.network, as_channel_first(
                data, self.spatial_dims, self.in_channels), cfg, meta)
            return Prediction(_labels(prob, cfg), prob, info)
        info: dict[str, Any] = {"warnings": []}
        prepared = yield from self.recipe.prepare_iter(
            image, is_rgb=is_rgb, channel_axis=channel_axis, normalized=normalized,
            network=self.network, cfg=cfg, axis_order=axis_mode, info=info, name=self.name)
        prob = prepared.probabilities
        if prob is None:
            prob = yield from predict_iter(self.network, prepared.array, cfg, info)
        prob = prepared.restore(prob)
        info.update(model=self.name, threshold=cfg.threshold, tta=cfg.tta,
                    largest_object=cfg.largest_object)
        return Prediction(_labels(prob, cfg), prob, info)

    def predict(self, image: ImageInput, **opts: Any) -> Prediction:
        """Run :meth:`predict_iter` to the end."""
        return run_to_end(self.predict_iter(image, **opts))

    def find_axis_order(self, arr: np.ndarray, affine: np.ndarray | None = None) -> AxisOrder:
        """The axis order :meth:`predict` uses for ``arr`` (normalised, at the model's scale,
        ``(C, *spatial)``) from a file with ``affine``."""
        return find_axis_order(self.network, arr, self.inference_config(), "auto",
                               self.recipe.preprocess(), affine)

    def has_dropout(self) -> bool:
        """True if the network has active dropout layers (needed by :meth:`mc_dropout`)."""
        return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
                   for m in self.network.modules())

    def mc_dropout_iter(self, image: ImageInput, n: int = 8, measure: str = "entropy", **opts: Any
                        ) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
        """Monte-Carlo dropout: ``n`` predictions with dropout active at test time.

        Returns ``(mean_probabilities (K, *spatial), uncertainty (*spatial))``, both float32.
        ``measure``: ``'entropy'`` -- predictive entropy of the mean, scaled to [0, 1];
        ``'std'`` -- standard deviation across samples (mean over classes);
        ``'mutual_info'`` -- entropy of the mean minus mean entropy (model uncertainty only).
        ``image`` and ``opts`` as in :meth:`predict_iter`.
        """
        if measure not in _UNCERTAINTY:
            raise InputError(f"measure must be one of {', '.join(_UNCERTAINTY)}; got {measure!r}")
        if int(n) < 2:
            raise InputError(f"MC dropout needs at least 2 samples, got {n}")
        if not self.has_dropout():
            raise InputError(f"model '{self.name}' has no dropout layers; Monte-Carlo dropout "
                             "needs a model trained with dropout > 0")
        prep = {k: opts.pop(k) for k in ("is_rgb", "channel_axis", "normalized") if k in opts}
        axis_mode = opts.pop("axis_order", "auto")
        cfg = self.inference_config({**opts, "mc_dropout": True})
        # same recipe as predict_iter, so the map lines up with the mask
        prepared = yield from self.recipe.prepare_iter(image, **prep, network=self.network,
                                                       cfg=cfg, axis_order=axis_mode,
                                                       name=self.name)
        arr = prepared.array
        total = sumsq = ent = None
        for i in range(int(n)):
            prob = yield from relay(predict_iter(self.network, arr, cfg), i, int(n),
                                    f"sample {i + 1}/{n}")
            if total is None:
                total, sumsq, ent = np.zeros_like(prob), np.zeros_like(prob), \
                    np.zeros(prob.shape[1:], np.float32)
            total += prob
            sumsq += prob * prob
            ent += _entropy(prob)
        mean = total / n
        if measure == "entropy":
            unc = _entropy(mean)
        elif measure == "std":
            unc = np.sqrt(np.maximum(sumsq / n - mean * mean, 0.0)).mean(axis=0)
        else:
            unc = np.maximum(_entropy(mean) - ent / n, 0.0)
        mean = prepared.restore(mean.astype(np.float32))
        unc = prepared.restore(unc.astype(np.float32)[None])[0]
        return mean, unc

    def mc_dropout(self, image: ImageInput, n: int = 8, measure: str = "entropy",
                   **opts: Any) -> tuple[np.ndarray, np.ndarray]:
        """Run :meth:`mc_dropout_iter` to the end."""
        return run_to_end(self.mc_dropout_iter(image, n, measure, **opts))

    # ------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, **meta_updates: Any) -> Path:
        """Write the model file; ``meta_updates`` replace top-level recipe entries."""
        meta = copy.deepcopy(self.meta)
        if "provenance" not in meta_updates and isinstance(meta.get("provenance"), dict):
            meta["provenance"].pop("created", None)  # a new file gets a new creation time
        meta.update(meta_updates)
        return save_checkpoint(path, self.network, meta)

    def copy(self) -> Model:
        """Independent deep copy (e.g. to fine-tune while the original keeps serving)."""
        return Model(copy.deepcopy(self.network), copy.deepcopy(self.meta), self.device,
                     self.name, self.path)


def _labels(prob: np.ndarray, cfg: InferenceConfig) -> np.ndarray:
    """The label map of ``prob`` under ``cfg`` (threshold or arg-max, then the recipe's
    clean-up)."""
    labels = probabilities_to_labels(prob, cfg.threshold)
    return keep_largest_objects(labels) if cfg.largest_object else labels


def _entropy(prob: np.ndarray) -> np.ndarray:
    """Entropy per pixel of probabilities ``(K, *spatial)``, scaled to [0, 1]."""
    p = np.clip(prob.astype(np.float64), 1e-12, 1.0)
    if prob.shape[0] == 1:
        q = np.clip(1.0 - prob[0].astype(np.float64), 1e-12, 1.0)
        h = -(p[0] * np.log(p[0]) + q * np.log(q)) / math.log(2)
    else:
        h = -(p * np.log(p)).sum(axis=0) / math.log(prob.shape[0])
    return h.astype(np.float32)


# ---------------------------------------------------------------------------- packaged zoo
def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "auto") -> Model:
    """Load a packaged model by name or a model file by path.

    A packaged name given as a string (``"retina-vessels"``) always means the packaged model; a
    file of the same name is loaded when written as a path (``"./retina-vessels"`` or a
    :class:`~pathlib.Path`).

    Raises
    ------
    CheckpointError
        Unknown name (the message lists :func:`list_models`), missing or invalid file.
    """
    path = Path(name_or_path)
    text = str(name_or_path)
    # a bare packaged name means the packaged model, even when a file of that name sits in the
    # working folder (write ./retina-vessels for the file)
    if not isinstance(name_or_path, Path) and text in list_models():
        return Model.from_checkpoint(model_path(text), device=device, name=text)
    if path.is_file():
        return Model.from_checkpoint(path, device=device)
    if isinstance(name_or_path, Path) or os.sep in text or "/" in text or path.suffix in (
            ".safetensors", ".ckpt", ".pt", ".pth"):
        if not path.exists():
            raise CheckpointError(f"model file not found: {path}")
    return Model.from_checkpoint(model_path(text), device=device, name=text)


def model_card(name: str) -> str:
    """Model card of a packaged model: ``weights/<name>.md`` if present, else a summary."""
    path = model_path(name)
    card = card_path(name)
    if card.is_file():
        return card.read_text(encoding="utf-8")
    meta = read_meta(path)
    kw = meta.get("arch_kwargs", {})
    lines = [f"# {name}", "",
             f"- architecture: {meta.get('arch')} ({kw.get('spatial_dims')}D, "
             f"{kw.get('in_channels')} input channel(s), {kw.get('out_channels')} output(s))",
             f"- labels: {meta.get('label_names') or 'binary'}",
             f"- normalization: {meta.get('normalization') or 'default'}"]
    if meta.get("metrics"):
        lines.append("- metrics: " + ", ".join(f"{k} = {v}" for k, v in meta["metrics"].items()))
    return "\n".join(lines) + "\n"
