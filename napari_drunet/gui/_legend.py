"""Class legend of the Segment widget: the model's label names in the labels layers' colours."""

from __future__ import annotations

from html import escape
from typing import Any

from qtpy.QtWidgets import QLabel, QWidget

from ._layers import class_color


class ClassLegend(QLabel):
    """One coloured square and name per class (background left out), wrapped to the dock."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setToolTip("colours of the classes in the labels layers the plugin creates")
        self.names: dict[int, str] = {}

    def show_meta(self, meta: dict[str, Any] | None) -> None:
        """Legend of the model recipe ``meta`` (cleared when ``None``)."""
        from ..core.models.fit import label_names

        self.show_names(label_names(meta) if meta else {})

    def show_names(self, names: dict[int, str]) -> None:
        self.names = {int(k): str(v) for k, v in names.items() if int(k) != 0}
        parts = []
        for index, name in sorted(self.names.items()):
            r, g, b = (round(255 * c) for c in class_color(index)[:3])
            parts.append(f'<span style="color: rgb({r},{g},{b}); font-size: large">&#9632;</span>'
                         f"&nbsp;{index} {escape(name)}")
        self.setText("&nbsp;&nbsp; ".join(parts))
