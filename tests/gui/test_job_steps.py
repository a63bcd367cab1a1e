"""A stepwise ``on_done`` (a generator function) gives the event loop back between its steps,
and the job ends only after its last step (what Segment and Corrections show results with)."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QTimer

from napari_drunet.core.progress import Progress
from napari_drunet.gui._workers import start_job

pytestmark = pytest.mark.gui


def _job(job):
    yield Progress(0, 1, "working")
    return 3


def _run(qtbot, monkeypatch, sync: bool):
    monkeypatch.setenv("NAPARI_DRUNET_SYNC", "1" if sync else "0")
    ticks, seen, running = [0], [], []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.__setitem__(0, ticks[0] + 1))
    timer.start(0)
    handle: list = []

    def show(result):
        for i in range(result):
            seen.append((i, ticks[0]))
            running.append(handle[0].running if handle else None)
            yield

    handle.append(start_job(_job, desc="steps", on_done=show))
    qtbot.waitUntil(lambda: not handle[0].running, timeout=10_000)
    timer.stop()
    return handle[0], seen, running


def test_steps_of_on_done_run_on_separate_loop_turns(qtbot, monkeypatch):
    job, seen, running = _run(qtbot, monkeypatch, sync=False)
    assert [i for i, _ in seen] == [0, 1, 2] and job.error is None and job.result == 3
    turns = [t for _, t in seen]
    assert turns[0] < turns[1] < turns[2], "the event loop ran between two steps"
    assert running == [True, True, True], "the job ends after its last step"


def test_sync_mode_runs_the_steps_at_once(qtbot, monkeypatch):
    job, seen, _running = _run(qtbot, monkeypatch, sync=True)
    assert [i for i, _ in seen] == [0, 1, 2] and not job.running
