"""Segment / versions widget details: model threshold, prediction warnings, derived layers,
labels colours, compact version metrics, and the demo's untrained-model notice on the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet.core.correction.project import Project
from napari_drunet.core.models.model import load_model
from napari_drunet.gui._layers import CLASS_COLORS, ROLE_KEY
from napari_drunet.gui._state import PROJECT_ACTIVE, get_state
from napari_drunet.gui.segment import SegmentWidget, _notify_warnings
from napari_drunet.gui.versions import COLUMNS, VersionsWidget, compact_metrics

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _sync(monkeypatch):
    monkeypatch.setenv("NAPARI_DRUNET_SYNC", "1")  # jobs finish inside run(): no waiting


@pytest.fixture
def notes(monkeypatch):
    """Warning and info notifications of the Segment widget, collected."""
    shown: dict[str, list[str]] = {"warning": [], "info": []}
    monkeypatch.setattr("napari_drunet.gui.segment.show_warning", shown["warning"].append)
    monkeypatch.setattr("napari_drunet.gui.segment.show_info", shown["info"].append)
    return shown


def test_threshold_box_follows_the_model_and_keeps_user_edits(make_napari_viewer, make_model,
                                                              make_disc, errors):
    img = make_disc(32)
    prob = load_model(make_model("probe.safetensors"), "cpu").predict(img).probabilities
    tuned = float(np.median(prob))  # a "validation-tuned" threshold far from 0.5
    a = make_model("a.safetensors", threshold=tuned)
    b = make_model("b.safetensors", threshold=0.7)
    model_a = load_model(a, "cpu")
    expect = model_a.predict(img).mask
    assert expect.any() and not np.array_equal(expect, model_a.predict(img, threshold=0.5).mask)

    viewer = make_napari_viewer()
    viewer.add_image(img, name="im")
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(a))
    assert seg.threshold_spin.value() == pytest.approx(tuned, abs=1e-3)
    assert "threshold" not in seg.options()  # the model's own value applies, at full precision
    seg.run()
    np.testing.assert_array_equal(viewer.layers["im labels"].data, expect)

    seg.set_model_source(str(b))
    assert seg.threshold_spin.value() == pytest.approx(0.7)
    seg.threshold_spin.setValue(0.45)  # the user's override ...
    seg.state.versions_changed.emit()  # ... survives a rebuild of the model list
    assert seg.threshold_spin.value() == pytest.approx(0.45)
    assert seg.options()["threshold"] == pytest.approx(0.45)
    seg.set_model_source(str(a))  # a new model choice: its threshold again
    assert seg.threshold_spin.value() == pytest.approx(tuned, abs=1e-3)
    assert "threshold" not in seg.options()
    assert errors == []


def test_recipe_boxes_follow_the_model_and_reach_the_prediction(make_napari_viewer, make_model,
                                                                 make_disc, errors):
    """A model whose recipe asks for TTA and the largest object ticks both boxes (and the run
    uses them); another model unticks them; the user's untick reaches the prediction."""
    img = make_disc(32)
    clean = make_model("clean.safetensors", threshold=0.3,
                       inference={"tta": True, "largest_object": True})
    plain = make_model("plain.safetensors", threshold=0.3)
    viewer = make_napari_viewer()
    viewer.add_image(img, name="im")
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(clean))
    assert seg.tta_check.isChecked() and seg.object_check.isChecked()
    seg.run()
    expect = load_model(clean, "cpu").predict(img).mask
    np.testing.assert_array_equal(viewer.layers["im labels"].data, expect)
    seg.object_check.setChecked(False)
    assert seg.options()["largest_object"] is False
    seg.set_model_source(str(plain))
    assert not seg.tta_check.isChecked() and not seg.object_check.isChecked()
    seg.set_model_source(str(clean))
    assert seg.tta_check.isChecked() and seg.object_check.isChecked()
    assert errors == []


def test_project_model_threshold_after_switching_versions(make_napari_viewer, tmp_path,
                                                          make_model):
    project = Project.create(tmp_path / "p")
    v1 = project.versions.add(load_model(make_model("v1.safetensors", threshold=0.3), "cpu"))
    v2 = project.versions.add(load_model(make_model("v2.safetensors", threshold=0.6), "cpu"),
                              parent=v1)
    viewer = make_napari_viewer()
    seg = SegmentWidget(viewer)
    state = get_state(viewer)
    state.set_project(project)
    assert seg.model_combo.currentText() == PROJECT_ACTIVE
    assert seg.threshold_spin.value() == pytest.approx(0.3)
    project.versions.set_active(v2)
    state.versions_changed.emit()
    state.model_changed.emit(v2)
    assert seg.threshold_spin.value() == pytest.approx(0.6)


def test_prediction_warnings_reach_the_user(make_napari_viewer, make_model, notes, errors):
    # a 1-channel model with a training FOV of 20 px, given an RGB "fundus" with a ~40 px FOV
    ckpt = make_model("fov.safetensors", preprocess={"fov_diameter": 20})
    yy, xx = np.mgrid[:48, :48]
    fov = (yy - 24) ** 2 + (xx - 24) ** 2 < 20 ** 2
    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[fov] = (200, 90, 40)
    rgb[fov & (np.abs(yy - xx) < 2)] = (120, 40, 20)  # a "vessel"
    viewer = make_napari_viewer()
    viewer.add_image(rgb, name="fundus", rgb=True)
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(ckpt))
    seg.run()
    assert "fundus labels" in viewer.layers
    assert any("grayscale" in w for w in notes["warning"]), notes
    assert any("FOV diameter" in i for i in notes["info"]), notes
    assert not any("FOV" in w for w in notes["warning"])  # rescaling is only a note
    status = seg.status.text()
    assert "done:" in status and "grayscale" in status and "FOV diameter" in status
    assert errors == []


def test_out_of_memory_fallback_is_a_warning(notes):
    class Pred:
        info = {"warnings": ["out of memory on cuda (tile 512, batch 4); retried on cuda with "
                             "tile 256, batch 1"]}

    suffix = _notify_warnings(Pred())
    assert len(notes["warning"]) == 1 and "out of memory" in notes["warning"][0]
    assert notes["info"] == [] and "warning: out of memory" in suffix


def test_derived_layers_are_not_inputs_and_labels_are_bright(make_napari_viewer, tiny_ckpt,
                                                             make_disc, errors):
    viewer = make_napari_viewer()
    viewer.add_image(make_disc(32), name="img")
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(tiny_ckpt))
    seg.prob_check.setChecked(True)
    seg.mc_spin.setValue(2)
    seg.run()
    seg.run_uncertainty()
    assert viewer.layers["img probability"].metadata[ROLE_KEY] == "probability"
    assert viewer.layers["img uncertainty"].metadata[ROLE_KEY] == "uncertainty"
    listed = [seg.layer_list.item(i).text() for i in range(seg.layer_list.count())]
    assert listed == ["img"] and seg.selected_layer_names() == ["img"]

    labels = viewer.layers["img labels"]
    np.testing.assert_allclose(labels.get_color(1), CLASS_COLORS[1])  # cyan
    assert labels.opacity == pytest.approx(0.6)

    viewer.layers.remove("img")  # nothing else left: the derived layers may be chosen
    listed = [seg.layer_list.item(i).text() for i in range(seg.layer_list.count())]
    assert set(listed) == {"img probability", "img uncertainty"}
    assert errors == []


def test_versions_table_shows_metrics_compactly(make_napari_viewer, tmp_path, tiny_ckpt):
    project = Project.create(tmp_path / "p")
    model = load_model(tiny_ckpt, "cpu")
    v1 = project.versions.add(model, metrics={"val_dice": 0.8123},
                              source=str(tmp_path / ("long-folder-name-" * 6) / "m.safetensors"))
    project.versions.add(model, parent=v1, metrics={
        "best_val_dice": 0.8123, "holdout_dice": 0.8, "holdout_dice_parent": 0.79, "steps": 150,
        "seconds": 4.3, "stop_reason": "max_steps"})
    viewer = make_napari_viewer()
    ver = VersionsWidget(viewer)
    get_state(viewer).set_project(project)
    col = COLUMNS.index("metrics")
    texts = [ver.table.item(r, col).text() for r in range(ver.table.rowCount())]
    assert texts == ["val 0.812", "val 0.812 / hold 0.800 / parent 0.790 / 150 steps / 4 s"]
    assert "stop_reason max_steps" in ver.table.item(1, col).toolTip()
    assert "long-folder-name-" in ver.table.item(0, len(COLUMNS) - 1).toolTip()  # full path


def test_compact_metrics_other_keys():
    assert compact_metrics({"dice": 0.91234, "epochs": 3, "note": None}) == "dice 0.912 / epochs 3"
    assert compact_metrics({}) == ""


def test_cli_demo_prints_untrained_notice(make_napari_viewer, monkeypatch, tmp_path, capsys):
    from napari_drunet import cli
    from napari_drunet.gui import demo

    real = demo.launch_demo
    opened = []

    def launch(**kw):  # the real demo, without entering napari's event loop
        kw.update(run=False, segment=False, viewer=make_napari_viewer())
        opened.append(real(**kw))
        return opened[-1]

    monkeypatch.setattr(demo, "launch_demo", launch)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert cli.main(["demo", "--model", "no-such-model"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "UNTRAINED" in ln]
    assert opened and len(lines) == 1 and lines[0].startswith("warning: model 'no-such-model'")


def test_packaged_default_model_is_preselected(make_napari_viewer):
    from napari_drunet.core.models.model import list_models

    if "retina-vessels" not in list_models():
        pytest.skip("packaged retina-vessels model absent")
    seg = SegmentWidget(make_napari_viewer())
    assert seg.model_combo.currentText() == "retina-vessels"
    assert seg.threshold_spin.value() == pytest.approx(load_model("retina-vessels").threshold,
                                                       abs=1e-3)


def test_reorientation_is_a_note_not_a_warning(notes):
    from napari_drunet.core.infer.orientation import AxisOrder, from_header, search_axis_order
    from napari_drunet.core.progress import run_to_end

    header = from_header(np.diag([1.0, 1.0, 1.0, 1.0])[[0, 2, 1, 3]], "RAS").reason

    def run(x):  # finds its structure only with the last two axes swapped
        yield from ()
        prob = np.zeros((2, *x.shape[1:]), np.float32)
        prob[0] = 1.0
        if x.shape[1:] == (4, 6, 5):
            prob[:, 0, 0, 0] = (0.1, 0.9)
        return prob

    searched = run_to_end(search_axis_order(run, np.zeros((1, 4, 5, 6), np.float32)))[0]
    assert searched != AxisOrder() and header and searched.reason

    class Pred:
        info = {"warnings": [header, searched.reason]}

    _notify_warnings(Pred())
    assert notes["warning"] == [] and len(notes["info"]) == 2
