"""A multi-file study (e.g. FLAIR + T1c MRI, one file per modality) as one multi-channel image.

Multi-modal MRI is usually stored one modality per file (BraTS: ``Flair*.nii.gz``,
``T1c*.nii.gz`` beside the label map ``OTMultiClass.nii.gz`` and a ``brainmask.nii.gz``). A
multi-channel model needs them stacked as ``(C, *spatial)`` in a fixed order, on one voxel grid:

* :func:`read_study` stacks the given channel files, in the order given, after checking that
  they share the spatial shape, the voxel spacing and the affine (files of one scan session
  registered to each other; anything else would feed the network misaligned channels);
* :func:`study_channel_files` finds the channel files of a study folder: the supported image
  files that are not label maps or masks, by name (as the napari reader decides) or by content
  (integer values only, e.g. a label map stored as float), in name order;
* :func:`read_study_folder` does both.

:func:`napari_drunet.core.train.dataset.dataset_studies` lists the studies of a dataset.json
split (MSD style: an entry's ``image`` is one file or a list of channel files).

The channel order is the caller's: a model records no modality names, so the files must be
given (or named, for a folder) in the order it was trained with.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .io import ImageData, format_of, is_supported, read_image, strip_extension

#: Spacing / affine entries may differ by this much (mm) between the channels of one study.
GEOMETRY_TOLERANCE = 1e-3
_MASK_NAME = re.compile(r"(label|mask|seg|manual|multiclass|(^|[^a-z])(gt|ot)([^a-z]|$))",
                        re.IGNORECASE)


def _same_geometry(first: ImageData, other: ImageData) -> str | None:
    """Why ``other`` is not on ``first``'s voxel grid, or None when it is."""
    if tuple(other.shape_spatial) != tuple(first.shape_spatial):
        return f"shape {tuple(other.shape_spatial)} != {tuple(first.shape_spatial)}"
    if first.spacing is not None and other.spacing is not None and not np.allclose(
            first.spacing, other.spacing, atol=GEOMETRY_TOLERANCE):
        return f"voxel spacing {tuple(other.spacing)} != {tuple(first.spacing)}"
    if first.affine is not None and other.affine is not None and not np.allclose(
            first.affine, other.affine, atol=GEOMETRY_TOLERANCE):
        return "another position/orientation (affine) than the first channel"
    return None


def read_study(files: Sequence[str | os.PathLike]) -> ImageData:
    """Read channel files into one :class:`ImageData` ``(C, *spatial)``, channels in order.

    Parameters
    ----------
    files : sequence of path
        One file per channel (a file may itself hold several channels), all on one voxel grid.

    Returns
    -------
    ImageData
        The first file's geometry (spacing, affine, format); ``meta["channel_files"]`` lists the
        files and ``meta["channel_names"]`` their base names, one per channel.

    Raises
    ------
    InputError
        No file, an RGB photograph among several files, or a file on another grid (shape,
        spacing or affine), naming the file.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise InputError("a study needs at least one channel file")
    parts = [read_image(p) for p in paths]
    first = parts[0]
    if len(parts) == 1:
        return first
    for path, part in zip(paths[1:], parts[1:], strict=True):
        why = _same_geometry(first, part)
        if why:
            raise InputError(f"{path.name} is not on the voxel grid of {paths[0].name}: {why}; "
                             "the channels of a study must be registered to one grid")
    if any(p.is_rgb for p in parts):
        raise InputError("RGB photographs cannot be stacked as channels of a study")
    names = [f"{strip_extension(p)}" + (f" c{c}" if part.channels > 1 else "")
             for p, part in zip(paths, parts, strict=True) for c in range(part.channels)]
    arr = np.concatenate([p.array for p in parts], axis=0)
    return ImageData(arr, first.spacing, first.affine, first.path, first.format, False,
                     dict(first.meta, channel_files=[str(p) for p in paths],
                          channel_names=names))


def looks_like_mask_name(path: str | os.PathLike) -> bool:
    """True for file names of label maps and masks (``*seg*``, ``brainmask``, ``OTMultiClass``)."""
    return bool(_MASK_NAME.search(strip_extension(path)))


def _integer_valued(path: Path) -> bool:
    """True when every value of the file is an integer (a label map or mask, whatever dtype)."""
    arr = read_image(path).array
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return True
    sample = arr.reshape(-1)[:: max(1, arr.size // 1_000_000)]  # a strided sample suffices
    return bool(np.all(np.isfinite(sample)) and np.array_equal(sample, np.round(sample)))


def study_channel_files(folder: str | os.PathLike) -> list[Path]:
    """The channel files of a study folder: supported images, not label maps or masks (by
    name or integer content), in name order. Empty when the folder holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and is_supported(p))
    return [p for p in files if not looks_like_mask_name(p) and not _integer_valued(p)]


def is_study_folder(folder: str | os.PathLike) -> bool:
    """True for a folder with at least two channel files of one format (a multi-file study)."""
    files = study_channel_files(folder)
    return len(files) >= 2 and len({format_of(p) for p in files}) == 1


def read_study_folder(folder: str | os.PathLike) -> ImageData:
    """The channels of a study folder (:func:`study_channel_files`) as one image."""
    files = study_channel_files(folder)
    if not files:
        raise InputError(f"no channel files in {folder} (label maps and masks are left out)")
    return read_study(files)


@dataclass(frozen=True)
class Study:
    """One entry of a dataset.json: its name and its channel files, in channel order."""

    name: str
    files: tuple[Path, ...]

    def read(self) -> ImageData:
        """The study as one multi-channel image (:func:`read_study`)."""
        return read_study(self.files)


def study_name(entry: dict, files: list[Path]) -> str:
    if entry.get("name"):
        return str(entry["name"])
    # channel files of one case usually share their names across cases (Flair.nii.gz): the
    # case is their folder
    return files[0].parent.name if len(files) > 1 else strip_extension(files[0])
