"""Datasets described by an MSD-style ``dataset.json`` and the cases they hold.

``dataset.json``::

    {"labels": {"0": "background", "1": "vessel"},
     "training": [{"image": "images/21.tif", "label": "labels/21.gif", "mask": "mask/21.gif"},
                  {"image": ["t1/a.nii.gz", "t2/a.nii.gz"], "label": "seg/a.nii.gz"}],
     "test": ["images/01.tif"]}

* ``image`` is one file or a list of files whose channels are stacked (multi-modal MRI);
  their spatial shapes must match. ``label``, ``mask`` (region that counts, e.g. the DRIVE
  field of view) and ``weight`` (e.g. reviewed pixels) are optional; ``name`` defaults to the
  image's base name. A bare string entry is an image without label (MSD ``test`` lists).
* Paths are relative to the folder holding the json. **Security**: a path that leaves that
  folder (``..`` or an absolute path elsewhere; checked lexically, so symbolic links placed
  inside the folder are followed) is refused with :class:`DataError` unless the caller passes
  ``allow_outside=True``. An ``"allow_outside": true`` key in the json is only informative:
  a file can never grant itself access. The DRIVE and MSD converters of the benchmarks
  (``benchmarks/datasets.py`` of the repository) write relative paths when the json lies
  inside the data folder and absolute paths (plus that key) otherwise; load those with
  ``allow_outside=True``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json
from ..errors import DataError, DrunetError
from ..image.io import ImageData, as_label_map, read_image, read_label, strip_extension
from ..image.study import Study, study_name

#: benchmark-only converters, moved to ``benchmarks/datasets.py`` (see :func:`__getattr__`)
MOVED_TO_BENCHMARKS = ("make_drive_dataset", "make_msd_dataset")


@dataclass
class Case:
    """One image with its optional label map, region mask and pixel weights.

    Attributes
    ----------
    name : str
        Case identifier (file base name by default).
    image : ImageData
        Channel-first image.
    label : np.ndarray or None
        Integer class indices ``(*spatial)``.
    mask : np.ndarray or None
        bool ``(*spatial)``: region where predictions are evaluated / trained (e.g. DRIVE FOV).
    weight : np.ndarray or None
        float32 ``(*spatial)``: 0 = pixel does not count (e.g. not reviewed).
    meta : dict
        Plain-typed extras (source paths, ...).
    """

    name: str
    image: ImageData
    label: np.ndarray | None = None
    mask: np.ndarray | None = None
    weight: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = self.image.shape_spatial
        for what in ("label", "mask", "weight"):
            arr = getattr(self, what)
            if arr is None:
                continue
            arr = np.asarray(arr)
            if arr.shape != shape:
                raise DataError(f"case {self.name}: {what} shape {arr.shape} does not match "
                                f"image spatial shape {shape}")
            if what == "label":
                try:
                    arr = as_label_map(arr, name=f"case {self.name} label")
                except DrunetError as exc:
                    raise DataError(str(exc)) from None
            elif what == "mask":
                arr = arr.astype(bool)
            else:
                arr = arr.astype(np.float32)
            setattr(self, what, arr)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Spacing of the image's spatial axes."""
        return self.image.spacing

    @classmethod
    def from_arrays(cls, name: str, image: np.ndarray, label: np.ndarray | None = None,
                    spacing: tuple[float, ...] | None = None, mask: np.ndarray | None = None,
                    weight: np.ndarray | None = None) -> Case:
        """Case from an in-memory ``(C, *spatial)`` array (e.g. a napari layer)."""
        return cls(name, ImageData(np.asarray(image), spacing), label, mask, weight)


def _resolve(root: Path, rel: str, allow_outside: bool, what: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{what}: expected a file path, got {rel!r}")
    p = Path(rel).expanduser()
    full = Path(os.path.normpath(p if p.is_absolute() else root / p))
    if not allow_outside:
        base = Path(os.path.normpath(root.absolute()))
        if not Path(os.path.normpath(full.absolute())).is_relative_to(base):
            raise DataError(f"{what}: {rel} is outside the dataset folder {root}; "
                            "pass allow_outside=True (CLI: --allow-outside) if you trust this file")
    return full


def case_from_files(image: str | os.PathLike | list, label: str | os.PathLike | None = None,
                    mask: str | os.PathLike | None = None, weight: str | os.PathLike | None = None,
                    name: str | None = None) -> Case:
    """Load one :class:`Case`; ``image`` may be a list of single-/multi-channel files (stacked)."""
    files = list(image) if isinstance(image, (list, tuple)) else [image]
    if not files:
        raise DataError("case without image file")
    name = name or strip_extension(files[0])
    try:
        parts = [read_image(f) for f in files]
        shapes = {p.shape_spatial for p in parts}
        if len(shapes) > 1:
            raise DataError(f"case {name}: channel files have different shapes {sorted(shapes)}")
        img = parts[0]
        if len(parts) > 1:
            arr = np.concatenate([p.array for p in parts], axis=0)
            img = ImageData(arr, img.spacing, img.affine, img.path, img.format, False,
                            dict(img.meta, channel_files=[str(f) for f in files]))
        lab = read_label(label)[0] if label is not None else None
        msk = read_label(mask)[0] > 0 if mask is not None else None
        wgt = None
        if weight is not None:
            w = read_image(weight)
            if w.channels != 1:
                raise DataError(f"case {name}: weight map must have one channel")
            wgt = w.array[0].astype(np.float32)
            if wgt.max(initial=0) > 1:
                wgt = wgt / wgt.max()
    except DataError:
        raise
    except DrunetError as exc:
        raise DataError(f"case {name}: {exc}") from None
    return Case(name, img, lab, msk, wgt, {"image": [str(f) for f in files],
                                           "label": None if label is None else str(label)})


def read_dataset_json(json_path: str | os.PathLike) -> dict[str, Any]:
    """Parse and minimally validate a dataset.json (no image is read)."""
    path = Path(json_path)
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # also integers of thousands of digits
        raise DataError(f"{path.name} is not valid JSON: {exc}") from None
    except RecursionError:
        raise DataError(f"{path.name} is not usable: JSON nested too deeply") from None
    if not isinstance(spec, dict):
        raise DataError(f"{path.name} must hold a JSON object")
    _check_labels(spec.get("labels", {}), path.name)
    return spec


#: Most classes a dataset may name (label maps are stored as 8-bit images).
MAX_CLASSES = 256


def _check_labels(labels: Any, name: str) -> None:
    example = '{"0": "background", "1": "vessel"}'
    if not isinstance(labels, dict):
        raise DataError(f"{name}: 'labels' must map class indices to names, e.g. {example}")
    seen: set[int] = set()
    for key in labels:
        # ASCII digits only: "²".isdigit() is true but int("²") fails
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise DataError(f"{name}: 'labels' key {key!r} is not a class index; e.g. {example}")
        index = int(key)
        if index >= MAX_CLASSES:
            raise DataError(f"{name}: label {key} is too large (at most {MAX_CLASSES - 1})")
        if index in seen:
            raise DataError(f"{name}: label {index} is named twice")
        seen.add(index)


def load_dataset(json_path: str | os.PathLike, split: str = "training",
                 allow_outside: bool = False) -> tuple[list[Case], dict[str, str]]:
    """Load the cases of one split of a dataset.json.

    Parameters
    ----------
    json_path : path-like
        The dataset.json file; relative paths inside are relative to its folder.
    split : str
        Key of the list to load (``'training'``, ``'test'``, ``'validation'``, ...).
    allow_outside : bool
        Accept files outside the json's folder (see module docstring).

    Returns
    -------
    (list of Case, dict)
        The cases and the label names (``{"0": "background", ...}``; when the json has no
        ``labels`` they are ``class k`` up to the largest label found).
    """
    path = Path(json_path)
    spec = read_dataset_json(path)
    entries = spec.get(split)
    if not isinstance(entries, list) or not entries:
        avail = [k for k, v in spec.items() if isinstance(v, list) and v]
        raise DataError(f"{path.name} has no '{split}' cases; available: {', '.join(avail) or 'none'}")
    root = path.parent
    cases: list[Case] = []
    first: dict[tuple[Path, ...], int] = {}
    for i, entry in enumerate(entries):
        where = f"{path.name} {split}[{i}]"
        if isinstance(entry, (str, list)):
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{where}: each case needs an 'image'")
        imgs = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        files = {"image": [_resolve(root, f, allow_outside, where) for f in imgs]}
        key = tuple(p.resolve() for p in files["image"])
        if key in first:  # it could land in both the training and the validation cases
            raise DataError(f"{where}: same image as {split}[{first[key]}] "
                            f"({files['image'][0].name}); list each case once")
        first[key] = i
        for key in ("label", "mask", "weight"):
            if entry.get(key) is not None:
                files[key] = _resolve(root, entry[key], allow_outside, where)
        cases.append(case_from_files(name=entry.get("name"), **files))
    names = {str(k): str(v) for k, v in spec.get("labels", {}).items()}
    if not names:
        top = max((int(c.label.max()) for c in cases if c.label is not None and c.label.size), default=1)
        names = {"0": "background", **{str(k): f"class {k}" for k in range(1, max(top, 1) + 1)}}
    return cases, names


def write_dataset_json(path: str | os.PathLike, entries: dict[str, list] | list,
                       labels: dict | None = None, **extra: Any) -> Path:
    """Write a dataset.json atomically.

    ``entries`` is either ``{"training": [...], "test": [...]}`` or a list (the training split);
    each entry is a dict with ``image``/``label``/``mask``/``weight`` paths (str or Path) or a
    bare image path. ``extra`` keys (e.g. ``name``, ``allow_outside``) are stored as given.
    """
    splits = entries if isinstance(entries, dict) else {"training": entries}

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return str(v) if isinstance(v, os.PathLike) else v

    obj = {**extra, **{k: plain(v) for k, v in splits.items()}}
    if labels is not None:
        obj["labels"] = {str(k): str(v) for k, v in labels.items()}
    for k, v in splits.items():
        obj[f"num{k[:1].upper()}{k[1:]}"] = len(v)
    return atomic_write_json(path, obj)


def dataset_studies(json_path: str | os.PathLike, split: str = "test",
                    allow_outside: bool = False) -> list[Study]:
    """The studies listed under ``split`` in an MSD-style dataset.json (no image is read).

    An entry is a path, a list of channel files, or a dict whose ``image`` is either; its name is
    the entry's ``name``, else the folder of its channel files (several files) or the file's base
    name. Paths are relative to the json's folder and must stay inside it unless
    ``allow_outside`` (the rule of :func:`load_dataset`). Raises :class:`DataError` for a
    missing split, an entry without image or two studies of one name (their masks would collide).
    """
    path = Path(json_path)
    entries = read_dataset_json(path).get(split)
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path.name} has no '{split}' list of studies")
    studies, names = [], set()
    for i, entry in enumerate(entries):
        where = f"{path.name} {split}[{i}]"
        entry = entry if isinstance(entry, dict) else {"image": entry}
        image = entry.get("image")
        rels = image if isinstance(image, list) else [image]
        if image is None or not rels:
            raise DataError(f"{where}: each study needs an 'image' (a file or a list of files)")
        files = [_resolve(path.parent, r, allow_outside, where) for r in rels]
        name = study_name(entry, files)
        if name in names:
            raise DataError(f"{where}: a second study named {name!r}; give each a 'name'")
        names.add(name)
        studies.append(Study(name, tuple(files)))
    return studies


def __getattr__(name: str) -> Any:
    """``make_drive_dataset`` / ``make_msd_dataset`` moved to ``benchmarks/datasets.py`` of the
    repository (benchmark-only converters; the core never imports the benchmarks): the old
    names say where they went."""
    if name in MOVED_TO_BENCHMARKS:
        raise AttributeError(f"{__name__}.{name} moved to benchmarks/datasets.py of the "
                             f"napari-drunet repository: from a checkout, "
                             f"'from benchmarks.datasets import {name}'")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
