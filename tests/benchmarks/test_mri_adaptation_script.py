"""benchmarks/mri_adaptation.py: the correction loop adapting the packaged hippocampus model to
a simulated other scanner (one tiny real run on MSD volumes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def test_options_and_dice(bench_script) -> None:
    script = bench_script("mri_adaptation")
    assert "blur sigma 1" in script.GRID_SHIFTS and "2 mm slices" in script.GRID_SHIFTS
    # shifts that change the grid or the storage order would make the labels wrong
    assert "0.67 mm voxels" not in script.GRID_SHIFTS
    assert "sagittal storage" not in script.GRID_SHIFTS
    for bad in (["--shift", "0.67 mm voxels"], ["--pool", "3", "--k", "2", "--rounds", "2"],
                ["--k", "0"]):
        with pytest.raises(SystemExit):
            script.parse_args(["--out", "x", *bad])
    truth = np.zeros((4, 5, 6), np.uint8)
    truth[1:3, 1:4, 1:3] = 1
    truth[1:3, 1:4, 3:5] = 2
    pred = truth.copy()
    pred[1, 1, 3] = 1  # one posterior voxel called anterior
    anterior, posterior = script.label_dice(pred, truth, range(1, 3))
    assert anterior == pytest.approx(2 * 12 / (13 + 12))
    assert posterior == pytest.approx(2 * 11 / (11 + 12))


@pytest.mark.slow
def test_one_round_on_real_volumes(hippocampus_root: Path, tmp_path: Path, bench_script) -> None:
    script = bench_script("mri_adaptation")
    out = tmp_path / "adapt"
    assert script.main(["--root", str(hippocampus_root), "--out", str(out), "--pool", "3",
                        "--k", "2", "--rounds", "1", "--max-steps", "2", "--limit", "2",
                        "--threads", "1", "--shift", "blur sigma 1"]) == 0
    data = json.loads((out / "mri_adaptation.json").read_text())
    first, last = data["rows"]
    assert data["config"]["scored"] == 2 and len(data["config"]["pool_cases"]) == 3
    assert first["n_labeled"] == 0 and len(first["dice"]) == 2
    assert last["n_labeled"] == 2 and len(last["new_cases"]) == 2
    assert last["finetune_steps"] == 2 and len(last["holdout"]) == 1
    assert 0.0 < last["changed_pct"] < 100.0 and 0.0 < last["fix_dice"] < 1.0
    for row in data["rows"]:
        assert all(0.0 <= d <= 1.0 for d in row["dice"])

    # round 0 = the packaged model on the blurred volumes, scored independently here
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import load_dataset

    script.split_msd(hippocampus_root, tmp_path)
    val, _ = load_dataset(tmp_path / "val.json", "training", allow_outside=True)
    blurred = script.shifted_cases(val[:2], "blur sigma 1")
    assert not np.array_equal(blurred[0].image.array, val[0].image.array)
    np.testing.assert_array_equal(blurred[0].label, val[0].label)
    assert first["dice"] == pytest.approx(script.score(load_model("hippocampus", "cpu"),
                                                       blurred), abs=1e-6)
    # the project holds what the GUI would have stored: two corrected, one left uncorrected
    from napari_drunet.core.correction.project import Project

    project = Project.open(out / "project")
    assert len(project.cases()) == 3 and len(project.feedback.uncorrected_cases()) == 1
    assert all(project.is_corrected(n) for n in last["new_cases"])


@pytest.mark.slow
def test_adapt_before_the_first_round(hippocampus_root: Path, tmp_path: Path,
                                      bench_script) -> None:
    """--adapt: the widget's no-label adaptation is pressed and promoted before round 1; the
    corrections then fine-tune the adapted version."""
    script = bench_script("mri_adaptation")
    out = tmp_path / "adapt"
    assert script.main(["--root", str(hippocampus_root), "--out", str(out), "--pool", "2",
                        "--k", "1", "--rounds", "1", "--max-steps", "1", "--limit", "2",
                        "--threads", "1", "--adapt"]) == 0
    first, last = json.loads((out / "mri_adaptation.json").read_text())["rows"]
    assert first["active_version"] == "v002" and last["parent"] == "v002"
    assert np.mean(first["adapted_dice"]) > np.mean(first["dice"]) + 0.03  # blurred scans
    from napari_drunet.core.correction.project import Project

    entry = Project.open(out / "project").versions.get("v002")
    assert entry["metrics"]["adaptation"]["images"] == 2 and entry["parent"] == "v001"
