"""core.correction_round: one correction round on a tiny model and a tiny project."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_drunet.core.correction import round as rounds
from napari_drunet.core.correction.project import Project
from napari_drunet.core.correction.round import (
    AdaptationOutcome,
    RoundOutcome,
    RoundSettings,
    adaptation_round,
    correction_round,
    default_round_settings,
    repredict_cases,
)
from napari_drunet.core.errors import DataError, InputError
from napari_drunet.core.models.model import Model
from napari_drunet.core.progress import drive


def fast(**kw) -> RoundSettings:
    opts = dict(steps=4, holdout=1, device="cpu", time_cap_s=None, min_foreground=0,
                threshold_min_gain=0.0,
                train_options={"batch_size": 2, "patch_size": (32, 32), "num_threads": 1})
    opts.update(kw)
    return RoundSettings(**opts)


@pytest.fixture
def project(tmp_path, make_round_project) -> Project:
    return make_round_project(tmp_path / "proj")


def active(project: Project) -> Model:
    return project.versions.load_active("cpu")


def test_defaults_are_the_widgets(project) -> None:
    d = default_round_settings(active(project), project)
    assert (d.steps, d.lr, d.train_layers, d.l2sp, d.replay_fraction, d.holdout) == \
        (120, 3e-4, "all", 1e-3, 0.25, None)
    assert d.only_edited and d.choose_threshold and not d.adapt_first and d.keep == "last"
    assert d.time_cap_s == 240.0 and d.patch_2d == 128 and default_round_settings() == d
    assert default_round_settings(None, project) == d  # 2D cases: the 2D defaults
    assert d.train_config(replay=True).patch_size == (128, 128)
    cfg = fast(steps=7, seed=5).train_config(replay=False)
    assert (cfg.max_steps, cfg.time_budget, cfg.seed, cfg.replay_fraction) == (7, None, 5, 0.0)
    assert not cfg.freeze_norm and fast(freeze_norm=True).train_config(False).freeze_norm
    with pytest.raises(InputError, match="train_layers"):
        fast(train_layers="middle").validate()
    with pytest.raises(InputError, match="steps and time_cap_s"):
        fast(train_options={"time_budget": 3.0}).validate()
    with pytest.raises(InputError, match="unknown training option"):
        fast(train_options={"batch": 2}).train_config(replay=True)


def test_defaults_follow_the_dimensions(tmp_path) -> None:
    """A 3D model (or, before it is loaded, a project of volumes) gets the 3D steps; the 2D
    patch side does not apply to it."""
    from napari_drunet.core.nets.networks import build_model

    net = build_model("drunet", spatial_dims=3, in_channels=1, out_channels=1, features=(4, 8))
    model = Model(net, {"normalization": {"mode": "zscore"}, "threshold": 0.5}, device="cpu")
    project = Project.create(tmp_path / "vol")
    volume = np.zeros((8, 16, 16), np.float32)
    project.add_case("v0", volume, np.zeros(volume.shape, np.uint8))
    for d in (default_round_settings(model), default_round_settings(None, project)):
        assert d.steps == rounds.ROUND_STEPS[3] < rounds.ROUND_STEPS[2]
        assert d.train_config(replay=False, spatial_dims=3).patch_size is None


def test_outcome_and_compare_before_add(project, monkeypatch) -> None:
    events: list[str] = []
    compare, add = project.versions.compare_iter, project.versions.add

    def spy_compare(*a, **k):
        events.append("compare")
        return (yield from compare(*a, **k))

    def spy_add(*a, **k):
        events.append("add")
        return add(*a, **k)

    monkeypatch.setattr(project.versions, "compare_iter", spy_compare)
    monkeypatch.setattr(project.versions, "add", spy_add)
    records = []
    out = drive(correction_round(project, active(project), fast()), records.append)
    assert events == ["compare", "add"]
    assert isinstance(out, RoundOutcome) and out.version == "v002" and out.parent == "v001"
    assert project.versions.active == "v001"  # saved, not promoted
    assert (out.steps, out.planned_steps, out.stop_reason) == (4, 4, "completed")
    assert not out.time_capped and out.seconds >= out.train_seconds > 0
    assert len(out.holdout_cases) == 1 and sorted(out.train_cases + out.holdout_cases) == \
        ["c0", "c1", "c2"]
    assert out.replay_cases == ["c3"]
    assert set(out.comparison.cases) == set(out.holdout_cases)
    entry = project.versions.get("v002")
    assert entry["metrics"]["holdout_dice"] == pytest.approx(out.holdout_dice)
    assert entry["metrics"]["holdout_dice_parent"] == pytest.approx(out.holdout_dice_parent)
    assert entry["metrics"]["stop_reason"] == "completed" and entry["metrics"]["steps"] == 4
    assert entry["data"] == out.train_cases and entry["parent"] == "v001"
    assert any("loss" in r.metrics for r in records)
    assert "saved v002" in out.summary() and "TIME CAP" not in out.summary()


def test_keep_last_or_best_and_the_training_options_reach_the_run(project) -> None:
    """``keep="last"``: the held-back case only judges (no validation during training, the
    weights of the last step); ``"best"``: it is validated from step 0 on. The patch the
    fine-tuning runs with is ``train_options``' or ``patch_2d``'s."""
    last = drive(correction_round(project, active(project), fast(steps=3)))
    training = last.model.meta["training"]
    assert last.best_val_dice is None and not any("val_dice" in h for h in training["history"])
    assert training["config"]["patch_size"] == [32, 32] and last.comparison.new is not None
    best = drive(correction_round(project, active(project), fast(
        steps=3, keep="best", patch_2d=16, train_options={"batch_size": 2})))
    validated = [h["step"] for h in best.model.meta["training"]["history"] if "val_dice" in h]
    assert validated[0] == 0 and best.best_val_dice is not None
    assert best.model.meta["training"]["config"]["patch_size"] == [16, 16]
    with pytest.raises(InputError, match="keep must be"):
        fast(keep="first").validate()
    assert fast(patch_2d=16, train_options={}).train_config(False, spatial_dims=3).patch_size \
        is None


def test_time_cap_stops_early_and_says_so(project) -> None:
    records = []
    out = drive(correction_round(project, active(project), fast(steps=100000, time_cap_s=0.5)),
                records.append)
    assert out.stop_reason == "time_cap" and out.time_capped and 0 <= out.steps < 100000
    assert "TIME CAP (0.5 s)" in out.summary()
    assert any("time cap of 0.5 s" in r.message for r in records)
    assert project.versions.get(out.version)["metrics"]["stop_reason"] == "time_cap"


def test_user_stop_is_not_a_time_cap(project) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    out = drive(correction_round(project, active(project), fast(steps=100000, time_cap_s=3600),
                                 should_stop=stop))
    assert out.stop_reason == "cancelled" and not out.time_capped


def weights(model: Model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.network.state_dict().items()}


def test_same_seed_same_model(tmp_path, make_round_project) -> None:
    """Nothing held back, so the last weights are kept (not the best validated ones, which
    can be the starting weights whatever the seed)."""
    results = []
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        project = make_round_project(tmp_path / run)
        out = drive(correction_round(project, active(project), fast(seed=seed, holdout=0)))
        results.append((weights(out.model), out.model.threshold))
    (a, ta), (b, tb), (c, _) = results
    assert ta == tb and a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert any(not np.array_equal(a[k], c[k]) for k in a if a[k].dtype.kind == "f")


def test_threshold_rechosen_and_recorded(project) -> None:
    out = drive(correction_round(project, active(project), fast(steps=10)))
    choice = out.threshold
    assert choice is not None and choice.chosen and choice.parent_threshold == pytest.approx(0.37)
    assert choice.cases == out.train_cases and choice.foreground_pixels > 0
    assert choice.dice >= choice.parent_dice  # the best of the grid, which holds 0.37
    saved = project.versions.load(out.version, "cpu")
    assert saved.threshold == pytest.approx(choice.threshold) == out.model.threshold
    assert saved.meta["threshold_choice"]["threshold"] == pytest.approx(choice.threshold)
    assert project.versions.get(out.version)["metrics"]["threshold"] == pytest.approx(choice.threshold)
    image = project.load_case("c3").image
    pred = saved.predict(image)  # predictions with the version use its threshold
    np.testing.assert_array_equal(pred.mask, pred.probabilities[0] >= choice.threshold)


def test_threshold_floor_keeps_the_parents(project) -> None:
    out = drive(correction_round(project, active(project), fast(min_foreground=10 ** 9)))
    assert not out.threshold.chosen and "fewer than" in out.threshold.reason
    assert out.model.threshold == pytest.approx(0.37)
    assert project.versions.load(out.version, "cpu").threshold == pytest.approx(0.37)
    small = drive(correction_round(project, active(project), fast(threshold_min_gain=1.0)))
    assert not small.threshold.chosen and "a gain under 1" in small.threshold.reason
    assert small.model.threshold == pytest.approx(0.37) and small.threshold.dice is not None
    off = drive(correction_round(project, active(project), fast(choose_threshold=False)))
    assert off.threshold is None and off.model.threshold == pytest.approx(0.37)


def test_pooled_best_threshold_known_answer() -> None:
    from napari_drunet.core.evaluation.threshold import pooled_best_threshold

    truth = np.array([1, 1, 0, 0, 0, 0])
    prob = np.array([0.30, 0.25, 0.10, 0.12, 0.50, 0.05])  # one background pixel at 0.5
    t, dice = pooled_best_threshold([prob], [truth])
    assert t == pytest.approx(0.13) and dice == pytest.approx(2 * 2 / (3 + 2))
    weight = np.array([1, 1, 1, 1, 0, 1])  # the 0.5 pixel does not count
    t, dice = pooled_best_threshold([prob], [truth], [weight])
    assert t == pytest.approx(0.13) and dice == pytest.approx(1.0)


def test_adapt_first_and_adaptation_round(project) -> None:
    out = drive(correction_round(project, active(project), fast(adapt_first=True)))
    assert out.adaptation is not None and out.adaptation["images"] == 4
    assert "after adapting" in project.versions.get(out.version)["source"]
    ada = drive(adaptation_round(project, active(project), "cpu"))
    assert isinstance(ada, AdaptationOutcome) and ada.images == 4 and ada.parent == "v001"
    assert set(ada.comparison.cases) == {"c0", "c1", "c2"}
    metrics = project.versions.get(ada.version)["metrics"]
    assert metrics["holdout_dice"] == pytest.approx(ada.comparison.new)
    assert metrics["adaptation"]["images"] == 4 and project.versions.active == "v001"


def test_repredict_cases_keeps_corrections(project) -> None:
    other = project.versions.load("v001", "cpu")
    other.meta["threshold"] = 0.0  # everything foreground: a visible change
    before = project.load_case("c0").correction.copy()
    out = drive(repredict_cases(project, other))
    assert out.done == ["c3"] and out.skipped == [] and out.version == "v001"
    assert project.load_case("c3").prediction.all()
    np.testing.assert_array_equal(project.load_case("c0").correction, before)


def test_round_needs_a_corrected_case(tmp_path, project) -> None:
    empty = Project.create(tmp_path / "empty")
    with pytest.raises(DataError, match="no model"):
        drive(correction_round(empty, None, fast()))
    model = active(project)
    empty.versions.add(model)
    image = project.load_case("c3").image
    empty.add_case("x", image, model.predict(image).mask, model_version="v001")
    with pytest.raises(DataError, match="no corrected case"):
        drive(correction_round(empty, model, fast()))


def test_benchmark_runs_the_core_round(project, monkeypatch, bench_script) -> None:
    """label_efficiency and mri_adaptation (through benchmarks/rounds.py) call the same core
    function as the Fine-tune widget (tests/gui/test_finetune.py checks the widget side)."""
    script, bench_rounds = bench_script("label_efficiency"), bench_script("rounds")
    calls = []
    real = rounds.correction_round

    def spy(*a, **k):
        calls.append(a[2])
        return (yield from real(*a, **k))

    monkeypatch.setattr(rounds, "correction_round", spy)
    args = script.parse_args(["--out", "x", "--max-steps", "3", "--round-budget", "0",
                              "--device", "cpu", "--no-baseline"])
    settings = bench_rounds.gui_round_settings(args)
    assert settings.time_cap_s is None and settings.steps == 3
    base = default_round_settings()
    assert replace(settings, steps=base.steps, time_cap_s=240.0, device="auto") == base
    monkeypatch.setattr(bench_rounds, "gui_round_settings",
                        lambda a: replace(settings, train_options=fast().train_options))
    row = bench_rounds.gui_finetune_round(project, active(project), args)
    assert len(calls) == 1 and calls[0].steps == 3
    assert row["version"] == "v002" and row["finetune_steps"] == 3
    assert row["compare_new"] == pytest.approx(project.versions.get("v002")["metrics"]["holdout_dice"])
