"""The progress + status + error area of a widget, and the guard that stops its job when the
viewer window closes.

napari shows worker progress only in its activity panel, collapsed by default, and errors as
toasts that vanish after a few seconds; a clinician looking at the widget saw neither. The
area keeps both in the widget: a progress bar while a job runs, a status line, and the last
error in red until the next run starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QLabel, QMessageBox, QProgressBar, QVBoxLayout, QWidget

from ..core.progress import Progress


def is_deleted(obj: Any) -> bool:
    """True when the C++ side of a Qt object is gone (any call on it would raise)."""
    try:
        obj.objectName()
    except RuntimeError:  # "wrapped C/C++ object ... has been deleted" (PyQt and PySide)
        return True
    return False


class ProgressArea(QWidget):
    """Progress bar (shown while a job runs), status line and error line of one widget."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.bar.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.error.setStyleSheet("color: #ff6b6b;")
        self.error.setVisible(False)
        self._begin_text = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.bar, self.status, self.error):
            layout.addWidget(w)

    def begin(self, text: str) -> None:
        """A job starts: busy bar (no total yet), ``text`` as status, previous error cleared."""
        self.bar.setRange(0, 0)
        self.bar.setVisible(True)
        self.clear_error()
        self.set_status(text)
        self._begin_text = text

    def update_progress(self, rec: Progress) -> None:
        """Advance the bar to ``rec`` (busy while its total is unknown); show its message."""
        if rec.total:
            if self.bar.maximum() != rec.total:
                self.bar.setRange(0, int(rec.total))
            self.bar.setValue(max(0, min(int(rec.step), int(rec.total))))
        if rec.message:
            self.bar.setFormat(f"%p %  {rec.message}"[:90] if rec.total else rec.message[:90])

    def end(self, text: str) -> None:
        """The job has ended: bar hidden; ``text`` as status unless the widget has set its own
        (e.g. what the result is) since :meth:`begin`."""
        self.bar.setVisible(False)
        self.bar.setFormat("%p %")
        if self.status.text() == self._begin_text:
            self.set_status(text)

    def set_status(self, text: str) -> None:
        self.status.setText(text)

    def show_error(self, text: str) -> None:
        """Keep ``text`` visible in red until the next job starts."""
        self.error.setText(text)
        self.error.setVisible(True)

    def clear_error(self) -> None:
        self.error.setText("")
        self.error.setVisible(False)


def ask_stop_on_close(parent: QWidget, what: str) -> bool:
    """Ask the user who closes the window while ``what`` runs: True = stop it and close."""
    answer = QMessageBox.question(
        parent, "napari-drunet", f"{what} is still running.\n\nStop it (the best weights so far "
        "are kept as a new model version) and close the window?",
        QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


def is_user_close(event: QEvent) -> bool:
    """A close the user asked for (title bar, keyboard), not one a script made."""
    return event.spontaneous()


class CloseGuard(QObject):
    """Event filter on the viewer's window while a job runs.

    A close by the user (title bar, Ctrl+W) asks first (:func:`ask_stop_on_close`); a close by a
    script (``viewer.close()``) is never refused. Either way, once the window closes, ``stop``
    is called and the job is given ``wait_s`` seconds to end, so that it keeps its partial
    result and its thread is not left running into interpreter shutdown.
    """

    def __init__(self, window: QWidget, what: str, running: Callable[[], bool],
                 stop: Callable[[], None], wait: Callable[[float], bool], wait_s: float = 60.0):
        super().__init__(window)
        self.window, self.what, self.wait_s = window, what, wait_s
        self.running, self.stop, self.wait = running, stop, wait
        window.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if self.window is not None and obj is self.window and event.type() == QEvent.Close \
                and self.running():
            if is_user_close(event) and not ask_stop_on_close(self.window, self.what):
                event.ignore()
                return True  # the window stays open, the job goes on
            self.stop()
            self.wait(self.wait_s)
            self.remove()
        return False

    def remove(self) -> None:
        """Uninstall; drop the references to the window and the job (no viewer kept alive)."""
        window, self.window = self.window, None
        if window is not None and not is_deleted(window):
            window.removeEventFilter(self)
        self.running = self.stop = self.wait = None
