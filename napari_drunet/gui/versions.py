"""Model versions widget: the project's versions with one-click switch (revert)."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import DataError, DrunetError
from ._state import get_state, unwrap_viewer
from ._workers import report_error

COLUMNS = ("", "version", "parent", "created", "cases", "metrics", "source")


def _metrics_text(metrics: dict[str, Any]) -> str:
    parts = []
    for key, val in metrics.items():
        if isinstance(val, float):
            parts.append(f"{key} {val:.4f}")
        elif val is not None:
            parts.append(f"{key} {val}")
    return ", ".join(parts)


class VersionsWidget(QWidget):
    """Table of model versions; "Switch to selected" makes one active (e.g. revert)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = unwrap_viewer(napari_viewer)
        self.state = get_state(napari_viewer)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.switch_button = QPushButton("Switch to selected")
        self.switch_button.clicked.connect(self.switch_to_selected)
        self.revert_button = QPushButton("Revert to parent")
        self.revert_button.clicked.connect(self.revert)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        row.addWidget(self.switch_button)
        row.addWidget(self.revert_button)
        row.addWidget(self.refresh_button)
        layout.addLayout(row)
        layout.addWidget(self.info)
        self.state.project_changed.connect(self.refresh)
        self.state.versions_changed.connect(self.refresh)
        self.refresh()

    def version_ids(self) -> list[str]:
        """Version ids in table order."""
        return [self.table.item(r, 1).text() for r in range(self.table.rowCount())]

    def refresh(self) -> None:
        """Reload the table from the project manifest."""
        project = self.state.project
        self.table.setRowCount(0)
        for w in (self.switch_button, self.revert_button):
            w.setEnabled(project is not None)
        if project is None:
            self.info.setText("no project open")
            return
        active = project.active_version
        for v in project.versions():
            r = self.table.rowCount()
            self.table.insertRow(r)
            cells = ("●" if v["id"] == active else "", v["id"], v["parent"] or "",
                     v["created"].replace("T", " ")[:19], str(len(v["data"])),
                     _metrics_text(v["metrics"]), v.get("source") or "")
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.info.setText(f"active: {active or '-'}  ({len(project.versions())} version(s); "
                          "files are never overwritten)")

    def select_version(self, version_id: str) -> None:
        """Select the row of ``version_id``."""
        ids = self.version_ids()
        if version_id in ids:
            self.table.selectRow(ids.index(version_id))

    def switch_to(self, version_id: str) -> None:
        """Make ``version_id`` active; the Segment widget's project model follows."""
        try:
            project = self.state.project
            if project is None:
                raise DataError("no project open")
            project.set_active(version_id)
        except DrunetError as exc:
            report_error(exc)
            return
        self.state.versions_changed.emit()
        self.state.model_changed.emit(version_id)
        show_info(f"model version {version_id} is now active")

    def switch_to_selected(self) -> None:
        """Activate the selected row."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            report_error(DataError("select a version first"))
            return
        self.switch_to(self.table.item(rows[0].row(), 1).text())

    def revert(self) -> None:
        """Activate the parent of the active version (undo the last promotion)."""
        project = self.state.project
        if project is None or project.active_version is None:
            report_error(DataError("no active version"))
            return
        parent = project.version(project.active_version)["parent"]
        if parent is None:
            report_error(DataError(f"{project.active_version} has no parent to revert to"))
            return
        self.switch_to(parent)
