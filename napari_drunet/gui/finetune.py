"""Fine-tune widget: train on the project's corrections in the background, compare, promote."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.correction import round as rounds
from ..core.correction.feedback import HOLDOUT_SHARE
from ..core.correction.round import (
    AdaptationOutcome,
    RepredictOutcome,
    RoundOutcome,
    RoundSettings,
    default_round_settings,
)
from ..core.errors import DataError, DrunetError
from . import _warmup
from ._plot import CurvePlot
from ._progress import CloseGuard, ProgressArea
from ._state import PROJECT_ACTIVE, get_state, unwrap_viewer
from ._workers import Job, report_error, start_job

#: the "held-back cases" spin box's value for "auto" (RoundSettings.holdout None)
_AUTO = -1


class FinetuneWidget(QWidget):
    """Options, Start/Stop, live loss + validation Dice, then Promote or Keep previous.

    The widget only gathers the options (:meth:`settings`) and runs the core's
    :func:`~napari_drunet.core.correction.round.correction_round`,
    :func:`~napari_drunet.core.correction.round.adaptation_round` or
    :func:`~napari_drunet.core.correction.round.repredict_cases` in a worker.
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = unwrap_viewer(napari_viewer)
        self.state = get_state(napari_viewer)
        self.job: Job | None = None
        self.outcome: RoundOutcome | AdaptationOutcome | None = None
        self.extra_config: dict[str, Any] = {}  # advanced TrainConfig overrides (scripts, tests)
        self._outcome_device = "auto"  # the device the pending outcome's model lives on
        self._run_id = 0  # id of the latest training run
        self._live_run: int | None = None  # run whose progress is shown (None once finished)
        self._build()
        self.show_settings(default_round_settings(None, self.state.project))
        self.state.project_changed.connect(self._project_changed)
        self._update_enabled()

    def _build(self) -> None:
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100000)
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(0, 24 * 3600)
        self.budget_spin.setSuffix(" s")
        self.budget_spin.setSpecialValueText("no limit")
        self.budget_spin.setToolTip("Training stops here even if the steps are not done (the "
                                    "result then says so); 0 = no limit.")
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1e-1)
        self.lr_spin.setSingleStep(1e-4)
        self.freeze_check = QCheckBox("freeze encoder")
        self.guard_check = QCheckBox("forgetting guard (L2-SP + replay of uncorrected cases)")
        self.weighted_check = QCheckBox("only edited / reviewed regions count")
        self.adapt_first_check = QCheckBox("adapt to the project's images first")
        self.threshold_check = QCheckBox("re-choose the threshold on the corrected cases")
        self.holdout_spin = QSpinBox()
        self.holdout_spin.setRange(_AUTO, 50)
        self.holdout_spin.setSpecialValueText(f"auto (1 in {HOLDOUT_SHARE})")  # at _AUTO
        self.device_combo = QComboBox()
        _warmup.fill_devices(self.device_combo)  # torch is imported in the warm-up thread
        self.start_button = QPushButton("Start fine-tuning")
        self.stop_button = QPushButton("Stop (keep the weights so far)")
        self.stop_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.plot = CurvePlot()
        self.progress_area = ProgressArea()  # progress bar, status (step and ETA), last error
        self.eta_label = self.progress_area.status
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["held-back case", "previous", "new"])
        self.table.setMaximumHeight(140)
        # a 480 px dock: case names take the room left by the two scores, cut in the middle
        self.table.verticalHeader().setVisible(False)
        self.table.setTextElideMode(Qt.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for col in (1, 2):
            header.setSectionResizeMode(col, QHeaderView.ResizeToContents)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.promote_button = QPushButton("Promote new version")
        self.keep_button = QPushButton("Keep previous")
        self.promote_button.clicked.connect(self.promote)
        self.keep_button.clicked.connect(self.keep_previous)
        self.repredict_button = QPushButton("Re-predict uncorrected cases (active model)")
        self.repredict_button.clicked.connect(self.repredict)
        self.adapt_button = QPushButton("Adapt to the project's images (no labels)")
        self.adapt_button.setToolTip(
            "For images from another scanner or camera: re-estimate the active model's "
            "batch-norm statistics on every case of the project (seconds; learned weights are "
            "kept). The result is a new version, compared on the corrected cases, to promote "
            "or not.")
        self.adapt_button.clicked.connect(self.adapt)

        form = QFormLayout()
        form.addRow("steps", self.steps_spin)
        form.addRow("time cap", self.budget_spin)
        form.addRow("learning rate", self.lr_spin)
        form.addRow("", self.freeze_check)
        form.addRow("", self.guard_check)
        form.addRow("", self.weighted_check)
        form.addRow("", self.adapt_first_check)
        form.addRow("", self.threshold_check)
        form.addRow("held-back cases", self.holdout_spin)
        form.addRow("device", self.device_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.adapt_button)
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        layout.addLayout(row)
        layout.addWidget(self.plot)
        layout.addWidget(self.progress_area)
        layout.addWidget(self.table)
        layout.addWidget(self.verdict)
        row = QHBoxLayout()
        row.addWidget(self.promote_button)
        row.addWidget(self.keep_button)
        layout.addLayout(row)
        layout.addWidget(self.repredict_button)
        layout.addStretch(1)

    def _update_enabled(self) -> None:
        running = self.job is not None and self.job.running
        has_project = self.state.project is not None
        self.start_button.setEnabled(has_project and not running)
        self.stop_button.setEnabled(running)
        self.repredict_button.setEnabled(has_project and not running)
        self.adapt_button.setEnabled(has_project and not running)
        pending = self.outcome is not None and not running
        self.promote_button.setEnabled(pending)
        self.keep_button.setEnabled(pending)

    def _project_changed(self) -> None:
        if self.job is None or not self.job.running:
            self.show_settings(default_round_settings(None, self.state.project))
        self._update_enabled()

    def _follow_cases(self, project: Any) -> None:
        """Steps for the project's cases as they are now: a project created empty (2D
        defaults) and then given 3D cases gets the 3D default, unless the user set the steps."""
        fresh = default_round_settings(None, project)
        if fresh.steps != self._defaults.steps and self.steps_spin.value() == self._defaults.steps:
            self._defaults = replace(self._defaults, steps=fresh.steps)
            self.steps_spin.setValue(fresh.steps)

    def show_settings(self, settings: RoundSettings) -> None:
        """Set the options to ``settings`` (the defaults of the open project)."""
        self._defaults = settings
        self.steps_spin.setValue(settings.steps)
        self.budget_spin.setValue(int(round(settings.time_cap_s or 0)))
        self.lr_spin.setValue(settings.lr)
        self.freeze_check.setChecked(settings.train_layers == "decoder")
        self.guard_check.setChecked(settings.l2sp > 0 or settings.replay_fraction > 0)
        self.weighted_check.setChecked(settings.only_edited)
        self.adapt_first_check.setChecked(settings.adapt_first)
        self.threshold_check.setChecked(settings.choose_threshold)
        self.holdout_spin.setValue(_AUTO if settings.holdout is None else settings.holdout)

    def settings(self) -> RoundSettings:
        """The :class:`~napari_drunet.core.correction.round.RoundSettings` of the options; the
        forgetting guard uses the defaults' L2-SP and replay share."""
        guard, base = self.guard_check.isChecked(), self._defaults
        return replace(base, steps=self.steps_spin.value(),
                       time_cap_s=float(self.budget_spin.value()) or None,
                       lr=float(self.lr_spin.value()),
                       train_layers="decoder" if self.freeze_check.isChecked() else "all",
                       l2sp=base.l2sp if guard else 0.0,
                       replay_fraction=base.replay_fraction if guard else 0.0,
                       only_edited=self.weighted_check.isChecked(),
                       adapt_first=self.adapt_first_check.isChecked(),
                       choose_threshold=self.threshold_check.isChecked(),
                       holdout=None if self.holdout_spin.value() == _AUTO else
                       self.holdout_spin.value(),
                       device=self.device_combo.currentText(),
                       train_options={**base.train_options, **self.extra_config})

    # ------------------------------------------------------------------ training
    def start(self) -> Job | None:
        """Snapshot the corrections and run a correction round on a copy of the active model
        in a worker (the new version is saved, then Promote / Keep previous)."""
        if self.job is not None and self.job.running:
            return None
        try:
            project = self._project()
            self._follow_cases(project)
            settings = self.settings().validate()
            rounds.check_ready(project)
        except DrunetError as exc:
            report_error(exc, area=self.progress_area)
            return None
        state = self.state

        def job_gen(job: Job):
            model = state.get_model(PROJECT_ACTIVE, settings.device)
            return (yield from rounds.correction_round(project, model, settings,
                                                       should_stop=job.should_stop))

        train, held = project.feedback.plan_holdout(settings.holdout, settings.seed)
        return self._launch(job_gen, "DRU-Net fine-tuning", settings.device,
                            f"fine-tuning on {len(train)} corrected case(s), "
                            f"{len(held)} held back…")

    def _project(self) -> Any:
        """The open project with an active version, pending edits saved (DataError if none)."""
        project = self.state.project
        if project is None:
            raise DataError("open a corrections project first")
        if project.versions.active is None:
            raise DataError("the project has no model yet: add a segmented case first")
        self.state.flush_edits()
        return project

    def _launch(self, job_gen: Any, desc: str, device: str, status: str) -> Job:
        """Run ``job_gen`` in a worker as a new run; its result goes to :meth:`_finished`."""
        self.outcome = None
        self._outcome_device = device
        self.plot.clear()  # the previous run's curves
        self.table.setRowCount(0)
        self.verdict.setText(status)
        self._run_id += 1
        run_id = self._live_run = self._run_id

        def ended() -> None:
            if self._live_run == run_id:
                self._live_run = None  # progress records queued behind the end are stale
            self._update_enabled()

        self.job = start_job(job_gen, desc=desc, owner=self, area=self.progress_area,
                             keep_partial=True,
                             on_progress=lambda rec: self._progress(rec, run_id),
                             on_done=self._finished, on_finished=ended)
        self._guard_close(self.job)
        self._update_enabled()
        return self.job

    def _guard_close(self, job: Job) -> None:
        """Closing the viewer window while ``job`` runs asks (user) or stops it (script),
        keeping the best weights so far, and waits for it to end."""
        guard = CloseGuard(self.window(), job.desc, lambda: job.running and not job.ended.is_set(),
                           lambda: job.stop(hard=False), job.wait)
        job.ended_callbacks.append(guard.remove)

    def stop(self) -> None:
        """Stop training at the next step; the best weights so far are kept (they are still
        compared on the held-back cases and saved: "stopped" once that is done)."""
        if self.job is not None and self.job.running:
            self.job.stop(hard=False)
            self.eta_label.setText("stopping… (the best weights so far are kept)")

    def _progress(self, rec: Any, run_id: int | None = None) -> None:
        """Plot and show one progress record of run ``run_id`` (late or stale ones ignored)."""
        if run_id is None or run_id != self._live_run:
            return
        if self.job is not None and self.job.should_stop():
            self.eta_label.setText(f"stopping… {rec.message}")
            return
        m = rec.metrics or {}
        if "loss" in m:
            self.plot.add_point("loss", rec.step, m["loss"])
        if m.get("val_dice") is not None:
            self.plot.add_point("val Dice", rec.step, m["val_dice"])
        eta = m.get("eta_s")
        total = f"/{rec.total}" if rec.total else ""
        self.eta_label.setText(f"step {rec.step}{total}" +
                               (f", about {eta:.0f} s left" if eta is not None else "") +
                               (f" — {rec.message}" if rec.message else ""))

    def _finished(self, out: RoundOutcome | AdaptationOutcome) -> None:
        self._live_run = None  # "done" stays: a progress record delivered later is ignored
        self.outcome = out
        cmp = out.comparison
        trained = isinstance(out, RoundOutcome)
        self.table.setRowCount(0)
        self.table.setHorizontalHeaderLabels(  # an adaptation is judged on every corrected case
            ["held-back case" if trained else "corrected case", "previous", "new"])
        rows = list(cmp.cases.items())
        if cmp.new is not None:
            rows.append(("mean", {"old": cmp.old, "new": cmp.new}))
        for name, d in rows:
            r = self.table.rowCount()
            self.table.insertRow(r)
            for col, text in enumerate((name, f"{d['old']:.4f}", f"{d['new']:.4f}")):
                self.table.setItem(r, col, QTableWidgetItem(text))
        advice = {True: "promotion recommended", False: "NOT recommended (worse on held-back "
                  "cases)", None: "cannot tell (no held-back case)"}[cmp.recommend]
        self.verdict.setText(f"{out.summary()} {advice}.")
        end = "done"
        if trained and out.stop_reason == "cancelled":
            end = "stopped (best weights so far kept)"
        elif trained and out.time_capped:
            end = f"stopped by the time cap after {out.steps} of {out.planned_steps} steps"
        self.eta_label.setText(end)
        self.state.versions_changed.emit()
        self._update_enabled()

    def promote(self) -> None:
        """Make the new version active and swap it in as the live model (GUI thread)."""
        out = self.outcome
        if out is None:
            return
        project = self.state.project
        project.versions.set_active(out.version)
        self.state.put_model(project.versions.path(out.version), self._outcome_device, out.model)
        self.outcome = None
        self.verdict.setText(f"{out.version} is now active (revert: Model versions widget)")
        self.state.versions_changed.emit()
        self.state.model_changed.emit(out.version)
        self._update_enabled()

    def keep_previous(self) -> None:
        """Keep the previous version active (the new one stays listed and can be promoted)."""
        out = self.outcome
        if out is None:
            return
        self.outcome = None
        self.verdict.setText(f"kept {self.state.project.versions.active}; {out.version} is "
                             "available in the Model versions widget")
        self._update_enabled()

    # ------------------------------------------------------------------ adapt (no labels)
    def adapt(self) -> Job | None:
        """Re-estimate the active model's batch-norm statistics on every project case in a
        worker; the result is a new version compared on the corrected cases (no label is used
        to adapt, so all of them can judge it), then Promote / Keep previous as after training."""
        if self.job is not None and self.job.running:
            return None
        try:
            project = self._project()
        except DrunetError as exc:
            report_error(exc, area=self.progress_area)
            return None
        device, state = self.device_combo.currentText(), self.state

        def job_gen(job: Job):
            model = state.get_model(PROJECT_ACTIVE, device)
            return (yield from rounds.adaptation_round(project, model, device,
                                                       should_stop=job.should_stop))

        judged = sum(project.is_corrected(n) for n in project.cases())
        return self._launch(job_gen, "adapting to the project's images", device,
                            f"adapting to {len(project.cases())} image(s), compared on "
                            f"{judged} corrected case(s)…")

    # ------------------------------------------------------------------ re-predict
    def repredict(self) -> Job | None:
        """Re-segment every case the user has not touched yet with the active model."""
        project = self.state.project
        if project is None or project.versions.active is None:
            report_error(DataError("the project has no active model"), area=self.progress_area)
            return None
        if not project.feedback.uncorrected_cases():
            show_info("every case has corrections; nothing to re-predict")
            return None
        device, state, vid = self.device_combo.currentText(), self.state, project.versions.active

        def job_gen(job: Job):
            model = state.get_model(PROJECT_ACTIVE, device)
            return (yield from rounds.repredict_cases(project, model, vid,
                                                      should_stop=job.should_stop))

        self.job = start_job(job_gen, desc="re-predicting uncorrected cases", owner=self,
                             area=self.progress_area, on_done=self._repredicted,
                             on_finished=self._update_enabled)
        self._guard_close(self.job)
        self._update_enabled()
        return self.job

    def _repredicted(self, out: RepredictOutcome) -> None:
        for name in out.done:
            self.state.case_updated.emit(name)
        self.state.cases_changed.emit()
        msg = f"re-predicted {len(out.done)} case(s) with {out.version}"
        (show_warning if out.skipped else show_info)(
            msg + (f"; {len(out.skipped)} got edits meanwhile and were kept"
                   if out.skipped else ""))
