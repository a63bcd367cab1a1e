"""Every layer the plugin creates carries the scan's geometry; saved masks overlay the scan.

A user opens a LAS / oblique / anisotropic NIfTI with the plugin's reader, segments it, saves the
result with the plugin's writer (napari's ``layer.save``), adds it as a case, reopens the project
in a fresh viewer and saves the shown case and a correction: each file overlays the source voxel
for voxel in world coordinates (checked with nibabel).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from napari_drunet.core.image.io import ImageData, read_image, write_probability  # noqa: E402
from napari_drunet.gui.corrections import CorrectionsWidget  # noqa: E402
from napari_drunet.gui.segment import SegmentWidget  # noqa: E402

from .conftest import add_case, open_project, show_case  # noqa: E402

pytestmark = pytest.mark.gui
WAIT = 60_000


def _core_geometry():
    """tests/core/test_mask_geometry.py (sources and checks shared, not copied)."""
    path = Path(__file__).resolve().parents[1] / "core" / "test_mask_geometry.py"
    spec = importlib.util.spec_from_file_location("mask_geometry_checks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


geo = _core_geometry()


def _run(qtbot, job) -> None:
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error


def _source_of(layer) -> dict:
    src = layer.metadata.get("source")
    assert isinstance(src, dict), f"layer '{layer.name}' carries no source geometry"
    return src


@pytest.mark.parametrize("kind", sorted(geo.CASES))
def test_every_plugin_layer_keeps_the_scan_geometry(make_napari_viewer, qtbot, tmp_path,
                                                    make_model, kind, errors):
    src_path = tmp_path / f"{kind}.nii.gz"
    src = geo.make_source(src_path, kind, shape=(16, 16, 12))
    viewer = make_napari_viewer()
    [image_layer] = viewer.open(str(src_path), plugin="napari-drunet")
    seg, corr = SegmentWidget(viewer), CorrectionsWidget(viewer)
    seg.set_model_source(str(make_model("m3.safetensors", spatial_dims=3)))
    seg.prob_check.setChecked(True)
    seg.mc_spin.setValue(2)
    seg.set_image_layers([image_layer.name])
    _run(qtbot, seg.run())
    labels = viewer.layers[f"{image_layer.name} labels"]
    labels.data = (np.asarray(image_layer.data) >= 100).astype(np.uint8)  # a known mask
    labels.save(str(tmp_path / "result.nii.gz"), plugin="napari-drunet")
    geo.assert_same_geometry(tmp_path / "result.nii.gz", src, np.asarray(labels.data))

    _run(qtbot, seg.run_uncertainty())
    like_src = read_image(src_path).to_source()
    for role in ("probability", "uncertainty"):
        layer = viewer.layers[f"{image_layer.name} {role}"]
        got = _source_of(layer)
        np.testing.assert_array_equal(got["affine"], like_src["affine"])
        assert got["meta"]["sform_code"] == like_src["meta"]["sform_code"]
        out = write_probability(tmp_path / f"{role}.nii.gz", np.asarray(layer.data),
                                like=ImageData.from_source(got))
        np.testing.assert_array_equal(nib.load(str(out)).affine, src.affine)

    corr.create_project(tmp_path / "proj")
    assert add_case(qtbot, corr) == image_layer.name
    corr.flush()
    viewer2 = make_napari_viewer()
    corr2 = CorrectionsWidget(viewer2)
    open_project(qtbot, corr2, tmp_path / "proj")
    shown = show_case(qtbot, corr2, image_layer.name)
    shown.save(str(tmp_path / "case.nii.gz"), plugin="napari-drunet")
    geo.assert_same_geometry(tmp_path / "case.nii.gz", src, np.asarray(shown.data))
    shown.data[:2] = 0  # a correction: erase the first two slices
    shown.refresh()
    corr2.flush()
    shown.save(str(tmp_path / "corrected.nii.gz"), plugin="napari-drunet")
    geo.assert_same_geometry(tmp_path / "corrected.nii.gz", src, np.asarray(shown.data))
    image2 = viewer2.layers[f"{image_layer.name} image"]
    np.testing.assert_array_equal(_source_of(image2)["affine"], like_src["affine"])
    assert errors == []
