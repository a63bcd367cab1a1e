"""Debounced, off-thread autosave of a tracked Labels layer into a correction project."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from ._workers import error_message, sync_mode

DEBOUNCE_MS = 300  # pause after a stroke before saving; with the write, well under 1 s
MAX_DELAY_MS = 500  # rapid strokes without a pause still save this soon after the first one


def mark_painted(edited: np.ndarray, atoms: Any) -> None:
    """Flag the pixels touched by napari paint history atoms (even if painted with the same label)."""
    for atom in atoms or ():
        try:
            if hasattr(atom, "slice_key"):
                region = edited[atom.slice_key]
                if atom.mask is None:
                    region[...] = True
                else:
                    region[np.asarray(atom.mask, bool)] = True
            else:
                edited[tuple(atom[0])] = True
        except (IndexError, TypeError, ValueError):
            continue  # an atom we cannot map only loses the "painted but unchanged" information


class Tracker(QObject):
    """Watch one Labels layer of one case; save it (debounced) after every edit batch.

    Signals ``saved(case, stats)`` and ``failed(message)`` arrive on the GUI thread.
    """

    saved = Signal(str, object)
    failed = Signal(str)

    def __init__(self, project: Any, case: str, layer: Any, parent: QObject | None = None,
                 saved: np.ndarray | None = None):
        super().__init__(parent)
        self.project, self.case, self.layer = project, case, layer
        self.edited = np.zeros(layer.data.shape, bool)
        # ``saved``: the mask the project holds when it is not the layer's data any more (the
        # case was written by a worker while the user went on painting): those strokes are
        # saved at once
        self._last: np.ndarray | None = np.array(layer.data if saved is None else saved,
                                                 copy=True)
        self._last_edited = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drunet-autosave")
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self._pending_since: float | None = None  # monotonic time of the first unsaved edit
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.save_now)
        layer.metadata["drunet_case"] = case
        # a case name is unique only within its project: another project may reuse it
        layer.metadata["drunet_project"] = str(project.folder)
        layer.events.paint.connect(self._on_paint)
        layer.events.set_data.connect(self._on_change)
        layer.events.data.connect(self._on_change)
        if saved is not None and not np.array_equal(saved, np.asarray(layer.data)):
            self._on_change()

    def _on_paint(self, event: Any) -> None:
        mark_painted(self.edited, getattr(event, "value", None))
        self._on_change()

    def _on_change(self, event: Any = None) -> None:
        now = time.monotonic()
        if self._pending_since is None:
            self._pending_since = now
        left_ms = MAX_DELAY_MS - 1000.0 * (now - self._pending_since)
        self.timer.start(int(max(0.0, min(DEBOUNCE_MS, left_ms))))

    def _writing(self) -> bool:
        with self._lock:
            return any(not f.done() for f in self._futures)

    def save_now(self, force: bool = False) -> Future | None:
        """Snapshot the layer now and write it (in the background unless sync mode).

        While the previous write still runs, the snapshot is postponed rather than queued, so
        a slow disk or a large volume never piles up copies of the mask.
        """
        self.timer.stop()
        if self._writing():
            self.timer.start(DEBOUNCE_MS // 3)
            return None
        self._pending_since = None
        data = np.asarray(self.layer.data)
        if data.shape != self.edited.shape:
            self.failed.emit(f"layer '{self.layer.name}' changed shape; autosave stopped")
            return None
        n_edited = int(np.count_nonzero(self.edited))
        if not force and self._last is not None and np.array_equal(data, self._last) \
                and n_edited == self._last_edited:
            return None
        mask, edited = data.copy(), self.edited.copy()
        self._last, self._last_edited = mask, n_edited
        if sync_mode():
            self._write(mask, edited)
            return None
        fut = self._pool.submit(self._write, mask, edited)
        with self._lock:
            self._futures = [f for f in self._futures if not f.done()] + [fut]
        return fut

    def _write(self, mask: np.ndarray, edited: np.ndarray) -> None:
        try:
            stats = self.project.save_correction(self.case, mask, edited=edited)
        except Exception as exc:
            self.failed.emit(f"autosave of {self.case} failed: {error_message(exc)}")
            return
        self.saved.emit(self.case, stats)

    def flush(self, timeout: float = 30.0) -> None:
        """Write pending edits and wait until every write has finished."""
        self._wait(timeout)
        if self.timer.isActive():
            self.save_now()
            self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        with self._lock:
            pending = list(self._futures)
        for fut in pending:
            fut.result(timeout=timeout)

    def reset(self, prediction_like: np.ndarray) -> None:
        """Forget the edited map after the case got a new prediction."""
        self.edited = np.zeros(prediction_like.shape, bool)
        self._last = np.array(prediction_like, copy=True)
        self._last_edited = 0
        self._pending_since = None

    def stop(self) -> None:
        """Flush, disconnect from the layer and end the writer thread."""
        self.flush()
        for ev, cb in ((self.layer.events.paint, self._on_paint),
                       (self.layer.events.set_data, self._on_change),
                       (self.layer.events.data, self._on_change)):
            try:
                ev.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._pool.shutdown(wait=True)


class CaseTrackers(QObject):
    """The autosaves of every open case layer, keyed by (project folder, case name).

    A case name is unique only within its project, and a case left open when another project
    is opened keeps saving into its own project, so no stroke on it is lost. ``saved(tracker,
    stats)`` and ``failed(message)`` arrive on the GUI thread.
    """

    saved = Signal(object, object)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._by_key: dict[tuple[str, str], Tracker] = {}

    def of(self, folder: str | None) -> dict[str, Tracker]:
        """The trackers of the project in ``folder``, by case name."""
        return {case: t for (f, case), t in self._by_key.items() if f == folder}

    def track(self, project: Any, case: str, layer: Any,
              saved: np.ndarray | None = None) -> Tracker:
        """The tracker of ``case`` on ``layer`` (a tracker of that case on another layer is
        stopped first); ``saved`` as in :class:`Tracker`."""
        key = (str(project.folder), case)
        tracker = self._by_key.get(key)
        if tracker is not None and tracker.layer is layer:
            return tracker
        self.drop(key)
        tracker = Tracker(project, case, layer, parent=self, saved=saved)
        tracker.saved.connect(lambda _case, stats, t=tracker: self.saved.emit(t, stats))
        tracker.failed.connect(self.failed.emit)
        self._by_key[key] = tracker
        return tracker

    def drop(self, key: tuple[str | None, str]) -> None:
        """Save the last edits of ``key`` = (folder, case) and stop autosaving it."""
        tracker = self._by_key.pop(key, None)  # type: ignore[arg-type]
        if tracker is None:
            return
        try:
            tracker.stop()
        except Exception as exc:
            self.failed.emit(f"saving the last edits of {tracker.case} failed: "
                             f"{error_message(exc)}")
        tracker.deleteLater()

    def drop_layer(self, layer: Any) -> None:
        """Stop the trackers of ``layer`` (it leaves the viewer), after their last save."""
        for key, tracker in list(self._by_key.items()):
            if tracker.layer is layer:
                self.drop(key)

    def drop_all(self) -> None:
        """Stop every tracker after its last save (widget closed, application quitting)."""
        for key in list(self._by_key):
            self.drop(key)

    def flush(self) -> None:
        """Write every case's pending edits now and wait for them."""
        for tracker in list(self._by_key.values()):
            tracker.flush()
