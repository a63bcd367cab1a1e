"""The benchmarks' dataset.json converters for DRIVE and MSD Task04 Hippocampus.

They reference the files of the data folder (never copy them): relative paths when the json
lies inside that folder, absolute ones (plus ``"allow_outside": true``) otherwise; load those
with ``load_dataset(..., allow_outside=True)``. Moved here from
``napari_drunet.core.train.dataset``, where the old names still work with a warning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from napari_drunet.core.errors import DataError
from napari_drunet.core.image.io import strip_extension
from napari_drunet.core.train.dataset import write_dataset_json

HIPPOCAMPUS_LABELS = {"0": "background", "1": "anterior", "2": "posterior"}
DRIVE_LABELS = {"0": "background", "1": "vessel"}


def rel_or_abs(p: Path, base: Path) -> tuple[str, bool]:
    """Path relative to ``base`` when inside it, else absolute; second item: is outside."""
    p, base = Path(os.path.abspath(p)), Path(os.path.abspath(base))
    return (str(p.relative_to(base)), False) if p.is_relative_to(base) else (str(p), True)


def make_drive_dataset(drive_root: str | os.PathLike, out_json: str | os.PathLike,
                       split: str = "training", subset: int | Iterable | None = None) -> Path:
    """dataset.json for DRIVE (``images/*.tif``, ``1st_manual/*_manual1.gif``, ``mask/*_mask.gif``).

    Files are referenced, never copied. ``subset``: the first N cases (int) or case ids
    (e.g. ``[21, 22]`` or ``["21"]``). Entries go under the ``split`` key.
    """
    if split not in ("training", "test"):
        raise DataError(f"DRIVE split must be 'training' or 'test', got {split!r}")
    folder = Path(drive_root) / split
    images = sorted((folder / "images").glob("*.tif")) if (folder / "images").is_dir() else []
    if not images:
        raise DataError(f"no DRIVE images in {folder / 'images'}")
    if isinstance(subset, int):
        images = images[:subset]
    elif subset is not None:
        wanted = {f"{int(s):02d}" for s in subset}
        images = [p for p in images if p.name.split("_")[0] in wanted]
    out = Path(out_json)
    entries, outside = [], False
    for img in images:
        cid = img.name.split("_")[0]
        files = {"image": img, "label": folder / "1st_manual" / f"{cid}_manual1.gif",
                 "mask": folder / "mask" / f"{cid}_{split}_mask.gif"}
        entry = {"name": f"drive_{cid}"}
        for k, f in files.items():
            if not f.is_file():
                raise DataError(f"DRIVE case {cid}: missing {f}")
            entry[k], out_k = rel_or_abs(f, out.parent)
            outside |= out_k
        entries.append(entry)
    extra = {"name": "DRIVE", "allow_outside": True} if outside else {"name": "DRIVE"}
    return write_dataset_json(out, {split: entries}, DRIVE_LABELS, **extra)


def make_msd_dataset(root: str | os.PathLike, out_json: str | os.PathLike,
                     test_every: int = 5) -> Path:
    """dataset.json for MSD Task04 Hippocampus (``imagesTr``/``labelsTr``), split by case number.

    Cases whose number (``hippocampus_XXX``) is divisible by ``test_every`` go to ``test``, the
    rest to ``training``; both keep their labels. Files are referenced, never copied.
    """
    root = Path(root)
    images = sorted((root / "imagesTr").glob("*.nii*")) if (root / "imagesTr").is_dir() else []
    images = [p for p in images if not p.name.startswith(".")]
    if not images:
        raise DataError(f"no MSD images in {root / 'imagesTr'}")
    if test_every < 1:
        raise DataError("test_every must be >= 1")
    out = Path(out_json)
    splits: dict[str, list] = {"training": [], "test": []}
    outside = False
    for img in images:
        lab = root / "labelsTr" / img.name
        if not lab.is_file():
            continue  # unlabelled image: not usable for training or evaluation
        m = re.search(r"(\d+)$", strip_extension(img))
        num = int(m.group(1)) if m else 0
        entry = {"name": strip_extension(img)}
        for k, f in (("image", img), ("label", lab)):
            entry[k], out_k = rel_or_abs(f, out.parent)
            outside |= out_k
        splits["test" if num % test_every == 0 else "training"].append(entry)
    extra = {"name": "Hippocampus", "modality": {"0": "MRI"}}
    if outside:
        extra["allow_outside"] = True
    return write_dataset_json(out, splits, HIPPOCAMPUS_LABELS, **extra)
