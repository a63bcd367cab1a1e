"""Export a network for deployment outside napari-drunet: TorchScript or ONNX.

The exported graph takes ``(N, in_channels, *spatial)`` float32 input and returns logits
``(N, out_channels, *spatial)``; batch norms are folded into convolutions first
(:func:`napari_drunet.core.nets.networks.fold_batchnorm`). Both formats are traced at
``example_shape`` but keep the internal pad-to-multiple and crop, so other spatial sizes work
(ONNX input/output axes 0 and 2+ are declared dynamic). The network's ``config`` is stored as
JSON: TorchScript extra file ``config.json``, ONNX metadata property ``napari_drunet``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_drunet.core.atomic import atomic_write_bytes
from napari_drunet.core.errors import InputError
from napari_drunet.core.nets.networks import fold_batchnorm

FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 17


def _network_of(model: Any) -> nn.Module:
    net = getattr(model, "network", model)
    if not isinstance(net, nn.Module):
        raise InputError(f"cannot export {type(model).__name__}: not a network or model")
    return net


def _example_input(net: nn.Module, example_shape: Sequence[int] | None) -> torch.Tensor:
    config = getattr(net, "config", {})
    dims = int(config.get("spatial_dims", 2))
    channels = int(config.get("in_channels", 1))
    if example_shape is None:
        example_shape = (1, channels) + (64,) * dims
    shape = tuple(int(s) for s in example_shape)
    if len(shape) != dims + 2 or shape[1] != channels or min(shape) < 1:
        raise InputError(f"example shape must be (N, {channels}, {dims} spatial sizes), "
                         f"got {tuple(example_shape)}")
    return torch.randn(shape)


def export_model(network: nn.Module | Any, fmt: str, out: str | os.PathLike,
                 example_shape: Sequence[int] | None = None, *, fold_bn: bool = True) -> Path:
    """Write ``network`` (an ``nn.Module`` or a ``Model`` with ``.network``) to ``out``.

    Parameters
    ----------
    network : nn.Module or Model
        Network built by :func:`napari_drunet.core.nets.networks.build_model` (any module taking one
        tensor works; ``.config`` supplies defaults and metadata).
    fmt : {'torchscript', 'onnx'}
        Output format.
    out : path
        File to write (atomically; parent folders are created).
    example_shape : tuple of int, optional
        Full input shape ``(N, C, *spatial)`` used for tracing; default ``(1, C, 64, ...)``.
        Use spatial sizes of at least ``2 ** (depth - 1)`` so the traced padding reflects.
    fold_bn : bool
        Fold batch norms into the preceding convolutions (faster inference, same outputs).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        Unknown format, bad example shape, or ONNX export impossible with the installed packages.

    Examples
    --------
    >>> from napari_drunet.core.nets.networks import build_model
    >>> net = build_model("drunet", features=(8, 16))
    >>> export_model(net, "torchscript", tmp_path / "drunet.pt", (1, 1, 32, 32))  # doctest: +SKIP
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    net = _network_of(network)
    config = dict(getattr(net, "config", {}))
    x = _example_input(net, example_shape)
    device = next(iter(net.parameters()), torch.empty(0)).device
    net = fold_batchnorm(net) if fold_bn else copy.deepcopy(net).eval()
    net = net.cpu() if device.type != "cpu" else net
    for p in net.parameters():
        p.requires_grad_(False)
    out = Path(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if fmt == "torchscript":
            _export_torchscript(net, x, out, config)
        else:
            _export_onnx(net, x, out, config)
    return out


def _export_torchscript(net: nn.Module, x: torch.Tensor, out: Path, config: dict) -> None:
    import io

    with torch.no_grad():
        traced = torch.jit.trace(net, (x,), check_trace=False)
    # serialised in memory, then written by Python: torch's C++ writer aborts the whole
    # process (SIGABRT) on a full disk, leaving its temporary file behind
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"config.json": json.dumps(config)})
    _write(out, buffer.getvalue())


def _export_onnx(net: nn.Module, x: torch.Tensor, out: Path, config: dict) -> None:
    import io

    axes = {0: "batch", **{i: f"spatial{i - 2}" for i in range(2, x.dim())}}
    buffer = io.BytesIO()  # in memory for the same reason as TorchScript
    try:
        torch.onnx.export(net, (x,), buffer, dynamo=False, input_names=["image"],
                          output_names=["logits"], opset_version=ONNX_OPSET,
                          dynamic_axes={"image": axes, "logits": axes})
        data = buffer.getvalue()
    except (TypeError, NotImplementedError, RuntimeError) as legacy_error:
        # the legacy (TorchScript-based) exporter is gone or failed: try torch.export's
        if importlib.util.find_spec("onnxscript") is None:
            raise InputError(f"ONNX export failed ({legacy_error}); installing 'onnxscript' "
                             "enables the newer exporter") from legacy_error
        dims = {name: {i: torch.export.Dim.AUTO for i in axes} for name in ("x",)}
        program = torch.onnx.export(net, (x,), None, dynamo=True, input_names=["image"],
                                    output_names=["logits"], dynamic_shapes=dims)
        data = program.model_proto.SerializeToString()
    if importlib.util.find_spec("onnx") is not None:
        import onnx

        model = onnx.load_from_string(data)
        entry = model.metadata_props.add()
        entry.key, entry.value = "napari_drunet", json.dumps(config)
        data = model.SerializeToString()
    _write(out, data)


def _write(out: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
