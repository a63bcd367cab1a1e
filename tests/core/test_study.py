"""core.study: a multi-file study (FLAIR + T1c ...) read as one multi-channel image, in the
napari reader and in ``drunet predict --data``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_drunet import _reader
from napari_drunet.cli import main
from napari_drunet.core.errors import DataError, InputError
from napari_drunet.core.image.io import read_label
from napari_drunet.core.image.study import (
    is_study_folder,
    read_study,
    read_study_folder,
    study_channel_files,
)
from napari_drunet.core.models.model import Model
from napari_drunet.core.nets.networks import build_model
from napari_drunet.core.train.dataset import dataset_studies

SHAPE = (12, 10, 8)  # as stored (X, Y, Z); read as (Z, Y, X)
ZYX = SHAPE[::-1]
RNG = np.random.default_rng(0)


def _affine(shift: float = 0.0) -> np.ndarray:
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    aff[:3, 3] = (-10 + shift, 4, 2)
    return aff


def _save(path: Path, arr: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(arr, _affine() if affine is None else affine), path)
    return path


def _case(folder: Path) -> Path:
    """A BraTS-like case folder: two z-scored modalities, a float label map, an int mask."""
    folder.mkdir(parents=True, exist_ok=True)
    _save(folder / "Flair_subtrMeanDivStd.nii.gz", RNG.normal(size=SHAPE).astype(np.float32))
    _save(folder / "T1c_subtrMeanDivStd.nii.gz", RNG.normal(2, 1, SHAPE).astype(np.float32))
    labels = np.zeros(SHAPE, np.float32)
    labels[3:7, 3:7, 2:5] = 2
    labels[4:6, 4:6, 3] = 4
    _save(folder / "OTMultiClass.nii.gz", labels)
    _save(folder / "brainmask.nii.gz", np.ones(SHAPE, np.int32))
    (folder / "License.txt").write_text("terms")
    return folder


def test_read_study_stacks_channels_in_the_order_given(tmp_path: Path):
    case = _case(tmp_path / "pat1")
    flair, t1c = case / "Flair_subtrMeanDivStd.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz"
    img = read_study([t1c, flair])
    assert img.array.shape == (2, *ZYX) and img.channels == 2
    assert np.allclose(img.array[0], nib.load(t1c).get_fdata().T)
    assert np.allclose(img.array[1], nib.load(flair).get_fdata().T)
    assert img.spacing == pytest.approx((2.0, 1.5, 1.5))
    assert np.allclose(img.affine, _affine())
    assert img.meta["channel_names"] == ["T1c_subtrMeanDivStd", "Flair_subtrMeanDivStd"]
    assert img.meta["channel_files"] == [str(t1c), str(flair)]
    assert read_study([flair]).channels == 1


def test_read_study_refuses_channels_on_another_grid(tmp_path: Path):
    a = _save(tmp_path / "a.nii.gz", np.zeros(SHAPE, np.float32))
    shape = _save(tmp_path / "b.nii.gz", np.zeros((12, 10, 9), np.float32))
    moved = _save(tmp_path / "c.nii.gz", np.zeros(SHAPE, np.float32), _affine(shift=3.0))
    spacing = np.diag([1.0, 1.5, 2.0, 1.0])
    spacing[:3, 3] = _affine()[:3, 3]
    other = _save(tmp_path / "d.nii.gz", np.zeros(SHAPE, np.float32), spacing)
    for bad, why in ((shape, "shape"), (moved, "affine"), (other, "spacing")):
        with pytest.raises(InputError, match=f"{bad.name}.*{why}"):
            read_study([a, bad])
    with pytest.raises(InputError, match="at least one"):
        read_study([])


def test_a_study_folder_leaves_out_label_maps_masks_and_other_files(tmp_path: Path):
    case = _case(tmp_path / "pat1")
    assert [p.name for p in study_channel_files(case)] == [
        "Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]
    # a label map named like an image is still left out: its values are all integers
    (case / "OTMultiClass.nii.gz").rename(case / "tumour.nii.gz")
    assert len(study_channel_files(case)) == 2
    assert is_study_folder(case) and read_study_folder(case).channels == 2
    single = tmp_path / "single"
    single.mkdir()
    _save(single / "t1.nii.gz", RNG.normal(size=SHAPE).astype(np.float32))
    assert not is_study_folder(single) and not is_study_folder(tmp_path / "missing")
    with pytest.raises(InputError, match="no channel files"):
        read_study_folder(tmp_path / "missing")


def test_reader_opens_a_study_folder_or_its_channel_files_as_one_layer(tmp_path: Path):
    case = _case(tmp_path / "pat1")
    reader = _reader.get_reader(str(case))
    assert reader is _reader.read_study_layers
    [(data, kwargs, kind)] = reader(str(case))
    assert kind == "image" and data.shape == (2, *ZYX) and kwargs["channel_axis"] == 0
    assert kwargs["name"] == ["pat1 Flair_subtrMeanDivStd", "pat1 T1c_subtrMeanDivStd"]
    assert kwargs["scale"] == pytest.approx((2.0, 1.5, 1.5))
    files = [str(p) for p in study_channel_files(case)]
    [(data2, kwargs2, _)] = _reader.get_reader(files)(files)
    assert np.array_equal(data, data2) and kwargs2["name"] == kwargs["name"]
    # an image with its label map, or one file twice, stay one layer per file
    pair = [files[0], str(case / "OTMultiClass.nii.gz")]
    assert _reader.get_reader(pair) is _reader.read_layers
    assert _reader.get_reader([files[0]] * 2) is _reader.read_layers
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _reader.get_reader(str(empty)) is None


def test_dataset_studies_names_paths_and_errors(tmp_path: Path):
    for case in ("pat1", "pat2"):
        _case(tmp_path / case)
    chans = ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]
    spec = {"test": [[f"pat1/{c}" for c in chans],
                     {"image": [f"pat2/{c}" for c in chans], "name": "second"},
                     "pat1/Flair_subtrMeanDivStd.nii.gz"]}
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps(spec))
    studies = dataset_studies(ds)
    assert [s.name for s in studies] == ["pat1", "second", "Flair_subtrMeanDivStd"]
    assert studies[0].files == tuple(tmp_path / "pat1" / c for c in chans)
    assert studies[1].read().channels == 2
    with pytest.raises(DataError, match="no 'training'"):
        dataset_studies(ds, "training")
    ds.write_text(json.dumps({"test": [[f"pat1/{c}" for c in chans]] * 2}))
    with pytest.raises(DataError, match="second study named 'pat1'"):
        dataset_studies(ds)
    outside = tmp_path / "sub" / "dataset.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps({"test": [[f"../pat1/{c}" for c in chans]]}))
    with pytest.raises(DataError, match="outside"):
        dataset_studies(outside)
    assert dataset_studies(outside, allow_outside=True)[0].name == "pat1"


def test_predict_data_segments_each_study_with_a_two_channel_model(tmp_path: Path, capsys):
    for case in ("pat1", "pat2"):
        _case(tmp_path / case)
    chans = ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps({"test": [[f"{c}/{f}" for f in chans] for c in ("pat1", "pat2")]}))
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=3, in_channels=2, out_channels=5, features=(4, 8))
    ckpt = Model(net, {"normalization": {"mode": "none"}}, device="cpu").save(tmp_path / "m.ckpt")
    out = tmp_path / "masks"
    assert main(["predict", "--model", str(ckpt), "--data", str(ds), "--output", str(out),
                 "--device", "cpu"]) == 0
    assert "pat2 -> " in capsys.readouterr().out
    for case in ("pat1", "pat2"):
        mask, geom = read_label(out / f"{case}.nii.gz")
        assert mask.shape == ZYX and mask.max() <= 4
        assert np.allclose(geom.affine, _affine())  # the study's geometry, not the array's
    assert main(["predict", "--model", str(ckpt), "--data", str(ds), "--input", str(tmp_path),
                 "--output", str(out)]) != 0
    assert "not allowed with argument --data" in capsys.readouterr().err
