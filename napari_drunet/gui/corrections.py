"""Corrections widget: a project folder of cases whose Labels layers are autosaved while edited.

Every Labels layer of a case stays tracked while it is in the viewer (not only the case worked
on last): a stroke on any open case reaches the project within the autosave debounce.

Case files are read and written in a worker (:attr:`CorrectionsWidget.job`): reading the
compressed arrays of a case and writing a new one held the GUI thread 0.2-2 s. Opening a project
or adding a case therefore returns at once; the layers and the autosave follow when the job is
done.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import DataError, DrunetError
from ..core.progress import Progress
from ._autosave import CaseTrackers, Tracker
from ._cases import case_line, read_case, rounds_line, show_record, write_case
from ._layers import slice_index
from ._progress import ProgressArea
from ._state import get_state, unwrap_viewer
from ._workers import Job, report_error, start_job


class CorrectionsWidget(QWidget):
    """Create/open a project, add results as cases, autosave corrections, mark reviewed."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = unwrap_viewer(napari_viewer)
        self.state = get_state(napari_viewer)
        self._trackers = CaseTrackers(self)  # every open case of every project is autosaved
        self._trackers.saved.connect(self._on_saved)
        self._trackers.failed.connect(self._on_failed)
        self.current_case: str | None = None
        self.job: Job | None = None  # the case being read or written
        self.update_job: Job | None = None  # re-predicted cases being read for their layers
        self._updates_pending: set[str] = set()
        self._build()
        self.state.project_changed.connect(self._project_changed)
        self.viewer.layers.events.removing.connect(self._layer_removing)
        self.state.flushers.append(self.flush)
        self.state.cases_changed.connect(self.refresh_cases)
        self.state.case_updated.connect(self._case_updated)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._trackers.drop_all)
        self._project_changed()

    def _build(self) -> None:
        self.path_label = QLabel("no project")
        self.path_label.setWordWrap(True)
        self.new_button = QPushButton("New project…")
        self.open_button = QPushButton("Open project…")
        self.new_button.clicked.connect(lambda: self._choose_folder(create=True))
        self.open_button.clicked.connect(lambda: self._choose_folder(create=False))
        self.add_button = QPushButton("Add current result as case")
        self.add_button.clicked.connect(self.add_current_result)
        self.case_list = QListWidget()
        self.case_list.itemDoubleClicked.connect(lambda item: self.show_case(item.data(256)))
        self.show_button = QPushButton("Show selected case")
        self.show_button.clicked.connect(self._show_selected)
        self.slice_button = QPushButton("Mark slice reviewed")
        self.slice_button.clicked.connect(self.mark_slice_reviewed)
        self.case_button = QPushButton("Mark case reviewed")
        self.case_button.clicked.connect(self.mark_case_reviewed)
        self.uncertain_button = QPushButton("Next most uncertain case")
        self.uncertain_button.clicked.connect(self.next_uncertain_case)
        self.fix_label = QLabel("")
        self.fix_label.setWordWrap(True)
        self.rounds_label = QLabel("")
        self.rounds_label.setWordWrap(True)
        self.progress_area = ProgressArea()  # "opening case…", and the last error

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.new_button)
        row.addWidget(self.open_button)
        layout.addLayout(row)
        layout.addWidget(self.path_label)
        layout.addWidget(self.add_button)
        layout.addWidget(QLabel("cases (double-click to show):"))
        layout.addWidget(self.case_list)
        layout.addWidget(self.show_button)
        row = QHBoxLayout()
        row.addWidget(self.slice_button)
        row.addWidget(self.case_button)
        layout.addLayout(row)
        layout.addWidget(self.uncertain_button)
        layout.addWidget(self.fix_label)
        layout.addWidget(self.rounds_label)
        layout.addWidget(self.progress_area)
        layout.addStretch(1)

    # ------------------------------------------------------------------ project
    def _choose_folder(self, create: bool) -> None:
        title = "New (empty) project folder" if create else "Open project folder"
        folder = QFileDialog.getExistingDirectory(self, title)
        if folder:
            (self.create_project if create else self.open_project)(folder)

    def create_project(self, folder: str | Path) -> Any:
        """Create a project in ``folder`` and make it current."""
        from ..core.correction.project import Project

        try:
            project = Project.create(folder)
        except DrunetError as exc:
            report_error(exc)
            return None
        self._set_project(project)
        return project

    def open_project(self, folder: str | Path) -> Any:
        """Open ``folder``, list its cases and restore the last case into layers.

        Returns the project at once; the last case is read in a worker (:attr:`job`) and its
        layers appear when it is done.
        """
        from ..core.correction.project import Project

        if self._busy():
            return None
        try:
            project = Project.open(folder)
        except DrunetError as exc:
            report_error(exc)
            return None
        self._set_project(project)
        names = project.cases()
        current = project.get_setting("current_case")
        if names:
            self.show_case(current if current in names else names[-1])
        return project

    def _set_project(self, project: Any) -> None:
        self.flush()
        self.current_case = None
        self.state.forget_models()
        self.state.set_project(project)

    @property
    def trackers(self) -> dict[str, Tracker]:
        """Autosaves of the current project's open cases, by case name."""
        return self._trackers.of(self._folder())

    def _folder(self) -> str | None:
        project = self.state.project
        return None if project is None else str(project.folder)

    @property
    def tracker(self) -> Tracker | None:
        """The tracker of the case the buttons act on: the selected case layer, else the last
        case added or shown."""
        active = self.viewer.layers.selection.active
        case = getattr(active, "metadata", {}).get("drunet_case") if active is not None else None
        tracker = self.trackers.get(case) if case else None
        if tracker is not None and tracker.layer is active:
            return tracker
        return self.trackers.get(self.current_case) if self.current_case else None

    def _project_changed(self) -> None:
        project = self.state.project
        self.path_label.setText(str(project.folder) if project is not None else "no project")
        for w in (self.add_button, self.show_button, self.slice_button, self.case_button):
            w.setEnabled(project is not None)
        self.refresh_cases()

    def refresh_cases(self) -> None:
        """Rebuild the case list and the per-round fix summary."""
        self.case_list.clear()
        project = self.state.project
        if project is None:
            self.rounds_label.setText("")
            return
        for name in project.cases():
            self.case_list.addItem(case_line(project, name))
            self.case_list.item(self.case_list.count() - 1).setData(256, name)
        self.rounds_label.setText(rounds_line(project))

    # ------------------------------------------------------------------ cases
    def _require_project(self) -> Any:
        if self.state.project is None:
            raise DataError("create or open a corrections project first")
        return self.state.project

    def add_current_result(self, name: str | None = None) -> str | None:
        """Store the latest segmentation (image, prediction, current labels) as a new case.

        Returns the case name at once; the case files are written in a worker (:attr:`job`)
        and the layer is autosaved from then on (strokes painted meanwhile included).
        """
        if self._busy():
            return None
        try:
            project = self._require_project()
            result = self.state.last_result
            if result is None or result.labels_layer not in self.viewer.layers:
                raise DataError("segment an image first (the result layer is gone)")
            if result.labels_layer.metadata.get("drunet_case"):
                raise DataError(f"this result is already case "
                                f"'{result.labels_layer.metadata['drunet_case']}'")
            name = project.unique_case_name(name or result.image_layers[0])
        except DrunetError as exc:
            report_error(exc, area=self.progress_area)
            return None
        layer = result.labels_layer
        # claimed at once: a new Segment run must not overwrite this layer meanwhile
        layer.metadata["drunet_case"] = name
        current = np.array(layer.data, copy=True)
        geometry = {"scale": [float(s) for s in layer.scale],
                    "translate": [float(t) for t in layer.translate]}
        state, source = self.state, result.model_source
        cached = state.cached_model(source)

        def model() -> Any:  # in the worker: the model that made the result, loaded if need be
            return cached or state.get_model(source, "cpu")

        def failed(exc: BaseException) -> None:
            layer.metadata.pop("drunet_case", None)
            report_error(exc, "adding the case", area=self.progress_area)

        self.job = start_job(lambda job: write_case(project, name, result, current, geometry,
                                                    model),
                             desc=f"adding case '{name}'", owner=self,
                             area=self.progress_area, on_error=failed,
                             on_done=lambda _n: self._case_added(project, name, layer, current))
        return name

    def _case_added(self, project: Any, name: str, layer: Any, saved: np.ndarray) -> None:
        if layer not in self.viewer.layers:
            return  # closed meanwhile: the case keeps what was written
        if project is not self.state.project:  # another project was opened meanwhile
            self._trackers.track(project, name, layer, saved)
            return
        self._track(name, layer, saved)
        self.refresh_cases()
        self.state.versions_changed.emit()
        show_info(f"case '{name}' added; edits to '{layer.name}' are saved automatically")

    def _busy(self) -> bool:
        """A case is being read or written: say so (one job at a time keeps the order)."""
        if self.job is None or not self.job.running:
            return False
        show_info(f"wait a moment: {self.job.desc}…")
        return True

    def _track(self, name: str, layer: Any, saved: np.ndarray | None = None) -> None:
        """Autosave ``layer`` as case ``name`` (the other open cases stay tracked) and make it
        the current case; ``saved``: the mask the project holds, when not the layer's."""
        project = self.state.project
        self._trackers.track(project, name, layer, saved)
        self.current_case = name
        project.set_setting("current_case", name)
        self._show_stats(name)

    def _layer_removing(self, event: Any) -> None:
        layer = self.viewer.layers[event.index] if hasattr(event, "index") else None
        self._trackers.drop_layer(layer)
        if self.current_case not in self.trackers:
            self.current_case = None

    def flush(self) -> None:
        """Write every case's pending edits now and wait for them (before closing, switching,
        training), also a case being added."""
        if self.job is not None and self.job.running:
            self.job.wait(60.0)
        self._trackers.flush()

    def _on_saved(self, tracker: Tracker, stats: dict) -> None:
        if tracker.project is self.state.project:  # a case of another project saves silently
            self._show_stats(tracker.case, stats)
            self.refresh_cases()

    def _on_failed(self, message: str) -> None:
        show_warning(message)

    def _show_stats(self, case: str, stats: dict | None = None) -> None:
        m = self.state.project.case_meta(case)
        stats = stats or m
        self.fix_label.setText(
            f"{case}: how much did I fix — Dice(prediction, correction) "
            f"{stats['fix_dice']:.3f}, {100 * stats['changed_fraction']:.2f}% pixels changed, "
            f"{100 * stats['edited_fraction']:.2f}% edited")

    def next_uncertain_case(self) -> Job | None:
        """Show the unreviewed case whose prediction is the most uncertain (mean entropy).

        Ranking reads every case's stored probabilities, and the chosen case may have to be
        read too: both run in a worker (:attr:`job`); the case is shown when it is done.
        """
        try:
            project = self._require_project()
            self.flush()
        except DrunetError as err:
            report_error(err, area=self.progress_area)
            return None
        if self._busy():
            return None
        current, shown = self.current_case, set(self.trackers) | self._shown_cases()

        def job_gen(job: Job) -> Generator[Progress, None, Any]:
            yield Progress(0, None, "ranking the unreviewed cases by uncertainty")
            ranking = project.uncertainty_ranking()
            ranking = [r for r in ranking if r[0] != current] or ranking
            if not ranking:
                return None
            name, score = ranking[0]
            if name in shown:
                return name, score, None
            yield Progress(0, None, f"reading case '{name}'")
            return name, score, project.load_case(name)

        self.job = start_job(job_gen, desc="finding the most uncertain case", owner=self,
                             area=self.progress_area,
                             on_done=lambda out: self._show_uncertain(project, out))
        return self.job

    def _show_uncertain(self, project: Any, out: tuple[str, float, Any] | None
                        ) -> Iterator[None]:
        if out is None:
            show_info("no unreviewed case with stored probabilities")
            return
        if project is not self.state.project:
            return  # another project was opened meanwhile
        name, score, rec = out
        if rec is None:
            self.show_case(name)  # its layer is open already
        else:
            yield from self._show_record(project, rec)
        show_info(f"{name}: mean predictive entropy {score:.3f} (most uncertain unreviewed case)")

    def _shown_cases(self) -> set[str]:
        """Names of the current project's cases that have a labels layer in the viewer."""
        return {layer.metadata["drunet_case"] for layer in self._project_labels()}

    def show_case(self, name: str) -> Any:
        """Bring case ``name`` into the viewer (reusing its layer if shown) and track it.

        Returns its labels layer when it is in the viewer already; otherwise None: the case is
        read in a worker (:attr:`job`) and shown when read (then :meth:`case_layer`).
        """
        try:
            project = self._require_project()
            self.flush()  # what was painted on the case left is on disk before switching
            tracker = self.trackers.get(name)
            if tracker is not None and tracker.layer in self.viewer.layers:
                self.viewer.layers.selection.active = tracker.layer
                self._track(name, tracker.layer)
                return tracker.layer
            for layer in self._case_layers(name):
                self._track(name, layer)
                return layer
            project.case_meta(name)  # an unknown case fails here, not in the worker
        except DrunetError as exc:
            report_error(exc, area=self.progress_area)
            return None
        if self._busy():
            return None

        self.job = start_job(lambda job: read_case(project, name),
                             desc=f"opening case '{name}'", owner=self,
                             area=self.progress_area,
                             on_done=lambda rec: self._show_record(project, rec))
        return None

    def case_layer(self, name: str) -> Any:
        """The labels layer of case ``name`` of the current project being autosaved, or None."""
        tracker = self.trackers.get(name)
        return None if tracker is None else tracker.layer

    def _show_record(self, project: Any, rec: Any) -> Iterator[None]:
        """Layers of the case ``rec`` just read (one per event-loop turn), then tracked."""
        if project is not self.state.project:
            return  # another project was opened meanwhile
        vid = rec.meta.get("model_version")
        meta = self.state.model_meta(f"project:{vid}") if vid else None
        layer = yield from show_record(self.viewer, rec, meta)
        if project is self.state.project:
            self._track(rec.name, layer)
        else:  # another project was opened meanwhile: the case still saves into its own
            self._trackers.track(project, rec.name, layer)

    def _case_layers(self, name: str) -> list[Any]:
        """The Labels layers showing case ``name`` of the current project."""
        return [layer for layer in self._project_labels()
                if layer.metadata["drunet_case"] == name]

    def _project_labels(self) -> list[Any]:
        """The Labels layers showing a case of the current project."""
        folder = str(self.state.project.folder)
        return [layer for layer in self.viewer.layers if isinstance(layer, Labels)
                and layer.metadata.get("drunet_case")
                and layer.metadata.get("drunet_project") == folder]

    def _case_updated(self, name: str) -> None:
        """A case got a new prediction: show it in its open layers, without autosaving it
        back. Its files are read in a worker (:attr:`update_job`), several cases in one go."""
        if not self._case_layers(name):
            if self.current_case == name:
                self._show_stats(name)
            return
        self._updates_pending.add(name)
        if self.update_job is None or not self.update_job.running:
            self._read_updates()

    def _read_updates(self) -> None:
        project, names = self.state.project, sorted(self._updates_pending)
        self._updates_pending.clear()

        def job_gen(job: Job) -> Generator[Progress, None, dict[str, np.ndarray]]:
            out = {}
            for i, name in enumerate(names):
                yield Progress(i, len(names), f"reading case '{name}'")
                out[name] = project.load_case(name).correction
            return out

        self.update_job = start_job(job_gen, desc="showing the re-predicted cases", owner=self,
                                    area=self.progress_area,
                                    on_done=lambda out: self._apply_updates(project, out),
                                    on_finished=self._after_updates)

    def _apply_updates(self, project: Any, corrections: dict[str, np.ndarray]) -> None:
        if project is not self.state.project:
            return
        for name, correction in corrections.items():
            tracker = self.trackers.get(name)
            for layer in self._case_layers(name):
                ours = tracker if tracker is not None and tracker.layer is layer else None
                if ours is not None:
                    ours.reset(correction)
                layer.data = correction
                if ours is not None:
                    ours.timer.stop()
                    ours.reset(correction)
            if self.current_case == name:
                self._show_stats(name)

    def _after_updates(self) -> None:
        if self._updates_pending:  # more cases were re-predicted while these were read
            self._read_updates()

    def _show_selected(self) -> None:
        item = self.case_list.currentItem()
        if item is not None:
            self.show_case(item.data(256))

    def mark_slice_reviewed(self) -> None:
        """Mark the slice shown (3D) or the whole image (2D) of the current case as reviewed."""
        tracker = self.tracker
        if tracker is None:
            report_error(DataError("no case is being corrected"))
            return
        if tracker.layer.ndim == 2:
            self.mark_case_reviewed()
            return
        z = slice_index(self.viewer, tracker.layer)
        self.flush()
        self.state.project.mark_reviewed(tracker.case, [z])
        self.refresh_cases()
        show_info(f"{tracker.case}: slice {z} reviewed")

    def mark_case_reviewed(self) -> None:
        """Mark the whole current case as reviewed (all of it counts for training)."""
        tracker = self.tracker
        if tracker is None:
            report_error(DataError("no case is being corrected"))
            return
        self.flush()
        self.state.project.mark_reviewed(tracker.case, "all")
        self.refresh_cases()
        show_info(f"{tracker.case}: reviewed")

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self._trackers.drop_all()
        super().closeEvent(event)
