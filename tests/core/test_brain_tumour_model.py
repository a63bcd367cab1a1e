"""The packaged ``brain-tumour`` model: what it fits, and a BraTS test study through the CLI's
``--data`` path (FLAIR + T1c files as one 2-channel image) keeping the study's geometry."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_drunet.cli import main
from napari_drunet.core.models.checkpoint import read_meta
from napari_drunet.core.models.fit import ImageKind, proposal
from napari_drunet.core.models.model import list_models, model_path

pytestmark = pytest.mark.skipif("brain-tumour" not in list_models(),
                                reason="brain-tumour weights not packaged")


def test_brain_tumour_is_a_2_channel_5_class_3d_model_chosen_for_a_study():
    meta = read_meta(model_path("brain-tumour"))
    assert meta["card"] == meta["card"] | {"dims": [3], "channels": "2-channel"}
    assert meta["arch_kwargs"]["in_channels"] == 2 and meta["arch_kwargs"]["out_channels"] == 5
    assert meta["preprocess"]["spacing"] == pytest.approx([2.0, 2.0, 2.0], abs=0.02)
    assert meta["label_names"]["4"] == "enhancing tumour"
    assert proposal(ImageKind(3, 2, False, (155, 240, 240))) == "brain-tumour"


@pytest.mark.slow
def test_a_brats_test_study_through_predict_data(brats_root: Path, tmp_path: Path):
    """pat0001: whole tumour (labels 1-4) Dice at the packaged model's measured 0.839 (goal
    0.80), the label map on the study's own 1 mm grid and affine."""
    case = brats_root / "test" / "brats_2013_pat0001_1"
    files = [str(case / f) for f in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")]
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"test": [{"name": case.name, "image": files}]}))
    assert main(["predict", "--model", "brain-tumour", "--data", str(dataset), "--allow-outside",
                 "--output", str(tmp_path / "out"), "--threads", "2"]) == 0
    written = list((tmp_path / "out").glob("*.nii.gz"))
    assert len(written) == 1
    pred, truth = nib.load(str(written[0])), nib.load(str(case / "OTMultiClass.nii.gz"))
    np.testing.assert_allclose(pred.affine, truth.affine, atol=1e-5)
    p, t = np.asarray(pred.dataobj) > 0, np.asarray(truth.dataobj) > 0
    assert p.shape == t.shape
    assert 2 * (p & t).sum() / (p.sum() + t.sum()) >= 0.80
