"""npe2 writer: save a labels layer as NIfTI (with the source geometry), TIFF or PNG.

When the layer's ``metadata`` holds the ``source`` dict written by our reader or widgets
(:meth:`napari_drunet.core.image.io.ImageData.to_source`, key ``source`` or ``drunet_source``), a
NIfTI output gets the source image's affine, qform/sform and on-disk axis layout, so it
overlays the original scan in any viewer. Otherwise ``metadata['affine']`` is used when present,
else a diagonal affine from the layer's ``scale``. Every layer the plugin creates from a scan
carries that ``source`` (``gui._layers.source_metadata``).

A binary mask saved as PNG or TIFF is written 0/255 so that it shows in any image viewer; the
reader maps it back to class 1 (:func:`napari_drunet.core.image.io.write_label`). A layer whose
``metadata['drunet']['binary']`` is False (a multi-class model's result) keeps its class indices
even when it holds only 0 and 1.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .core.errors import InputError
from .core.image.io import ImageData, write_label

_SOURCE_KEYS = ("drunet_source", "source")


def _like_from_meta(meta: dict[str, Any], shape: tuple[int, ...]) -> ImageData | None:
    layer_meta = meta.get("metadata") or {}
    for key in _SOURCE_KEYS:
        src = layer_meta.get(key)
        if isinstance(src, dict) and tuple(src.get("shape_spatial") or ()) == shape:
            return ImageData.from_source(src, shape)
    affine = layer_meta.get("affine")
    scale = meta.get("scale")
    spacing = tuple(float(s) for s in scale[-len(shape):]) if scale is not None else None
    if affine is None and spacing is None:
        return None
    src = {"spacing": spacing, "affine": None if affine is None else np.asarray(affine).tolist(),
           "format": "nifti" if affine is not None else "tiff", "shape_spatial": list(shape)}
    return ImageData.from_source(src, shape)


def write_labels(path: str | os.PathLike, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a labels layer; returns ``[path]``.

    Parameters
    ----------
    path : path-like
        Output file; ``.nii.gz``/``.nii``, ``.tif``/``.tiff`` or ``.png`` (2D only).
    data : array-like
        Label map ``(*spatial)`` (2D or 3D).
    meta : dict
        napari layer attributes (``scale``, ``metadata``...).
    """
    labels = np.asarray(data)
    if labels.ndim not in (2, 3):
        raise InputError(f"cannot save a {labels.ndim}D labels layer; only 2D or 3D label maps")
    like = _like_from_meta(meta or {}, tuple(labels.shape))
    drunet = ((meta or {}).get("metadata") or {}).get("drunet") or {}
    scale_binary = False if drunet.get("binary") is False else None
    return [str(write_label(path, labels, like=like, scale_binary=scale_binary))]
