"""dataset.json files for the ISIC 2017 lesion-segmentation split in ``../shared/data/ISIC2017``.

Layout (see its SOURCE.txt): ``{train,val,test}/images/<split>_NNNN.jpg`` with the mask
``{train,val,test}/masks/<split>_NNNN.png`` (same stem, ``{0, 255}``). Files are referenced by
absolute path, never copied (the data may not be redistributed).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_drunet.core.errors import DataError
from napari_drunet.core.train.dataset import write_dataset_json

ISIC_LABELS = {"0": "background", "1": "lesion"}
SPLITS = ("train", "val", "test")
FIT_SIZE = (96, 128)  # (H, W) of the half-size copy (``downsample_isic`` with factor 2)


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


def load_split(root: Path, split: str, n: int | None = None) -> list:
    """The first ``n`` cases of an ISIC split as :class:`~napari_drunet.core.train.dataset.Case`."""
    from napari_drunet.core.train.dataset import case_from_files

    return [case_from_files(e["image"], e["label"], name=e["name"])
            for e in isic_pairs(root, split, n)]


def draw(n_pool: int, size: int, seed: int) -> list[int]:
    """Indices of a training subset: ``size`` of ``n_pool`` at random (all when size >= pool)."""
    if size >= n_pool:
        return list(range(n_pool))
    return sorted(np.random.default_rng([size, seed]).choice(n_pool, size, replace=False).tolist())


def dice_jaccard(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and Jaccard of two binary masks (both 1 when both are empty)."""
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    if total == 0:
        return 1.0, 1.0
    return float(2 * inter / total), float(inter / (total - inter))


def score(model, cases: Sequence, threshold: float | None = 0.5) -> dict[str, float]:
    """Mean per-image Dice and Jaccard at ``threshold`` (None: the model's own)."""
    def mask(case) -> np.ndarray:
        pred = model.predict(case.image)
        return pred.mask > 0 if threshold is None else pred.probabilities[0] >= threshold

    rows = [dice_jaccard(mask(c), c.label > 0) for c in cases]
    dice, jac = np.mean(rows, axis=0)
    return {"dice": float(dice), "jaccard": float(jac)}


def train_one(arch: str, cases: Sequence, val: Sequence, seed: int,
              args: argparse.Namespace):
    """One run of the half-size limited-data recipe (``isic_limited``; ``args``: features,
    batch_size, lr, steps, threads): best weights by validation Dice, scored every quarter."""
    from napari_drunet.core.train.loop import TrainConfig, train

    quarter = max(1, args.steps // 4)
    cfg = TrainConfig(arch=arch, spatial_dims=2,
                      features=tuple(int(f) for f in args.features.split(",")),
                      patch_size=FIT_SIZE, batch_size=args.batch_size, lr=args.lr,
                      epochs=4, steps_per_epoch=quarter, max_steps=args.steps, seed=seed,
                      rotate=30.0, scale=0.25, device="cpu", num_threads=args.threads,
                      label_names={"0": "background", "1": "lesion"})
    return train(cases, cfg, val_cases=val)


def half_size_splits(args: argparse.Namespace, out: Path) -> tuple[list, list, list]:
    """(train, first ``val_cases`` val, first ``test_cases`` test) cases of the half-size copy
    ``args.small`` (default ``<out>/data``), made from ``args.isic`` where a split is missing."""
    small = Path(args.small or out / "data")
    missing = tuple(s for s in SPLITS if not (small / s / "images").is_dir())
    if missing:
        downsample_isic(args.isic, small, 2, splits=missing)
    return (load_split(small, "train"), load_split(small, "val", args.val_cases),
            load_split(small, "test", args.test_cases))
