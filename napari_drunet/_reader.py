"""npe2 reader: NIfTI, TIFF, PNG/JPEG/BMP/GIF files as napari layers.

Layer data tuples:

* one channel: ``(array (*spatial), kwargs, 'image')``;
* 2D RGB photographs: ``(array (H, W, 3), {..., 'rgb': True}, 'image')``;
* several channels (multi-modal NIfTI/TIFF): ``(array (C, *spatial), {..., 'channel_axis': 0},
  'image')``, which napari splits into one layer per channel.

``kwargs`` always hold ``name`` (file base name), ``scale`` (voxel spacing, e.g. NIfTI mm) and
``metadata = {'affine': 4x4 array or None, 'source': ImageData.to_source()}`` so the writer and
the widgets can restore the geometry. A file that looks like a label map (its name contains
``label``, ``mask``, ``seg``, ``manual`` or ``gt``, or its folder is named like ``labels``,
``labelsTr``, ``masks``, ``seg``, ``gt``, ``1st_manual``; and it has one channel of integer
values) opens as a ``'labels'`` layer, with 0/255 masks mapped to 0/1.

A DICOM folder, DICOMDIR or ``.dcm`` file opens one image layer per series (never mixed), named
after the folder and the series description, with the series' spacing and RAS affine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.dicom import is_dicom_source, list_series, read_dicom, source_name
from .core.io import format_of, is_supported, read_image, read_label, strip_extension

LayerData = tuple[Any, dict[str, Any], str]
_LABEL_HINT = re.compile(r"(label|mask|seg|manual|(^|[^a-z])gt([^a-z]|$))", re.IGNORECASE)
_FOLDER_HINT = re.compile(r"^(labels?|masks?|segs?|segmentations?|gt|ground_?truth|annotations?)"
                          r"([^a-z]|tr|ts|$)|manual", re.IGNORECASE)


def get_reader(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Callable | None:
    """Return :func:`read_layers` when every path is a supported file of one format, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    if len(paths) == 1 and not is_supported(paths[0]) and is_dicom_source(paths[0]):
        return read_dicom_layers
    if not all(is_supported(p) and not Path(p).is_dir() for p in paths):
        return None
    if len({format_of(p) for p in paths}) != 1:
        return None
    return read_layers


def looks_like_labels(path: str | os.PathLike) -> bool:
    """True when the file or its folder is named like a label map (``*_mask``, ``labelsTr``...)."""
    p = Path(path)
    return bool(_LABEL_HINT.search(strip_extension(p)) or _FOLDER_HINT.search(p.parent.name))


def read_layers(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """Read one or several files into napari layer data tuples (see module docstring)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [layer for p in paths for layer in _read_one(p)]


def _read_one(path: str | os.PathLike) -> list[LayerData]:
    img = read_image(path)
    name = strip_extension(path)
    meta = {"affine": img.affine, "source": img.to_source()}
    kwargs: dict[str, Any] = {"name": name, "metadata": meta}
    integer = np.issubdtype(img.array.dtype, np.integer) or img.array.dtype == bool
    if img.channels == 1 and integer and looks_like_labels(path):
        labels, _ = read_label(path)
        return [(labels, {**kwargs, "scale": tuple(img.spacing)}, "labels")]
    if img.is_rgb and img.ndim_spatial == 2:
        return [(np.moveaxis(img.array, 0, -1), {**kwargs, "rgb": True,
                                                 "scale": tuple(img.spacing)}, "image")]
    if img.channels == 1:
        return [(img.array[0], {**kwargs, "scale": tuple(img.spacing)}, "image")]
    kwargs.update(channel_axis=0, scale=tuple(img.spacing),
                  name=[f"{name} c{c}" for c in range(img.channels)])
    return [(img.array, kwargs, "image")]


def read_dicom_layers(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """One image layer per DICOM series of a folder, DICOMDIR or file (see module docstring)."""
    path = path if isinstance(path, (str, os.PathLike)) else path[0]
    found = list_series(path)
    layers = []
    for series in found:
        img = read_dicom(path, series=series.uid)
        name = source_name(path)
        if len(found) > 1:
            name += f" {series.number if series.number is not None else ''} " \
                    f"{series.description or series.uid[-8:]}".rstrip()
        kwargs = {"name": " ".join(name.split()), "scale": tuple(img.spacing),
                  "metadata": {"affine": img.affine, "source": img.to_source()}}
        if img.is_rgb:
            layers.append((np.moveaxis(img.array, 0, -1), {**kwargs, "rgb": True}, "image"))
        else:
            layers.append((img.array[0], kwargs, "image"))
    return layers
