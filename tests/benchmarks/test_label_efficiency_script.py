"""Smoke test of benchmarks/label_efficiency.py: one tiny round on real DRIVE images."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_one_tiny_round(drive_root: Path, tmp_path: Path, capsys,
                        bench_script) -> None:
    script = bench_script("label_efficiency")
    out = tmp_path / "le"
    t0 = time.perf_counter()
    rc = script.main(["--drive", str(drive_root), "--out", str(out), "--features", "8,16",
                      "--patch", "64", "--initial-budget", "3", "--round-budget", "3",
                      "--max-steps", "20", "--rounds", "1", "--k", "1", "--test-ids", "1",
                      "--threads", "1", "--device", "cpu"])
    assert rc == 0
    assert time.perf_counter() - t0 < 60

    data = json.loads((out / "label_efficiency.json").read_text())
    assert data["config"]["rounds"] == 1 and data["config"]["test_ids"] == [1]
    rows = data["rows"]
    assert [r["round"] for r in rows] == [0, 1]
    first, last = rows
    assert first["n_labeled"] == 2 and first["active_version"] == "v001"
    assert first["baseline_test_dice"] == first["test_dice"]
    assert last["n_labeled"] == 3 and last["new_cases"] == ["drive_23"]
    assert 0.0 <= last["changed_pct_fov"] <= 100.0 and 0.0 <= last["fix_dice_fov"] <= 1.0
    case = last["per_case"][0]
    assert case["case"] == "drive_23" and 0.0 <= case["changed_pct_image"] <= 100.0
    # a clinician always has something to fix on a model trained for 3 s
    assert last["changed_pct_fov"] > 0.0 and last["fix_dice_fov"] < 1.0
    for key in ("test_dice", "baseline_test_dice"):
        assert 0.0 <= last[key] <= 1.0
    assert last["version"] == "v002" and last["parent"] == "v001"
    # one corrected case: nothing can be held back, so the GUI cannot tell -> promoted (default)
    assert last["holdout"] == [] and last["recommend"] is None and last["promoted"] is True
    assert last["active_version"] == "v002" and last["train_cases"] == ["drive_23"]
    assert 1 <= last["finetune_steps"] <= 20 and 0 < last["finetune_s"] <= last["round_s"]
    assert last["loop_compute_s"] == pytest.approx(6.0)
    assert last["baseline_budget_s"] == pytest.approx(6.0) and last["baseline_steps"] >= 1

    # the project holds what the GUI would have stored
    from napari_drunet.core.correction.project import Project

    project = Project.open(out / "project")
    assert project.cases() == ["drive_23"] and project.is_corrected("drive_23")
    assert [v["id"] for v in project.versions.entries()] == ["v001", "v002"]
    assert project.versions.get("v002")["data"] == ["drive_23"]
    assert project.case_meta("drive_23")["model_version"] == "v001"

    with open(out / "label_efficiency.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["round"] for r in table] == ["0", "1"]
    assert float(table[1]["test_dice"]) == pytest.approx(last["test_dice"], abs=1e-4)
    assert "baseline_test_dice" in capsys.readouterr().out


@pytest.mark.slow
def test_fixed_steps_are_reproducible(drive_root: Path, tmp_path: Path, bench_script) -> None:
    script = bench_script("label_efficiency")
    rows = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert script.main(["--drive", str(drive_root), "--out", str(out), "--features", "8,16",
                            "--patch", "64", "--initial-steps", "4", "--round-budget", "0",
                            "--max-steps", "3", "--rounds", "1", "--k", "1", "--test-ids", "2",
                            "--threads", "1", "--device", "cpu", "--seed", "3"]) == 0
        data = json.loads((out / "label_efficiency.json").read_text())
        assert data["config"]["baseline_compute"] == "steps"
        rows.append(data["rows"])
    (first, last), (first_b, last_b) = rows
    assert first["loop_steps"] == 4 and first["loop_compute_s"] is None
    assert last["finetune_steps"] == 3 and last["stop_reason"] == "completed"
    assert last["loop_steps"] == 7 and last["baseline_steps"] == 7
    keys = ("test_dice", "changed_pct_fov", "fix_dice_fov", "baseline_test_dice")
    assert [first["test_dice"]] + [last[k] for k in keys] == \
        [first_b["test_dice"]] + [last_b[k] for k in keys]


@pytest.mark.slow
def test_preloaded_folder_with_uncertainty_order(drive_root: Path, tmp_path: Path,
                                                 bench_script) -> None:
    """--preload: all 14 pool images are project cases from the start; the next case is the most
    uncertain one under the active model, and fine-tuning replays the uncorrected ones."""
    script = bench_script("label_efficiency")
    out = tmp_path / "pre"
    assert script.main(["--drive", str(drive_root), "--out", str(out), "--features", "8,16",
                        "--patch", "64", "--initial-steps", "4", "--round-budget", "0",
                        "--max-steps", "3", "--rounds", "1", "--k", "1", "--test-ids", "1",
                        "--threads", "1", "--device", "cpu", "--preload", "--order", "uncertain",
                        "--no-baseline"]) == 0
    from napari_drunet.core.correction.project import Project
    from napari_drunet.core.models.model import load_model

    last = json.loads((out / "label_efficiency.json").read_text())["rows"][-1]
    project = Project.open(out / "project")
    names = [f"drive_{i:02d}" for i in range(23, 37)]
    assert sorted(project.cases()) == names
    (chosen,) = last["new_cases"]
    assert project.is_corrected(chosen) and len(project.feedback.uncorrected_cases()) == 13
    # replay: up to 8 uncorrected cases, never the corrected one
    assert len(last["replay_cases"]) == 8 and chosen not in last["replay_cases"]
    # the chosen case was the most uncertain under the initial model (recomputed here)
    from napari_drunet.core.correction.project import mean_entropy

    initial = load_model(out / "initial.safetensors", "cpu")
    cases = {c.name: c for c in script.load_drive(str(drive_root), list(range(23, 37)),
                                                   "training", tmp_path / "pool.json")}
    entropy = {n: mean_entropy(initial.predict(cases[n].image).probabilities) for n in names}
    assert chosen == max(entropy, key=entropy.get)


@pytest.mark.slow
def test_settings_scored_on_validation_images(drive_root: Path, tmp_path: Path,
                                              bench_script) -> None:
    """--score-on val scores DRIVE training images 37-40 (never the test set); --ft-lr and
    --no-guard change the widget options the fine-tune gets."""
    script, rounds = bench_script("label_efficiency"), bench_script("rounds")
    cfg = rounds.gui_round_settings(script.parse_args(
        ["--out", "x", "--ft-lr", "1e-3", "--no-guard"]))
    assert cfg.lr == pytest.approx(1e-3) and cfg.l2sp == 0.0 and cfg.replay_fraction == 0.0
    default = rounds.gui_round_settings(script.parse_args(["--out", "x"]))
    assert default.lr == pytest.approx(3e-4) and default.l2sp > 0 and default.replay_fraction > 0

    out = tmp_path / "val"
    assert script.main(["--drive", str(drive_root), "--out", str(out), "--features", "8,16",
                        "--patch", "64", "--initial-steps", "4", "--round-budget", "0",
                        "--max-steps", "2", "--rounds", "1", "--k", "1", "--score-on", "val",
                        "--threads", "1", "--device", "cpu", "--preload", "--no-guard",
                        "--no-baseline"]) == 0
    data = json.loads((out / "label_efficiency.json").read_text())
    assert data["config"]["test_ids"] == [37, 38, 39, 40]
    first, last = data["rows"]
    assert last["replay_cases"] == []  # no guard: no replay of uncorrected cases
    from napari_drunet.core.models.model import load_model

    initial = load_model(out / "initial.safetensors", "cpu")
    val = script.load_drive(str(drive_root), [37, 38, 39, 40], "training", tmp_path / "v.json")
    assert first["test_dice"] == pytest.approx(script.test_dice(initial, val), abs=1e-6)


def test_shift_option_makes_another_site(drive_root: Path, tmp_path: Path, bench_script) -> None:
    """--shift: the pool and scored photographs are changed as fundus_shift.py changes them, the
    labels and FOV masks are not; resizing shifts (labels would no longer fit) are refused."""
    script = bench_script("label_efficiency")
    shifts = bench_script("fundus_shift")
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--shift", "size x1.5"])
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--shift", "no such shift"])
    assert script.parse_args(["--out", "x", "--shift", "jpeg q20"]).shift == "jpeg q20"
    with pytest.raises(SystemExit):  # adapting needs the opened folder
        script.parse_args(["--out", "x", "--adapt"])

    (case,) = script.load_drive(str(drive_root), [23], "training", tmp_path / "one.json")
    assert script.apply_shift([case], None)[0] is case
    (moved,) = script.apply_shift([case], "noise sigma 8")
    rgb = np.moveaxis(np.asarray(case.image.array), 0, -1)
    expected = shifts.shifted(rgb, shifts.SHIFTS["noise sigma 8"])
    np.testing.assert_array_equal(np.moveaxis(moved.image.array, 0, -1), expected)
    assert moved.image.array.dtype == case.image.array.dtype and moved.image.is_rgb
    np.testing.assert_array_equal(moved.label, case.label)
    np.testing.assert_array_equal(moved.mask, case.mask)
    assert moved.name == case.name
    assert not np.array_equal(moved.image.array, case.image.array)
