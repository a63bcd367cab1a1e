"""benchmarks/brats_accuracy.py and brats_data.py: BraTS regions, cases, coarse copies."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHAPE = (16, 16, 11)  # (X, Y, Z) as stored


def _fake_brats(root: Path) -> Path:
    rng = np.random.default_rng(0)
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    for split, case in (("train", "pat5"), ("validation", "pat3"), ("test", "pat1")):
        folder = root / split / case
        folder.mkdir(parents=True)
        labels = np.zeros(SHAPE, np.float32)
        labels[4:12, 4:12, 3:8] = 2
        labels[6:10, 6:10, 4:7] = 4
        for name in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"):
            img = (labels + rng.normal(size=SHAPE)).astype(np.float32)
            nib.save(nib.Nifti1Image(img, aff), folder / name)
        nib.save(nib.Nifti1Image(labels, aff), folder / "OTMultiClass.nii.gz")
    return root


def test_region_scores_use_the_brats_label_sets(bench_script):
    script = bench_script("brats_data")
    truth = np.zeros((6, 8, 8), np.uint8)
    truth[1:5, 2:6, 2:6] = 2
    truth[2:4, 3:5, 3:5] = 4
    pred = truth.copy()
    pred[pred == 4] = 1  # core right, enhancing missed, whole tumour right
    res = script.region_scores(pred, truth, (1.0, 1.0, 1.0))
    assert res["whole tumour"]["dice"] == 1.0 and res["tumour core"]["dice"] == 1.0
    assert res["enhancing tumour"]["dice"] == 0.0
    assert res["whole tumour"]["volume_ml_true"] == pytest.approx(64 / 1000)


def test_the_corrected_slab_is_centred_on_the_largest_tumour_section(bench_script):
    loop = bench_script("brats_loop")
    truth = np.zeros((40, 8, 8), np.uint8)
    truth[30, 1:7, 1:7] = 2  # the largest section
    truth[10:29, 3:5, 3:5] = 1
    assert loop.tumour_slab(truth, 8) == slice(26, 34)
    assert loop.tumour_slab(truth[:33], 8) == slice(25, 33)  # kept inside the volume


def test_cases_datasets_and_the_coarse_copy(tmp_path: Path, bench_script):
    data = bench_script("brats_data")
    root = _fake_brats(tmp_path / "brats")
    [case] = data.brats_cases(root, "test")
    assert case["name"] == "pat1" and [Path(p).name for p in case["image"]] == list(data.MODALITIES)
    ds = json.loads(data.make_brats_dataset(root, tmp_path / "tr.json",
                                            ("train", "validation")).read_text())
    assert [e["name"] for e in ds["training"]] == ["pat5", "pat3"] and len(ds["labels"]) == 5
    out, reached = data.resample_brats(root, tmp_path / "coarse", 2.0, ("train",))
    assert reached == pytest.approx([11 / 6, 2.0, 2.0])  # (Z, Y, X): 11 voxels round to 6
    small = nib.load(out / "train" / "pat5" / "OTMultiClass.nii.gz")
    lab = np.asarray(small.dataobj)
    assert lab.shape == (8, 8, 6) and set(np.unique(lab)) <= {0, 2, 4} and (lab == 4).any()
    big = nib.load(root / "train" / "pat5" / "OTMultiClass.nii.gz")
    # both grids span the same field: their centres are the same point in the scanner
    centre = [(n - 1) / 2 for n in SHAPE]
    assert np.allclose(big.affine @ [*centre, 1],
                       small.affine @ [*[(n - 1) / 2 for n in lab.shape], 1])
    (root / "test" / "pat1" / "OTMultiClass.nii.gz").unlink()
    with pytest.raises(Exception, match="missing OTMultiClass"):
        data.brats_cases(root, "test")


@pytest.mark.slow
def test_real_brats_cases(brats_root: Path, bench_script):
    data = bench_script("brats_data")
    assert [len(data.brats_cases(brats_root, s)) for s in ("train", "validation", "test")] == [2, 2, 2]


def test_main_trains_records_the_spacing_and_scores_the_test_case(tmp_path: Path, bench_script):
    from napari_drunet.core.models.checkpoint import read_meta

    script = bench_script("brats_accuracy")
    root = _fake_brats(tmp_path / "brats")
    out = tmp_path / "run"
    assert script.main(["--brats", str(root), "--out", str(out), "--features", "4,8",
                        "--patch-size", "8,8,8", "--max-steps", "2", "--threads", "1",
                        "--full-size-check"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test"]["pat1"]) == {"whole tumour", "tumour core", "enhancing tumour"}
    assert summary["steps"] == 2 and summary["full_size_1mm"]["shape"] == [2, 11, 16, 16]
    meta = read_meta(out / "model.ckpt")
    assert meta["preprocess"]["spacing"] == pytest.approx([11 / 6, 2.0, 2.0])
    assert meta["arch_kwargs"]["in_channels"] == 2 and meta["arch_kwargs"]["out_channels"] == 5
    spec = json.loads((out / "test.json").read_text())
    assert len(spec["test"][0]["image"]) == 2  # what drunet predict --data reads
