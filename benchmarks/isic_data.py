"""dataset.json files for the ISIC 2017 lesion-segmentation split in ``../shared/data/ISIC2017``.

Layout (see its SOURCE.txt): ``{train,val,test}/images/<split>_NNNN.jpg`` with the mask
``{train,val,test}/masks/<split>_NNNN.png`` (same stem, ``{0, 255}``). Files are referenced by
absolute path, never copied (the data may not be redistributed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_drunet.core.errors import DataError
from napari_drunet.core.train.dataset import write_dataset_json

ISIC_LABELS = {"0": "background", "1": "lesion"}
SPLITS = ("train", "val", "test")


def isic_pairs(root: str | Path, split: str, subset: int | None = None) -> list[dict]:
    """The ``{"name", "image", "label"}`` entries of one ISIC split, in file-name order.

    ``subset`` keeps the first N (the source's numbering is not the ISIC id order, so the first
    N are as good a random draw as any). A missing mask is a :class:`DataError`.
    """
    if split not in SPLITS:
        raise DataError(f"ISIC split must be one of {SPLITS}, got {split!r}")
    folder = Path(root) / split
    images = sorted((folder / "images").glob("*.jpg")) or sorted((folder / "images").glob("*.png"))
    if not images:
        raise DataError(f"no ISIC images in {folder / 'images'}")
    entries = []
    for img in images[:subset]:
        mask = folder / "masks" / f"{img.stem}.png"
        if not mask.is_file():
            raise DataError(f"ISIC {split} image {img.name}: missing mask {mask}")
        entries.append({"name": img.stem, "image": str(img.resolve()),
                        "label": str(mask.resolve())})
    return entries


def make_isic_dataset(root: str | Path, out_json: str | Path, split: str,
                      subset: int | None = None) -> Path:
    """Write the dataset.json of one ISIC split (entries under ``training``; load it with
    ``allow_outside=True``) and return its path."""
    return write_dataset_json(out_json, {"training": isic_pairs(root, split, subset)},
                              ISIC_LABELS, name=f"ISIC2017-{split}", allow_outside=True,
                              modality={"0": "dermoscopy (RGB)"})


def downsample_isic(root: str | Path, out_root: str | Path, factor: int = 2,
                    splits: tuple[str, ...] = ("train", "val")) -> Path:
    """A copy of ISIC ``splits`` at ``1/factor`` of the size, for training under a CPU budget.

    Images are area-averaged (``PIL`` box filter) and stored as lossless PNG; masks are
    area-averaged and thresholded at 0.5 (``{0, 255}`` PNG). Existing files are kept, so a
    second call costs nothing. The copy lives outside the repository (the data may not be
    redistributed). Returns ``out_root``.
    """
    from PIL import Image

    out_root = Path(out_root)
    for split in splits:
        for entry in isic_pairs(root, split):
            img_out = out_root / split / "images" / f"{entry['name']}.png"
            mask_out = out_root / split / "masks" / f"{entry['name']}.png"
            if img_out.is_file() and mask_out.is_file():
                continue
            img_out.parent.mkdir(parents=True, exist_ok=True)
            mask_out.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(entry["image"]) as im:
                size = (im.width // factor, im.height // factor)
                im.convert("RGB").resize(size, Image.Resampling.BOX).save(img_out)
            with Image.open(entry["label"]) as m:
                area = np.asarray(m.convert("F").resize(size, Image.Resampling.BOX)) / 255.0
            Image.fromarray(np.where(area >= 0.5, 255, 0).astype(np.uint8)).save(mask_out)
    return out_root
