"""The 3D sample demonstrates the 3D model: both classes found on the shipped MSD case."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_drunet import _sample_data
from napari_drunet.core.image.io import read_image, read_label
from napari_drunet.core.models.model import list_models, load_model

SAMPLE = _sample_data.sample_paths()["hippocampus"]


def test_sample_is_a_small_msd_hippocampus_crop():
    img = nib.load(SAMPLE)  # read by NiBabel, not by our reader
    assert SAMPLE.stat().st_size <= 60_000
    assert img.shape == (37, 49, 34) and np.allclose(img.header.get_zooms(), 1.0)
    assert int(SAMPLE.stem.split("_")[1].split(".")[0]) % 5 == 0  # the models' held-out side
    readme = (SAMPLE.parent / "README.md").read_text()
    assert SAMPLE.name in readme and "CC-BY-SA 4.0" in readme and "Simpson" in readme


def _sample_prediction() -> np.ndarray:
    if "hippocampus" not in list_models():
        pytest.skip("packaged weights not installed")
    return load_model("hippocampus", device="cpu").predict(read_image(SAMPLE)).mask


def test_hippocampus_model_finds_both_classes_on_the_sample():
    counts = np.bincount(_sample_prediction().ravel(), minlength=3)
    assert counts[1] > 500 and counts[2] > 500, counts  # anterior and posterior, not blobs


def test_hippocampus_model_matches_the_msd_label_of_the_sample(hippocampus_root):
    truth, _ = read_label(hippocampus_root / "labelsTr" / SAMPLE.name)
    mask = _sample_prediction()
    for c in (1, 2):
        dice = 2 * np.sum((mask == c) & (truth == c)) / (np.sum(mask == c) + np.sum(truth == c))
        assert dice > 0.8, (c, dice)


def test_drunet_samples_writes_the_msd_case(tmp_path, capsys):
    from napari_drunet.cli import main

    assert main(["samples", "--out", str(tmp_path)]) == 0
    copied = tmp_path / "hippocampus.nii.gz"
    printed = capsys.readouterr().out
    assert f"hippocampus: {copied}" in printed and "CC-BY-SA 4.0" in printed
    assert "Simpson" in (tmp_path / "SAMPLES-README.md").read_text()  # attribution travels
    np.testing.assert_array_equal(np.asarray(nib.load(copied).dataobj),
                                  np.asarray(nib.load(SAMPLE).dataobj))
