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

A multi-file study opens as **one** multi-channel image (``channel_axis=0``, one napari layer per
channel, in file-name order; see :mod:`napari_drunet.core.image.study`): a folder holding two or more
channel files of one format (e.g. a BraTS case: ``Flair*.nii.gz`` + ``T1c*.nii.gz``; its label
map and brain mask are left out), or a selection of two or more distinct NIfTI volumes of one
folder that share the voxel grid and none of which is named like a label map. Other selections
open one layer per file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.image.dicom import is_dicom_source, list_series, read_dicom, source_name
from .core.image.io import (
    ImageData,
    format_of,
    is_supported,
    read_image,
    read_label,
    strip_extension,
)
from .core.image.study import is_study_folder, looks_like_mask_name, read_study, read_study_folder

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
    if len(paths) == 1 and Path(paths[0]).is_dir() and is_study_folder(paths[0]):
        return read_study_layers
    if not all(is_supported(p) and not Path(p).is_dir() for p in paths):
        return None
    if len({format_of(p) for p in paths}) != 1:
        return None
    return read_study_layers if _is_channel_selection(paths) else read_layers


def _is_channel_selection(paths: Sequence[str | os.PathLike]) -> bool:
    """Two or more distinct NIfTI files of one folder, none named like a label map or mask:
    the channel files of one study (their grids are checked when read)."""
    files = [Path(os.path.abspath(p)) for p in paths]
    return (len(set(files)) == len(files) >= 2 and format_of(files[0]) == "nifti"
            and len({f.parent for f in files}) == 1
            and not any(looks_like_labels(f) or looks_like_mask_name(f) for f in files))


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


def read_study_layers(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """One multi-channel image layer from a study folder or a list of its channel files."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if len(paths) == 1 and Path(paths[0]).is_dir():
        img, name = read_study_folder(paths[0]), Path(paths[0]).name
    else:
        img, name = read_study(paths), Path(paths[0]).parent.name or strip_extension(paths[0])
    return [_channels_layer(img, name)]


def _channels_layer(img: ImageData, name: str) -> LayerData:
    channels = img.meta.get("channel_names") or [f"c{c}" for c in range(img.channels)]
    meta = {"affine": img.affine, "source": img.to_source()}
    return (img.array, {"name": [f"{name} {c}" for c in channels], "channel_axis": 0,
                        "scale": tuple(img.spacing), "metadata": meta}, "image")


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
