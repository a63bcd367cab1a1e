"""The Segment widget's image list: the image you see is the image you segment.

A newly opened image, or one the user selects in napari's layer list, becomes the target (the
only checked layer), so Run never re-segments the previous image. Layers opened together from
one multi-channel file (same source path) are checked together; layers the plugin derived
from a result (probability, uncertainty) never become targets.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QWidget

from ..core.models.fit import ImageKind
from ._layers import DERIVED_ROLES, layer_role


def _source_path(layer: Any) -> str | None:
    src = (getattr(layer, "metadata", None) or {}).get("source")
    return str(src["path"]) if isinstance(src, dict) and src.get("path") else None


def image_kind(layers: list[Any]) -> ImageKind | None:
    """What the checked layers make together (as ``image_from_layers`` stacks them), from
    their shapes only (no data copied); ``None`` for no layer."""
    if not layers:
        return None
    first = layers[0]
    rgb = bool(getattr(first, "rgb", False))
    shape = tuple(first.data.shape[:-1] if rgb else first.data.shape)
    channels = sum(3 if getattr(la, "rgb", False) else 1 for la in layers)
    return ImageKind(len(shape), channels, rgb and len(layers) == 1, shape)


class ImageTargets(QListWidget):
    """Checkable list of the viewer's image layers; ``targets_changed(new)`` when the checked
    set changes (``new``: a newly opened or selected image)."""

    targets_changed = Signal(bool)

    def __init__(self, viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.setMaximumHeight(90)
        self.setToolTip("The checked image layers are segmented (together they are the model's "
                        "input channels); an image you open or select becomes the target")
        self.itemChanged.connect(lambda _item: self.targets_changed.emit(False))
        viewer.layers.events.inserted.connect(self._inserted)
        viewer.layers.events.removed.connect(self.refresh)
        viewer.layers.selection.events.active.connect(self._selected)

    def images(self) -> list[Any]:
        from napari.layers import Image

        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        # the plugin's own probability / uncertainty maps are outputs, not inputs (unless
        # there is nothing else to choose)
        return [la for la in images if layer_role(la) not in DERIVED_ROLES] or images

    def checked(self) -> list[str]:
        """Names of the checked image layers, in list order."""
        return [self.item(i).text() for i in range(self.count())
                if self.item(i).checkState() == Qt.Checked]

    def refresh(self, event: Any = None, checked: set[str] | None = None,
                new: bool = False) -> None:
        """Rebuild the list, keeping check marks (or checking ``checked``)."""
        images = self.images()
        checked = set(self.checked()) if checked is None else checked
        if not checked & {la.name for la in images} and images:
            active = self.viewer.layers.selection.active
            checked = {active.name if active in images else images[0].name}
        self.blockSignals(True)  # one signal for the whole rebuild
        try:
            self.clear()
            for layer in images:
                item = QListWidgetItem(layer.name)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if layer.name in checked else Qt.Unchecked)
                self.addItem(item)
        finally:
            self.blockSignals(False)
        self.targets_changed.emit(new)

    def set_checked(self, names: list[str]) -> None:
        """Check exactly the layers ``names``."""
        self.refresh(checked=set(names))

    def _inserted(self, event: Any) -> None:
        layer = event.value
        if layer not in self.images():
            self.refresh()
            return
        path = _source_path(layer)
        same_file = {name for name in self.checked() if path is not None and name in
                     self.viewer.layers and _source_path(self.viewer.layers[name]) == path}
        self.refresh(checked=same_file | {layer.name}, new=True)

    def _selected(self, event: Any) -> None:
        layer = event.value
        if layer is None or layer.name in self.checked() or layer not in self.images():
            return
        self.refresh(checked={layer.name}, new=True)
