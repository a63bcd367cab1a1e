"""``drunet project status|finetune|adapt``: a corrections project without napari."""

from __future__ import annotations

import json

import pytest

from napari_drunet.cli import main
from napari_drunet.core.correction.project import Project


@pytest.fixture
def project(tmp_path, make_round_project) -> Project:
    return make_round_project(tmp_path / "proj")


def test_status_lists_cases_and_versions(project, capsys) -> None:
    assert main(["project", "status", str(project.folder)]) == 0
    out = capsys.readouterr().out
    assert "4 case(s), 3 corrected (1 reviewed), 1 to correct" in out
    assert "versions (1), active v001" in out and " *v001" in out
    assert main(["project", "status", str(project.folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["active_version"] == "v001"
    assert [c["corrected"] for c in report["cases"]] == [True, True, True, False]


def test_finetune_compares_and_promotes_only_a_winner(project, capsys) -> None:
    rc = main(["project", "finetune", str(project.folder), "--steps", "3", "--device", "cpu",
               "--threads", "1", "--promote", "--time-cap", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    reopened = Project.open(project.folder)
    metrics = reopened.versions.get("v002")["metrics"]
    assert "saved v002 (parent v001, 3 of 3 steps" in out and "held-back case" in out
    assert f"{metrics['holdout_dice']:.4f}" in out and metrics["steps"] == 3
    assert metrics["settings"]["steps"] == 3 and metrics["settings"]["time_cap_s"] is None
    if metrics["recommend"]:
        assert reopened.versions.active == "v002" and "promoted: v002" in out
    else:
        assert reopened.versions.active == "v001" and "not promoted" in out
    assert main(["project", "status", str(project.folder)]) == 0
    assert "held-back Dice" in capsys.readouterr().out


def test_finetune_without_promote_keeps_the_active_version(project, capsys) -> None:
    assert main(["project", "finetune", str(project.folder), "--steps", "2", "--device", "cpu",
                 "--threads", "1", "--keep-threshold", "--no-guard"]) == 0
    reopened = Project.open(project.folder)
    assert reopened.versions.active == "v001"
    settings = reopened.versions.get("v002")["metrics"]["settings"]
    assert not settings["choose_threshold"] and settings["l2sp"] == 0.0
    assert "stays active" in capsys.readouterr().out


def test_adapt_saves_a_compared_version(project, capsys) -> None:
    assert main(["project", "adapt", str(project.folder), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "saved v002 (parent v001, statistics of 4 image(s))" in out
    assert "corrected case" in out
    assert Project.open(project.folder).versions.get("v002")["metrics"]["adaptation"]["images"] == 4


def test_errors_are_one_line(tmp_path, project, capsys) -> None:
    assert main(["project", "status", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no project found") and err.count("\n") == 1
    assert main(["project", "finetune", str(project.folder), "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "steps must be >= 1" in err and err.count("\n") == 1
    empty = Project.create(tmp_path / "empty")
    empty.versions.add(project.versions.load_active("cpu"))
    assert main(["project", "finetune", str(empty.folder), "--device", "cpu"]) == 2
    assert "no corrected case" in capsys.readouterr().err
    assert main(["project", "explode", str(project.folder)]) == 2


def test_cli_finetune_rechooses_the_threshold(tmp_path, capsys) -> None:
    """`drunet finetune` on labelled cases re-chooses the binary threshold as a round does
    and records it in the model file; --keep-threshold keeps the starting model's."""
    import numpy as np
    import tifffile

    from napari_drunet.core.image.normalization import default_spec
    from napari_drunet.core.models.checkpoint import read_meta
    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model

    from ..conftest import round_disc

    entries = []
    for i in range(3):
        image, mask = round_disc(i)
        tifffile.imwrite(tmp_path / f"c{i}.tif", (image * 100 + 50).clip(0, 255).astype(np.uint8))
        tifffile.imwrite(tmp_path / f"c{i}_label.tif", mask)
        entries.append({"image": f"c{i}.tif", "label": f"c{i}_label.tif"})
    data = tmp_path / "dataset.json"
    data.write_text(json.dumps({"labels": {"0": "background", "1": "disc"},
                                "training": entries}))
    net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=1, features=(4, 8))
    start = Model(net, {"normalization": default_spec(), "threshold": 0.95}, device="cpu")
    start.save(tmp_path / "start.safetensors")
    common = ["finetune", "--model", str(tmp_path / "start.safetensors"), "--data", str(data),
              "--max-steps", "2", "--patch-size", "32", "--batch-size", "2", "--device", "cpu",
              "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "a.safetensors")]) == 0
    meta = read_meta(tmp_path / "a.safetensors")
    choice = meta["threshold_choice"]
    assert choice["chosen"] and choice["foreground_pixels"] >= 1000
    assert meta["threshold"] == pytest.approx(choice["threshold"])
    assert choice["parent_threshold"] == pytest.approx(0.95) and choice["dice"] > \
        choice["parent_dice"] + choice["min_gain"]
    assert f"threshold {choice['threshold']:g}" in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "b.safetensors"), "--keep-threshold"]) == 0
    meta = read_meta(tmp_path / "b.safetensors")
    assert meta["threshold"] == pytest.approx(0.95) and "threshold_choice" not in meta
