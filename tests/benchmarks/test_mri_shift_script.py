"""benchmarks/mri_shift.py: the simulated scanner shifts and one real run on MSD volumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def test_shifts_change_the_volume_as_named(bench_script):
    script = bench_script("mri_shift")
    vol = np.random.default_rng(0).uniform(10, 200, (11, 14, 12)).astype(np.float32)
    for name in script.REORDERED:  # the storage order is applied in score(), not here
        np.testing.assert_array_equal(script.SHIFTS[name](vol, (1.0,) * 3)[0], vol)
    for name, shift in script.SHIFTS.items():
        out, sp = shift(vol, (1.0, 1.0, 1.0))
        assert out.dtype == np.float32, name
        if name == "0.67 mm voxels":
            assert out.shape == (16, 21, 18) and sp == (1 / 1.5,) * 3
        else:
            assert out.shape == vol.shape and sp == (1.0, 1.0, 1.0), name
    np.testing.assert_array_equal(script.SHIFTS["none"](vol, (1.0,) * 3)[0], vol)
    thick = script.SHIFTS["2 mm slices"](vol, (1.0,) * 3)[0]
    assert np.abs(np.diff(thick, axis=0)).mean() < np.abs(np.diff(vol, axis=0)).mean()
    assert script.SHIFTS["blur sigma 1"](vol, (1.0,) * 3)[0].std() < vol.std()
    biased = script.SHIFTS["bias field"](vol, (1.0,) * 3)[0] / vol
    assert 0.69 < biased.min() < 0.9 and 1.1 < biased.max() < 1.31


def test_reordered_affine_matches_the_array_transform(bench_script):
    from napari_drunet.core.infer.orientation import AxisOrder, array_codes, from_header

    script = bench_script("mri_shift")
    vol = np.random.default_rng(1).normal(size=(1, 5, 6, 7))
    expected = {"sagittal storage": "LIP", "coronal storage": "ASR"}  # (Z, Y, X) order
    for name, (order, flips) in script.REORDERED.items():
        stored = AxisOrder(order, flips).apply(vol)
        affine = script.reordered_affine(np.eye(4), order, flips, stored.shape[1:])
        assert array_codes(affine) == expected[name]
        np.testing.assert_array_equal(from_header(affine, "RAS").apply(stored), vol)


def test_one_volume_scored_with_and_without_resampling(hippocampus_root: Path, tmp_path: Path,
                                                       bench_script):
    script = bench_script("mri_shift")
    out = tmp_path / "shift.json"
    assert script.main(["--root", str(hippocampus_root), "--limit", "2", "--threads", "1",
                        "--shifts", "none,units x3+100,0.67 mm voxels,sagittal storage",
                        "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["volumes"] == 2 and data["split"] == "val"
    rows = {(r["shift"], r["resample"]): r for r in data["results"]
            if r["handling"] != "no header: search"}
    none = rows[("none", True)]
    assert none["dice_1"] > 0.8 and none["dice_2"] > 0.8  # the packaged model on held-out MRI
    # percentile z-scoring makes the model blind to the scanner's intensity units
    assert abs(rows[("units x3+100", True)]["dice_mean"] - none["dice_mean"]) < 0.01
    # finer voxels: resampling to the model's 1 mm spacing is what keeps it working
    assert rows[("0.67 mm voxels", True)]["dice_mean"] > rows[("0.67 mm voxels", False)][
        "dice_mean"] + 0.1
    # a volume stored the sagittal way: the header brings it back exactly, the search nearly;
    # as stored, the model finds almost nothing
    sag = {r["handling"]: r for r in data["results"] if r["shift"] == "sagittal storage"}
    assert sag["by header"]["dice_mean"] == pytest.approx(none["dice_mean"], abs=1e-6)
    assert sag["no header: search"]["dice_mean"] > none["dice_mean"] - 0.03
    assert sag["as stored"]["dice_mean"] < 0.3


def test_adapted_rows_use_shifted_training_volumes(hippocampus_root: Path, tmp_path: Path,
                                                   bench_script):
    """--adapt N: the model adapted (batch-norm statistics, no labels) to N shifted training
    volumes, stored like the scored ones, is scored beside the packaged one."""
    script = bench_script("mri_shift")
    out = tmp_path / "adapt.json"
    assert script.main(["--root", str(hippocampus_root), "--limit", "2", "--threads", "1",
                        "--shifts", "blur sigma 1,coronal storage", "--adapt", "2",
                        "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["adapt_volumes"] == 2
    rows = {(r["shift"], r["handling"]): r for r in data["results"]}
    blur, adapted = rows[("blur sigma 1", "auto")], rows[("blur sigma 1", "auto, adapted")]
    assert adapted["adapted"] == 2 and adapted["dice_mean"] > blur["dice_mean"] + 0.03
    # the adaptation volumes are reoriented by their header like the scored ones
    coronal = rows[("coronal storage", "by header, adapted")]
    assert coronal["dice_mean"] > rows[("coronal storage", "by header")]["dice_mean"] - 0.02
