"""Edits to every case open in the viewer reach the project (not only the current case's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_drunet.core.correction.project import Project
from napari_drunet.gui.corrections import CorrectionsWidget
from napari_drunet.gui.segment import SegmentWidget

from .conftest import add_case, open_project, show_case

pytestmark = pytest.mark.gui
WAIT = 60_000
SAVE_WITHIN_S = 1.0  # an edit is on disk this long after the stroke
CHILD = Path(__file__).resolve().parent / "case_session_child.py"
REPO = Path(__file__).resolve().parents[2]


def _add_case(qtbot, seg, corr, name: str, model: Path) -> None:
    seg.set_model_source(str(model))
    seg.set_image_layers([name])
    job = seg.run()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    assert add_case(qtbot, corr) == name


def _stroke(layer, point, label: int) -> np.ndarray:
    layer.brush_size = 3
    layer.selected_label = label
    layer.paint(point, label, refresh=True)
    return np.asarray(layer.data).copy()


def _saved_within(qtbot, project, case: str, expected: np.ndarray) -> float:
    """Seconds until the project holds ``expected`` for ``case`` (fails after SAVE_WITHIN_S)."""
    start = time.monotonic()
    qtbot.waitUntil(lambda: np.array_equal(project.load_case(case).correction, expected),
                    timeout=int(SAVE_WITHIN_S * 1000))
    return time.monotonic() - start


def test_edits_to_every_open_case_are_saved(make_napari_viewer, qtbot, tmp_path, make_disc,
                                            make_model, errors):
    viewer = make_napari_viewer()
    viewer.add_image(make_disc(32, 0), name="a", scale=(0.5, 0.5))
    vol = np.stack([make_disc(16, 0)] * 12)
    viewer.add_image(vol, name="b", scale=(3.0, 1.0, 1.0))
    viewer.add_image(make_disc(32, 2), name="c")
    m2, m3 = make_model("m2.safetensors"), make_model("m3.safetensors", spatial_dims=3)
    seg, corr = SegmentWidget(viewer), CorrectionsWidget(viewer)
    corr.create_project(tmp_path / "proj")
    project = corr.state.project
    _add_case(qtbot, seg, corr, "a", m2)
    _add_case(qtbot, seg, corr, "b", m3)
    _add_case(qtbot, seg, corr, "c", m2)  # "c" is the current case now

    latencies = []
    expect = {"a": _stroke(viewer.layers["a labels"], (5, 5), 2)}
    latencies.append(_saved_within(qtbot, project, "a", expect["a"]))
    expect["b"] = _stroke(viewer.layers["b labels"], (4, 8, 8), 3)
    latencies.append(_saved_within(qtbot, project, "b", expect["b"]))
    expect["a"] = _stroke(viewer.layers["a labels"], (20, 20), 3)  # back to an earlier case
    corr.mark_case_reviewed()  # of the current case; must not drop the other cases' edits
    np.testing.assert_array_equal(project.load_case("a").correction, expect["a"])
    expect["c"] = _stroke(viewer.layers["c labels"], (10, 25), 2)
    show_case(qtbot, corr, "a")
    np.testing.assert_array_equal(project.load_case("c").correction, expect["c"])
    assert corr.current_case == "a"
    print("save latencies (s):", [round(t, 3) for t in latencies])

    # a layer removed by the user stops only its own autosave
    viewer.layers.remove("c labels")
    expect["b"] = _stroke(viewer.layers["b labels"], (9, 3, 3), 2)
    _saved_within(qtbot, project, "b", expect["b"])
    corr.flush()
    assert errors == []

    reopened = Project.open(tmp_path / "proj")
    for case, mask in expect.items():
        np.testing.assert_array_equal(reopened.load_case(case).correction, mask)
    viewer2 = make_napari_viewer()
    corr2 = CorrectionsWidget(viewer2)
    open_project(qtbot, corr2, tmp_path / "proj")
    for case, mask in expect.items():
        np.testing.assert_array_equal(show_case(qtbot, corr2, case).data, mask)


def test_rapid_strokes_without_a_pause_are_saved_within_1s(make_napari_viewer, qtbot,
                                                           tmp_path, errors):
    """Clicks every ~100 ms never leave a pause for the debounce: the first one still lands."""
    project = Project.create(tmp_path / "proj")
    project.add_case("x", np.zeros((1, 40, 40), np.float32), np.zeros((40, 40), np.uint8))
    viewer = make_napari_viewer()
    corr = CorrectionsWidget(viewer)
    layer = open_project(qtbot, corr, tmp_path / "proj") and viewer.layers["x labels"]
    first = _stroke(layer, (3, 5), 1)
    start, seen, done = time.monotonic(), [], threading.Event()

    def watch() -> None:  # the file on disk, polled from another thread as a reader would
        while not done.is_set() and not seen:
            if (Project.open(tmp_path / "proj").load_case("x").correction[first > 0] == 1).all():
                seen.append(time.monotonic() - start)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for i in range(1, 20):
        qtbot.wait(60)
        _stroke(layer, (3 + 3 * i, 5), 1)
    done.set()
    watcher.join(timeout=10)
    print("first of rapid strokes on disk after (s):", seen)
    assert seen and seen[0] <= SAVE_WITHIN_S, seen
    corr.flush()
    np.testing.assert_array_equal(project.load_case("x").correction, layer.data)
    assert errors == []


def _read_lines(proc, lines: list[str]) -> None:
    for line in proc.stdout:
        lines.append(line.strip())


def test_sigkill_after_last_stroke_loses_nothing(tmp_path, make_model):
    """A real viewer session in a child process, SIGKILLed 1.1 s after its last stroke."""
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM", "") != "offscreen":
        pytest.skip("no display for the child viewer (run under pytest-xvfb or xvfb-run)")
    make_model("tiny2d.safetensors")
    make_model("tiny3d.safetensors", spatial_dims=3)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               NAPARI_DRUNET_WARMUP="0")
    proc = subprocess.Popen([sys.executable, str(CHILD), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
    reader.start()
    end = time.monotonic() + 240
    try:
        while "done" not in lines:
            assert proc.poll() is None, f"child exited early: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < end, "child made no progress"
            time.sleep(0.01)
        time.sleep(SAVE_WITHIN_S + 0.1)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sum(ln.startswith("stroke ") for ln in lines) == 5
    with np.load(tmp_path / "expected.npz") as f:
        expected = {k: f[k] for k in f.files}
    project = Project.open(tmp_path / "proj")
    assert sorted(project.cases()) == ["img2d", "photo", "vol"]
    for case, mask in expected.items():
        rec = project.load_case(case)
        assert not np.array_equal(mask, rec.prediction), f"{case}: the strokes changed nothing"
        np.testing.assert_array_equal(rec.correction, mask, err_msg=case)
        assert rec.edited[mask != rec.prediction].all()


def test_a_case_of_another_project_is_not_reused(make_napari_viewer, qtbot, tmp_path, errors):
    """Two projects with a case of the same name: opening the second shows its own mask, and
    painting on the first project's layer never writes into the second project."""
    first, second = Project.create(tmp_path / "p1"), Project.create(tmp_path / "p2")
    img = np.zeros((1, 16, 16), np.float32)
    first.add_case("x", img, np.zeros((16, 16), np.uint8))
    second.add_case("x", img, np.eye(16, dtype=np.uint8))
    viewer = make_napari_viewer()
    corr = CorrectionsWidget(viewer)
    old = open_project(qtbot, corr, tmp_path / "p1") and viewer.layers["x labels"]
    open_project(qtbot, corr, tmp_path / "p2")
    new = corr.trackers["x"].layer
    assert new is not old
    np.testing.assert_array_equal(new.data, np.eye(16))
    old.paint((8, 3), 5, refresh=True)  # the first project's layer, still open
    corr.flush()
    np.testing.assert_array_equal(Project.open(tmp_path / "p2").load_case("x").correction,
                                  np.eye(16))
    assert errors == []
