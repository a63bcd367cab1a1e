"""benchmarks/fundus_shift.py: the simulated camera shifts and one real run on a DRIVE image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def _fundus(size: int = 60) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    img = np.zeros((size, size, 3), np.uint8)
    img[fov] = (180, 90, 40)
    img[fov & (np.abs(yy - xx) < 2)] = (120, 50, 20)
    return img


def test_shifts_return_rgb_photographs(bench_script):
    script = bench_script("fundus_shift")
    img = _fundus()
    for name, shift in script.SHIFTS.items():
        out = script.shifted(img, shift)
        assert out.dtype == np.uint8 and out.shape[-1] == 3, name
        if name.startswith("size"):
            assert abs(out.shape[0] - float(name.split("x")[1]) * 60) <= 1, name
        else:
            assert out.shape == img.shape, name
    assert np.array_equal(script.shifted(img, script.SHIFTS["none"]), img)
    assert script.shifted(img, script.SHIFTS["gamma 1.6"]).mean() < img.mean()
    ramp = script.shifted(img, script.SHIFTS["illumination ramp"]).astype(float)
    assert ramp[30, 10:20, 0].mean() < ramp[30, 40:50, 0].mean()
    for worse, better in (("noise sigma 8", "noise sigma 4"), ("jpeg q20", "jpeg q50")):
        err = [np.abs(script.shifted(img, script.SHIFTS[n]).astype(float) - img).mean()
               for n in (worse, better)]
        assert err[0] > err[1] > 0, worse


def test_without_rescale_drops_only_the_fov_diameter(bench_script):
    from napari_drunet.core.models.model import load_model

    script = bench_script("fundus_shift")
    model = load_model("retina-vessels", device="cpu")
    plain = script.without_rescale(model)
    assert "fov_diameter" in model.meta["preprocess"]
    assert "fov_diameter" not in plain.meta["preprocess"]
    assert plain.meta["preprocess"]["mask_outside_fov"] is True


def test_one_drive_image_scored_with_and_without_rescale(drive_root: Path, tmp_path: Path,
                                                         bench_script):
    script = bench_script("fundus_shift")
    out = tmp_path / "shift.json"
    assert script.main(["--drive", str(drive_root), "--split", "val", "--limit", "1",
                        "--shifts", "none,size x2.5", "--threads", "1",
                        "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["images"] == 1 and data["split"] == "val"
    rows = {(r["shift"], r["rescale"]): r for r in data["results"]}
    assert set(rows) == {("none", True), ("size x2.5", True), ("size x2.5", False)}
    # the packaged model on a validation image it was not trained on: a real vessel map
    assert rows[("none", True)]["f1"] > 0.75 and rows[("none", True)]["auc"] > 0.95
    # at 2.5x the size the FOV rescaling is what keeps it working
    assert rows[("size x2.5", True)]["f1"] > rows[("size x2.5", False)]["f1"] + 0.1


def test_adapted_rows_use_shifted_training_images(drive_root: Path, tmp_path: Path,
                                                  bench_script):
    """--adapt N: the model adapted (batch-norm statistics, no labels) to N shifted training
    photographs is scored beside the packaged one; heavy noise is where it pays."""
    script = bench_script("fundus_shift")
    with pytest.raises(SystemExit):
        script.main(["--split", "train", "--adapt", "2"])
    with pytest.raises(SystemExit):
        script.main(["--split", "val", "--adapt", "99"])
    out = tmp_path / "adapt.json"
    assert script.main(["--drive", str(drive_root), "--split", "val", "--limit", "1",
                        "--shifts", "none,noise sigma 8", "--adapt", "2", "--threads", "1",
                        "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["adapt_images"] == 2
    rows = {(r["shift"], r.get("adapted", 0)): r for r in data["results"]}
    assert set(rows) == {("none", 0), ("none", 2), ("noise sigma 8", 0), ("noise sigma 8", 2)}
    assert abs(rows[("none", 2)]["f1"] - rows[("none", 0)]["f1"]) < 0.01  # clean: no harm
    assert rows[("noise sigma 8", 2)]["f1"] > rows[("noise sigma 8", 0)]["f1"] + 0.05
