"""dataset.json files for the 6 BraTS 2015 cases in ``../shared/data/BraTS2015_6`` (see SOURCE.txt).

Layout: ``{train,validation,test}/<case>/`` with ``Flair_subtrMeanDivStd.nii.gz`` and
``T1c_subtrMeanDivStd.nii.gz`` (the two channels, z-scored inside the brain, in that order),
``OTMultiClass.nii.gz`` (labels 0 background, 1 necrosis, 2 oedema, 3 non-enhancing, 4
enhancing tumour) and ``brainmask.nii.gz``; 240x240x155 voxels of 1 mm. Files are referenced by
absolute path (the data may not be redistributed); :func:`resample_brats` writes coarser copies
outside the repository for training under a CPU budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_drunet.core.errors import DataError
from napari_drunet.core.train.dataset import write_dataset_json

MODALITIES = ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")
LABEL_FILE = "OTMultiClass.nii.gz"
BRATS_LABELS = {"0": "background", "1": "necrosis", "2": "oedema", "3": "non-enhancing tumour",
                "4": "enhancing tumour"}
#: The BraTS evaluation regions, as sets of labels.
REGIONS = {"whole tumour": (1, 2, 3, 4), "tumour core": (1, 3, 4), "enhancing tumour": (4,)}


def brats_cases(root: str | Path, split: str) -> list[dict]:
    """``{"name", "image": [FLAIR, T1c], "label"}`` for the cases of one split, by name."""
    folder = Path(root) / split
    cases = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not cases:
        raise DataError(f"no BraTS cases in {folder}")
    entries = []
    for case in cases:
        files = [case / m for m in MODALITIES] + [case / LABEL_FILE]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(f"BraTS case {case.name}: missing {', '.join(missing)}")
        entries.append({"name": case.name, "image": [str(f.resolve()) for f in files[:2]],
                        "label": str(files[2].resolve())})
    return entries


def make_brats_dataset(root: str | Path, out_json: str | Path, splits: tuple[str, ...],
                       key: str = "training") -> Path:
    """Write the dataset.json of the cases of ``splits`` (entries under ``key``)."""
    entries = [e for s in splits for e in brats_cases(root, s)]
    return write_dataset_json(out_json, {key: entries}, BRATS_LABELS, name="BraTS2015_6",
                              allow_outside=True, modality={"0": "FLAIR", "1": "T1c"})


def _grid_affine(affine: np.ndarray, old: tuple[int, ...], new: tuple[int, ...]) -> np.ndarray:
    """The affine of ``new`` voxels spanning the same field as ``old`` (NIfTI ``(X, Y, Z)``
    shapes): voxel centres of the coarse grid sit at ``(i + 0.5) * f - 0.5`` old voxels."""
    f = np.array(old, float) / np.array(new, float)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f)
    scale[:3, 3] = (f - 1) / 2
    return affine @ scale


def resample_brats(root: str | Path, out_root: str | Path, spacing: float,
                   splits: tuple[str, ...]) -> tuple[Path, list[float]]:
    """Copies of the cases of ``splits`` at ``spacing`` mm, resampled the way a model with
    ``preprocess = {"spacing": ...}`` resamples its input (``napari_drunet.core.image.rescale``:
    linear, anti-aliased, for the channels; nearest for the label map). Returns ``out_root``
    and the spacing actually reached per array axis ``(Z, Y, X)`` (the voxel counts round).
    Existing copies are kept."""
    import nibabel as nib

    from napari_drunet.core.image.io import read_image
    from napari_drunet.core.image.rescale import plan_rescale, resize_nearest

    out_root, reached = Path(out_root), []
    for split in splits:
        for entry in brats_cases(root, split):
            folder = out_root / split / entry["name"]
            folder.mkdir(parents=True, exist_ok=True)
            for src in [*entry["image"], entry["label"]]:
                img = read_image(src)
                plan = plan_rescale(img.array, {"spacing": [spacing] * 3}, img.spacing)
                reached = [s * o / n for s, o, n in
                           zip(img.spacing, plan.shape, plan.target_shape, strict=True)]
                if (folder / Path(src).name).is_file():
                    continue
                if src == entry["label"]:
                    arr = resize_nearest(img.array[0], plan.target_shape).astype(np.uint8)
                else:
                    arr = plan.apply(img.array.astype(np.float32))[0]
                xyz = arr.transpose(2, 1, 0)  # (Z, Y, X) -> NIfTI (X, Y, Z)
                affine = _grid_affine(nib.load(src).affine, plan.shape[::-1], xyz.shape)
                nib.save(nib.Nifti1Image(xyz, affine), folder / Path(src).name)
    return out_root, reached


def region_scores(pred: np.ndarray, truth: np.ndarray, spacing) -> dict[str, dict[str, float]]:
    """Dice and HD95 (mm) of each BraTS region (:data:`REGIONS`)."""
    from napari_drunet.core.evaluation.metrics import evaluate_case

    out = {}
    for region, labels in REGIONS.items():
        p, t = np.isin(pred, labels), np.isin(truth, labels)
        res = evaluate_case(p.astype(np.uint8), t.astype(np.uint8), spacing=spacing,
                            labels=[1])["per_class"][1]
        out[region] = {"dice": res["dice"], "hd95": res["hd95"],
                       "volume_ml_true": float(t.sum() * np.prod(spacing) / 1000),
                       "volume_ml_pred": float(p.sum() * np.prod(spacing) / 1000)}
    return out
