"""Preparing a training run (:mod:`napari_drunet.core.train.loop`).

:func:`setup_run` prepares the cases with the input recipe of :func:`training_recipe` (the one
:meth:`Model.predict` uses, see :mod:`napari_drunet.core.models.recipe`), builds a new network (or
deep-copies the starting model's) and completes the
:class:`~napari_drunet.core.train.config.TrainConfig` with what is actually used;
:func:`fit_channels` gives cases the model's channel count; :func:`lr_schedule` is the
learning-rate factor (warm-up, then cosine or constant) and :func:`replan_step` says when a
time-budgeted schedule re-fits its length.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import DataError, InputError
from ..models.recipe import InputRecipe
from .config import DEFAULT_PATCH, TrainConfig
from .sampling import prepare_case

if TYPE_CHECKING:
    from ..infer.config import InferenceConfig
    from ..models.model import Model
    from .dataset import Case


def fit_channels(cases: Sequence[Case], model: Model) -> list[Case]:
    """Give cases ``model``'s input channel count the way :meth:`Model.prepare` does at
    prediction time (RGB -> luminance for a 1-channel model, gray repeated for an RGB model);
    any other mismatch raises :class:`DataError`. Cases that already fit are kept as they are.
    """
    from dataclasses import replace

    from ..image.io import ImageData

    out = []
    for c in cases:
        image = c.image
        channels = image.array.shape[0] if hasattr(image, "array") else np.asarray(image).shape[0]
        if channels == model.in_channels:
            out.append(c)
            continue
        try:
            arr = model.prepare(image, normalized=True)
        except InputError as exc:
            raise DataError(f"case {c.name}: {exc}") from None
        out.append(replace(c, image=ImageData(arr, spacing=getattr(image, "spacing", None))))
    return out


def training_recipe(init: Model | None, spec: dict[str, Any],
                    ) -> tuple[InputRecipe, torch.nn.Module | None, InferenceConfig | None]:
    """``(recipe, network, inference config)`` the training cases are prepared with: the
    starting model's input recipe (channels, scale, axis order found by its network, as at
    prediction time) with normalisation ``spec``; for a new model, ``spec`` only."""
    if init is None:
        return InputRecipe(normalization=spec), None, None
    return init.recipe.replace(normalization=spec), init.network, init.inference_config()


def _label_names(n_classes: int, given: dict | None) -> dict[str, str]:
    names = {"0": "background"} | ({"1": "foreground"} if n_classes <= 2 else
                                    {str(i): f"class {i}" for i in range(1, n_classes)})
    return names | {str(k): str(v) for k, v in (given or {}).items()}


def replan_step(step: int) -> bool:
    """Steps at which a time-budgeted cosine schedule re-fits its length (5, 20, 50, then /100)."""
    return step in (5, 20, 50) or (step >= 100 and step % 100 == 0)


def lr_schedule(cfg: TrainConfig, plan: dict[str, int]) -> Callable[[int], float]:
    """LR factor: linear warm-up, then cosine down to 1 % (or constant)."""
    def factor(step: int) -> float:
        warm, total = plan["warmup"], max(1, plan["total"])
        if cfg.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def setup_run(cases: list, cfg: TrainConfig, init: Model | None, val_cases: list,
              replay_cases: list,
              ) -> tuple[torch.nn.Module, list, list, list]:
    """Prepare the cases (:func:`training_recipe`), build (or copy) the network and complete
    ``cfg`` in place: normalization, label names, threshold, arch and patch size as actually
    used."""
    from ..image.normalization import default_spec, validate_spec
    from ..nets.networks import build_model

    meta = dict(getattr(init, "meta", None) or {})
    spec = validate_spec(cfg.normalization or meta.get("normalization") or default_spec())
    cfg.normalization = spec
    recipe, network, search = training_recipe(init, spec)

    def prepare(c: Any, only_weighted: bool = False) -> Any:
        return prepare_case(c, only_weighted=only_weighted, recipe=recipe, network=network,
                            cfg=search)

    train_p = [prepare(c, cfg.only_weighted) for c in cases]
    replay_p = [prepare(c, cfg.only_weighted) for c in replay_cases]
    val_p = [prepare(c) for c in val_cases]
    every = train_p + replay_p + val_p
    channels = sorted({p.image.shape[0] for p in every})
    if len(channels) != 1:
        raise DataError(f"cases have different channel counts: {channels}")
    if min(int(p.label.min(initial=0)) for p in every) < 0:
        raise DataError("label maps must not contain negative values")
    max_label = max(int(p.label.max(initial=0)) for p in every)
    if init is not None:
        net = copy.deepcopy(init.network)
        conf = net.config  # the stored config describes the network actually trained
        cfg.arch, cfg.spatial_dims = conf["arch"], int(conf["spatial_dims"])
        cfg.features = tuple(conf.get("features", ())) or None
        cfg.dropout = conf.get("dropout", cfg.dropout)
        cfg.act, cfg.norm = conf.get("act", cfg.act), conf.get("norm", cfg.norm)
        cfg.arch_options = {k: v for k, v in conf.items() if k not in
                            ("arch", "spatial_dims", "in_channels", "out_channels", "features",
                             "dropout", "act", "norm")}
        if int(conf["in_channels"]) != channels[0]:
            raise DataError(f"the model expects {conf['in_channels']} channel(s) but the images "
                            f"have {channels[0]}")
        classes = max(2, int(conf["out_channels"]))
        if max_label >= classes:
            raise DataError(f"labels go up to {max_label} but the model has {classes} classes")
        cfg.label_names = _label_names(classes, cfg.label_names or meta.get("label_names"))
        cfg.threshold = float(meta.get("threshold", cfg.threshold))
    else:
        classes = max(max_label + 1, len(cfg.label_names or {}), 2)
        kwargs = dict(spatial_dims=cfg.spatial_dims, in_channels=channels[0],
                      out_channels=1 if classes == 2 else classes, dropout=cfg.dropout,
                      act=cfg.act, norm=cfg.norm, **cfg.arch_options)
        if cfg.features is not None:
            kwargs["features"] = cfg.features
        torch.manual_seed(cfg.seed)
        try:
            net = build_model(cfg.arch, **kwargs)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        cfg.label_names = _label_names(classes, cfg.label_names)
    dims = cfg.spatial_dims
    if cfg.patch_size is None:  # default size, shrunk to the largest image (multiple of 16)
        extent = [max(p.image.shape[-dims:][d] for p in train_p) for d in range(dims)]
        cfg.patch_size = tuple(min(s, 16 * math.ceil(e / 16))
                               for s, e in zip(DEFAULT_PATCH[dims], extent, strict=True))
    return net, train_p, replay_p, val_p
