"""The image that every reader returns and every writer and model step takes.

:class:`ImageData` is a channel-first array with its geometry (spacing, affine, source
format); the readers and writers are in :mod:`napari_drunet.core.image.io`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError


@dataclass
class ImageData:
    """An image read from disk.

    Attributes
    ----------
    array : np.ndarray
        ``(C, *spatial)`` with ``C >= 1`` and 2 or 3 spatial axes, in the file's dtype.
    spacing : tuple of float
        Pixel/voxel size per spatial axis, same order as the array's spatial axes.
    affine : np.ndarray or None
        4x4 voxel-to-world matrix (NIfTI: nibabel's affine, in ``(X, Y, Z)`` voxel order).
    path : str or None
        Source file.
    format : str
        ``'nifti'``, ``'tiff'``, ``'png'``, ``'jpeg'``, ``'bmp'``, ``'gif'`` or ``'dicom'``
        (:mod:`napari_drunet.core.image.dicom`; RAS affine as for NIfTI).
    is_rgb : bool
        True when the channels are the colour components of a photograph.
    meta : dict
        Plain-typed extras (NIfTI header geometry, ``warnings`` list, ...).
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    path: str | None = None
    format: str = "tiff"
    is_rgb: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = self.array
        if arr.ndim not in (3, 4):
            raise InputError(f"image array must be (C, *spatial) with 2 or 3 spatial axes, got shape {arr.shape}")
        if arr.size == 0 and 0 in arr.shape:
            raise InputError(f"image has a zero-size axis: shape {arr.shape}")
        if self.spacing is None:
            self.spacing = (1.0,) * (arr.ndim - 1)
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != arr.ndim - 1:
            raise InputError(f"spacing {self.spacing} does not match {arr.ndim - 1} spatial axes")
        if self.affine is not None:
            self.affine = np.asarray(self.affine, dtype=np.float64).reshape(4, 4)

    @property
    def ndim_spatial(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return self.array.ndim - 1

    @property
    def shape_spatial(self) -> tuple[int, ...]:
        """Spatial shape ``(H, W)`` or ``(Z, Y, X)``."""
        return tuple(self.array.shape[1:])

    @property
    def channels(self) -> int:
        """Number of channels ``C``."""
        return int(self.array.shape[0])

    def to_source(self) -> dict[str, Any]:
        """Plain dict describing the geometry (no pixels), e.g. for napari layer metadata."""
        return {"path": self.path, "format": self.format, "spacing": list(self.spacing),
                "affine": None if self.affine is None else self.affine.tolist(),
                "shape_spatial": list(self.shape_spatial), "is_rgb": self.is_rgb,
                "meta": {k: v for k, v in self.meta.items() if k != "warnings"}}

    @classmethod
    def from_source(cls, source: dict[str, Any], shape_spatial: tuple[int, ...] | None = None) -> ImageData:
        """Geometry-only ImageData (zero-cost broadcast pixels) built from :meth:`to_source`."""
        shape = tuple(shape_spatial or source["shape_spatial"])
        pixels = np.broadcast_to(np.zeros((), np.uint8), (1, *shape))
        spacing = source.get("spacing")
        if spacing is not None and len(spacing) != len(shape):
            spacing = None
        return cls(pixels, spacing, source.get("affine"), source.get("path"),
                   source.get("format", "tiff"), bool(source.get("is_rgb", False)),
                   dict(source.get("meta") or {}))
