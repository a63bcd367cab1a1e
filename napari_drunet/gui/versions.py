"""Model versions widget: the project's versions with one-click switch (revert)."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import DataError, DrunetError
from ._state import get_state, unwrap_viewer
from ._workers import report_error

COLUMNS = ("", "version", "parent", "created", "cases", "metrics", "source")
SOURCE_WIDTH = 90  # px; with short dates and wrapped metrics the table fits a 480 px dock


# compact names of the usual metrics, in display order; "{}" is the formatted value
_SHORT = {"best_val_dice": "val {}", "val_dice": "val {}", "holdout_dice": "hold {}",
          "holdout_dice_parent": "parent {}", "steps": "{} steps", "seconds": "{} s"}
_HIDDEN = ("stop_reason",)  # in the tooltip only


def _metrics_text(metrics: dict[str, Any]) -> str:
    """Every metric, ``key value`` (the cell's tooltip)."""
    parts = []
    for key, val in metrics.items():
        if isinstance(val, float):
            parts.append(f"{key} {val:.4f}")
        elif val is not None:
            parts.append(f"{key} {val}")
    return ", ".join(parts)


def _fmt(val: Any, key: str = "") -> str:
    if isinstance(val, float):
        return f"{val:.3f}" if abs(val) < 10 and key != "seconds" else f"{val:.0f}"
    return str(val)


def _short_time(iso: str) -> str:
    """``2026-11-30T21:21:20+00:00`` -> ``11-30 21:21`` (the full time is in the tooltip)."""
    return iso.replace("T", " ")[5:16]


def compact_metrics(metrics: dict[str, Any]) -> str:
    """Short metrics cell, e.g. ``"val 0.812 / hold 0.800 / 150 steps"``."""
    known = [_SHORT[k].format(_fmt(metrics[k], k)) for k in _SHORT
             if metrics.get(k) is not None and not (k == "val_dice" and "best_val_dice" in metrics)]
    other = [f"{k} {_fmt(v)}" for k, v in metrics.items()
             if k not in _SHORT and k not in _HIDDEN and v is not None]
    return " / ".join(known + other)


class _OneLine(QStyledItemDelegate):
    """A path on one line, elided in the middle, even where the table wraps text."""

    def initStyleOption(self, option: QStyleOptionViewItem, index: Any) -> None:
        super().initStyleOption(option, index)
        option.features &= ~QStyleOptionViewItem.WrapText


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
        self.table.setTextElideMode(Qt.ElideMiddle)  # long source paths keep both ends
        self.table.setWordWrap(True)  # metrics wrap onto lines in a narrow (480 px) dock
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("metrics"), QHeaderView.Stretch)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.Interactive)  # source
        header.setStretchLastSection(False)
        self.table.setColumnWidth(len(COLUMNS) - 1, SOURCE_WIDTH)  # full path in its tooltip
        self.table.setItemDelegateForColumn(len(COLUMNS) - 1, _OneLine(self.table))
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
        active = project.versions.active
        for v in project.versions.entries():
            r = self.table.rowCount()
            self.table.insertRow(r)
            cells = ("●" if v["id"] == active else "", v["id"], v["parent"] or "",
                     _short_time(v["created"]), str(len(v["data"])),
                     compact_metrics(v["metrics"]), v.get("source") or "")
            tips = {COLUMNS.index("metrics"): _metrics_text(v["metrics"]),
                    COLUMNS.index("created"): v["created"].replace("T", " ")[:19],
                    len(COLUMNS) - 1: cells[-1]}
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if tips.get(c):
                    item.setToolTip(tips[c])
                self.table.setItem(r, c, item)
        self.info.setText(f"active: {active or '-'}  ({len(project.versions.entries())} version(s); "
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
            project.versions.set_active(version_id)
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
        if project is None or project.versions.active is None:
            report_error(DataError("no active version"))
            return
        parent = project.versions.get(project.versions.active)["parent"]
        if parent is None:
            report_error(DataError(f"{project.versions.active} has no parent to revert to"))
            return
        self.switch_to(parent)
