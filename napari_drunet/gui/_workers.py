"""Run core progress generators off the GUI thread, with the widget's progress area (napari's
progress bar when there is none) and notifications.

``NAPARI_DRUNET_SYNC=1`` runs jobs synchronously on the calling thread (debugging, scripting).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info

from ..core.errors import Cancelled, DrunetError
from ..core.progress import Progress, drive
from ._progress import is_deleted

log = logging.getLogger(__name__)

NEXT_TURN_MS = 10


def sync_mode() -> bool:
    """True when ``NAPARI_DRUNET_SYNC=1`` asks for synchronous jobs."""
    return os.environ.get("NAPARI_DRUNET_SYNC", "").strip() not in ("", "0", "false", "no")


def error_message(exc: BaseException) -> str:
    """One-line message for a notification (user errors as is, bugs with their type)."""
    if isinstance(exc, DrunetError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def report_error(exc: BaseException, what: str = "", area: Any = None) -> None:
    """Show ``exc`` as a one-line napari error notification (traceback only to the log), and
    in the widget's :class:`~._progress.ProgressArea` ``area`` where it stays visible."""
    if not isinstance(exc, DrunetError):
        log.error("napari-drunet: %s failed", what or "job", exc_info=exc)
    prefix = f"{what} failed: " if what else ""
    show_error(prefix + error_message(exc))
    if area is not None and not is_deleted(area):
        area.show_error(prefix + error_message(exc))


class Job:
    """Handle of a running job: ``stop()`` asks it to end, ``running`` tells whether it has."""

    def __init__(self, desc: str):
        self.desc = desc
        self.stop_event = threading.Event()
        #: set in the worker thread the moment the job has ended (the GUI learns it later,
        #: from a queued signal): what :meth:`wait` waits for without an event loop
        self.ended = threading.Event()
        #: called on the GUI thread once the job has ended (before ``on_finished``)
        self.ended_callbacks: list[Callable[[], None]] = []
        self.worker: Any = None
        self.running = True
        self.result: Any = None
        self.error: BaseException | None = None
        self.aborted = False
        self.hard_stop = False

    def should_stop(self) -> bool:
        """Callback for generators that stop cooperatively (keeping a partial result)."""
        return self.stop_event.is_set()

    def stop(self, hard: bool = True) -> None:
        """Request the end of the job.

        ``hard=True`` quits the worker at its next yield (no result); ``hard=False`` only sets
        :attr:`stop_event` so that a generator polling :meth:`should_stop` returns early.
        """
        self.stop_event.set()
        self.hard_stop = self.hard_stop or hard
        if hard and self.worker is not None:
            self.worker.quit()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job's thread has ended (True) or ``timeout`` seconds passed."""
        return self.ended.wait(timeout)


class _Callbacks:
    """The GUI-thread side of a job: progress bars, area, the caller's handlers.

    Every handler is skipped once ``owner`` is deleted and never raises: a progress record
    that reaches a closed widget used to raise in a Qt slot, which PyQt5 turns into an abort
    (a scripted viewer ended with rc 134).

    An ``on_done`` that is a generator function runs one step per event-loop turn (each
    ``yield`` gives the loop back), and the job ends after its last step: showing a result is
    several napari layers, each 0.1-1 s of GUI-thread work that no worker can do, and one
    after the other in one call they were a single long freeze.
    """

    def __init__(self, job: Job, owner: Any, area: Any, handlers: dict[str, Any]):
        self.job, self.owner, self.area, self.handlers = job, owner, area, handlers
        # napari's activity-panel bar only for a job without a widget area to show it: making
        # one repaints the window from inside napari (processEvents), 60-160 ms per job start
        # and 40-70 ms per described step on the GUI thread (docs/performance.md)
        self.pbar = napari_progress(total=0, desc=job.desc) if area is None else None
        self.steps: Iterator[Any] | None = None  # the rest of a stepwise on_done
        self.finish_pending = False
        if area is not None:
            area.begin(f"{job.desc}…")

    def alive(self) -> bool:
        return self.owner is None or not is_deleted(self.owner)

    def call(self, name: str, *args: Any) -> Any:
        handler = self.handlers.get(name)
        if handler is None or not self.alive():
            return None
        try:
            return handler(*args)
        except Exception as exc:  # a failing handler must not kill the event loop
            log.error("napari-drunet: %s handler of %s failed", name, self.job.desc,
                      exc_info=exc)
            if name == "on_done":
                self.failed(exc)
            return None

    def progress(self, rec: Any) -> None:
        if not isinstance(rec, Progress):
            return
        try:
            if self.pbar is not None:
                self._napari_bar(rec)
            if self.area is not None and self.alive():
                self.area.update_progress(rec)
        except RuntimeError as exc:  # napari's activity dialog already gone (viewer closed)
            log.debug("progress bar update skipped: %s", exc)
        self.call("on_progress", rec)

    def _napari_bar(self, rec: Progress) -> None:
        pbar = self.pbar
        if rec.total and pbar.total != rec.total:
            pbar.total = rec.total
        if rec.total:
            pbar.update(max(0, min(rec.step, rec.total) - pbar.n))
        if rec.message:
            pbar.set_description(f"{self.job.desc}: {rec.message}"[:80])

    def done(self, result: Any) -> None:
        self.job.result = result
        out = self.call("on_done", result)
        if isinstance(out, Iterator):
            self.steps = out
            if sync_mode():
                while self.steps is not None:
                    self.step()
            else:
                _next_turn(self.step)

    def step(self) -> None:
        """Run the next step of a stepwise ``on_done``; end the job after the last one."""
        steps = self.steps
        if steps is None:
            return
        try:
            if not self.alive():
                raise StopIteration
            next(steps)
        except StopIteration:
            self.steps = None
        except Exception as exc:
            self.steps = None
            log.error("napari-drunet: showing the result of %s failed", self.job.desc,
                      exc_info=exc)
            self.failed(exc)
        if self.steps is not None:
            _next_turn(self.step)
        elif self.finish_pending:
            self.finished()

    def failed(self, exc: BaseException) -> None:
        self.job.error = exc
        if isinstance(exc, Cancelled):
            show_info(f"{self.job.desc}: cancelled")
            return
        if self.area is not None and self.alive():
            self.area.show_error(f"{self.job.desc} failed: {error_message(exc)}")
        if self.handlers.get("on_error") is not None:
            self.call("on_error", exc)
        else:
            report_error(exc, self.job.desc)

    def aborted(self) -> None:
        self.job.aborted = True

    def finished(self) -> None:
        if self.steps is not None:  # the worker is done, the result not shown yet
            self.finish_pending = True
            return
        self.finish_pending = False
        job = self.job
        job.running = False
        job.ended.set()
        try:
            if self.pbar is not None:
                self.pbar.close()
        except RuntimeError as exc:
            log.debug("progress bar close skipped: %s", exc)
        if self.area is not None and self.alive():
            self.area.end("stopped" if job.aborted else "cancelled" if
                          isinstance(job.error, Cancelled) else "failed" if job.error else "done")
        if job.aborted:
            show_info(f"{job.desc}: stopped")
        callbacks, job.ended_callbacks = job.ended_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:
                log.error("napari-drunet: end of %s: %s", job.desc, exc, exc_info=exc)
        self.call("on_finished")


def _next_turn(callback: Callable[[], None]) -> None:
    """Call ``callback`` on the GUI thread once the events waiting now are processed.

    Not a zero timer: Qt serves those before the other due timers, so two steps of 0.2 s ran
    as one 0.4 s freeze (measured with a 5 ms probe timer); a 10 ms timer lets the loop run
    what waits, repaint included, between two steps."""
    from qtpy.QtCore import QTimer

    QTimer.singleShot(NEXT_TURN_MS, callback)


def start_job(
    factory: Callable[[Job], Generator[Progress, None, Any]],
    *,
    desc: str,
    on_progress: Callable[[Progress], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    owner: Any = None,
    area: Any = None,
    keep_partial: bool = False,
) -> Job:
    """Run the generator made by ``factory(job)`` in a napari worker thread.

    Callbacks run on the GUI thread: ``on_progress`` per yielded :class:`Progress`, ``on_done``
    with the generator's return value (a generator function: one step per event-loop turn,
    the job ends after the last), ``on_error`` with an exception (default: one-line
    notification), ``on_finished`` always last (also after a cancel). ``area`` (a
    :class:`~._progress.ProgressArea`) shows the progress and keeps an error visible. When the
    Qt widget ``owner`` is deleted the callbacks stop and the job is stopped: cooperatively
    when ``keep_partial`` (the generator returns what it has), else at its next yield.
    """
    job = Job(desc)
    cb = _Callbacks(job, owner, area, {"on_progress": on_progress, "on_done": on_done,
                                       "on_error": on_error, "on_finished": on_finished})
    if owner is not None:
        owner.destroyed.connect(lambda *_: job.stop(hard=not keep_partial))
    if sync_mode():
        _run_here(factory(job), job, cb)
    else:
        _run_in_worker(factory, job, cb)
    return job


def _run_here(gen: Generator[Progress, None, Any], job: Job, cb: _Callbacks) -> None:
    """``NAPARI_DRUNET_SYNC=1``: run ``gen`` to its end on this thread, same callbacks.

    A hard stop (:meth:`Job.stop`) is checked before every step, as a napari worker checks
    its quit request, and is reported the same way: ``aborted`` ("stopped"), no result. A
    :class:`~napari_drunet.core.errors.Cancelled` raised by the job itself is an error
    ("cancelled"), as it is from a worker.
    """
    try:
        cb.done(drive(gen, cb.progress, lambda: job.hard_stop))
    except Cancelled as exc:
        if job.hard_stop:
            cb.aborted()
        else:
            cb.failed(exc)
    except Exception as exc:
        cb.failed(exc)
    finally:
        cb.finished()


def _generator(factory: Callable[[Job], Generator[Progress, None, Any]], job: Job
               ) -> Generator[Progress, None, Any]:
    return (yield from factory(job))


def _run_in_worker(factory: Callable[[Job], Generator[Progress, None, Any]], job: Job,
                   cb: _Callbacks) -> None:
    """Start a napari generator worker whose signals reach ``cb`` on the GUI thread."""
    from napari.qt.threading import create_worker
    from qtpy.QtCore import Qt

    # through a generator function: napari picks its worker type by inspecting the function,
    # and a factory may be a plain function (a lambda) that returns a generator
    worker = create_worker(_generator, factory, job, _start_thread=False, _ignore_errors=True)
    # lambdas, not cb's bound methods: PyQt holds those weakly and cb has no other owner
    worker.yielded.connect(lambda rec: cb.progress(rec))
    worker.returned.connect(lambda result: cb.done(result))
    worker.errored.connect(lambda exc: cb.failed(exc))
    worker.aborted.connect(lambda: cb.aborted())
    worker.finished.connect(lambda: cb.finished())
    # in the worker thread itself, so that Job.wait() needs no event loop (closing window)
    worker.finished.connect(job.ended.set, Qt.DirectConnection)
    job.worker = worker
    worker.start()
