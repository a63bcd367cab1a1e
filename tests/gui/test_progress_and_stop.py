"""Progress, errors and Stop/Cancel inside the widgets (issue 16 points 6 and 7)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_drunet.gui._state import get_state
from napari_drunet.gui.finetune import FinetuneWidget
from napari_drunet.gui.segment import SegmentWidget

pytestmark = pytest.mark.gui
WAIT = 60_000


def shown(widget) -> bool:
    """Visible once its (unshown) top-level window would be shown."""
    return not widget.isHidden()


@pytest.fixture
def project(corrected_project):
    return corrected_project


def segment_widget(viewer, ckpt, image) -> SegmentWidget:
    viewer.add_image(image, name="img")
    seg = SegmentWidget(viewer)
    seg.set_image_layers(["img"])
    seg.set_model_source(str(ckpt))
    seg.device_combo.setCurrentText("cpu")
    return seg


def test_segment_progress_bar_and_result_in_the_widget(make_napari_viewer, qtbot, tiny_ckpt,
                                                       make_disc, errors):
    viewer = make_napari_viewer()
    seg = segment_widget(viewer, tiny_ckpt, make_disc(64, 0))
    seg.tile_spin.setValue(16)  # several tiles: several progress records
    assert not shown(seg.progress_area.bar)
    job = seg.run()
    assert shown(seg.progress_area.bar), "the bar appears in the widget when the job starts"
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    assert not shown(seg.progress_area.bar) and seg.progress_area.bar.maximum() > 1
    assert seg.status.text().startswith("done:") and not shown(seg.progress_area.error)
    assert errors == []


def test_errors_stay_visible_in_the_widget(make_napari_viewer, qtbot, tiny_ckpt, make_disc,
                                           tmp_path, errors):
    viewer = make_napari_viewer()
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model at all")
    seg = segment_widget(viewer, bad, make_disc(32, 0))
    job = seg.run()  # the file is read in the worker: the error comes back from there
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    area = seg.progress_area
    assert job.error is not None and shown(area.error) and "broken" in area.error.text()
    assert errors and errors[-1].endswith(area.error.text().split("failed: ", 1)[1])
    assert not shown(area.bar)
    # a mistake found before any job starts lands there too (the target list always ticks an
    # image when there is one, so the only image is removed)
    data = viewer.layers["img"].data
    viewer.layers.remove("img")
    assert seg.run() is None and "image layer" in area.error.text().lower()
    # and the next run clears it
    viewer.add_image(data, name="img")
    seg.set_model_source(str(tiny_ckpt))
    job = seg.run()
    assert not shown(area.error)
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)


def test_cancel_takes_effect_within_a_second_and_says_so_when_done(make_napari_viewer, qtbot,
                                                                   tiny_ckpt, errors):
    viewer = make_napari_viewer()
    big = np.random.default_rng(0).random((1024, 1024)).astype(np.float32)
    seg = segment_widget(viewer, tiny_ckpt, big)
    seg.tile_spin.setValue(16)  # thousands of tiny tiles: it runs long enough to cancel
    seg.overlap_spin.setValue(0.5)
    job = seg.run()
    qtbot.waitUntil(lambda: seg.progress_area.bar.value() > 0, timeout=WAIT)
    t0 = time.perf_counter()
    seg.cancel()
    assert job.running and seg.status.text() == "cancelling…"  # not "cancelled" yet
    assert job.wait(10), "the worker did not stop"
    took = time.perf_counter() - t0
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert took < 3.0, f"cancel took {took:.2f} s (goal: 1 s; generous bound on a busy machine)"
    assert seg.status.text() == "cancelled" and job.aborted and seg.run_button.isEnabled()
    assert "img labels" not in viewer.layers
    assert errors == []


def test_finetune_stop_within_a_second_keeps_best_and_says_stopped(make_napari_viewer, qtbot,
                                                                   project, errors):
    viewer = make_napari_viewer()
    get_state(viewer).set_project(project)
    ft = FinetuneWidget(viewer)
    ft.steps_spin.setValue(100000)
    ft.budget_spin.setValue(0)
    ft.extra_config = {"batch_size": 2, "patch_size": (32, 32), "num_threads": 1,
                       "epochs": 100000}
    job = ft.start()
    assert shown(ft.progress_area.bar)
    qtbot.waitUntil(lambda: len(ft.plot.series.get("loss", [])) >= 2, timeout=WAIT)
    t0 = time.perf_counter()
    ft.stop()
    assert ft.eta_label.text().startswith("stopping")
    assert job.wait(10)
    took = time.perf_counter() - t0
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    assert took < 3.0, f"stop took {took:.2f} s"
    assert ft.outcome.stop_reason == "cancelled"
    assert ft.eta_label.text().startswith("stopped") and not shown(ft.progress_area.bar)
    assert errors == []


def test_progress_after_the_widget_is_deleted_is_ignored(make_napari_viewer, qtbot, project,
                                                         errors):
    """A job that still yields after its dock widget was closed must neither raise into Qt
    nor go on for ever: it is stopped, keeping the best so far."""
    viewer = make_napari_viewer()
    get_state(viewer).set_project(project)
    ft = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(ft, name="Fine-tune")
    ft.steps_spin.setValue(100000)
    ft.budget_spin.setValue(0)
    ft.extra_config = {"batch_size": 2, "patch_size": (32, 32), "num_threads": 1,
                       "epochs": 100000}
    job = ft.start()
    qtbot.waitUntil(lambda: len(ft.plot.series.get("loss", [])) >= 1, timeout=WAIT)
    viewer.window.remove_dock_widget(ft)
    ft.deleteLater()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)  # progress kept coming meanwhile
    assert job.error is None, job.error
    assert job.result.stop_reason == "cancelled"
    assert project.versions.get(job.result.version)["metrics"]["stop_reason"] == "cancelled"
    assert errors == []
