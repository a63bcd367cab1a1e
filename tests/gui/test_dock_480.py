"""Versions and comparison tables are readable in a 480 px dock: every column in view (no
sideways scrolling), metrics wrapped onto lines rather than cut, case names whole."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QRect, Qt
from qtpy.QtWidgets import QTableWidgetItem

from napari_drunet.core.correction.project import Project
from napari_drunet.core.models.model import load_model
from napari_drunet.gui._state import get_state
from napari_drunet.gui.finetune import FinetuneWidget
from napari_drunet.gui.versions import COLUMNS, VersionsWidget

pytestmark = pytest.mark.gui
DOCK = 480


def _shown(qtbot, widget) -> None:
    widget.setFixedWidth(DOCK)
    widget.resize(DOCK, 400)
    widget.show()
    qtbot.waitExposed(widget)


def test_versions_table_fits_a_480_px_dock(make_napari_viewer, qtbot, tmp_path, tiny_ckpt):
    project = Project.create(tmp_path / "p")
    model = load_model(tiny_ckpt, "cpu")
    v1 = project.versions.add(model, metrics={"val_dice": 0.8255}, source=str(
        tmp_path / "models" / "retina-vessels-site-B-finetuned-2026-11-30.safetensors"))
    project.versions.add(model, parent=v1, data=["a", "b", "c"], metrics={
        "best_val_dice": 0.8312, "holdout_dice": 0.8101, "holdout_dice_parent": 0.7988,
        "steps": 150, "seconds": 62.4, "stop_reason": "time budget"}, source="fine-tune")
    viewer = make_napari_viewer()
    ver = VersionsWidget(viewer)
    get_state(viewer).set_project(project)
    _shown(qtbot, ver)
    table = ver.table
    assert table.horizontalScrollBar().maximum() == 0  # all columns in view
    col = COLUMNS.index("metrics")
    for r in range(table.rowCount()):
        text = table.item(r, col).text()
        need = table.fontMetrics().boundingRect(QRect(0, 0, table.columnWidth(col) - 8, 10_000),
                                                Qt.TextWordWrap, text).height()
        assert table.rowHeight(r) >= need, (text, table.rowHeight(r), need)  # wrapped, whole
    assert table.item(1, COLUMNS.index("created")).text().count(":") == 1  # MM-DD HH:MM


def test_finetune_comparison_table_fits_a_480_px_dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    ft = FinetuneWidget(viewer)
    _shown(qtbot, ft)
    table = ft.table
    names = [f"case_{i:03d}_long_name_from_the_scanner" for i in range(3)] + ["mean"]
    for name in names:  # rows as a finished fine-tune writes them
        r = table.rowCount()
        table.insertRow(r)
        for c, text in enumerate((name, "0.7800", "0.8000")):
            table.setItem(r, c, QTableWidgetItem(text))
    qtbot.wait(50)
    assert table.horizontalScrollBar().maximum() == 0
    widest = max(table.fontMetrics().horizontalAdvance(n) for n in names)
    assert table.columnWidth(0) >= widest  # case names whole, not "case_000_lo..."
    assert table.columnWidth(1) >= table.fontMetrics().horizontalAdvance("previous")
