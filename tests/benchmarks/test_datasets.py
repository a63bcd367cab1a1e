"""benchmarks/datasets.py: the DRIVE and MSD dataset.json converters, and their old names in
``napari_drunet.core.train.dataset`` (which say where they moved)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from benchmarks.datasets import make_drive_dataset, make_msd_dataset
from napari_drunet.core.errors import DataError
from napari_drunet.core.train.dataset import load_dataset


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def test_drive_dataset_on_real_data(drive_root, tmp_path):
    js = make_drive_dataset(drive_root, tmp_path / "drive.json", subset=2)
    obj = json.loads(js.read_text())
    assert obj["allow_outside"] is True and len(obj["training"]) == 2
    with pytest.raises(DataError, match="outside"):
        load_dataset(js)
    cases, names = load_dataset(js, allow_outside=True)
    assert names == {"0": "background", "1": "vessel"}
    c = cases[0]
    assert c.name == "drive_21" and c.image.array.shape == (3, 584, 565) and c.image.is_rgb
    assert set(np.unique(c.label).tolist()) == {0, 1} and c.mask.dtype == bool
    assert 0.6 < c.mask.mean() < 0.75  # field of view
    assert c.label[c.mask].mean() > 0.05 and c.label[~c.mask].mean() < 0.01
    test = make_drive_dataset(drive_root, tmp_path / "t.json", split="test", subset=[3])
    cases, _ = load_dataset(test, split="test", allow_outside=True)
    assert [c.name for c in cases] == ["drive_03"]


def test_drive_dataset_relative_inside_folder(tmp_path):
    root = tmp_path / "DRIVE"
    (root / "training" / "images").mkdir(parents=True)
    for cid in ("21", "22"):
        _png(root / "training" / "mask" / f"{cid}_training_mask.gif", np.full((6, 5), 255))
        _png(root / "training" / "1st_manual" / f"{cid}_manual1.gif", np.zeros((6, 5)))
        tifffile.imwrite(root / "training" / "images" / f"{cid}_training.tif",
                         np.zeros((6, 5, 3), np.uint8))
    js = make_drive_dataset(root, root / "dataset.json", subset=["22"])
    obj = json.loads(js.read_text())
    assert "allow_outside" not in obj and obj["training"][0]["image"] == "training/images/22_training.tif"
    cases, _ = load_dataset(js)
    assert cases[0].name == "drive_22"
    with pytest.raises(DataError, match="no DRIVE images"):
        make_drive_dataset(tmp_path / "nothing", tmp_path / "x.json")


def test_msd_split(hippocampus_root, tmp_path):
    js = make_msd_dataset(hippocampus_root, tmp_path / "hippo.json")
    obj = json.loads(js.read_text())
    assert obj["labels"] == {"0": "background", "1": "anterior", "2": "posterior"}
    nums = [int(e["name"].split("_")[-1]) for e in obj["test"]]
    assert nums and all(n % 5 == 0 for n in nums)
    assert all(int(e["name"].split("_")[-1]) % 5 for e in obj["training"])
    assert len(obj["test"]) + len(obj["training"]) == 260
    obj["test"] = obj["test"][:2]
    js.write_text(json.dumps(obj))
    cases, names = load_dataset(js, split="test", allow_outside=True)
    assert cases[0].image.ndim_spatial == 3 and cases[0].label.shape == cases[0].image.shape_spatial
    assert set(np.unique(cases[0].label).tolist()) <= {0, 1, 2}


def test_old_names_say_where_the_benchmark_converters_went():
    import napari_drunet.core.train.dataset as core_dataset

    for name in ("make_drive_dataset", "make_msd_dataset"):
        with pytest.raises(AttributeError, match=f"from benchmarks.datasets import {name}"):
            getattr(core_dataset, name)
    with warnings.catch_warnings(), pytest.raises(AttributeError):
        warnings.simplefilter("error")  # an unknown name neither warns nor resolves
        core_dataset.make_stare_dataset  # noqa: B018
