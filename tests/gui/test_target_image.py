"""The image you see is the image you segment, with the model that fits it; say what the
colours mean."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import Qt

from napari_drunet._sample_data import HIPPOCAMPUS_LAYER
from napari_drunet.core.models.model import list_models, load_model
from napari_drunet.gui._layers import CLASS_COLORS, add_image_layers
from napari_drunet.gui.segment import SegmentWidget

from .conftest import add_case, open_project, show_case

pytestmark = pytest.mark.gui
WAIT = 60_000
FUNDUS_CARD = {"modality": "colour fundus photograph", "dims": [2], "channels": "rgb"}


def _packaged(*names: str) -> None:
    if not set(names) <= set(list_models()):
        pytest.skip("packaged weights not installed")


def _wait(qtbot, seg) -> None:
    assert seg.job is not None
    qtbot.waitUntil(lambda: not seg.job.running, timeout=WAIT)
    assert seg.job.error is None, seg.job.error


def test_opened_image_becomes_the_target_and_run_segments_it(make_napari_viewer, qtbot,
                                                             tiny_ckpt, make_disc, tmp_path,
                                                             errors):
    viewer = make_napari_viewer()
    viewer.add_image(make_disc(32), name="first")
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(tiny_ckpt))
    assert seg.selected_layer_names() == ["first"]
    path = tmp_path / "second.tif"
    tifffile.imwrite(path, (make_disc(40, seed=1) * 100).astype(np.uint16))
    [layer] = viewer.open(str(path), plugin="napari-drunet")
    assert seg.selected_layer_names() == [layer.name]  # not still ticking "first"
    seg.run()
    _wait(qtbot, seg)
    assert f"{layer.name} labels" in viewer.layers and "first labels" not in viewer.layers
    assert viewer.layers[f"{layer.name} labels"].data.shape == (40, 40)

    viewer.layers.selection.active = viewer.layers["first"]  # selecting an image targets it
    assert seg.selected_layer_names() == ["first"]
    assert errors == []


def test_channels_of_one_file_are_checked_together(make_napari_viewer, tiny_ckpt):
    from napari_drunet.core.image.io import ImageData

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="old")
    seg = SegmentWidget(viewer)
    image = ImageData(np.random.default_rng(0).random((2, 16, 16)).astype(np.float32),
                      spacing=(1.0, 1.0), path="/data/two_channels.tif")
    add_image_layers(viewer, image, "two")
    assert seg.selected_layer_names() == ["two c0", "two c1"]


def test_derived_and_label_layers_do_not_change_the_target(make_napari_viewer, make_disc):
    viewer = make_napari_viewer()
    viewer.add_image(make_disc(32), name="img")
    seg = SegmentWidget(viewer)
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="paint")
    viewer.add_image(np.zeros((32, 32), np.float32), name="img probability",
                     metadata={"napari_drunet_role": "probability"})
    assert seg.selected_layer_names() == ["img"]


def test_opening_the_3d_sample_proposes_the_3d_model_and_shows_both_classes(
        make_napari_viewer, qtbot, errors):
    _packaged("retina-vessels", "hippocampus")
    viewer = make_napari_viewer()
    seg = SegmentWidget(viewer)
    seg.set_model_source("retina-vessels")
    seg.device_combo.setCurrentText("cpu")
    viewer.open_sample("napari-drunet", "hippocampus")
    assert seg.selected_layer_names() == [HIPPOCAMPUS_LAYER]
    assert seg.model_combo.currentText() == "hippocampus"
    assert "'hippocampus' chosen" in seg.fit_label.text() and seg.fit_label.isVisibleTo(seg)
    assert seg.legend.names == {1: "anterior", 2: "posterior"}
    seg.run()
    _wait(qtbot, seg)
    labels = viewer.layers[f"{HIPPOCAMPUS_LAYER} labels"]
    counts = np.bincount(np.asarray(labels.data).ravel(), minlength=3)
    assert counts[1] > 500 and counts[2] > 500, counts
    for c in (1, 2):  # the legend's colour is the layer's colour
        np.testing.assert_allclose(labels.get_color(c), CLASS_COLORS[c])
    assert errors == []


def test_chooser_says_which_images_each_packaged_model_fits(make_napari_viewer):
    _packaged("retina-vessels", "hippocampus")
    viewer = make_napari_viewer()
    seg = SegmentWidget(viewer)
    combo = seg.model_combo
    packaged = [i for i in range(combo.count()) if combo.itemData(i) == "packaged"]
    assert {combo.itemText(i) for i in packaged} == set(list_models())
    for i in packaged:  # the tooltip of each entry: modality, dims, channels and example
        card = load_model(combo.itemText(i), "cpu").meta["card"]
        tip = combo.itemData(i, Qt.ItemDataRole.ToolTipRole)
        assert card["modality"] in tip and card["example"] in tip
        colour = "RGB" if card["channels"] == "rgb" else card["channels"]
        assert tip.startswith(f"{card['dims'][0]}D, for {colour} images")
    seg.set_model_source("retina-vessels")
    assert "565 x 584 px" in combo.toolTip()
    viewer.add_image(np.random.default_rng(0).random((12, 24, 20)).astype(np.float32),
                     name="mri")  # a packaged model that does not fit is replaced, and says why
    assert combo.currentText() == "hippocampus"
    assert "'hippocampus' chosen" in seg.fit_label.text()
    assert load_model("hippocampus", "cpu").meta["card"]["example"] in seg.fit_label.text()


def test_model_that_does_not_fit_is_refused_with_the_fitting_one_offered(
        make_napari_viewer, make_model, errors):
    _packaged("hippocampus")
    viewer = make_napari_viewer()
    fundus = make_model("fundus.safetensors", in_channels=3, card=FUNDUS_CARD)
    viewer.add_image(np.random.default_rng(0).random((12, 24, 20)).astype(np.float32),
                     name="mri")
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(fundus))  # a file the user chose is not replaced behind her back
    assert seg.model_combo.currentText() == str(fundus)
    assert "is 2D, for RGB images (colour fundus photograph)" in seg.fit_label.text()
    assert "3D grey volume (12 x 24 x 20)" in seg.fit_label.text()
    assert seg.use_button.isVisibleTo(seg) and seg.use_button.text() == "Use 'hippocampus'"
    example = load_model("hippocampus", "cpu").meta["card"]["example"]
    assert example in seg.use_button.toolTip()  # what images the offered model is for
    assert seg.run() is None  # nothing started: blobs would follow
    assert len(errors) == 1 and "'hippocampus' fits it" in errors[0]
    seg.use_button.click()
    assert seg.model_combo.currentText() == "hippocampus"
    assert not seg.fit_label.isVisibleTo(seg) and not seg.use_button.isVisibleTo(seg)


def test_legend_names_the_binary_class_in_its_colour(make_napari_viewer, make_disc, tiny_ckpt):
    viewer = make_napari_viewer()
    viewer.add_image(make_disc(32), name="img")
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(tiny_ckpt))
    assert seg.legend.names == {1: "object"}
    assert "object" in seg.legend.text() and "rgb(0,255,255)" in seg.legend.text()  # cyan


def test_rgb_layer_is_segmented_as_the_array_call_does(make_napari_viewer, qtbot, make_model,
                                                       errors):
    from napari_drunet.core.models.model import load_model

    ckpt = make_model("rgb.safetensors", in_channels=3, card=FUNDUS_CARD)
    photo = np.random.default_rng(3).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    viewer = make_napari_viewer()
    layer = viewer.add_image(photo, name="photo")  # napari reads (H, W, 3) as RGB
    assert layer.rgb
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(ckpt))
    seg.device_combo.setCurrentText("cpu")
    assert not seg.fit_label.isVisibleTo(seg)
    seg.run()
    _wait(qtbot, seg)
    expected = load_model(ckpt, "cpu").predict(photo).mask  # the README's call
    np.testing.assert_array_equal(viewer.layers["photo labels"].data, expected)

    viewer.add_image(photo, name="not rgb", rgb=False)  # the layer says: a 48 x 40 x 3 volume
    assert seg.selected_layer_names() == ["not rgb"]
    assert "in napari: an RGB layer" in seg.fit_label.text()
    assert seg.run() is None and "is_rgb=True" in errors[-1]


def test_case_shown_from_the_project_keeps_each_class_colour(make_napari_viewer, qtbot,
                                                             tmp_path, errors):
    _packaged("hippocampus")
    from napari_drunet.gui.corrections import CorrectionsWidget

    viewer = make_napari_viewer()
    corr = CorrectionsWidget(viewer)
    seg = SegmentWidget(viewer)
    corr.create_project(tmp_path / "proj")
    viewer.open_sample("napari-drunet", "hippocampus")
    seg.set_model_source("hippocampus")
    seg.device_combo.setCurrentText("cpu")
    seg.run()
    _wait(qtbot, seg)
    name = add_case(qtbot, corr)
    corr.flush()
    viewer2 = make_napari_viewer()  # the next day: the case comes from the project folder
    corr2 = CorrectionsWidget(viewer2)
    open_project(qtbot, corr2, tmp_path / "proj")
    shown = show_case(qtbot, corr2, name)
    assert {1, 2} <= set(np.unique(np.asarray(shown.data)))
    for c in (1, 2, 3):  # 3: a class the user paints beyond the model's
        np.testing.assert_allclose(shown.get_color(c), CLASS_COLORS[c])
    assert errors == []
