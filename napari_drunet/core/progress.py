"""Progress records yielded by long jobs (inference, training) and a runner for them."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

R = TypeVar("R")


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


def run_to_end(
    gen: Generator[Progress, None, R], callback: Callable[[Progress], None] | None = None
) -> R:
    """Run a progress generator to completion and return its result.

    Examples
    --------
    >>> def job():
    ...     yield Progress(1, 1)
    ...     return 42
    >>> run_to_end(job())
    42
    """
    while True:
        try:
            record = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(record)


def relay(gen: Generator[Progress, None, R], part: int, parts: int, label: str,
          ) -> Generator[Progress, None, R]:
    """Run ``gen`` as part ``part`` (0-based) of ``parts`` equal parts of a larger job: its
    records are re-counted on the whole job's scale and prefixed with ``label``; returns its
    result."""
    while True:
        try:
            rec = next(gen)
        except StopIteration as stop:
            return stop.value
        steps = rec.total or 1
        yield Progress(part * steps + rec.step, parts * steps, f"{label}: {rec.message}",
                       rec.metrics)
