"""Segment widget: run a DRU-Net model on image layers in a background worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import DrunetError, InputError
from . import _warmup
from ._layers import (
    ROLE_KEY,
    foreground_probability,
    geometry_kwargs,
    image_from_layers,
    label_style,
    set_slice,
    slice_index,
    source_metadata,
    unique_layer_name,
)
from ._legend import ClassLegend
from ._model_choice import ModelChoiceMixin
from ._progress import ProgressArea
from ._state import SegmentResult, get_state, unwrap_viewer
from ._target import ImageTargets, image_kind
from ._workers import Job, report_error, start_job

WHOLE, CURRENT = "whole image / volume", "current slice only (quick preview)"


class SegmentWidget(ModelChoiceMixin, QWidget):
    """Choose image layers, a model and options; run; show labels (and probabilities)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = unwrap_viewer(napari_viewer)
        self.state = get_state(napari_viewer)
        self.job: Job | None = None
        self._uncertainty: dict[str, Any] | None = None
        self._visited: set[int] = set()
        self._threshold_key: str | None = None  # model the threshold box was last set from
        self._threshold_user = False  # the user changed the box since then
        self._syncing = False
        self._build()
        self.layer_list.refresh()
        self.status.setText("loading the engine…")  # until the warm-up has imported torch
        _warmup.when_ready(self._models_ready)  # the model list imports torch
        self.state.project_changed.connect(self._use_project_model)  # opened: its active model
        self.state.versions_changed.connect(self.refresh_models)
        self.state.model_changed.connect(self._use_project_model)

    def _models_ready(self) -> None:
        from ._progress import is_deleted

        if not is_deleted(self):
            if self.status.text() == "loading the engine…":
                self.status.setText("")
            self.refresh_models()
            self.layer_list.refresh(new=True)  # the image on screen is the target, with its model

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        self.layer_list = ImageTargets(self.viewer)
        self.layer_list.targets_changed.connect(self._update_fit)
        self.model_combo = QComboBox()
        self.model_combo.activated.connect(self._model_activated)
        self.model_combo.currentIndexChanged.connect(self._sync_from_model)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._update_fit())
        self.fit_label = QLabel("")  # why the model does not fit the image, and what does
        self.fit_label.setWordWrap(True)
        self.fit_label.setVisible(False)
        self.use_button = QPushButton("")
        self.use_button.setVisible(False)
        self.use_button.clicked.connect(self.use_proposed)
        self.legend = ClassLegend()
        self.device_combo = QComboBox()
        _warmup.fill_devices(self.device_combo)  # torch is imported in the warm-up thread
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 2048)
        self.tile_spin.setSpecialValueText("auto")
        self.overlap_spin = QDoubleSpinBox()
        self.overlap_spin.setRange(0.0, 0.9)
        self.overlap_spin.setSingleStep(0.05)
        self.overlap_spin.setValue(0.25)
        self.tta_check = QCheckBox("test-time augmentation (flips)")
        self.object_check = QCheckBox("keep the largest object per class")
        self.object_check.setToolTip("one lesion per photograph: smaller specks are dropped and "
                                     "holes filled; set from the model when you choose it")
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setRange(0.01, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setToolTip("foreground threshold of a binary model; set from the "
                                       "model (tuned on validation data) when you choose it")
        self.threshold_spin.valueChanged.connect(self._threshold_edited)
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([WHOLE, CURRENT])
        self.prob_check = QCheckBox("add probability layer")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.mc_spin = QSpinBox()
        self.mc_spin.setRange(2, 64)
        self.mc_spin.setValue(8)
        self.uncertainty_button = QPushButton("Uncertainty (MC-dropout)")
        self.uncertainty_button.clicked.connect(self.run_uncertainty)
        self.next_button = QPushButton("Next most uncertain slice")
        self.next_button.clicked.connect(self.next_uncertain_slice)
        self.progress_area = ProgressArea()  # progress bar, status line, last error
        self.status = self.progress_area.status

        form = QFormLayout()
        form.addRow("image layers", self.layer_list)
        model_box = QVBoxLayout()  # hidden hints take no room in the form
        for w in (self.model_combo, self.fit_label, self.use_button, self.legend):
            model_box.addWidget(w)
        form.addRow("model", model_box)
        form.addRow("device", self.device_combo)
        form.addRow("tile size", self.tile_spin)
        form.addRow("tile overlap", self.overlap_spin)
        form.addRow("", self.tta_check)
        form.addRow("", self.object_check)
        form.addRow("threshold", self.threshold_spin)
        form.addRow("region", self.scope_combo)
        form.addRow("", self.prob_check)
        form.addRow("MC samples", self.mc_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.uncertainty_button)
        layout.addWidget(self.next_button)
        layout.addWidget(self.progress_area)
        layout.addStretch(1)

    def refresh_layers(self, event: Any = None) -> None:
        """Rebuild the image layer list, keeping check marks."""
        self.layer_list.refresh()

    def selected_layer_names(self) -> list[str]:
        """Names of the checked image layers, in list order."""
        return self.layer_list.checked()

    def set_image_layers(self, names: list[str]) -> None:
        """Check exactly the layers ``names`` (scripting / tests)."""
        self.layer_list.set_checked(names)

    def _update_fit(self, new: bool = False) -> str | None:
        """Fit of the chosen model to the checked layers (see ``ModelChoiceMixin.show_fit``)."""
        layers = [self.viewer.layers[n] for n in self.selected_layer_names()
                  if n in self.viewer.layers]
        return self.show_fit(image_kind(layers), new)

    def options(self) -> dict[str, Any]:
        """Inference options for ``Model.predict_iter``.

        The threshold is passed only when the user changed the box after choosing the model;
        otherwise the model's own (validation-tuned) threshold applies, at full precision.
        """
        tile = self.tile_spin.value()
        opts = {"tile_size": tile or None, "overlap": float(self.overlap_spin.value()),
                "tta": self.tta_check.isChecked(), "device": self.device_combo.currentText(),
                "largest_object": self.object_check.isChecked()}
        if self._threshold_user:
            opts["threshold"] = float(self.threshold_spin.value())
        return opts

    def _set_busy(self, busy: bool, text: str = "") -> None:
        for w in (self.run_button, self.uncertainty_button):
            w.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if text:
            self.status.setText(text)

    # ------------------------------------------------------------------ run
    def _prepare(self) -> tuple[list[Any], Any, str, dict[str, Any]]:
        layers = [self.viewer.layers[n] for n in self.selected_layer_names()]
        image = image_from_layers(layers)
        return layers, image, self.model_source(), self.options()

    def run(self) -> Job | None:
        """Segment the checked layers with the chosen model (background worker)."""
        if self.job is not None and self.job.running:
            show_info("a segmentation is already running")
            return None
        try:
            layers, image, source, opts = self._prepare()
            version = self.state.resolve_source(source)[1]
            _check_fit(self.state.model_meta(source), image, source)
        except DrunetError as exc:
            report_error(exc, area=self.progress_area)
            return None
        z = None
        if self.scope_combo.currentText() == CURRENT and image.ndim_spatial == 3:
            z = slice_index(self.viewer, layers[0])
        state, device = self.state, opts["device"]

        def job_gen(job: Job):
            model = state.get_model(source, device)
            sub, zoff = image, None
            if z is not None:
                sub, zoff = _slab(image, z, model)
            pred = yield from model.predict_iter(sub, **opts)
            return {"prediction": pred, "z": z, "zoff": zoff, "model": model}

        self._set_busy(True)
        self.job = start_job(
            job_gen, desc="DRU-Net segmentation", owner=self, area=self.progress_area,
            on_done=lambda r: self._show_result(r, layers, image, source, version),
            on_finished=self._ended)
        return self.job

    def cancel(self) -> None:
        """Stop the running job at its next tile ("cancelled" once it has ended)."""
        if self.job is not None and self.job.running:
            self.job.stop(hard=True)
            self.status.setText("cancelling…")

    def _ended(self) -> None:
        self._set_busy(False)
        if self.job is not None and self.job.aborted:
            self.status.setText("cancelled")

    def _show_result(self, res: dict[str, Any], layers: list[Any], image: Any, source: str,
                     version: str | None) -> Iterator[None]:
        """Show the prediction: labels layer, then (next event-loop turn) the probability
        layer; each is napari's GUI-thread work, one long freeze when done in one go."""
        pred, model = res["prediction"], res["model"]
        if not self._threshold_user and source == self.model_combo.currentText():
            self._show_model_meta(model.meta)  # the model is loaded now: its own threshold
        notes = _notify_warnings(pred)
        binary = getattr(model, "out_channels", 1) == 1
        mask = np.asarray(pred.mask)
        prob = None if pred.probabilities is None else np.asarray(pred.probabilities)
        geo = geometry_kwargs(layers[0], image.ndim_spatial)
        base = f"{layers[0].name} labels"
        src_meta = source_metadata(image)  # so that saved masks get the scan's geometry
        meta = {"drunet": {"image_layers": [la.name for la in layers],
                           "model_source": source, "model_version": version, "binary": binary},
                **src_meta}
        if res["z"] is not None:
            z, zoff = res["z"], res["zoff"]
            mask_slice = mask if mask.ndim == 2 else mask[z - zoff]
            target = self.viewer.layers[base] if base in self.viewer.layers else None
            if (target is None or target.data.shape != image.shape_spatial
                    or target.metadata.get("drunet_case")):
                target = self.viewer.add_labels(np.zeros(image.shape_spatial, mask.dtype),
                                                name=unique_layer_name(self.viewer, base),
                                                metadata=meta, **geo, **label_style())
            target.data[z] = mask_slice
            target.refresh()
            if self.state.last_result is not None and self.state.last_result.labels_layer is target:
                self.state.last_result = None  # its data no longer is that prediction
            self.status.setText(f"slice {z} segmented (preview; not stored as a result)" + notes)
            return
        name = base
        if name in self.viewer.layers and self.viewer.layers[name].metadata.get("drunet_case"):
            name = unique_layer_name(self.viewer, base)
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == mask.shape:
            labels = self.viewer.layers[name]
            labels.data = mask
            labels.metadata.update(meta)
        else:
            labels = self.viewer.add_labels(mask, name=unique_layer_name(self.viewer, name),
                                            metadata=meta, **geo, **label_style())
        if self.prob_check.isChecked() and prob is not None:
            yield  # the event loop runs between the two layers
            pname = f"{layers[0].name} probability"
            fg, pmeta = foreground_probability(prob), {ROLE_KEY: "probability", **src_meta}
            if pname in self.viewer.layers and self.viewer.layers[pname].data.shape == fg.shape:
                self.viewer.layers[pname].data = fg
                self.viewer.layers[pname].metadata.update(pmeta)
            else:
                self.viewer.add_image(fg, name=pname, colormap="magma", blending="additive",
                                      opacity=0.5, contrast_limits=(0, 1), metadata=pmeta, **geo)
        result = SegmentResult(labels, image, mask.copy(), prob, source, version,
                               [la.name for la in layers])
        self.state.last_result = result
        self.state.result_added.emit(result)
        self.status.setText(f"done: {labels.name} ({_info_text(pred)})" + notes)

    # ------------------------------------------------------------------ uncertainty
    def run_uncertainty(self) -> Job | None:
        """MC-dropout uncertainty map of the checked layers as an Image layer."""
        try:
            layers, image, source, opts = self._prepare()
        except DrunetError as exc:
            report_error(exc, area=self.progress_area)
            return None
        n, state = self.mc_spin.value(), self.state

        def job_gen(job: Job):
            model = state.get_model(source, opts["device"])
            _mean, unc = yield from model.mc_dropout_iter(image, n, **opts)
            return unc

        self._set_busy(True)
        self.job = start_job(job_gen, desc=f"MC-dropout uncertainty ({n} samples)", owner=self,
                             area=self.progress_area,
                             on_done=lambda out: self._show_uncertainty(out, layers, image),
                             on_finished=self._ended)
        return self.job

    def _show_uncertainty(self, out: Any, layers: list[Any], image: Any) -> None:
        unc = _uncertainty_map(out, image.shape_spatial)
        name = f"{layers[0].name} uncertainty"
        geo = geometry_kwargs(layers[0], image.ndim_spatial)
        meta = {ROLE_KEY: "uncertainty", **source_metadata(image)}
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == unc.shape:
            layer = self.viewer.layers[name]
            layer.data = unc
            layer.metadata.update(meta)
        else:
            layer = self.viewer.add_image(unc, name=name, colormap="inferno", blending="additive",
                                          opacity=0.6, metadata=meta, **geo)
        per_slice = unc.reshape(unc.shape[0], -1).mean(axis=1) if unc.ndim == 3 else None
        self._uncertainty = {"layer": layer, "per_slice": per_slice}
        self._visited = set()
        self.status.setText(f"uncertainty: mean {float(unc.mean()):.4f}, max {float(unc.max()):.4f}")

    def next_uncertain_slice(self) -> int | None:
        """Move to the most uncertain slice not reviewed (nor visited by this button) yet."""
        info = self._uncertainty
        if info is None or info["layer"] not in self.viewer.layers:
            show_warning("compute the uncertainty first")
            return None
        if info["per_slice"] is None:
            show_info("2D image: the uncertainty map shows where to look")
            return None
        skip = set(self._visited) | self._reviewed_slices()
        order = [int(i) for i in np.argsort(-info["per_slice"]) if int(i) not in skip]
        if not order:
            show_info("every slice has been reviewed or visited")
            return None
        z = order[0]
        self._visited.add(z)
        set_slice(self.viewer, info["layer"], z)
        self.status.setText(f"slice {z}: mean uncertainty {info['per_slice'][z]:.4f}")
        return z

    def _reviewed_slices(self) -> set[int]:
        project = self.state.project
        if project is None:
            return set()
        out: set[int] = set()
        for layer in self.viewer.layers:
            case = getattr(layer, "metadata", {}).get("drunet_case")
            if case and case in project.cases():
                out |= set(project.case_meta(case)["reviewed_slices"])
        return out


def _check_fit(meta: dict[str, Any] | None, image: Any, source: str) -> None:
    """Refuse, before any work, a model whose card does not cover the image (core check)."""
    from ..core.models.fit import ImageKind, check_fit

    if meta:
        check_fit(meta, ImageKind.of(image.array.shape, image.is_rgb), source)


def _slab(image: Any, z: int, model: Any) -> tuple[Any, int]:
    """Input for a current-slice preview: the slice (2D model) or a thin slab (3D model)."""
    from ..core.image.io import ImageData

    if getattr(model, "spatial_dims", 3) == 2:
        return ImageData(image.array[:, z], spacing=image.spacing[1:]), z
    half = 8
    lo, hi = max(0, z - half), min(image.shape_spatial[0], z + half + 1)
    # the header's axis directions hold for the slab too (3D models reorient by them)
    return ImageData(image.array[:, lo:hi], spacing=image.spacing, affine=image.affine), lo


def _uncertainty_map(out: Any, shape: tuple[int, ...]) -> np.ndarray:
    unc = np.asarray(out, np.float32)
    if unc.shape != tuple(shape):
        raise InputError(f"unexpected uncertainty map shape {unc.shape} for image {shape}")
    return unc


def _is_scale_note(text: str) -> bool:
    """Rescaling and reorientation notes (FOV size, voxel spacing, axis order) are
    information, not problems."""
    return any(k in text for k in ("FOV", "rescaled", "resampled from spacing", "reoriented from",
                                   "volume axes taken"))


def _notify_warnings(pred: Any) -> str:
    """Show the prediction's ``info['warnings']`` as notifications; their status-line suffix.

    Out-of-memory fallbacks, channel conversions and replaced NaN values are warnings (the
    result may differ from what the user expects); rescaling notes are information.
    """
    notes = [str(w) for w in ((getattr(pred, "info", None) or {}).get("warnings") or [])]
    for note in dict.fromkeys(notes):
        (show_info if _is_scale_note(note) else show_warning)(f"segmentation: {note}")
    return "".join(f"\n{'note' if _is_scale_note(n) else 'warning'}: {n}"
                   for n in dict.fromkeys(notes))


def _info_text(pred: Any) -> str:
    info = getattr(pred, "info", None) or {}
    secs = info.get("seconds")
    dev = info.get("device", "")
    return f"{secs:.1f} s on {dev}" if isinstance(secs, (int, float)) else str(dev or "ok")
