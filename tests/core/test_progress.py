"""``drive`` / ``mapped``: results through ``yield from``, and a stop checked before each step."""

from __future__ import annotations

import pytest

from napari_drunet.core.errors import Cancelled
from napari_drunet.core.progress import Progress, drive, mapped


def counting(steps: list[int], closed: list[bool], n: int = 5):
    try:
        for i in range(n):
            steps.append(i)
            yield Progress(i + 1, n)
        return n
    finally:
        closed.append(True)


def test_drive_returns_the_result_and_hands_every_record():
    steps, closed, seen = [], [], []
    assert drive(counting(steps, closed), seen.append) == 5
    assert [r.step for r in seen] == [1, 2, 3, 4, 5] and closed == [True]


def test_a_stop_asked_while_a_record_is_handled_runs_no_further_step():
    steps, closed, stop = [], [], [False]

    def on_record(rec: Progress) -> None:
        stop[0] = rec.step == 2

    with pytest.raises(Cancelled):
        drive(counting(steps, closed), on_record, lambda: stop[0])
    assert steps == [0, 1] and closed == [True]


def test_a_stop_asked_before_the_start_runs_nothing():
    steps, closed = [], []
    with pytest.raises(Cancelled):
        drive(counting(steps, closed), None, lambda: True)
    assert steps == []


def test_mapped_changes_records_and_returns_the_inner_result():
    steps, closed = [], []
    outer = mapped(counting(steps, closed, 2), lambda r: Progress(r.step, 4, "half"))
    seen = []
    assert drive(outer, seen.append) == 2
    assert [(r.step, r.total, r.message) for r in seen] == [(1, 4, "half"), (2, 4, "half")]
