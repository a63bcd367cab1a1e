"""benchmarks/package_model.py: the model card, with and without a robustness section."""

from __future__ import annotations

import json
from pathlib import Path


def test_card_lists_the_shift_results(tmp_path: Path, bench_script):
    from napari_drunet.core.models.model import model_path

    script = bench_script("package_model")
    ckpt = str(model_path("retina-vessels"))
    fundus = tmp_path / "fundus.json"
    fundus.write_text(json.dumps({"split": "test", "images": 20, "results": [
        {"shift": "none", "rescale": True, "f1": 0.8217, "auc": 0.9807},
        {"shift": "size x2.5", "rescale": False, "f1": 0.51, "auc": 0.88}]}))
    mri = tmp_path / "mri.json"
    mri.write_text(json.dumps({"split": "val", "volumes": 26, "results": [
        {"shift": "blur sigma 1", "resample": True, "dice_1": 0.78, "dice_2": 0.724}]}))
    meta = {"arch": "drunet", "arch_kwargs": {"out_channels": 1}, "threshold": 0.62}
    summary = {"test": {"dice": 0.82}}
    plain = script.card("retina-vessels", "retina", meta, summary, ckpt)
    assert "Robustness" not in plain and "Threshold: 0.62" in plain
    text = script.card("retina-vessels", "retina", meta, summary, ckpt, fundus)
    assert "| size x2.5 | off | 0.510 | 0.880 |" in text and "20 test cases" in text
    assert text.index("Robustness") < text.index("Reproduce")
    text = script.card("hippocampus", "hippocampus",
                       {"arch": "drunet", "arch_kwargs": {"out_channels": 3}}, summary, ckpt,
                       mri)
    assert "| blur sigma 1 | on | 0.780 | 0.724 |" in text and "argmax" in text
    assert "drunet adapt" not in text
    # rows of the model adapted without labels (--adapt N) are marked, with what was done
    fundus.write_text(json.dumps({"split": "test", "images": 20, "adapt_images": 14, "results": [
        {"shift": "jpeg q20", "rescale": True, "f1": 0.60, "auc": 0.89},
        {"shift": "jpeg q20", "rescale": True, "adapted": 14, "f1": 0.70, "auc": 0.93}]}))
    text = script.card("retina-vessels", "retina", meta, summary, ckpt, fundus)
    assert "| jpeg q20 | on | 0.600 | 0.890 |" in text
    assert "| jpeg q20 | on, adapted | 0.700 | 0.930 |" in text
    assert "`drunet adapt`" in text and "on 14 of the site's own images" in text
    assert text.index("drunet adapt") < text.index("| shift |")


def test_half_precision_weights_halve_the_file_and_keep_the_predictions(tmp_path: Path,
                                                                         bench_script):
    import shutil

    import numpy as np

    from napari_drunet.core.models.checkpoint import read_meta
    from napari_drunet.core.models.model import load_model, model_path

    script = bench_script("package_model")
    path = tmp_path / "h.safetensors"
    shutil.copy(model_path("hippocampus"), path)
    size = path.stat().st_size
    script.halve_weights(path)
    assert path.stat().st_size < 0.6 * size
    assert read_meta(path) == read_meta(model_path("hippocampus"))
    full, half = load_model("hippocampus", device="cpu"), load_model(path, device="cpu")
    assert half.network.head.weight.dtype == full.network.head.weight.dtype
    assert half.network.encoder[0].body[0][1].running_var.dtype == full.network.encoder[0].body[0][1].running_var.dtype
    volume = np.random.default_rng(0).normal(300, 100, size=(30, 44, 30)).astype(np.float32)
    p_full, p_half = full.predict(volume).probabilities, half.predict(volume).probabilities
    assert np.abs(p_full - p_half).max() < 5e-3
    assert np.array_equal(p_full.argmax(0), p_half.argmax(0))


def test_skin_card_names_its_size_check_limits_and_anchors(tmp_path: Path, bench_script):
    from napari_drunet.core.models.model import model_path

    script = bench_script("package_model")
    sizes = tmp_path / "size_shift.json"
    sizes.write_text(json.dumps({"script": "isic_accuracy.py --size-check",
                                 "what": "dermatoscopes", "split": "test", "images": 10,
                                 "results": [{"shift": "size x8", "rescale": True, "f1": 0.84,
                                              "auc": 0.95}]}))
    meta = {"arch": "drunet", "arch_kwargs": {"out_channels": 1}, "threshold": 0.5}
    summary = {"test": {"iou": 0.7}, "images_below_0.65": 137, "test_images": 600}
    text = script.card("skin-lesion", "skin", meta, summary,
                       str(model_path("retina-vessels")), sizes)
    assert "137 of the 600 test images are under the 0.65 Jaccard floor" in text
    assert "other dermatoscopes would (`benchmarks/isic_accuracy.py --size-check`" in text
    assert "| size x8 | on | 0.840 | 0.950 |" in text
    assert "Codella" in text and "## Limits" in text
    assert text.index("## Published anchors") < text.index("Reproduce")
    assert "Jaccard 0.765, Dice 0.849" in text


def test_card_keeps_the_stages_of_runs_that_are_gone_and_lists_the_other_site(
        tmp_path: Path, bench_script):
    from napari_drunet.core.models.model import model_path

    script = bench_script("package_model")
    ckpt = str(model_path("retina-vessels"))
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "model.ckpt").symlink_to(ckpt)
    (parent / "summary.json").write_text(json.dumps(
        {"earlier_stages": ["10 steps, the first run"], "train_seconds": 5}))
    meta = {"arch": "drunet", "arch_kwargs": {"out_channels": 1}, "threshold": 0.6}
    summary = {"test": {"dice": 0.82}, "init": str(parent / "model.ckpt"), "train_seconds": 7}
    site = tmp_path / "results.json"
    site.write_text(json.dumps({"rows": [
        {"direction": "DRIVE -> STARE", "stage": "zero-shot", "dice": 0.7774,
         "sensitivity": 0.8275, "specificity": 0.967, "auc": 0.9755, "seconds": 11.2},
        {"direction": "DRIVE -> STARE", "stage": "3 corrected", "dice": 0.7749,
         "sensitivity": 0.7311, "specificity": 0.9831, "auc": 0.9779, "seconds": 87.0}]}))
    text = script.card("retina-vessels", "retina", meta, summary, ckpt, sites=[str(site)])
    assert "stage 1 (from scratch): 10 steps, the first run; stage 2 (continued" in text
    assert "; 5 s wall time; stage 3 (continued" in text and "; 7 s wall time" in text
    assert "## At another site (leave-one-site-out)" in text
    assert "| DRIVE -> STARE | zero-shot | 0.777 | 0.828 | 0.967 | 0.976 | 11 |" in text
    assert "| DRIVE -> STARE | 3 corrected | 0.775 |" in text
    # without a parent or site results: one stage, no site table (nothing invented)
    one = script.card("retina-vessels", "retina", meta, {"train_seconds": 7}, ckpt)
    assert "stage 1" not in one and "DRIVE (Staal et al., IEEE TMI 2004)" in one
    assert "another site" not in one
