"""``launch_demo`` (what ``drunet demo`` opens): sample image, widgets docked, segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet._sample_data import HIPPOCAMPUS_LAYER
from napari_drunet.core.errors import InputError
from napari_drunet.gui.demo import launch_demo
from napari_drunet.gui.segment import SegmentWidget

pytestmark = pytest.mark.gui
WAIT = 60_000
DOCKED = ("Segment", "Corrections", "Fine-tune", "Model versions")


def _widgets(viewer) -> dict:
    docked = viewer.window.dock_widgets
    assert set(DOCKED) <= set(docked), sorted(docked)
    return {name: docked[name] for name in DOCKED}


def test_demo_fundus_segmented(make_napari_viewer, qtbot, make_model, errors):
    ckpt = make_model("rgb.safetensors", in_channels=3)
    viewer = launch_demo(model=str(ckpt), sample="fundus", run=False, device="cpu",
                         viewer=make_napari_viewer())
    widgets = _widgets(viewer)
    seg = widgets["Segment"]
    assert isinstance(seg, SegmentWidget)
    image = viewer.layers["fundus"]
    assert image.rgb and image.data.shape[-1] == 3
    assert seg.model_combo.currentText() == str(ckpt)
    assert seg.device_combo.currentText() == "cpu"
    assert seg.job is not None, "the demo starts segmenting right away"
    qtbot.waitUntil(lambda: not seg.job.running, timeout=WAIT)
    assert seg.job.error is None, seg.job.error
    labels = viewer.layers["fundus labels"]
    assert labels.data.shape == image.data.shape[:2]
    assert np.issubdtype(labels.data.dtype, np.integer)
    assert seg.state.last_result is not None and seg.state.last_result.labels_layer is labels
    assert errors == []


def test_demo_hippocampus_mri_3d(make_napari_viewer, qtbot, make_model, errors):
    ckpt = make_model("vol.safetensors", spatial_dims=3)
    viewer = launch_demo(model=str(ckpt), sample="hippocampus", run=False, device="cpu",
                         viewer=make_napari_viewer())
    seg = _widgets(viewer)["Segment"]
    qtbot.waitUntil(lambda: not seg.job.running, timeout=WAIT)
    assert seg.job.error is None, seg.job.error
    image = viewer.layers[HIPPOCAMPUS_LAYER]
    labels = viewer.layers[f"{HIPPOCAMPUS_LAYER} labels"]
    assert image.data.ndim == 3 and labels.data.shape == image.data.shape
    np.testing.assert_allclose(labels.scale, image.scale)  # voxel spacing carried over
    assert errors == []


def test_demo_unknown_model_falls_back_to_untrained(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.warns(UserWarning, match="UNTRAINED"):
        viewer = launch_demo(model="no-such-model", sample="fundus", run=False, segment=False,
                             viewer=make_napari_viewer())
    seg = _widgets(viewer)["Segment"]
    source = seg.model_combo.currentText()
    assert source.endswith("untrained.safetensors") and source.startswith(str(tmp_path))
    assert seg.job is None  # segment=False: nothing started
    assert "fundus labels" not in viewer.layers


def test_demo_unknown_sample(make_napari_viewer):
    with pytest.raises(InputError, match="unknown sample"):
        launch_demo(sample="knee", run=False, viewer=make_napari_viewer())


def test_demo_3d_sample_uses_the_3d_model_by_default(make_napari_viewer, qtbot, errors):
    from napari_drunet.core.models.model import list_models

    if "hippocampus" not in list_models():
        pytest.skip("packaged weights not installed")
    viewer = launch_demo(sample="hippocampus", run=False, segment=False, device="cpu",
                         viewer=make_napari_viewer())
    seg = _widgets(viewer)["Segment"]
    assert seg.model_combo.currentText() == "hippocampus"
    assert seg.selected_layer_names() == [HIPPOCAMPUS_LAYER] and seg.run() is not None
    qtbot.waitUntil(lambda: not seg.job.running, timeout=WAIT)
    assert seg.job.error is None, seg.job.error
    assert errors == []
