"""dataset.json parsing, path-escape refusal and case validation (the DRIVE / MSD converters:
tests/benchmarks/test_datasets.py)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_drunet.core.errors import DataError
from napari_drunet.core.image.io import ImageData
from napari_drunet.core.train.dataset import (
    Case,
    case_from_files,
    load_dataset,
    write_dataset_json,
)

RNG = np.random.default_rng(2)


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "data"
    for i in range(2):
        _png(root / "img" / f"c{i}.png", RNG.integers(0, 255, (12, 10, 3)))
        _png(root / "lab" / f"c{i}.png", (RNG.random((12, 10)) > 0.7) * 255)
        _png(root / "fov" / f"c{i}.png", np.pad(np.full((8, 6), 255), 2))
        _png(root / "rev" / f"c{i}.png", np.pad(np.full((4, 10), 255), ((8, 0), (0, 0))))
    return root


def test_load_dataset_with_mask_weight_and_labels(folder):
    entries = [{"image": f"img/c{i}.png", "label": f"lab/c{i}.png", "mask": f"fov/c{i}.png",
                "weight": f"rev/c{i}.png"} for i in range(2)]
    js = write_dataset_json(folder / "dataset.json", {"training": entries, "test": ["img/c1.png"]},
                            labels={0: "background", 1: "vessel"})
    assert json.loads(js.read_text())["numTraining"] == 2
    cases, names = load_dataset(js)
    assert names == {"0": "background", "1": "vessel"}
    c = cases[0]
    assert c.name == "c0" and c.image.array.shape == (3, 12, 10) and c.spacing == (1.0, 1.0)
    assert c.label.shape == (12, 10) and set(np.unique(c.label).tolist()) <= {0, 1}
    assert c.mask.dtype == bool and c.mask.sum() == 48
    assert c.weight.dtype == np.float32 and c.weight.max() == 1.0 and c.weight.sum() == 40
    test, _ = load_dataset(js, split="test")
    assert len(test) == 1 and test[0].label is None
    with pytest.raises(DataError, match="validation"):
        load_dataset(js, split="validation")


def test_multichannel_images_stacked(tmp_path):
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    for mod in ("t1", "t2"):
        nib.save(nib.Nifti1Image(RNG.random((6, 5, 4)).astype(np.float32), aff), tmp_path / f"{mod}.nii.gz")
    nib.save(nib.Nifti1Image(RNG.integers(0, 3, (6, 5, 4)).astype(np.uint8), aff), tmp_path / "seg.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 3), np.float32), aff), tmp_path / "bad.nii.gz")
    js = write_dataset_json(tmp_path / "d.json", [
        {"name": "p1", "image": ["t1.nii.gz", "t2.nii.gz"], "label": "seg.nii.gz"}])
    cases, names = load_dataset(js)
    assert cases[0].image.array.shape == (2, 4, 5, 6) and cases[0].spacing == (2.0, 1.0, 1.0)
    assert cases[0].name == "p1"
    assert names == {"0": "background", "1": "class 1", "2": "class 2"}  # inferred
    write_dataset_json(js, [{"image": ["t1.nii.gz", "bad.nii.gz"]}])
    with pytest.raises(DataError, match="different shapes"):
        load_dataset(js)


def test_shape_mismatch_and_bad_labels_name_the_case(folder):
    _png(folder / "lab" / "small.png", np.zeros((5, 5)))
    js = write_dataset_json(folder / "d.json", [{"image": "img/c0.png", "label": "lab/small.png"}])
    with pytest.raises(DataError, match="c0.*shape"):
        load_dataset(js)
    tifffile.imwrite(folder / "neg.tif", np.full((12, 10), -1, np.int16))
    write_dataset_json(js, [{"image": "img/c0.png", "label": "neg.tif"}])
    with pytest.raises(DataError, match="c0.*negative"):
        load_dataset(js)
    write_dataset_json(js, [{"image": "img/missing.png"}])
    with pytest.raises(DataError, match="not found"):
        load_dataset(js)


@pytest.mark.parametrize("path", ["../outside.png", "img/../../outside.png", "ABS"])
def test_paths_outside_the_folder_are_refused(folder, path):
    outside = _png(folder.parent / "outside.png", np.zeros((12, 10)))
    rel = str(outside) if path == "ABS" else path
    js = write_dataset_json(folder / "d.json", [{"image": "img/c0.png", "label": rel}])
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_dataset(js)
    obj = json.loads(js.read_text())
    obj["allow_outside"] = True  # the file cannot grant itself access
    js.write_text(json.dumps(obj))
    with pytest.raises(DataError, match="outside"):
        load_dataset(js)
    cases, _ = load_dataset(js, allow_outside=True)
    assert cases[0].label.shape == (12, 10)


def test_bad_json_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "none.json")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(DataError, match="JSON"):
        load_dataset(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"training": [{"label": "x.png"}]}))
    with pytest.raises(DataError, match="image"):
        load_dataset(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"training": [], "labels": {"x": "y"}}))
    with pytest.raises(DataError, match="labels"):
        load_dataset(tmp_path / "c.json")


def test_case_validation_and_from_arrays():
    c = Case.from_arrays("a", np.zeros((1, 4, 4)), label=np.full((4, 4), 255, np.uint8),
                         spacing=(0.5, 0.5), mask=np.ones((4, 4)), weight=np.ones((4, 4), bool))
    assert c.label.max() == 1 and c.mask.dtype == bool and c.weight.dtype == np.float32
    assert c.spacing == (0.5, 0.5)
    with pytest.raises(DataError, match="mask shape"):
        Case("b", ImageData(np.zeros((1, 4, 4))), mask=np.ones((3, 4)))
    with pytest.raises(DataError, match="non-integer"):
        Case("b", ImageData(np.zeros((1, 4, 4))), label=np.full((4, 4), 0.5))


def test_case_from_files_direct(folder):
    c = case_from_files(folder / "img" / "c1.png", folder / "lab" / "c1.png")
    assert c.name == "c1" and c.label.shape == c.image.shape_spatial


