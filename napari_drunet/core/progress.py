"""Progress records yielded by long jobs (inference, training) and the runners for them.

A long job is a generator that yields :class:`Progress` records and *returns* its result.
:func:`drive` runs one to the end (CLI, scripts, tests, the GUI's synchronous mode);
:func:`mapped` re-yields an inner job's records changed by a function inside an outer job.
Both read the result through ``yield from``, so no caller handles ``StopIteration`` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import Cancelled

R = TypeVar("R")

__all__ = ["Progress", "drive", "mapped", "relay", "run_to_end"]


@dataclass
class Progress:
    """One step of a long job.

    Parameters
    ----------
    step : int
        Steps done so far.
    total : int or None
        Total number of steps, when known.
    message : str
        Short human-readable status.
    metrics : dict
        Numbers worth plotting (loss, validation Dice, ...).
    """

    step: int
    total: int | None = None
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.step / self.total)


def mapped(gen: Generator[Progress, None, R], change: Callable[[Progress], Progress],
           should_stop: Callable[[], bool] | None = None) -> Generator[Progress, None, R]:
    """Re-yield the records of ``gen`` as ``change(record)`` and return its result.

    With ``should_stop``, checked before every step of ``gen`` (the first one, and each one
    after a record was handled): once it returns True, ``gen`` is closed (its ``finally``
    blocks run) and :class:`~.errors.Cancelled` is raised.

    Examples
    --------
    >>> def inner():
    ...     yield Progress(1, 2, "a")
    ...     return 42
    >>> outer = mapped(inner(), lambda rec: Progress(rec.step, 4, "outer: " + rec.message))
    >>> drive(outer, print)
    Progress(step=1, total=4, message='outer: a', metrics={})
    42
    """
    box: list[R] = []

    def inner() -> Generator[Progress, None, None]:
        box.append((yield from gen))

    def stop_asked() -> bool:
        return should_stop is not None and should_stop()

    records = inner()
    try:
        if stop_asked():
            raise Cancelled("stopped")
        for record in records:
            yield change(record)
            # before ``gen`` runs its next step: a stop asked while the record was handled
            # costs no further step (as a napari worker's quit)
            if stop_asked():
                raise Cancelled("stopped")
    finally:
        records.close()  # also closes ``gen`` when stopped or when the outer job is closed
    return box[0]


def drive(gen: Generator[Progress, None, R], on_record: Callable[[Progress], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> R:
    """Run a progress generator to the end and return its result.

    Parameters
    ----------
    gen : generator
        The job: yields :class:`Progress`, returns the result.
    on_record : callable, optional
        Called with every record (a progress bar, a log line, a GUI signal).
    should_stop : callable, optional
        Checked before every step of the job (before the first, and after ``on_record`` has
        handled each record); once it returns True the job is closed and
        :class:`~.errors.Cancelled` raised. A job that keeps its partial result on a stop (a
        fine-tune keeps its best weights) takes its own ``should_stop`` instead.

    Examples
    --------
    >>> def job():
    ...     yield Progress(1, 1)
    ...     return 42
    >>> drive(job())
    42
    """
    box: list[R] = []

    def inner() -> Generator[Progress, None, None]:
        box.append((yield from mapped(gen, _same, should_stop)))

    records = inner()
    try:
        for record in records:
            if on_record is not None:
                on_record(record)
    finally:
        records.close()  # an ``on_record`` that raises still closes the job
    return box[0]


def _same(record: Progress) -> Progress:
    return record


def run_to_end(gen: Generator[Progress, None, R],
               callback: Callable[[Progress], None] | None = None) -> R:
    """:func:`drive` without a stop (the name used before :func:`drive` existed)."""
    return drive(gen, callback)


def relay(gen: Generator[Progress, None, R], part: int, parts: int, label: str,
          ) -> Generator[Progress, None, R]:
    """Run ``gen`` as part ``part`` (0-based) of ``parts`` equal parts of a larger job: its
    records are re-counted on the whole job's scale and prefixed with ``label``; returns its
    result."""
    def rescale(rec: Progress) -> Progress:
        steps = rec.total or 1
        return Progress(part * steps + rec.step, parts * steps, f"{label}: {rec.message}",
                        rec.metrics)

    return (yield from mapped(gen, rescale))
