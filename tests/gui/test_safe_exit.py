"""Closing the viewer during a fine-tune: the user is asked; a script's close stops the run and
keeps the best weights so far; the process never aborts (issue 16 point 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_drunet.gui import _progress
from napari_drunet.gui._state import get_state
from napari_drunet.gui.finetune import FinetuneWidget

pytestmark = pytest.mark.gui
WAIT = 60_000
HERE = Path(__file__).resolve().parent


def long_finetune(viewer, project) -> FinetuneWidget:
    get_state(viewer).set_project(project)
    ft = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(ft, name="Fine-tune")
    ft.steps_spin.setValue(100000)
    ft.budget_spin.setValue(0)  # only a stop ends it
    ft.extra_config = {"batch_size": 2, "patch_size": (32, 32), "num_threads": 1,
                       "epochs": 100000}
    return ft


def test_user_close_asks_and_no_keeps_the_window_and_the_run(make_napari_viewer, qtbot,
                                                             tmp_path, tiny_ckpt, make_disc,
                                                             monkeypatch, errors):
    from .conftest import make_corrected_project  # here: the child imports this file as a script

    project = make_corrected_project(tmp_path / "proj", tiny_ckpt)
    viewer = make_napari_viewer(show=True)
    ft = long_finetune(viewer, project)
    asked = []
    monkeypatch.setattr(_progress, "is_user_close", lambda event: True)  # as the title bar
    monkeypatch.setattr(_progress, "ask_stop_on_close",
                        lambda parent, what: asked.append(what) or answer[0])
    answer = [False]
    job = ft.start()
    qtbot.waitUntil(lambda: len(ft.plot.series.get("loss", [])) >= 1, timeout=WAIT)
    window = ft.window()
    assert window.close() is False  # "No": the window stays, training goes on
    assert asked == ["DRU-Net fine-tuning"] and window.isVisible() and job.running
    assert not job.should_stop()
    answer[0] = True
    viewer.close()  # "Yes": stopped (best kept), waited for, then closed
    assert job.ended.is_set() and len(asked) == 2
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    assert project.versions.get("v002")["metrics"]["stop_reason"] == "cancelled"
    assert errors == []


SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import napari
from qtpy.QtCore import QEventLoop, QTimer
from test_safe_exit import long_finetune
from napari_drunet.core.correction.project import Project

def pump(seconds):
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()

viewer = napari.Viewer(show=True)
ft = long_finetune(viewer, Project.open(sys.argv[2]))
job = ft.start()
t0 = time.time()
while len(ft.plot.series.get("loss", [])) < 2 and time.time() - t0 < 120:
    pump(0.05)
viewer.close()  # a script's close: never refused; the run stops and keeps the best
print("ended at close:", job.ended.is_set(), flush=True)
pump(1.0)  # queued progress records now reach deleted widgets
print("exit ok", flush=True)
"""


def test_scripted_viewer_close_stops_keeps_best_and_exits_cleanly(tmp_path, tiny_ckpt,
                                                                  make_disc):
    from .conftest import make_corrected_project

    make_corrected_project(tmp_path / "proj", tiny_ckpt)
    script = tmp_path / "close_during_finetune.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]))
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    proc = subprocess.run([sys.executable, str(script), str(HERE), str(tmp_path / "proj")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    assert "ended at close: True" in proc.stdout and "exit ok" in proc.stdout
    manifest = json.loads((tmp_path / "proj" / "project.json").read_text())
    versions = {v["id"]: v for v in manifest["versions"]}
    assert versions["v002"]["metrics"]["stop_reason"] == "cancelled"  # the best so far, saved
