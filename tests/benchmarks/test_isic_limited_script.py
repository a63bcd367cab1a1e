"""benchmarks/isic_limited.py (and the helpers it shares in isic_data.py): paired subsets, per-image scores, the mean ± sd table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import isic_data

from .test_isic_script import _fake_isic


def test_subsets_are_drawn_per_seed_and_shared_by_the_networks():
    a, b = isic_data.draw(2000, 25, 0), isic_data.draw(2000, 25, 1)
    assert a == isic_data.draw(2000, 25, 0) and a != b  # same draw for every network, per seed
    assert len(a) == len(set(a)) == 25 and max(a) < 2000
    assert isic_data.draw(30, 2000, 0) == list(range(30))  # larger than the pool: all of it


def test_dice_and_jaccard_of_masks():
    truth = np.zeros((4, 4), bool)
    truth[:2] = True
    pred = np.zeros((4, 4), bool)
    pred[:1] = True
    assert isic_data.dice_jaccard(pred, truth) == pytest.approx((2 * 4 / 12, 4 / 8))
    assert isic_data.dice_jaccard(truth & False, truth & False) == (1.0, 1.0)


def test_summary_gives_mean_sd_and_the_gain_over_each_baseline(bench_script):
    script = bench_script("isic_limited")

    def row(arch, seed, dice, size=25):
        return {"size": size, "seed": seed, "arch": arch, "steps": 10, "seconds": 1.0,
                "test": {"dice": dice, "jaccard": dice / 2}}

    rows = [row("drunet", 0, 0.7), row("drunet", 1, 0.8), row("unet", 0, 0.6),
            row("unet", 1, 0.7), row("drunet", 0, 0.9, 400), row("unet", 0, 0.95, 400)]
    table = {(t["size"], t["arch"]): t for t in script.summarise(rows, ["drunet", "unet"])}
    assert table[25, "drunet"]["dice"] == pytest.approx(0.75)
    assert table[25, "drunet"]["dice_sd"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert table[25, "unet"]["gain_of_first"] == pytest.approx(0.1)
    assert table[25, "drunet"]["gain_of_first"] is None
    assert table[400, "unet"]["gain_of_first"] == pytest.approx(-0.05)
    assert math.isnan(table[400, "unet"]["dice_sd"])  # one seed: no sd claimed
    text = script.markdown(script.summarise(rows, ["drunet", "unet"]), ["drunet", "unet"])
    assert "| 25 | unet | 2 | 0.650 ± 0.071 | 0.325 ± 0.035 | +10.0 pt |" in text
    assert "| 400 | unet | 1 | 0.950 | 0.475 | -5.0 pt |" in text


def test_main_runs_every_network_per_seed_and_resumes(tmp_path: Path, bench_script):
    script = bench_script("isic_limited")
    root = _fake_isic(tmp_path / "isic", n=3, size=(32, 24))
    out = tmp_path / "out"
    args = ["--isic", str(root), "--out", str(out), "--features", "4,8", "--sizes", "1,3",
            "--seeds", "2", "--many-seeds-up-to", "1", "--steps", "2", "--batch-size", "1",
            "--val-cases", "1", "--test-cases", "2", "--archs", "drunet,unet"]
    assert script.main(args) == 0
    rows = json.loads((out / "runs.json").read_text())
    assert [(r["size"], r["seed"], r["arch"]) for r in rows] == [
        (1, 0, "drunet"), (1, 0, "unet"), (3, 0, "drunet"), (3, 0, "unet"),
        (1, 1, "drunet"), (1, 1, "unet")]
    assert all(r["steps"] == 2 and 0 <= r["test"]["dice"] <= 1 for r in rows)
    assert (out / "data" / "test" / "images").is_dir()  # scored at the training scale
    assert script.main(args) == 0  # a rerun keeps the finished runs and trains nothing
    assert json.loads((out / "runs.json").read_text()) == rows
    assert "| 3 | unet | 1 |" in (out / "limited.md").read_text()
