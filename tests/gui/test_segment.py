"""Segment widget: background inference, 3D preview, uncertainty navigation, demo, heartbeat."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_drunet.core.correction.project import Project
from napari_drunet.gui import _warmup
from napari_drunet.gui.corrections import CorrectionsWidget
from napari_drunet.gui.demo import launch_demo
from napari_drunet.gui.segment import CURRENT, SegmentWidget

from .conftest import add_case

pytestmark = pytest.mark.gui
WAIT = 60_000


def _wait(qtbot, job):
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error


def test_event_loop_keeps_running_during_inference(make_napari_viewer, qtbot, tiny_ckpt, make_disc):
    viewer = make_napari_viewer()
    viewer.add_image(np.tile(make_disc(64), (4, 4)), name="big")
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(tiny_ckpt))
    seg.tile_spin.setValue(32)  # many tiles -> many yields
    # the widget started the background import warm-up (gui/_warmup.py); its imports hold the
    # GIL in long stretches, which on a starved CI machine would be charged to run() here
    assert _warmup.wait(300)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    t0 = time.perf_counter()
    job = seg.run()
    returned = time.perf_counter() - t0
    _wait(qtbot, job)
    timer.stop()
    assert returned < 0.5, "run() must return at once; work happens in the worker"
    during = [t for t in ticks if t >= t0]
    assert len(during) >= 3
    gaps = np.diff(during)
    assert gaps.max() < 1.0, f"GUI thread blocked for {gaps.max():.2f} s"
    assert viewer.layers["big labels"].data.shape == (256, 256)


def test_cancel_stops_the_worker(make_napari_viewer, qtbot, tiny_ckpt, make_disc):
    viewer = make_napari_viewer()
    viewer.add_image(np.tile(make_disc(64), (8, 8)), name="huge")
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(tiny_ckpt))
    seg.tile_spin.setValue(32)
    job = seg.run()
    seg.cancel()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.aborted and "huge labels" not in viewer.layers
    assert seg.run_button.isEnabled()


def test_volume_preview_uncertainty_and_navigation(make_napari_viewer, qtbot, tmp_path, tiny_ckpt,
                                                   make_disc):
    viewer = make_napari_viewer()
    vol = np.stack([make_disc(24, s % 3) * (1 + s) for s in range(6)])
    layer = viewer.add_image(vol, name="vol", scale=(2.0, 1.0, 1.0))
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(tiny_ckpt))
    seg.scope_combo.setCurrentText(CURRENT)
    viewer.dims.set_point(0, 2 * 4.0)  # world z = 8 -> slice 4
    _wait(qtbot, seg.run())
    labels = viewer.layers["vol labels"]
    assert labels.data.shape == vol.shape
    np.testing.assert_allclose(labels.scale, layer.scale)
    from napari_drunet.core.models.model import load_model

    expect = load_model(tiny_ckpt, "cpu").predict(vol[4]).mask
    np.testing.assert_array_equal(labels.data[4], expect)
    assert not labels.data[[0, 1, 2, 3, 5]].any()  # only the current slice was segmented

    seg.mc_spin.setValue(3)
    _wait(qtbot, seg.run_uncertainty())
    unc = viewer.layers["vol uncertainty"].data
    assert unc.shape == vol.shape and np.isfinite(unc).all()
    order = list(np.argsort(-unc.reshape(6, -1).mean(axis=1)))

    # reviewed slices of the project case are skipped by "next most uncertain slice"
    seg.scope_combo.setCurrentIndex(0)
    _wait(qtbot, seg.run())
    corr = CorrectionsWidget(viewer)
    corr.create_project(tmp_path / "p")
    assert add_case(qtbot, corr, "vol") == "vol"
    corr.state.project.mark_reviewed("vol", [int(order[0])])
    first = seg.next_uncertain_slice()
    assert first == order[1]
    assert round(viewer.dims.point[0] / 2.0) == first
    assert seg.next_uncertain_slice() == order[2]
    corr.mark_slice_reviewed()
    assert order[2] in Project.open(tmp_path / "p").case_meta("vol")["reviewed_slices"]


def test_sync_mode_and_demo(make_napari_viewer, qtbot, monkeypatch, make_model):
    monkeypatch.setenv("NAPARI_DRUNET_SYNC", "1")
    ckpt = make_model("rgb.safetensors", in_channels=3)
    viewer = launch_demo(model=ckpt, sample="fundus", run=False, viewer=make_napari_viewer())
    assert "fundus labels" in viewer.layers  # synchronous: done when launch_demo returns
    assert viewer.layers["fundus labels"].data.shape == viewer.layers["fundus"].data.shape[:2]
    docked = set(viewer.window.dock_widgets)
    assert {"Segment", "Corrections", "Fine-tune", "Model versions"} <= docked

    with pytest.warns(UserWarning, match="UNTRAINED"):
        viewer2 = launch_demo(model="no-such-model", sample="hippocampus", run=False,
                              segment=False, viewer=make_napari_viewer())
    seg = viewer2.window.dock_widgets["Segment"]
    assert seg.model_combo.currentText().endswith("untrained.safetensors")


def test_widgets_open_from_the_plugin_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    from napari_drunet.gui.corrections import CorrectionsWidget
    from napari_drunet.gui.finetune import FinetuneWidget
    from napari_drunet.gui.versions import VersionsWidget

    expected = {"Segment": SegmentWidget, "Corrections": CorrectionsWidget,
                "Fine-tune": FinetuneWidget, "Model versions": VersionsWidget}
    for name, cls in expected.items():
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-drunet", name)
        assert isinstance(widget, cls)
    # all four share one state per viewer
    states = {id(w.state) for w in viewer.window.dock_widgets.values() if hasattr(w, "state")}
    assert len(states) == 1
