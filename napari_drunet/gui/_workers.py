"""Run core progress generators off the GUI thread, with a napari progress bar and notifications.

``NAPARI_DRUNET_SYNC=1`` runs jobs synchronously on the calling thread (debugging, scripting).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Generator
from typing import Any

from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info

from ..core.errors import Cancelled, DrunetError
from ..core.progress import Progress

log = logging.getLogger(__name__)


def sync_mode() -> bool:
    """True when ``NAPARI_DRUNET_SYNC=1`` asks for synchronous jobs."""
    return os.environ.get("NAPARI_DRUNET_SYNC", "").strip() not in ("", "0", "false", "no")


def error_message(exc: BaseException) -> str:
    """One-line message for a notification (user errors as is, bugs with their type)."""
    if isinstance(exc, DrunetError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def report_error(exc: BaseException, what: str = "") -> None:
    """Show ``exc`` as a one-line napari error notification (traceback only to the log)."""
    if not isinstance(exc, DrunetError):
        log.error("napari-drunet: %s failed", what or "job", exc_info=exc)
    prefix = f"{what} failed: " if what else ""
    show_error(prefix + error_message(exc))


class Job:
    """Handle of a running job: ``stop()`` asks it to end, ``running`` tells whether it has."""

    def __init__(self, desc: str):
        self.desc = desc
        self.stop_event = threading.Event()
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


def start_job(
    factory: Callable[[Job], Generator[Progress, None, Any]],
    *,
    desc: str,
    on_progress: Callable[[Progress], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
) -> Job:
    """Run the generator made by ``factory(job)`` in a napari worker thread.

    Callbacks run on the GUI thread: ``on_progress`` per yielded :class:`Progress`, ``on_done``
    with the generator's return value, ``on_error`` with an exception (default: one-line
    notification), ``on_finished`` always last (also after a cancel).
    """
    job = Job(desc)
    pbar = napari_progress(total=0, desc=desc)

    def progress(rec: Any) -> None:
        if not isinstance(rec, Progress):
            return
        if rec.total and pbar.total != rec.total:
            pbar.total = rec.total
        if rec.total:
            pbar.update(max(0, min(rec.step, rec.total) - pbar.n))
        if rec.message:
            pbar.set_description(f"{desc}: {rec.message}"[:80])
        if on_progress is not None:
            on_progress(rec)

    def done(result: Any) -> None:
        job.result = result
        if on_done is not None:
            try:
                on_done(result)
            except Exception as exc:  # a failing result handler must not kill the event loop
                failed(exc)

    def failed(exc: BaseException) -> None:
        job.error = exc
        if isinstance(exc, Cancelled):
            show_info(f"{desc}: cancelled")
        elif on_error is not None:
            on_error(exc)
        else:
            report_error(exc, desc)

    def finished() -> None:
        job.running = False
        pbar.close()
        if on_finished is not None:
            on_finished()

    if sync_mode():
        gen = factory(job)
        try:
            while True:
                if job.hard_stop:
                    job.aborted = True
                    break
                try:
                    rec = next(gen)
                except StopIteration as stop:
                    done(stop.value)
                    break
                progress(rec)
        except Exception as exc:
            failed(exc)
        finally:
            finished()
        return job

    from napari.qt.threading import create_worker

    worker = create_worker(factory, job, _start_thread=False, _ignore_errors=True)
    worker.yielded.connect(progress)
    worker.returned.connect(done)
    worker.errored.connect(failed)

    def aborted() -> None:
        job.aborted = True
        show_info(f"{desc}: stopped")

    worker.aborted.connect(aborted)
    worker.finished.connect(finished)
    job.worker = worker
    worker.start()
    return job
