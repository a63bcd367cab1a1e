"""A stepwise ``on_done`` (a generator function) gives the event loop back between its steps,
and the job ends only after its last step (what Segment and Corrections show results with)."""

from __future__ import annotations

import time

import pytest
from qtpy.QtCore import QEventLoop, QTimer

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


def _counting(steps: list[int], closed: list[bool], jobs: list, pause: float):
    def factory(job):
        jobs.append(job)  # in sync mode start_job returns only once the job has ended
        try:
            for i in range(10):
                time.sleep(pause)  # a worker must not end before the GUI sees record 3
                steps.append(i)
                yield Progress(i + 1, 10, f"step {i}")
            return "all done"
        finally:
            closed.append(True)
    return factory


@pytest.mark.parametrize("sync", [True, False])
def test_a_stop_is_reported_as_stopped_in_both_modes(qtbot, monkeypatch, sync):
    """Stop from a progress handler: the job is closed, reported ``aborted`` (the area says
    "stopped"), no result; in sync mode no step runs after the one whose record stopped it."""
    monkeypatch.setenv("NAPARI_DRUNET_SYNC", "1" if sync else "0")
    steps, closed, done, finished, jobs = [], [], [], [], []

    def on_progress(rec):
        if rec.step == 3:
            jobs[0].stop()

    job = start_job(_counting(steps, closed, jobs, 0.0 if sync else 0.2), desc="count", on_progress=on_progress,
                    on_done=done.append, on_finished=lambda: finished.append(True))
    qtbot.waitUntil(lambda: not job.running, timeout=10_000)
    assert jobs == [job]
    assert job.aborted and job.error is None and job.result is None and not done
    assert finished == [True]
    if sync:  # closed at once (a napari worker leaves the generator to the garbage collector)
        assert steps == [0, 1, 2] and closed == [True]
    else:
        assert 3 <= len(steps) < 10


@pytest.mark.parametrize("sync", [True, False])
def test_a_job_that_cancels_itself_is_reported_cancelled(qtbot, monkeypatch, sync):
    from napari_drunet.core.errors import Cancelled

    monkeypatch.setenv("NAPARI_DRUNET_SYNC", "1" if sync else "0")

    def factory(job):
        yield Progress(1, 2, "first")
        raise Cancelled("stopped by the job")

    job = start_job(factory, desc="self-cancel")
    qtbot.waitUntil(lambda: not job.running, timeout=10_000)
    assert isinstance(job.error, Cancelled) and not job.aborted


def test_a_due_timer_runs_between_two_long_steps(qtbot, monkeypatch):
    """A 5 ms timer (the stall probe, a repaint, the user's input) gets its turn between two
    steps: a zero timer for the next step was served first, and two 0.2 s layers were one
    0.4 s freeze."""
    from qtpy.QtCore import Qt

    monkeypatch.setenv("NAPARI_DRUNET_SYNC", "0")
    ticks, marks = [0], []
    timer = QTimer()
    timer.setTimerType(Qt.PreciseTimer)
    timer.timeout.connect(lambda: ticks.__setitem__(0, ticks[0] + 1))
    timer.start(5)

    def show(_result):
        for _ in range(2):
            marks.append(("start", ticks[0]))
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.1:  # GUI-thread work, as napari's layers are
                pass
            marks.append(("end", ticks[0]))
            yield

    # a real event loop, as napari's (qtbot's waiting runs another kind of loop)
    loop = QEventLoop()
    QTimer.singleShot(10_000, loop.quit)
    job = start_job(_job, desc="long steps", on_done=show, on_finished=loop.quit)
    loop.exec_()
    timer.stop()
    assert not job.running
    assert [m for m, _ in marks] == ["start", "end", "start", "end"]
    assert marks[2][1] > marks[1][1], "the probe ticked between the two steps"


def test_only_a_job_without_a_widget_area_makes_a_napari_progress_bar(qtbot, monkeypatch):
    """A widget's own progress area shows its jobs; napari's activity-panel bar (whose creation
    repaints the window from inside napari) is made only for a job that has none."""
    from napari_drunet.gui import _workers
    from napari_drunet.gui._progress import ProgressArea

    monkeypatch.setenv("NAPARI_DRUNET_SYNC", "1")
    made = []

    class Bar:
        total = n = 0

        def __init__(self, **kwargs):
            made.append(kwargs["desc"])

        def update(self, k):
            self.n += k

        def set_description(self, text):
            pass

        def close(self):
            made.append("closed")

    monkeypatch.setattr(_workers, "napari_progress", Bar)
    area = ProgressArea()
    qtbot.addWidget(area)
    start_job(_job, desc="with area", area=area)
    assert made == []
    start_job(_job, desc="without area")
    assert made == ["without area", "closed"]
