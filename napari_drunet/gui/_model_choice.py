"""Model choice of the Segment widget: packaged models, the project's version, browsed files,
and the threshold and recipe boxes that follow the chosen model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog

from ..core.errors import DrunetError, InputError
from ..core.models.fit import ImageKind, fit_problem, fit_summary, proposal
from ._state import BROWSE, PROJECT_ACTIVE

DEFAULT_MODEL = "retina-vessels"


def _packaged_models() -> list[str]:
    try:
        from ..core.models.model import list_models

        items = list_models()
    except Exception:  # missing weights must not break the widget
        return []
    names = [i if isinstance(i, str) else str(getattr(i, "name", None) or i["name"]) for i in items]
    return sorted(names, key=lambda n: (n != DEFAULT_MODEL, n))  # the plugin's default first


class ModelChoiceMixin:
    """``model_combo`` + ``threshold_spin`` logic of :class:`~.segment.SegmentWidget`.

    The threshold box shows the chosen model's threshold (``meta['threshold']``, tuned on
    validation data) each time the model changes; a value the user types afterwards is kept
    and used until the next model change. The TTA and largest-object boxes likewise start from
    the model's recipe (``meta['inference']``) at each model change.
    """

    model_combo: Any
    threshold_spin: Any
    tta_check: Any
    object_check: Any
    state: Any
    fit_label: Any  # says why the chosen model does not fit the target image
    use_button: Any  # "Use <the packaged model that fits>"
    legend: Any
    _proposed: str | None = None
    _threshold_key: str | None = None  # model the threshold box was last set from
    _threshold_user = False  # the user changed the box since then
    _syncing = False

    def refresh_models(self) -> None:
        """Rebuild the model list: packaged models, project version, browsed files."""
        current = self.model_combo.currentText()
        extra = [self.model_combo.itemText(i) for i in range(self.model_combo.count())
                 if self.model_combo.itemData(i) == "file"]
        self.model_combo.blockSignals(True)  # one threshold sync at the end, not per item
        try:
            self._fill_models(current, extra)
        finally:
            self.model_combo.blockSignals(False)
        self._sync_from_model()

    def _fill_models(self, current: str, extra: list[str]) -> None:
        self.model_combo.clear()
        for name in _packaged_models():
            self.model_combo.addItem(name, "packaged")
            # which images each packaged model is for, before choosing it (the card's example)
            self.model_combo.setItemData(self.model_combo.count() - 1, self.fits_text(name),
                                         Qt.ItemDataRole.ToolTipRole)
        if self.state.project is not None and self.state.project.versions.active is not None:
            self.model_combo.addItem(PROJECT_ACTIVE, "project")
        for path in extra:
            self.model_combo.addItem(path, "file")
        self.model_combo.addItem(BROWSE, "browse")
        idx = self.model_combo.findText(current)
        if idx >= 0 and current != BROWSE:
            self.model_combo.setCurrentIndex(idx)
        elif self.state.project is not None and self.model_combo.findText(PROJECT_ACTIVE) >= 0:
            self.model_combo.setCurrentIndex(self.model_combo.findText(PROJECT_ACTIVE))

    def fits_text(self, source: str) -> str:
        """What images ``source`` fits (the card: modality, dims, channels, example); ``""``
        when its recipe cannot be read."""
        meta = self.state.model_meta(source)
        return fit_summary(meta) if meta else ""

    def _use_project_model(self, *_: object) -> None:
        """After a promotion or revert, segment with the project's active version."""
        self.refresh_models()
        idx = self.model_combo.findText(PROJECT_ACTIVE)
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)

    def set_model_source(self, source: str) -> None:
        """Select a packaged model name, ``PROJECT_ACTIVE`` or a checkpoint path."""
        idx = self.model_combo.findText(str(source))
        if idx < 0:
            self.model_combo.insertItem(self.model_combo.count() - 1, str(source), "file")
            idx = self.model_combo.findText(str(source))
        self.model_combo.setCurrentIndex(idx)

    def _model_activated(self, index: int) -> None:
        if self.model_combo.itemData(index) != "browse":
            return
        path, _ = QFileDialog.getOpenFileName(self, "DRU-Net checkpoint", "",
                                              "Checkpoints (*.safetensors *.ckpt);;All files (*)")
        if path:
            self.set_model_source(path)
        else:
            self.model_combo.setCurrentIndex(0)

    def model_source(self) -> str:
        """The chosen model (raises ``InputError`` when none)."""
        source = self.model_combo.currentText()
        if not source or source == BROWSE:
            raise InputError("choose a model (or 'Browse checkpoint…')")
        return source

    def _threshold_edited(self, value: float) -> None:
        if not self._syncing:
            self._threshold_user = True

    def _sync_from_model(self, index: int = -1) -> None:
        """Set the threshold box from the chosen model, once per model (user edits then kept)."""
        source = self.model_combo.currentText()
        if not source or source == BROWSE:
            return
        try:
            key = self.state.resolve_source(source)[0]
        except DrunetError:
            key = source
        if key == self._threshold_key:
            return
        self._threshold_key, self._threshold_user = key, False
        meta = self.state.model_meta(source)
        self._show_model_meta(meta)
        inference = (meta or {}).get("inference") or {}
        self.tta_check.setChecked(bool(inference.get("tta", False)))
        self.object_check.setChecked(bool(inference.get("largest_object", False)))

    def _show_model_meta(self, meta: dict[str, Any] | None) -> None:
        """Threshold box <- the model's threshold (binary models; unused by multi-class ones)."""
        if not meta:
            return
        binary = int((meta.get("arch_kwargs") or {}).get("out_channels", 1)) == 1
        self._syncing = True
        try:
            self.threshold_spin.setValue(float(meta.get("threshold", 0.5)))
        finally:
            self._syncing = False
        self.threshold_spin.setEnabled(binary)

    def show_fit(self, kind: ImageKind | None, new: bool = False) -> str | None:
        """Say whether the chosen model fits an image of ``kind``; the problem, or None.

        On a ``new`` target image a packaged model that does not fit is replaced by the
        packaged one that does (the core's :func:`~napari_drunet.core.models.fit.proposal`); a
        project or file model is kept and the fitting one offered on ``use_button``.
        """
        source = self.model_combo.currentText()
        meta = self.state.model_meta(source) if source and source != BROWSE else None
        self.legend.show_meta(meta)
        self.model_combo.setToolTip(fit_summary(meta) if meta else "")
        name = Path(source).name if self.model_combo.currentData() == "file" else source
        problem = fit_problem(meta, kind, name) if meta and kind else None
        self._proposed = proposal(kind, exclude=source) if problem else None
        if problem and new and self._proposed and self.model_combo.currentData() == "packaged":
            chosen = self._proposed
            self.set_model_source(chosen)  # shows the fit (none) and the legend of ``chosen``
            self.fit_label.setText(f"model '{chosen}' chosen: it fits this {kind.describe()} "
                                   f"({self.fits_text(chosen)})")
            self.fit_label.setVisible(True)
            return None
        self.fit_label.setText(problem or "")
        self.fit_label.setVisible(bool(problem))
        self.use_button.setText(f"Use '{self._proposed}'" if self._proposed else "")
        self.use_button.setToolTip(self.fits_text(self._proposed) if self._proposed else "")
        self.use_button.setVisible(bool(self._proposed))
        return problem

    def use_proposed(self) -> None:
        """Switch to the packaged model that fits the target image."""
        if self._proposed:
            self.set_model_source(self._proposed)
