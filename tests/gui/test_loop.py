"""The clinician's loop: segment -> correct (autosaved) -> fine-tune -> version -> revert -> reopen."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet.core.correction.project import Project
from napari_drunet.gui._state import PROJECT_ACTIVE
from napari_drunet.gui.corrections import CorrectionsWidget
from napari_drunet.gui.finetune import FinetuneWidget
from napari_drunet.gui.segment import SegmentWidget
from napari_drunet.gui.versions import VersionsWidget

from .conftest import add_case, open_project, segment_layer, show_case, small_finetune, wait_job

pytestmark = pytest.mark.gui
WAIT = 60_000


def test_full_loop(make_napari_viewer, qtbot, tmp_path, tiny_ckpt, make_disc, errors):
    viewer = make_napari_viewer()
    viewer.add_image(make_disc(32, 0), name="img0", scale=(0.5, 0.5), translate=(3, 4))
    viewer.add_image(make_disc(32, 1), name="img1", scale=(0.5, 0.5))
    seg, corr = SegmentWidget(viewer), CorrectionsWidget(viewer)
    ft, ver = FinetuneWidget(viewer), VersionsWidget(viewer)
    folder = tmp_path / "proj"
    assert corr.create_project(folder) is not None

    seg.set_model_source(str(tiny_ckpt))
    seg.prob_check.setChecked(True)
    labels0 = segment_layer(qtbot, seg, "img0")
    assert labels0.data.shape == (32, 32)
    np.testing.assert_allclose(labels0.scale, (0.5, 0.5))
    np.testing.assert_allclose(labels0.translate, (3, 4))
    assert "img0 probability" in viewer.layers

    assert add_case(qtbot, corr) == "img0"
    project = seg.state.project
    assert project.versions.active == "v001" and project.cases() == ["img0"]
    pred0 = project.load_case("img0").prediction.copy()

    # a paint stroke (napari's own tool path) and a programmatic edit, then undo of the stroke
    labels0.selected_label = 2
    labels0.paint((5, 5), 2, refresh=True)
    qtbot.waitUntil(lambda: project.case_meta("img0")["changed_fraction"] > 0, timeout=WAIT)
    painted = project.load_case("img0").correction
    assert (painted == 2).any()
    labels0.undo()  # napari's undo still works on the tracked layer
    qtbot.waitUntil(lambda: not (project.load_case("img0").correction == 2).any(), timeout=WAIT)
    labels0.data[0:6, 0:6] = 1
    labels0.data[20:24, 20:24] = 0
    labels0.refresh()
    expected = np.asarray(labels0.data).copy()
    qtbot.waitUntil(lambda: np.array_equal(project.load_case("img0").correction, expected),
                    timeout=WAIT)
    corr.flush()  # the stats land in the manifest just after the mask file
    rec = project.load_case("img0")
    assert rec.edited[5, 5]  # painted then undone: still flagged as looked at
    from napari_drunet.core.correction.project import label_dice

    assert project.case_meta("img0")["fix_dice"] == pytest.approx(label_dice(pred0, expected))
    assert project.case_meta("img0")["fix_dice"] < 1.0
    assert "how much did I fix" in corr.fix_label.text()

    labels1 = segment_layer(qtbot, seg, "img1")
    assert add_case(qtbot, corr) == "img1"
    labels1.data[10:14, 10:14] = 1
    labels1.refresh()
    corr.mark_case_reviewed()
    assert project.case_meta("img1")["reviewed_all"]
    assert corr.next_uncertain_case() is not None  # ranked in a worker
    wait_job(qtbot, corr)
    assert corr.tracker.case == "img0"  # the only unreviewed case, its layer reused
    assert sum(la.name.startswith("img0 labels") for la in viewer.layers) == 1
    show_case(qtbot, corr, "img1")

    # fine-tune a few steps in the worker, while the widgets stay usable
    small_finetune(qtbot, ft, budget_s=60)
    assert ft.outcome is not None and ft.outcome.version == "v002"
    assert ft.plot.series.get("loss"), "the live loss curve got points"
    assert ft.table.rowCount() >= 2  # held-back case + mean
    assert ver.version_ids() == ["v001", "v002"]
    assert project.versions.active == "v001"  # not promoted automatically
    assert project.versions.get("v002")["parent"] == "v001"

    ft_model = ft.outcome.model
    ft.promote()
    assert project.versions.active == "v002"
    assert seg.model_combo.currentText() == PROJECT_ACTIVE
    assert seg.state.get_model(PROJECT_ACTIVE, "auto") is ft_model  # swapped in, not reloaded
    ver.revert()
    assert project.versions.active == "v001"
    ver.select_version("v002")
    ver.switch_to_selected()
    assert project.versions.active == "v002"
    ver.switch_to("v001")
    corr.flush()
    assert errors == []

    # a fresh viewer reopening the folder gets case, corrected mask and active version back
    viewer2 = make_napari_viewer()
    corr2 = CorrectionsWidget(viewer2)
    seg2, ver2 = SegmentWidget(viewer2), VersionsWidget(viewer2)
    assert open_project(qtbot, corr2, folder) is not None
    reopened = Project.open(folder)
    assert reopened.versions.active == "v001" and reopened.cases() == ["img0", "img1"]
    restored = viewer2.layers["img1 labels"]  # the last case worked on
    np.testing.assert_array_equal(restored.data, reopened.load_case("img1").correction)
    assert (np.asarray(restored.data)[10:14, 10:14] == 1).all()
    from napari_drunet.gui._layers import CLASS_COLORS

    np.testing.assert_allclose(restored.get_color(1), CLASS_COLORS[1])  # binary: cyan
    assert "img1 image" in viewer2.layers
    assert "img0 labels" not in viewer2.layers
    assert corr2.next_uncertain_case() is not None  # img0 is read in the worker, then shown
    wait_job(qtbot, corr2)
    assert corr2.tracker.case == "img0"
    np.testing.assert_array_equal(viewer2.layers["img0 labels"].data, expected)
    np.testing.assert_allclose(viewer2.layers["img0 labels"].translate, (3, 4))
    assert seg2.model_combo.currentText() == PROJECT_ACTIVE
    assert ver2.version_ids() == ["v001", "v002"]
    assert errors == []


def test_user_mistakes_are_notifications(make_napari_viewer, tmp_path, errors, make_disc):
    viewer = make_napari_viewer()
    seg, corr, ft = SegmentWidget(viewer), CorrectionsWidget(viewer), FinetuneWidget(viewer)
    assert seg.run() is None  # no image layer
    viewer.add_image(make_disc(16), name="im")
    seg.refresh_layers()
    seg.set_model_source(str(tmp_path / "missing.safetensors"))
    job = seg.run()  # missing file: reported from the worker
    if job is not None:
        import time

        t0 = time.time()
        while job.running and time.time() - t0 < 30:
            from qtpy.QtWidgets import QApplication

            QApplication.processEvents()
    assert corr.add_current_result() is None  # no project
    assert corr.open_project(tmp_path / "nothing") is None
    assert ft.start() is None
    assert len(errors) >= 4 and all("\n" not in e for e in errors)
    assert any("not found" in e for e in errors)
