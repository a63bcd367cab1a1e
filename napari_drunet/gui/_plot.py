"""A tiny dependency-free live curve plot (QPainter polylines), e.g. loss and validation Dice."""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

COLORS = ("#e8a33d", "#4fb3e8", "#8bd16a", "#d16ab8")


class CurvePlot(QWidget):
    """Each series is drawn scaled to its own range, with its name and last value on top."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def clear(self) -> None:
        """Remove every point."""
        self.series.clear()
        self.update()

    def add_point(self, name: str, x: float, y: float) -> None:
        """Append ``(x, y)`` to series ``name`` (NaN/inf values are skipped)."""
        if y is None or y != y or abs(y) == float("inf"):
            return
        self.series.setdefault(name, []).append((float(x), float(y)))
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        w, h, pad, top = self.width(), self.height(), 6, 16
        painter.setPen(QPen(QColor("#666666")))
        painter.drawRect(pad, top, w - 2 * pad, h - top - pad)
        xs = [x for pts in self.series.values() for x, _ in pts]
        if not xs:
            painter.drawText(pad, top - 3, "no data yet")
            painter.end()
            return
        x0, x1 = min(xs), max(xs)
        legend_x = pad
        for i, (name, pts) in enumerate(self.series.items()):
            color = QColor(COLORS[i % len(COLORS)])
            ys = [y for _, y in pts]
            y0, y1 = min(ys), max(ys)
            if y1 - y0 < 1e-12:
                y0, y1 = y0 - 0.5, y1 + 0.5
            poly = QPolygonF()
            for x, y in pts:
                px = pad + (x - x0) / max(x1 - x0, 1e-12) * (w - 2 * pad)
                py = h - pad - (y - y0) / (y1 - y0) * (h - top - 2 * pad)
                poly.append(QPointF(px, py))
            painter.setPen(QPen(color, 1.5))
            if len(pts) == 1:
                painter.drawEllipse(poly[0], 2, 2)
            else:
                painter.drawPolyline(poly)
            text = f"{name} {pts[-1][1]:.3f}"
            painter.drawText(legend_x, top - 3, text)
            legend_x += painter.fontMetrics().horizontalAdvance(text) + 12
        painter.setPen(QPen(Qt.gray))
        painter.end()
