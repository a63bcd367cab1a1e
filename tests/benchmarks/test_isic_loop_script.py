"""benchmarks/isic_loop.py: the correction loop's limited-data curve on a tiny ISIC-like tree."""

from __future__ import annotations

import json
from pathlib import Path

from .test_isic_script import _fake_isic


def test_rounds_correct_the_most_uncertain_cases_and_train_a_baseline(tmp_path: Path,
                                                                      bench_script):
    script = bench_script("isic_loop")
    root = _fake_isic(tmp_path / "isic", n=6, size=(32, 24))
    out = tmp_path / "out"
    assert script.main(["--isic", str(root), "--out", str(out), "--start", "2", "--pool", "3",
                        "--k", "1", "--rounds", "2", "--features", "4,8", "--steps", "2",
                        "--batch-size", "1", "--max-steps", "2", "--val-cases", "1",
                        "--test-cases", "2", "--promote", "always"]) == 0
    rows = json.loads((out / "loop.json").read_text())["rows"]
    assert [r["labelled"] for r in rows] == [2, 3, 4]  # start images, then k per round
    chosen = [r["chosen"][0] for r in rows[1:]]
    assert len(set(chosen)) == 2 and all(name.startswith("train_") for name in chosen)
    assert all(0 <= r["loop"]["dice"] <= 1 for r in rows)
    assert all(r["steps"] == 2 and 0 <= r["scratch"]["jaccard"] <= 1 for r in rows[1:])
    # every version promoted: the active model of each round is that round's new version
    assert all(r["promoted"] and r["loop"] == r["new_version"] for r in rows[1:])
