"""Grow a trained network's width without changing what it computes (Net2WiderNet).

Chen, Goodfellow & Shlens (ICLR 2016): every channel of the wider network copies one channel of
the trained one, and every convolution that reads copied channels divides their weights by the
number of copies, so the wider network starts with the trained network's function (and its
accuracy) instead of from scratch. Small noise on the copies and the networks' channel dropout
let the copies drift apart during further training.

The copy map depends only on the two widths: new channel ``j`` of a tensor that had ``c``
channels and now has ``n`` copies old channel ``floor(j * c / n)``. Tensors that are added (residual
shortcuts) have equal widths, hence the same map, and the map of a skip concatenation
``[skip, up]`` (both ``c -> n``) equals the map of ``2c -> 2n``, so the rule holds across every
U-Net family network here without knowing its wiring. Group normalisation is refused (its groups
would mix copies of different channels).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError

_CONVS = (nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def channel_map(old: int, new: int) -> torch.Tensor:
    """Index of the old channel that each of ``new`` channels copies (evenly spread)."""
    if new < old:
        raise InputError(f"cannot narrow {old} channels to {new}")
    return torch.arange(new) * old // new


def _split(old: int, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy map and, per new channel, 1 / (number of copies of its old channel)."""
    index = channel_map(old, new)
    counts = torch.bincount(index, minlength=old).to(torch.float32)
    return index, 1.0 / counts[index]


def wider_features(features: Sequence[int], factor: float) -> list[int]:
    """Widths ``round(f * factor)`` per level (``factor >= 1``)."""
    if not factor >= 1.0:
        raise InputError(f"factor must be >= 1, got {factor!r}")
    return [int(round(f * factor)) for f in features]


def _copy_conv(new: nn.Module, old: nn.Module, noise: float, gen: torch.Generator) -> None:
    w = old.weight.detach()
    transposed = isinstance(old, _TRANSPOSED)
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    if old.groups != 1:
        raise InputError("grouped convolutions cannot be widened")
    out_idx, _ = _split(w.shape[out_dim], new.weight.shape[out_dim])
    in_idx, in_scale = _split(w.shape[in_dim], new.weight.shape[in_dim])
    w = w.index_select(out_dim, out_idx).index_select(in_dim, in_idx)
    shape = [1] * w.dim()
    shape[in_dim] = -1
    w = w * in_scale.view(shape)
    if noise > 0:  # break the symmetry between copies, in proportion to the layer's weights
        w = w + noise * w.std() * torch.randn(w.shape, generator=gen)
    new.weight.data.copy_(w)
    if old.bias is not None:
        new.bias.data.copy_(old.bias.detach()[out_idx])


def _copy_channels(new: nn.Module, old: nn.Module) -> None:
    """Per-channel parameters and buffers (norm layers, PReLU) indexed by the copy map."""
    for name, value in list(old.named_parameters(recurse=False)) + \
            list(old.named_buffers(recurse=False)):
        target = getattr(new, name)
        if value.dim() == 0 or value.numel() == 1 and target.numel() == 1:
            target.data.copy_(value.detach())
            continue
        index, _ = _split(value.shape[0], target.shape[0])
        target.data.copy_(value.detach()[index])


def widen_network(network: nn.Module, factor: float = 1.5, *, noise: float = 0.01,
                  seed: int = 0) -> nn.Module:
    """A wider copy of a U-Net family ``network`` that computes the same function.

    Parameters
    ----------
    network : nn.Module
        Built by :func:`~napari_drunet.core.nets.networks.build_model` (it has ``.config``); left
        unchanged.
    factor : float
        Width multiplier per level (``>= 1``; widths are rounded).
    noise : float
        Gaussian noise on the copied convolution weights, as a fraction of each layer's weight
        standard deviation (0 keeps the function exactly).
    seed : int
        Seed of that noise.

    Returns
    -------
    nn.Module
        The wider network (same ``arch``, ``features`` scaled), in the input's train/eval mode.
    """
    from ..nets.networks import build_model

    config = dict(getattr(network, "config", None) or {})
    if "arch" not in config or "features" not in config:
        raise InputError("network has no .config with 'arch' and 'features'; use build_model()")
    arch = config.pop("arch")
    config["features"] = wider_features(config["features"], factor)
    device = next(network.parameters()).device
    wide = build_model(arch, **config)
    gen = torch.Generator().manual_seed(int(seed))
    old_modules = dict(network.named_modules())
    for name, module in wide.named_modules():
        old = old_modules.get(name)
        if old is None or type(old) is not type(module):
            raise InputError(f"cannot match module {name!r} of the wider {arch}")
        if isinstance(module, _CONVS + _TRANSPOSED):
            _copy_conv(module, old, noise, gen)
        elif isinstance(module, _NORMS + (nn.PReLU,)):
            _copy_channels(module, old)
        elif isinstance(module, nn.GroupNorm):
            raise InputError("networks with group normalisation cannot be widened")
        elif next(module.parameters(recurse=False), None) is not None:
            raise InputError(f"cannot widen {type(module).__name__} ({name!r})")
    return wide.to(device).train(network.training)


def widen_checkpoint(model: str | os.PathLike, out: str | os.PathLike, factor: float = 1.5, *,
                     noise: float = 0.01, seed: int = 0) -> nn.Module:
    """Widen a packaged model (by name) or model file and write it, with its recipe, to ``out``.

    The recipe (normalisation, threshold, labels, inference and scale settings) is kept, so the
    wider model predicts like the original until it is trained further (``drunet finetune``).
    """
    from .model import Model, load_model

    src = load_model(model, device="cpu")
    wide = widen_network(src.network, factor, noise=noise, seed=seed)
    provenance = dict(src.meta.get("provenance") or {})
    provenance.pop("created", None)  # a new file gets a new creation time
    provenance["widened_from"] = {"model": str(src.path or model), "factor": float(factor),
                                  "noise": float(noise), "seed": int(seed),
                                  "features": list(src.network.config["features"])}
    Model(wide, src.meta, device="cpu").save(out, provenance=provenance)
    return wide
