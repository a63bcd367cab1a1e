"""benchmarks/training_curves.py: the training log (CSV) and curves read from a run's checkpoint."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys

import pytest

from napari_drunet.core.progress import run_to_end
from napari_drunet.core.train.loop import TrainConfig, default_finetune_config, train, train_iter

from ..core.test_training import disks


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-class run from scratch (3 epochs, validated) and a run continued from it."""
    root = tmp_path_factory.mktemp("runs")
    parent, child = root / "scratch", root / "continued"
    for d in (parent, child):
        d.mkdir()
    cases = [disks(i, classes=2) for i in range(3)]
    cfg = TrainConfig(features=(8, 16), epochs=3, steps_per_epoch=5, patch_size=(32, 32),
                      batch_size=2, device="cpu", val_fraction=0.34, dropout=0.0)
    train(cases, cfg, out=parent / "model.ckpt")
    from napari_drunet.core.models.model import load_model

    start = load_model(parent / "model.ckpt", device="cpu")
    return root, parent, child, cases, start


def test_csv_has_one_row_per_epoch_with_per_class_dice(runs, bench_script):
    script = bench_script("training_curves")
    _, parent, _, _, _ = runs
    hist = script.load_history(parent)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    script.write_csv(hist, parent / "history.csv")
    rows = list(csv.DictReader((parent / "history.csv").open()))
    assert [int(r["step"]) for r in rows] == [5, 10, 15]
    for r, h in zip(rows, hist, strict=True):
        assert float(r["val_dice"]) == pytest.approx(h["val_dice"])
        per = h["val_dice_per_class"]
        assert float(r["val_dice_1"]) == pytest.approx(per[0])
        assert float(r["val_dice_2"]) == pytest.approx(per[1])
        assert float(r["loss"]) > 0 and float(r["seconds"]) > 0


def test_continued_run_is_offset_by_its_parent_and_plotted(runs, monkeypatch, capsys,
                                                           bench_script):
    script = bench_script("training_curves")
    root, parent, child, cases, start = runs
    cfg = default_finetune_config(epochs=2, steps_per_epoch=4, patch_size=(32, 32),
                                  batch_size=2, device="cpu", max_steps=8, time_budget=None)
    run_to_end(train_iter(cases[:2], cfg, init=start, val_cases=cases[2:],
                          out=child / "model.ckpt"))
    (child / "summary.json").write_text(json.dumps({"init": str(parent / "model.ckpt")}))
    assert script.step_offset(parent) == 0
    assert script.step_offset(child) == 15

    png = root / "curves.png"
    argv = ["training_curves.py", str(parent), str(child)]
    mpl = importlib.util.find_spec("matplotlib") is not None
    if mpl:
        argv += ["--png", str(png)]
    monkeypatch.setattr(sys, "argv", argv)
    assert script.main() == 0
    out = capsys.readouterr().out
    # the continued run's first row is the validation of its starting weights (step 0)
    assert "3 rows, last step 15" in out and "3 rows, last step 8" in out
    rows = list(csv.DictReader((child / "history.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 4, 8]
    if mpl:
        assert png.stat().st_size > 10_000
