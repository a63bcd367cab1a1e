"""benchmarks/new_site.py: leave-one-site-out on tiny synthetic DRIVE- and STARE-like folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SIZE = 48


def _photo(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB photograph (H, W, 3) uint8 with a dark vessel, its label and FOV (0/255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    fov = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 < (0.45 * SIZE) ** 2
    vessel = fov & (np.abs(yy - xx - rng.integers(-8, 8)) < 2)
    img = np.zeros((SIZE, SIZE, 3), np.float32)
    img[fov] = (170, 80, 30)
    img[vessel] *= 0.6
    img += rng.normal(0, 3, img.shape)
    u8 = lambda a: (a * 255).astype(np.uint8)  # noqa: E731
    return np.clip(img, 0, 255).astype(np.uint8), u8(vessel), u8(fov)


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sites")
    drive, stare = root / "DRIVE", root / "STARE"
    for split, ids in (("training", range(21, 41)), ("test", range(1, 21))):
        for sub in ("images", "1st_manual", "mask"):
            (drive / split / sub).mkdir(parents=True)
        for i in ids:
            img, lab, fov = _photo(i)
            Image.fromarray(img).save(drive / split / "images" / f"{i:02d}_{split}.tif")
            Image.fromarray(lab).save(drive / split / "1st_manual" / f"{i:02d}_manual1.gif")
            Image.fromarray(fov).save(drive / split / "mask" / f"{i:02d}_{split}_mask.gif")
    for sub in ("images", "labels-ah", "fov"):
        (stare / sub).mkdir(parents=True)
    for i in range(7):
        img, lab, fov = _photo(100 + i)
        Image.fromarray(img).save(stare / "images" / f"im{i:04d}.png")
        Image.fromarray(lab).save(stare / "labels-ah" / f"im{i:04d}.ah.png")
        Image.fromarray(fov).save(stare / "fov" / f"im{i:04d}.png")
    return drive, stare


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model

    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=3, out_channels=1, features=(4, 8))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    Model(net.eval(), {"normalization": {"mode": "percentile_zscore"}, "threshold": 0.5,
                       "label_names": {"0": "background", "1": "vessel"}},
          device="cpu", name="tiny").save(path)
    return path


def test_stare_split_is_fixed_and_disjoint(bench_script, sites):
    script = bench_script("new_site")
    _, stare = sites
    order = script.stare_order(stare)
    assert order == script.stare_order(stare) and sorted(order) == [f"im{i:04d}" for i in range(7)]
    site = script.load_stare(stare, pool=5)
    names = lambda cases: {c.name for c in cases}  # noqa: E731
    assert len(site.pool) == 5 and len(site.test) == 2 and not names(site.pool) & names(site.test)
    assert names(site.val) <= names(site.pool) and not names(site.train) & names(site.val)
    assert [c.name for c in site.pool] == [f"stare_{s}" for s in order[:5]]
    assert site.pool[0].mask.dtype == bool and site.pool[0].label.max() == 1


def test_score_is_inside_the_fov(bench_script, sites, tiny_model):
    from napari_drunet.core.models.model import load_model

    script = bench_script("new_site")
    site = script.load_stare(sites[1])
    model = load_model(tiny_model, device="cpu")
    inside = script.score(model, site.test[:1], threshold=0.0)  # everything called vessel
    case = site.test[0]
    frac = float((case.label[case.mask] > 0).mean())
    assert inside["sensitivity"] == pytest.approx(1.0) and inside["specificity"] == 0.0
    assert inside["dice"] == pytest.approx(2 * frac / (1 + frac), rel=1e-4)
    assert set(script.METRICS) <= set(inside)


def test_round_settings_changes_and_unknown_keys(bench_script):
    script = bench_script("new_site")
    from napari_drunet.core.correction.round import default_round_settings

    base = default_round_settings()
    s = script.round_settings(None, None, ["steps=7", "adapt_first=true", "lr=0.001"])
    assert (s.steps, s.adapt_first, s.lr) == (7, True, 0.001) and s.l2sp == base.l2sp
    with pytest.raises(SystemExit, match="unknown round setting"):
        script.round_settings(None, None, ["nonsense=1"])


def test_one_command_scores_zero_shot_adabn_and_a_round(bench_script, sites, tiny_model,
                                                        tmp_path):
    script = bench_script("new_site")
    drive, stare = sites
    out = tmp_path / "run"
    assert script.main(["--drive", str(drive), "--stare", str(stare), "--out", str(out),
                        "--model", str(tiny_model), "--directions", "drive-stare,stare-drive",
                        "--corrected", "2", "--round-set", "steps=2", "time_cap_s=null",
                        "--limit", "2", "--threads", "1"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    stages = [(r["direction"], r["stage"]) for r in rows]
    assert stages == [(d, s) for d in ("DRIVE -> STARE", "STARE -> DRIVE")
                      for s in ("zero-shot", "AdaBN (no labels)", "2 corrected")]
    for r in rows:
        assert 0.0 <= r["dice"] <= 1.0 and 0.0 <= r["auc"] <= 1.0 and r["seconds"] >= 0
    assert {r["steps"] for r in rows if "steps" in r} == {2}
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "| STARE -> DRIVE | 2 corrected |" in table


def test_init_none_trains_from_scratch_on_the_source_only(bench_script, sites, tmp_path):
    from napari_drunet.core.models.model import load_model

    script = bench_script("new_site")
    drive, stare = sites
    out = tmp_path / "scratch"
    assert script.main(["--drive", str(drive), "--stare", str(stare), "--out", str(out),
                        "--directions", "stare-drive", "--init", "none", "--features", "4,8",
                        "--train-steps", "2", "--steps-per-epoch", "1", "--batch-size", "1",
                        "--normalization", "fundus_local", "--corrected", "", "--no-adapt",
                        "--limit", "1", "--threads", "1"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["training"]["stare"]["init"] == "none"
    assert result["training"]["stare"]["steps"] == 2
    assert "recalibrate_seconds" not in result["training"]["stare"]  # nothing to recalibrate
    assert [r["stage"] for r in result["rows"]] == ["zero-shot"]
    model = load_model(out / "model_stare.ckpt", device="cpu")
    assert model.meta["normalization"]["mode"] == "fundus_local"
    assert tuple(model.network.config["features"]) == (4, 8)
    provenance = model.meta["provenance"]
    assert provenance["parent"] is None and provenance["parent_name"] is None
    # trained on STARE's training cases (the pool's first 4 validate), never on DRIVE
    stare_train = {c.name for c in script.load_stare(stare).train}
    assert set(provenance["data"]) == stare_train and len(stare_train) == 3


def test_init_none_without_steps_is_refused(bench_script, sites, tmp_path):
    script = bench_script("new_site")
    drive, stare = sites
    with pytest.raises(SystemExit, match="from scratch"):
        script.main(["--drive", str(drive), "--stare", str(stare), "--out", str(tmp_path),
                     "--directions", "stare-drive", "--init", "none",
                     "--normalization", "fundus_local", "--threads", "1"])
