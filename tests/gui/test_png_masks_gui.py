"""A Segment result saved as PNG/TIFF from napari is viewable (0/255) and reopens as class 1;
a multi-class model's result keeps its class indices even when it holds only 0 and 1."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_drunet.gui.corrections import CorrectionsWidget
from napari_drunet.gui.segment import SegmentWidget

from .conftest import add_case, open_project, show_case

pytestmark = pytest.mark.gui
WAIT = 60_000


def _multiclass_model(path):
    import torch

    from napari_drunet.core.image.normalization import default_spec
    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model

    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=3, features=(4, 8))
    meta = {"normalization": default_spec(),
            "label_names": {"0": "background", "1": "anterior", "2": "posterior"}}
    return Model(net, meta, device="cpu", name="tiny3").save(path)


def _segment(qtbot, seg, name: str, model) -> object:
    seg.set_model_source(str(model))
    seg.set_image_layers([name])
    job = seg.run()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    return seg.viewer.layers[f"{name} labels"]


def test_saved_binary_result_is_viewable_and_reopens(make_napari_viewer, qtbot, tmp_path,
                                                     make_disc, tiny_ckpt, errors):
    viewer = make_napari_viewer()
    viewer.add_image(make_disc(32, 0), name="img")
    seg = SegmentWidget(viewer)
    labels = _segment(qtbot, seg, "img", tiny_ckpt)
    mask = (make_disc(32, 0) > 0.5).astype(np.uint8)
    labels.data = mask
    for ext in (".png", ".tif"):
        out = tmp_path / f"img labels{ext}"
        labels.save(str(out), plugin="napari-drunet")
        raw = tifffile.imread(out) if ext == ".tif" else np.asarray(Image.open(out))
        assert set(np.unique(raw).tolist()) == {0, 255}
        [back] = viewer.open(str(out), plugin="napari-drunet")
        assert back._type_string == "labels"
        np.testing.assert_array_equal(back.data, mask)
    assert errors == []


def test_multiclass_result_keeps_class_indices(make_napari_viewer, qtbot, tmp_path, make_disc,
                                               errors):
    viewer = make_napari_viewer()
    viewer.add_image(make_disc(32, 0), name="img")
    seg, corr = SegmentWidget(viewer), CorrectionsWidget(viewer)
    labels = _segment(qtbot, seg, "img", _multiclass_model(tmp_path / "m3.safetensors"))
    labels.data = (make_disc(32, 0) > 0.5).astype(np.uint8)  # only class 1 painted
    labels.save(str(tmp_path / "seg.png"), plugin="napari-drunet")
    assert set(np.unique(np.asarray(Image.open(tmp_path / "seg.png"))).tolist()) == {0, 1}

    corr.create_project(tmp_path / "proj")  # the same case shown again from the project
    assert add_case(qtbot, corr) == "img"
    viewer2 = make_napari_viewer()
    corr2 = CorrectionsWidget(viewer2)
    open_project(qtbot, corr2, tmp_path / "proj")
    show_case(qtbot, corr2, "img").save(str(tmp_path / "case.tif"), plugin="napari-drunet")
    assert set(np.unique(tifffile.imread(tmp_path / "case.tif")).tolist()) == {0, 1}
    assert errors == []
