"""Fine-tune widget: Stop keeps the best so far, Keep previous, re-predict; autosave on removal."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet.core.correction.project import Project
from napari_drunet.core.correction.round import AdaptationOutcome
from napari_drunet.core.models.model import load_model
from napari_drunet.gui._state import get_state
from napari_drunet.gui.corrections import CorrectionsWidget
from napari_drunet.gui.finetune import FinetuneWidget

from .conftest import show_case

pytestmark = pytest.mark.gui
WAIT = 60_000


@pytest.fixture
def project(corrected_project):
    return corrected_project


def test_stop_keeps_best_and_keep_previous(make_napari_viewer, qtbot, project, errors):
    viewer = make_napari_viewer()
    get_state(viewer).set_project(project)
    ft = FinetuneWidget(viewer)
    ft.steps_spin.setValue(100000)
    ft.budget_spin.setValue(0)  # no time limit: only Stop ends it
    ft.extra_config = {"batch_size": 2, "patch_size": (32, 32), "num_threads": 1}
    job = ft.start()
    assert job is not None and ft.stop_button.isEnabled() and not ft.start_button.isEnabled()
    qtbot.waitUntil(lambda: len(ft.plot.series.get("loss", [])) >= 2, timeout=WAIT)
    ft.stop()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    out = ft.outcome
    assert out.stop_reason == "cancelled" and out.steps < 100000
    assert out.version == "v002" and project.versions.get("v002")["metrics"]["stop_reason"] == \
        "cancelled"
    assert set(project.versions.get("v002")["data"]) | set(project.feedback.holdout) == {"c0", "c1"}
    assert ft.promote_button.isEnabled()
    ft.keep_previous()
    assert project.versions.active == "v001" and not ft.promote_button.isEnabled()
    assert errors == []


def test_repredict_updates_untouched_cases_only(make_napari_viewer, qtbot, project, make_model,
                                                errors):
    viewer = make_napari_viewer()
    corr = CorrectionsWidget(viewer)
    get_state(viewer).set_project(project)
    layer = show_case(qtbot, corr, "c2")  # shown and tracked, but not edited
    other = load_model(make_model("other.safetensors", seed=5), "cpu")
    vid = project.versions.add(other, parent="v001", activate=True)
    ft = FinetuneWidget(viewer)
    before0 = project.load_case("c0").correction.copy()
    job = ft.repredict()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    expect = other.predict(project.load_case("c2").image).mask
    np.testing.assert_array_equal(project.load_case("c2").prediction, expect)
    assert project.case_meta("c2")["model_version"] == vid
    assert corr.update_job is not None  # the open case is read in a worker, then shown
    qtbot.waitUntil(lambda: not corr.update_job.running, timeout=WAIT)
    assert corr.update_job.error is None, corr.update_job.error
    np.testing.assert_array_equal(layer.data, expect)  # the open layer shows the new prediction
    np.testing.assert_array_equal(project.load_case("c0").correction, before0)  # edits kept
    corr.flush()
    np.testing.assert_array_equal(project.load_case("c2").correction, expect)
    assert project.case_meta("c2")["edited_fraction"] == 0.0
    assert errors == []


def test_edit_then_remove_layer_is_saved(make_napari_viewer, qtbot, project):
    viewer = make_napari_viewer()
    corr = CorrectionsWidget(viewer)
    get_state(viewer).set_project(project)
    layer = show_case(qtbot, corr, "c2")
    layer.data[3:7, 3:7] = 5
    layer.refresh()
    viewer.layers.remove(layer)  # before the debounce timer fired
    assert corr.tracker is None
    assert (Project.open(project.folder).load_case("c2").correction[3:7, 3:7] == 5).all()


def test_late_progress_does_not_overwrite_done(make_napari_viewer, qtbot, project, monkeypatch,
                                               errors):
    from napari_drunet.core.progress import Progress
    from napari_drunet.gui import finetune

    captured = []
    real_start = finetune.start_job

    def start_job(factory, **kw):  # keep the progress callback, as a queued signal would
        captured.append(kw["on_progress"])
        return real_start(factory, **kw)

    monkeypatch.setattr(finetune, "start_job", start_job)
    viewer = make_napari_viewer()
    get_state(viewer).set_project(project)
    ft = FinetuneWidget(viewer)
    ft.steps_spin.setValue(2)
    ft.extra_config = {"batch_size": 2, "patch_size": (32, 32), "num_threads": 1}
    job = ft.start()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    assert ft.eta_label.text() == "done"
    points = {k: list(v) for k, v in ft.plot.series.items()}
    captured[0](Progress(2, 2, "validating", {"loss": 0.1, "val_dice": 0.5}))  # arrives late
    assert ft.eta_label.text() == "done"
    assert {k: list(v) for k, v in ft.plot.series.items()} == points
    metrics = project.versions.get(ft.outcome.version)["metrics"]
    assert metrics["holdout_dice"] == pytest.approx(ft.outcome.comparison.new)
    assert errors == []


def test_adapt_to_project_images_then_promote(make_napari_viewer, qtbot, project, errors):
    """"Adapt to the project's images": a new version whose batch-norm statistics come from
    every project case (weights kept), compared on the corrected cases, then promoted."""
    from napari_drunet.core.train.adapt import batchnorm_layers

    viewer = make_napari_viewer()
    get_state(viewer).set_project(project)
    ft = FinetuneWidget(viewer)
    assert ft.adapt_button.isEnabled()
    ft.plot.add_point("loss", 1, 0.5)  # a curve left from an earlier fine-tuning run
    job = ft.adapt()
    assert ft.plot.series.get("loss", []) == []
    assert job is not None and not ft.adapt_button.isEnabled()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    out = ft.outcome
    assert out.version == "v002" and isinstance(out, AdaptationOutcome) and out.images == 3
    assert set(out.comparison.cases) == {n for n in project.cases()
                                               if project.is_corrected(n)} != set()
    entry = project.versions.get("v002")
    assert entry["data"] == ["c0", "c1", "c2"] and entry["metrics"]["adaptation"]["images"] == 3
    assert "statistics of 3 image(s)" in ft.verdict.text()
    assert ft.table.horizontalHeaderItem(0).text() == "corrected case"
    assert ft.table.rowCount() == len(out.comparison.cases) + 1  # + the mean row
    old, new = load_model(project.versions.path("v001"), "cpu"), out.model
    bn_old, bn_new = batchnorm_layers(old.network)[0], batchnorm_layers(new.network)[0]
    assert not np.allclose(bn_old.running_mean.numpy(), bn_new.running_mean.numpy())
    np.testing.assert_array_equal(bn_old.weight.detach().numpy(), bn_new.weight.detach().numpy())
    ft.promote()
    assert project.versions.active == "v002" and ft.adapt_button.isEnabled()
    assert errors == []


def test_start_runs_the_core_round_with_the_widget_options(make_napari_viewer, qtbot, project,
                                                            monkeypatch, errors):
    """The widget gathers options and calls core.correction_round.correction_round (the
    function the benchmarks and `drunet project finetune` call): its spin boxes start at
    default_round_settings() and what they say reaches the core."""
    from dataclasses import replace

    from napari_drunet.core.correction import round as rounds

    calls = []
    real = rounds.correction_round

    def spy(project, model, settings, should_stop=None):
        calls.append(settings)
        return (yield from real(project, model, settings, should_stop))

    monkeypatch.setattr(rounds, "correction_round", spy)
    viewer = make_napari_viewer()
    get_state(viewer).set_project(project)
    ft = FinetuneWidget(viewer)
    defaults = rounds.default_round_settings(None, project)
    assert ft.settings() == replace(defaults, device=ft.device_combo.currentText())
    assert defaults.holdout is None and ft.holdout_spin.text() == "auto (1 in 5)"
    ft.holdout_spin.setValue(2)
    assert ft.settings().holdout == 2
    ft.holdout_spin.setValue(ft.holdout_spin.minimum())
    ft.steps_spin.setValue(3)
    ft.guard_check.setChecked(False)
    ft.threshold_check.setChecked(False)
    ft.extra_config = {"batch_size": 2, "patch_size": (32, 32), "num_threads": 1}
    job = ft.start()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    (settings,) = calls
    assert settings.steps == 3 and settings.l2sp == 0.0 and settings.replay_fraction == 0.0
    assert not settings.choose_threshold and settings.train_options["batch_size"] == 2
    assert ft.outcome.steps == 3 and ft.outcome.threshold is None
    assert errors == []


def test_time_cap_is_shown(make_napari_viewer, qtbot, project, errors):
    viewer = make_napari_viewer()
    get_state(viewer).set_project(project)
    ft = FinetuneWidget(viewer)
    ft.steps_spin.setValue(100000)
    ft.budget_spin.setValue(1)
    ft.extra_config = {"batch_size": 2, "patch_size": (32, 32), "num_threads": 1}
    job = ft.start()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error
    assert ft.outcome.time_capped and ft.eta_label.text().startswith("stopped by the time cap")
    assert "TIME CAP" in ft.verdict.text()
    assert errors == []


def test_round_steps_follow_cases_added_after_the_project_was_created(
        make_napari_viewer, qtbot, tmp_path, monkeypatch, errors):
    """A project created empty shows the 2D default; once it holds 3D cases, Start runs the 3D
    default (a 120-step round of 3D patches hit the time cap after 10 steps on a BraTS
    study) -- but steps the user typed are kept."""
    from napari_drunet.core.correction import round as rounds

    from .conftest import save_tiny_model

    calls = []
    monkeypatch.setattr(rounds, "correction_round",
                        lambda project, model, settings, should_stop=None: calls.append(settings)
                        or iter(()))
    viewer = make_napari_viewer()
    project = Project.create(tmp_path / "proj")
    get_state(viewer).set_project(project)
    ft = FinetuneWidget(viewer)
    assert ft.steps_spin.value() == rounds.ROUND_STEPS[2]
    model = load_model(save_tiny_model(tmp_path / "m3.safetensors", spatial_dims=3), "cpu")
    project.versions.add(model)
    volume = np.random.default_rng(0).random((8, 16, 16)).astype(np.float32)
    project.add_case("v", volume, np.zeros(volume.shape, np.uint8))
    project.mark_reviewed("v", "all")
    project.add_case("w", volume, np.zeros(volume.shape, np.uint8))
    project.mark_reviewed("w", "all")
    job = ft.start()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert calls[-1].steps == rounds.ROUND_STEPS[3] == ft.steps_spin.value()
    ft.steps_spin.setValue(7)
    job = ft.start()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert calls[-1].steps == 7
