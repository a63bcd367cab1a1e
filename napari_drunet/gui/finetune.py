"""Fine-tune widget: train on the project's corrections in the background, compare, promote."""

from __future__ import annotations

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

from ..core.errors import DataError, DrunetError
from . import _warmup
from ._plot import CurvePlot
from ._progress import CloseGuard, ProgressArea
from ._state import PROJECT_ACTIVE, get_state, unwrap_viewer
from ._workers import Job, report_error, start_job


class FinetuneWidget(QWidget):
    """Options, Start/Stop, live loss + validation Dice, then Promote or Keep previous."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = unwrap_viewer(napari_viewer)
        self.state = get_state(napari_viewer)
        self.job: Job | None = None
        self.outcome: dict[str, Any] | None = None
        self.extra_config: dict[str, Any] = {}  # advanced TrainConfig overrides (scripts, tests)
        self._run_id = 0  # id of the latest training run
        self._live_run: int | None = None  # run whose progress is shown (None once finished)
        self._build()
        self.state.project_changed.connect(self._update_enabled)
        self._update_enabled()

    def _build(self) -> None:
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100000)
        self.steps_spin.setValue(150)
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(0, 24 * 3600)
        self.budget_spin.setValue(240)
        self.budget_spin.setSuffix(" s")
        self.budget_spin.setSpecialValueText("no limit")
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1e-1)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(3e-4)
        self.freeze_check = QCheckBox("freeze encoder")
        self.guard_check = QCheckBox("forgetting guard (L2-SP + replay of uncorrected cases)")
        self.guard_check.setChecked(True)
        self.weighted_check = QCheckBox("only edited / reviewed regions count")
        self.weighted_check.setChecked(True)
        self.holdout_spin = QSpinBox()
        self.holdout_spin.setRange(0, 50)
        self.holdout_spin.setValue(1)
        self.device_combo = QComboBox()
        _warmup.fill_devices(self.device_combo)  # torch is imported in the warm-up thread
        self.start_button = QPushButton("Start fine-tuning")
        self.stop_button = QPushButton("Stop (keep best so far)")
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
        form.addRow("max steps", self.steps_spin)
        form.addRow("time budget", self.budget_spin)
        form.addRow("learning rate", self.lr_spin)
        form.addRow("", self.freeze_check)
        form.addRow("", self.guard_check)
        form.addRow("", self.weighted_check)
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

    def config(self) -> Any:
        """The ``TrainConfig`` built from the options."""
        from ..core.training import default_finetune_config

        guard = self.guard_check.isChecked()
        opts = dict(max_steps=self.steps_spin.value(),
                    time_budget=float(self.budget_spin.value()) or None,
                    lr=float(self.lr_spin.value()), freeze_encoder=self.freeze_check.isChecked(),
                    l2sp=1e-3 if guard else 0.0, replay_fraction=0.25 if guard else 0.0,
                    only_weighted=self.weighted_check.isChecked(),
                    device=self.device_combo.currentText())
        opts.update(self.extra_config)
        return default_finetune_config(**opts)

    # ------------------------------------------------------------------ training
    def start(self) -> Job | None:
        """Snapshot the corrections and fine-tune a copy of the active model in a worker."""
        if self.job is not None and self.job.running:
            return None
        try:
            project, parent = self._project_and_parent()
            cfg = self.config()
            train_names, hold = project.split_holdout(self.holdout_spin.value())
            if not train_names:
                raise DataError("no corrected case yet: edit or mark a case reviewed first")
            if not project.uncorrected_cases():
                cfg.replay_fraction = 0.0
        except DrunetError as exc:
            report_error(exc, area=self.progress_area)
            return None
        device, state = cfg.device, self.state

        def job_gen(job: Job):
            from ..core.progress import Progress
            from ..core.training import finetune_iter

            yield Progress(0, None, "loading the corrected cases")
            # snapshot of the corrections as saved now; later edits go to the next round
            train = project.corrected_cases(cfg.only_weighted, names=train_names)
            val = project.corrected_cases(False, names=hold)
            replay = project.replay_cases() if cfg.replay_fraction > 0 else []
            base = state.get_model(PROJECT_ACTIVE, device)
            result = yield from finetune_iter(base, train, cfg, replay_cases=replay or None,
                                              val_cases=val, should_stop=job.should_stop)
            cmp = yield from project.compare_versions_iter(result.model, base, hold,
                                                           device=device)
            metrics = {"best_val_dice": result.best_val_dice, "holdout_dice": cmp["new"],
                       "holdout_dice_parent": cmp["old"], "steps": result.steps,
                       "seconds": round(result.seconds, 1), "stop_reason": result.stop_reason}
            vid = project.add_model_version(result.model, parent=parent, metrics=metrics,
                                            data=[c.name for c in train],
                                            source=f"fine-tuned from {parent}")
            return {"version": vid, "parent": parent, "model": result.model,
                    "result": result, "comparison": cmp, "device": device}

        return self._launch(job_gen, "DRU-Net fine-tuning",
                            f"training on {len(train_names)} case(s), {len(hold)} held back…")

    def _project_and_parent(self) -> tuple[Any, str]:
        """The open project and its active version, pending edits saved (DataError if none)."""
        project = self.state.project
        if project is None:
            raise DataError("open a corrections project first")
        parent = project.active_version
        if parent is None:
            raise DataError("the project has no model yet: add a segmented case first")
        self.state.flush_edits()
        return project, parent

    def _launch(self, job_gen: Any, desc: str, status: str) -> Job:
        """Run ``job_gen`` in a worker as a new run; its result goes to :meth:`_finished`."""
        self.outcome = None
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

    def _finished(self, out: dict[str, Any]) -> None:
        self._live_run = None  # "done" stays: a progress record delivered later is ignored
        self.outcome = out
        cmp = out["comparison"]
        self.table.setRowCount(0)
        self.table.setHorizontalHeaderLabels(  # an adaptation is judged on every corrected case
            ["held-back case" if out["result"] is not None else "corrected case", "previous",
             "new"])
        rows = list(cmp["cases"].items())
        if cmp["new"] is not None:
            rows.append(("mean", {"old": cmp["old"], "new": cmp["new"]}))
        for name, d in rows:
            r = self.table.rowCount()
            self.table.insertRow(r)
            for col, text in enumerate((name, f"{d['old']:.4f}", f"{d['new']:.4f}")):
                self.table.setItem(r, col, QTableWidgetItem(text))
        res = out["result"]
        advice = {True: "promotion recommended", False: "NOT recommended (worse on held-back "
                  "cases)", None: "cannot tell (no held-back case)"}[cmp["recommend"]]
        how = (f"{res.steps} steps, {res.stop_reason}" if res is not None else
               f"statistics of {out['adapted']} image(s)")
        self.verdict.setText(f"saved {out['version']} (parent {out['parent']}, {how}). "
                             f"{cmp['reason']}. {advice}.")
        self.eta_label.setText("stopped (best weights so far kept)" if res is not None and
                               res.stop_reason == "cancelled" else "done")
        self.state.versions_changed.emit()
        self._update_enabled()

    def promote(self) -> None:
        """Make the new version active and swap it in as the live model (GUI thread)."""
        out = self.outcome
        if out is None:
            return
        project = self.state.project
        project.set_active(out["version"])
        self.state.put_model(project.version_path(out["version"]), out["device"], out["model"])
        self.outcome = None
        self.verdict.setText(f"{out['version']} is now active (revert: Model versions widget)")
        self.state.versions_changed.emit()
        self.state.model_changed.emit(out["version"])
        self._update_enabled()

    def keep_previous(self) -> None:
        """Keep the previous version active (the new one stays listed and can be promoted)."""
        out = self.outcome
        if out is None:
            return
        self.outcome = None
        self.verdict.setText(f"kept {self.state.project.active_version}; {out['version']} is "
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
            project, parent = self._project_and_parent()
            names = project.cases()
            judged = [n for n in names if project.is_corrected(n)]
        except DrunetError as exc:
            report_error(exc, area=self.progress_area)
            return None
        device, state = self.device_combo.currentText(), self.state

        def job_gen(job: Job):
            from ..core.adapt import LazyImages, adapt_batchnorm_iter

            base = state.get_model(PROJECT_ACTIVE, device)
            images = LazyImages(names, lambda n: project.load_case(n).image)
            model = yield from adapt_batchnorm_iter(base, images, device=device)
            cmp = yield from project.compare_versions_iter(model, base, judged, device=device)
            metrics = {"holdout_dice": cmp["new"], "holdout_dice_parent": cmp["old"],
                       "adaptation": model.meta["adaptation"]}
            vid = project.add_model_version(
                model, parent=parent, metrics=metrics, data=list(names),
                source=f"batch-norm statistics of {parent} re-estimated on {len(names)} "
                       "project image(s)")
            return {"version": vid, "parent": parent, "model": model, "result": None,
                    "adapted": len(names), "comparison": cmp, "device": device}

        return self._launch(job_gen, "adapting to the project's images",
                            f"adapting to {len(names)} image(s), compared on {len(judged)} "
                            "corrected case(s)…")

    # ------------------------------------------------------------------ re-predict
    def repredict(self) -> Job | None:
        """Re-segment every case the user has not touched yet with the active model."""
        project = self.state.project
        if project is None or project.active_version is None:
            report_error(DataError("the project has no active model"), area=self.progress_area)
            return None
        names = project.uncorrected_cases()
        if not names:
            show_info("every case has corrections; nothing to re-predict")
            return None
        device, state, vid = self.device_combo.currentText(), self.state, project.active_version

        def job_gen(job: Job):
            from ..core.progress import Progress

            model = state.get_model(PROJECT_ACTIVE, device)
            done, skipped = [], []
            for i, name in enumerate(names):
                if job.should_stop():  # the window closes: keep what is done
                    break
                yield Progress(i, len(names), f"re-predicting {name}")
                pred = yield from model.predict_iter(project.load_case(name).image)
                try:
                    project.update_prediction(name, pred.mask, pred.probabilities, vid)
                    done.append(name)
                except DataError:  # corrected meanwhile: keep the user's edits
                    skipped.append(name)
            return done, skipped

        self.job = start_job(job_gen, desc="re-predicting uncorrected cases", owner=self,
                             area=self.progress_area, on_done=self._repredicted,
                             on_finished=self._update_enabled)
        self._guard_close(self.job)
        self._update_enabled()
        return self.job

    def _repredicted(self, out: tuple[list[str], list[str]]) -> None:
        done, skipped = out
        project = self.state.project
        for name in done:
            self.state.case_updated.emit(name)
        self.state.cases_changed.emit()
        msg = f"re-predicted {len(done)} case(s) with {project.active_version}"
        (show_warning if skipped else show_info)(
            msg + (f"; {len(skipped)} got edits meanwhile and were kept" if skipped else ""))
