"""Case files are read and written in a worker: "Open project", "Show case" and "Add current
result as case" return at once (they held the GUI thread 0.2-3 s), the layers and the autosave
follow when the job is done, and nothing painted meanwhile is lost."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_drunet.core.correction.project import Project
from napari_drunet.core.errors import DataError
from napari_drunet.gui.corrections import CorrectionsWidget
from napari_drunet.gui.segment import SegmentWidget

from .conftest import JOB_WAIT_MS, segment_layer, wait_job

pytestmark = pytest.mark.gui
GATE_S = 20.0  # the gated file access takes this long
RETURNS_WITHIN_S = 5.0  # the call returns this soon all the same (also on a loaded machine)


def _gated(monkeypatch, name: str) -> threading.Event:
    """Make ``Project.<name>`` wait for the returned event (at most GATE_S)."""
    gate, real = threading.Event(), getattr(Project, name)

    def slow(self, *args, **kwargs):
        gate.wait(GATE_S)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Project, name, slow)
    return gate


@pytest.fixture
def segmented(make_napari_viewer, qtbot, tmp_path, tiny_ckpt, make_disc):
    viewer = make_napari_viewer()
    viewer.add_image(make_disc(32, 0), name="img")
    seg, corr = SegmentWidget(viewer), CorrectionsWidget(viewer)
    project = corr.create_project(tmp_path / "proj")
    seg.set_model_source(str(tiny_ckpt))
    return corr, project, segment_layer(qtbot, seg, "img")


def test_add_case_returns_before_the_files_are_written(segmented, qtbot, monkeypatch, errors):
    corr, project, labels = segmented
    gate = _gated(monkeypatch, "add_case")
    t0 = time.monotonic()
    assert corr.add_current_result() == "img"
    assert time.monotonic() - t0 < RETURNS_WITHIN_S
    assert corr.job.running and project.cases() == []
    assert corr.add_current_result() is None  # one case job at a time
    labels.selected_label = 2
    labels.paint((5, 5), 2, refresh=True)  # painted while the case is being written
    expected = np.asarray(labels.data).copy()
    gate.set()
    wait_job(qtbot, corr)
    assert project.cases() == ["img"] and corr.case_layer("img") is labels
    qtbot.waitUntil(lambda: np.array_equal(project.load_case("img").correction, expected),
                    timeout=2000)
    assert errors == []


def test_a_failed_write_leaves_the_result_free_to_add_again(segmented, qtbot, monkeypatch,
                                                            errors):
    corr, project, labels = segmented
    real = Project.add_case

    def broken(self, *args, **kwargs):
        raise DataError("disk full")

    monkeypatch.setattr(Project, "add_case", broken)
    assert corr.add_current_result() == "img"
    qtbot.waitUntil(lambda: not corr.job.running, timeout=JOB_WAIT_MS)
    assert any("disk full" in e for e in errors)
    assert "disk full" in corr.progress_area.error.text()  # stays visible in the widget
    assert "drunet_case" not in labels.metadata and corr.case_layer("img") is None
    monkeypatch.setattr(Project, "add_case", real)
    assert corr.add_current_result() == "img"
    wait_job(qtbot, corr)
    assert project.cases() == ["img"]


def test_open_project_returns_before_the_last_case_is_read(make_napari_viewer, qtbot,
                                                           tmp_path, monkeypatch, errors):
    project = Project.create(tmp_path / "proj")
    mask = np.eye(24, dtype=np.uint8)
    project.add_case("x", np.zeros((1, 24, 24), np.float32), mask)
    viewer = make_napari_viewer()
    corr = CorrectionsWidget(viewer)
    gate = _gated(monkeypatch, "load_case")
    t0 = time.monotonic()
    opened = corr.open_project(tmp_path / "proj")
    assert opened is not None and opened.cases() == ["x"]
    assert time.monotonic() - t0 < RETURNS_WITHIN_S
    assert corr.job.running and "x labels" not in viewer.layers
    gate.set()
    wait_job(qtbot, corr)
    layer = viewer.layers["x labels"]
    np.testing.assert_array_equal(layer.data, mask)
    assert corr.case_layer("x") is layer and corr.current_case == "x"
    assert corr.show_case("x") is layer  # already shown: selected at once, nothing read
    assert errors == []
