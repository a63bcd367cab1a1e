"""Model files: one safetensors file = network weights + a JSON recipe to rebuild the network.

Format version 1 (see ``docs/architecture.md``): the tensors are the network's ``state_dict`` and
the safetensors metadata key ``"napari_drunet"`` holds a JSON object with ``format_version``,
``package_version``, ``arch``, ``arch_kwargs``, ``normalization``, ``label_names``,
``threshold``, ``inference`` defaults, ``training`` (config, history), ``metrics`` and
``provenance`` (created, parent sha256, parent name, data, command).

Loading never executes anything stored in the file: the header is parsed as JSON, the network is
rebuilt with :func:`napari_drunet.core.nets.networks.build_model` and the raw tensors are copied in.
Pickles (``torch.save`` files) are refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import struct
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import CheckpointError, InputError

FORMAT_VERSION = 1
METADATA_KEY = "napari_drunet"
#: Largest JSON header accepted (safetensors itself caps it at 100 MB).
_MAX_HEADER = 100_000_000


def _package_version() -> str:
    # from the installed distribution, not the package root: the core never imports upward
    try:
        return metadata.version("napari-drunet")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


# ----------------------------------------------------------------------------------------- meta
def to_plain_json(obj: Any, where: str = "meta") -> Any:
    """Return ``obj`` as plain JSON types (dict with str keys, list, str, int, float, bool, None).

    Tuples become lists, numpy scalars/arrays and paths are converted, non-finite floats become
    ``None`` (strict JSON has no NaN). Anything else raises :class:`CheckpointError` naming the
    offending entry.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return to_plain_json(obj.tolist(), where)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                key = str(int(key))
            if not isinstance(key, str):
                raise CheckpointError(f"{where}: key {key!r} is not a string")
            out[key] = to_plain_json(value, f"{where}.{key}")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_plain_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise CheckpointError(f"{where}: {type(obj).__name__} is not a plain JSON value")


def _arch_from_network(network: nn.Module) -> tuple[str, dict[str, Any]]:
    config = getattr(network, "config", None)
    if not isinstance(config, dict) or not config.get("arch"):
        raise CheckpointError(
            "network has no .config with an 'arch' entry; build it with build_model()")
    kwargs = {k: v for k, v in config.items() if k != "arch"}
    return str(config["arch"]), to_plain_json(kwargs, "arch_kwargs")


def _state_tensors(network: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous copies of the state dict; shared storages are un-shared (safetensors)."""
    seen: set[int] = set()
    tensors = {}
    for name, value in network.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        tensors[name] = t
    return tensors


def save_checkpoint(path: str | os.PathLike, network: nn.Module,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write ``network`` and ``meta`` to a safetensors model file (atomically).

    Parameters
    ----------
    path : path-like
        Destination (``.safetensors`` or ``.ckpt`` by convention).
    network : nn.Module
        A network built by ``build_model`` (it must have ``.config`` with ``arch``).
    meta : dict
        Recipe entries (normalization, label_names, threshold, inference, training, metrics,
        provenance, ...). ``format_version``, ``package_version``, ``arch`` and ``arch_kwargs``
        are filled from the network; ``provenance.created`` is set when missing.

    Returns
    -------
    Path
        The written file.
    """
    from safetensors.torch import save

    arch, arch_kwargs = _arch_from_network(network)
    tensors = _state_tensors(network)
    bad = nonfinite_tensors(tensors)
    if bad:  # a diverged training or a degenerate adaptation: such a file predicts nothing
        raise CheckpointError(f"refusing to save {Path(path).name}: {_describe_nonfinite(bad)}; "
                              "the training diverged (lower the learning rate) or the images "
                              "were unusable")
    recipe = to_plain_json(dict(meta or {}))
    recipe.update(format_version=FORMAT_VERSION, package_version=_package_version(), arch=arch,
                  arch_kwargs=arch_kwargs)
    provenance = recipe.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise CheckpointError("meta.provenance must be a dict")
    provenance.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    recipe["provenance"] = provenance
    text = json.dumps(recipe, sort_keys=True, allow_nan=False)
    data = save(tensors, metadata={METADATA_KEY: text})
    try:
        return atomic_write_bytes(path, data)
    except OSError as exc:
        raise CheckpointError(f"cannot write model file {path}: {exc.strerror or exc}") from None


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinite values."""
    return [name for name, t in tensors.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _describe_nonfinite(names: list[str]) -> str:
    more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
    return f"{len(names)} weight tensor(s) hold NaN/Inf values: {', '.join(names[:3])}{more}"


# ---------------------------------------------------------------------------------------- read
def _describe_foreign(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (torch.save pickle?)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (torch.save?)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    return "unrecognised content"


def _read_header(path: Path) -> dict[str, Any]:
    """Parse and check the safetensors header of ``path`` (no tensor data is read)."""
    if not path.exists():
        raise CheckpointError(f"model file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"not a file: {path}")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path.name} is not a safetensors model file (empty or truncated)")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > _MAX_HEADER or 8 + n > size:
            if n > _MAX_HEADER or n < 2:
                kind = _describe_foreign(head)
                raise CheckpointError(
                    f"{path.name} is not a safetensors model file ({kind}); pickled checkpoints "
                    "are refused because loading them can run arbitrary code")
            raise CheckpointError(f"{path.name} is truncated (header cut off)")
        raw = fh.read(n)
    if not raw.lstrip().startswith(b"{"):
        raise CheckpointError(f"{path.name} is not a safetensors model file "
                              f"({_describe_foreign(head + raw[:8])})")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{path.name} is not a safetensors model file (unreadable header)") \
            from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name} is not a safetensors model file (bad header)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise CheckpointError(f"{path.name}: bad entry for tensor {name!r} in header") from None
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path.name} is truncated ({size} bytes, {8 + n + end} expected); re-copy the file")
    return header


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Return the JSON recipe of a model file, reading only its header (cheap).

    Raises
    ------
    CheckpointError
        Missing file, not a safetensors file (e.g. a pickle), truncated file, missing or invalid
        JSON recipe, or a format version newer than this package understands.
    """
    path = Path(path)
    header = _read_header(path)
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not a napari-drunet model "
            f"(no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except (TypeError, ValueError) as exc:  # also integers of thousands of digits
        raise CheckpointError(f"{path.name}: invalid model recipe JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path.name}: model recipe JSON nested too deeply") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path.name}: model recipe is not a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path.name}: missing or invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name} uses model format {version}, newer than this napari-drunet "
            f"({_package_version()}, format {FORMAT_VERSION}); upgrade napari-drunet")
    if not isinstance(meta.get("arch"), str) or not isinstance(meta.get("arch_kwargs"), dict):
        raise CheckpointError(f"{path.name}: model recipe lacks 'arch'/'arch_kwargs'")
    return meta


def _mismatch(network: nn.Module, tensors: dict[str, Any]) -> str:
    """Differences between the network's state dict and ``tensors`` (name -> tensor or shape)."""
    expected = network.state_dict()
    got = {k: tuple(getattr(v, "shape", v)) for k, v in tensors.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {got[k]} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in got and got[k] != tuple(v.shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label}: {', '.join(items[:3])}{more}")
    return "; ".join(parts)


def load_checkpoint(path: str | os.PathLike,
                    device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network stored in ``path`` and load its weights (strictly), in eval mode.

    Parameters
    ----------
    path : path-like
        Model file written by :func:`save_checkpoint`.
    device : str or torch.device
        Where to put the network (``"auto"`` allowed).

    Returns
    -------
    (network, meta)
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..device import get_device
    from ..nets.networks import ARCHITECTURES, build_model

    path = Path(path)
    meta = read_meta(path)
    check_recipe(meta, path.name)
    arch = meta["arch"]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path.name}: unknown architecture {arch!r} "
                              f"(known: {', '.join(ARCHITECTURES)}); upgrade napari-drunet?")
    # 1. rebuild on the 'meta' device (no memory) and compare with the shapes in the header, so
    #    a recipe of absurd size or another architecture is refused before anything is allocated
    shapes = {k: v.get("shape", ()) for k, v in _read_header(path).items()
              if k != "__metadata__" and isinstance(v, dict)}
    try:
        with torch.device("meta"):
            probe = build_model(arch, **meta["arch_kwargs"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: cannot rebuild {arch}: {exc}") from None
    problem = _mismatch(probe, shapes)
    if problem:
        raise CheckpointError(
            f"checkpoint weights do not match architecture {arch!r} in {path.name} ({problem})")
    # 2. the real network and its weights
    try:
        network = build_model(arch, **meta["arch_kwargs"])
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path.name}: cannot read weights ({first})") from None
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(f"{path.name} is a ruined model: {_describe_nonfinite(bad)} "
                              "(a diverged training?); use another version")
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # dtype or other incompatibility not caught above
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"checkpoint weights do not match architecture {arch!r} in {path.name} ({first})") \
            from None
    network.to(get_device(device)).eval()
    return network, meta


def check_recipe(meta: dict[str, Any], name: str = "model") -> None:
    """Raise :class:`CheckpointError` when optional recipe entries have unusable types.

    Checked: ``threshold`` (number in [0, 1]), ``label_names`` (dict), ``normalization`` (a
    valid spec or null) and ``inference`` (dict of valid inference options), so that a damaged
    or hand-edited file fails on load with one line instead of later, mid-prediction.
    """
    from ..errors import DrunetError

    check_arch_size(meta.get("arch_kwargs") or {}, name)
    _check_preprocess(meta.get("preprocess"), name)
    threshold = meta.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= float(threshold) <= 1.0:
        raise CheckpointError(f"{name}: threshold must be a number in [0, 1], got {threshold!r}")
    for key in ("label_names", "inference", "training", "metrics", "provenance"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise CheckpointError(f"{name}: '{key}' must be a JSON object, got "
                                  f"{type(meta[key]).__name__}")
    try:
        if meta.get("normalization") is not None:
            from ..image.normalization import validate_spec

            validate_spec(meta["normalization"])
        inference = meta.get("inference") or {}
        if inference:
            from ..infer.config import InferenceConfig

            known = set(InferenceConfig.__dataclass_fields__)
            opts = {k: v for k, v in inference.items() if k in known}
            tile = opts.get("tile_size")
            if tile is not None and not (
                    (isinstance(tile, int) and not isinstance(tile, bool)) or
                    (isinstance(tile, (list, tuple)) and all(
                        isinstance(t, int) and not isinstance(t, bool) for t in tile))):
                raise CheckpointError(f"invalid inference tile_size {tile!r}")
            InferenceConfig.from_options(**opts)
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    except (DrunetError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: invalid model recipe ({exc})") from None


#: Deepest network accepted: the input is padded to a multiple of 2 ** (levels - 1), so a
#: 40-level recipe would ask for terabytes of padding.
MAX_LEVELS = 10
#: Widest level accepted (channels); wider ones need more memory than any machine has.
MAX_WIDTH = 4096


def check_arch_size(arch_kwargs: dict[str, Any], name: str = "model") -> None:
    """Raise :class:`CheckpointError` for a network too deep or too wide to run anywhere."""
    features = arch_kwargs.get("features")
    if not isinstance(features, (list, tuple)):
        return  # the network's own argument checks name the problem
    if len(features) > MAX_LEVELS:
        raise CheckpointError(f"{name}: {len(features)} levels; at most {MAX_LEVELS} are "
                              f"supported (each input is padded to a multiple of "
                              f"2**{len(features) - 1})")
    wide = [f for f in features if isinstance(f, int) and f > MAX_WIDTH]
    if wide:
        raise CheckpointError(f"{name}: {wide[0]} channels on one level; at most {MAX_WIDTH}")


def _check_preprocess(pre: Any, name: str) -> None:
    """The input recipe's ``preprocess`` entries (:func:`.preprocess.check_preprocess`)."""
    from .preprocess import check_preprocess

    try:
        check_preprocess(pre)
    except InputError as exc:
        raise CheckpointError(f"{name}: {exc}") from None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (used as ``provenance.parent``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_compatible(meta: dict[str, Any], in_channels: int | None = None,
                     spatial_dims: int | None = None) -> None:
    """Raise :class:`CheckpointError` if a model cannot run on an image.

    Parameters
    ----------
    meta : dict
        Model recipe (from :func:`read_meta`).
    in_channels : int, optional
        Number of channels of the (prepared) image.
    spatial_dims : int, optional
        Number of spatial axes of the image (2 or 3). A 2D model runs on a 3D volume slice by
        slice; a 3D model cannot run on a 2D image.
    """
    kwargs = meta.get("arch_kwargs") or {}
    model_ch = kwargs.get("in_channels")
    model_dims = kwargs.get("spatial_dims")
    if in_channels is not None and model_ch is not None and int(in_channels) != int(model_ch):
        raise CheckpointError(
            f"model expects {model_ch} input channel(s) but the image has {in_channels}")
    if spatial_dims is not None and model_dims is not None:
        if int(spatial_dims) not in (2, 3):
            raise CheckpointError(f"images must have 2 or 3 spatial axes, got {spatial_dims}")
        if int(model_dims) == 3 and int(spatial_dims) == 2:
            raise CheckpointError("this is a 3D model; it cannot segment a 2D image")
