"""benchmarks/isic_accuracy.py and isic_data.py: the ISIC metrics, threshold, data copies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _fake_isic(root: Path, n: int = 3, size: tuple[int, int] = (32, 24)) -> Path:
    """ISIC-like tree: ``{split}/images/<split>_000k.jpg`` + ``masks/*.png`` ({0, 255})."""
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    for split in ("train", "val", "test"):
        for k in range(n):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            lesion = (yy - h / 2) ** 2 + (xx - w / 2 - k) ** 2 < (h / 4) ** 2
            img = np.full((h, w, 3), 200, np.uint8)
            img[lesion] = (90, 60, 40)
            img = (img + rng.integers(0, 10, img.shape)).astype(np.uint8)
            Image.fromarray(img).save(root / split / "images" / f"{split}_{k:04d}.jpg")
            Image.fromarray(lesion.astype(np.uint8) * 255).save(
                root / split / "masks" / f"{split}_{k:04d}.png")
    return root


def test_thresholded_jaccard_counts_images_below_the_floor_as_zero(bench_script):
    script = bench_script("isic_accuracy")
    assert script.thresholded_jaccard([0.9, 0.6, 0.7]) == pytest.approx((0.9 + 0.7) / 3)
    assert script.thresholded_jaccard([0.65]) == pytest.approx(0.65)
    a = np.zeros((4, 4), bool)
    b = a.copy()
    b[:2] = True
    assert script.jaccard(a, a) == 1.0 and script.jaccard(b, a) == 0.0
    c = b.copy()
    c[:, :2] = True
    assert script.jaccard(b, c) == pytest.approx(8 / 12)


def test_threshold_is_tuned_on_the_mean_jaccard(bench_script):
    script = bench_script("isic_accuracy")
    truth = np.zeros((10, 10), np.uint8)
    truth[2:8, 2:8] = 1
    prob = np.where(truth > 0, 0.55, 0.05).astype(np.float32)
    prob[0, 0] = 0.45  # a false positive above 0.45 only
    thr, jac = script.tune_threshold([prob], [truth])
    assert 0.45 < thr <= 0.55 and jac == 1.0


def test_score_images_summarises_per_image_metrics(bench_script):
    script = bench_script("isic_accuracy")
    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 1
    half = truth.copy()
    half[5:10] = 0
    res = script.score_images([truth > 0, half > 0, np.zeros_like(truth, bool)],
                              [truth, truth, truth], ["a", "b", "c"])
    s = res["summary"]
    assert res["cases"]["a"]["iou"] == 1.0 and res["cases"]["b"]["iou"] == pytest.approx(0.5)
    assert s["iou"]["mean"] == pytest.approx(0.5) and s["images"] == 3
    assert s["thresholded_jaccard"] == pytest.approx(1 / 3) and s["images_below_floor"] == 2
    assert res["cases"]["b"]["sensitivity"] == pytest.approx(0.5)
    assert s["hd95_undefined_images"] == 1  # nothing predicted: no surface distance
    assert s["hd95"]["mean"] == pytest.approx(np.mean([0.0, res["cases"]["b"]["hd95"]]))


def test_isic_datasets_and_the_half_size_copy(tmp_path: Path, bench_script):
    data = bench_script("isic_data")
    root = _fake_isic(tmp_path / "isic")
    ds = json.loads(data.make_isic_dataset(root, tmp_path / "t.json", "test", 2).read_text())
    assert [e["name"] for e in ds["training"]] == ["test_0000", "test_0001"]
    assert ds["labels"] == {"0": "background", "1": "lesion"} and ds["allow_outside"]
    small = data.downsample_isic(root, tmp_path / "half", 2, splits=("train",))
    img = Image.open(small / "train" / "images" / "train_0001.png")
    mask = np.asarray(Image.open(small / "train" / "masks" / "train_0001.png"))
    assert img.size == (16, 12) and mask.shape == (12, 16)
    assert set(np.unique(mask)) == {0, 255}
    full = np.asarray(Image.open(root / "train" / "masks" / "train_0001.png")) > 0
    assert abs((mask > 0).mean() - full.mean()) < 0.05  # the same lesion, at half the size
    assert data.isic_pairs(small, "train")[0]["image"].endswith(".png")
    (root / "val" / "masks" / "val_0000.png").unlink()
    with pytest.raises(Exception, match="missing mask"):
        data.isic_pairs(root, "val")


def test_train_command_is_the_documented_recipe(tmp_path: Path, bench_script):
    script = bench_script("isic_accuracy")
    args = script.parse_args(["--out", str(tmp_path), "--time-budget", "2280"])
    cmd = script.train_command(args, Path("tr.json"), Path("va.json"), Path("m.ckpt"))
    text = " ".join(cmd)
    for part in ("train --arch drunet --dims 2 --features 8,16,32,64,128", "--patch-size 96,128",
                 "--val-data va.json", "--rotate=30.0", "--scale=0.25", "--time-budget 2280"):
        assert part in text, part
    args = script.parse_args(["--out", str(tmp_path), "--train-scale", "1"])
    assert "--patch-size 192,256" in " ".join(script.train_command(
        args, Path("a"), Path("b"), Path("c")))


@pytest.mark.slow
def test_real_isic_split_sizes(isic_root: Path, bench_script):
    data = bench_script("isic_data")
    assert [len(data.isic_pairs(isic_root, s)) for s in ("train", "val", "test")] == [2000, 150, 600]


def test_main_trains_small_tunes_on_val_and_scores_the_test_images(tmp_path: Path,
                                                                    bench_script):
    from napari_drunet.core.models.checkpoint import read_meta

    script = bench_script("isic_accuracy")
    root = _fake_isic(tmp_path / "isic")
    out = tmp_path / "run"
    assert script.main(["--isic", str(root), "--out", str(out), "--features", "4,8",
                        "--patch-size", "12,16", "--max-steps", "2", "--batch-size", "2",
                        "--threads", "1", "--size-check", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_images"] == 3 and summary["steps"] == 2
    assert set(summary["test"]) == {"iou", "dice", "sensitivity", "specificity", "accuracy",
                                    "hd95", "thresholded_jaccard"}
    meta = read_meta(out / "model.ckpt")
    assert meta["preprocess"] == {"long_side": 16.0}  # the half-size copy it learnt from
    assert meta["threshold"] == summary["threshold"]
    rows = json.loads((out / "size_shift.json").read_text())["results"]
    assert [(r["shift"].split()[1], r["rescale"]) for r in rows] == [
        ("x1", True), ("x3", True), ("x8", True), ("x16", True), ("x3", False)]
    assert "(512 x 384 px)" in rows[3]["shift"]
