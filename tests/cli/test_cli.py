"""The ``drunet`` command line end to end: train -> predict -> evaluate -> export, and its errors."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_drunet.cli import main
from napari_drunet.core.image.io import read_image
from napari_drunet.core.models.checkpoint import read_meta
from napari_drunet.core.models.model import load_model


def _disk_image(rng: np.random.Generator, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    label = np.zeros((size, size), np.uint8)
    for _ in range(2):
        cy, cx, r = rng.integers(10, size - 10), rng.integers(10, size - 10), rng.integers(4, 8)
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    image = (label * 120 + rng.normal(60, 15, label.shape)).clip(0, 255).astype(np.uint8)
    return image, label


@pytest.fixture()
def synthetic_dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    for i in range(3):
        img, lab = _disk_image(rng)
        tifffile.imwrite(tmp_path / f"case{i}.tif", img)
        tifffile.imwrite(tmp_path / f"case{i}_label.tif", lab)
        entries.append({"image": f"case{i}.tif", "label": f"case{i}_label.tif"})
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps({"labels": {"0": "background", "1": "disk"}, "training": entries}))
    return ds


TINY = ["--features", "8,16", "--patch-size", "32", "--batch-size", "2", "--device", "cpu"]


def test_models_lists_architectures_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for arch in ("drunet", "unet", "resunet", "r2unet", "runet", "attention_unet"):
        assert arch in out
    packaged = out.split("Packaged models:")[1].split("\n")
    for name in ("retina-vessels", "hippocampus-robust"):  # name, then the architecture column
        row = next(r for r in packaged if r.strip().startswith(name + " "))
        assert row.split()[:2] == [name, "drunet"]
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    params = {a["name"]: a["params"] for a in data["architectures"]}
    assert all(v > 1000 for v in params.values())
    for m in data["packaged_models"]:  # the line under each row says which images it fits
        assert m["card"]["example"] in m["fits"]
        row = next(i for i, r in enumerate(packaged) if r.strip().startswith(m["name"] + " "))
        assert packaged[row + 1].split() == ["fits:", *m["fits"].split()]


def test_train_predict_evaluate_export(tmp_path: Path, synthetic_dataset: Path, capsys):
    ckpt = tmp_path / "m.ckpt"
    assert main(["train", "--data", str(synthetic_dataset), "--arch", "drunet", "--dims", "2",
                 "--out", str(ckpt), "--max-steps", "30", "--epochs", "3", *TINY]) == 0
    assert ckpt.is_file()
    assert read_meta(ckpt)["training"]["config"]["amp"] is True  # bf16 steps where it pays
    exact_ckpt = tmp_path / "fp32.ckpt"
    assert main(["train", "--data", str(synthetic_dataset), "--arch", "drunet", "--dims", "2",
                 "--out", str(exact_ckpt), "--max-steps", "2", "--epochs", "1", "--no-amp",
                 *TINY]) == 0
    assert read_meta(exact_ckpt)["training"]["config"]["amp"] is False
    out_dir, prob_dir = tmp_path / "pred", tmp_path / "prob"
    assert main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "case0.tif"),
                 "--output", str(out_dir), "--prob", str(prob_dir), "--device", "cpu"]) == 0
    assert (out_dir / "case0.tif").is_file()
    prob = tifffile.imread(prob_dir / "case0.tif")
    assert prob.dtype == np.float32 and prob.shape[-2:] == (48, 48)
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    # --no-amp: float32 probabilities, those of Model.predict(amp=False) (bf16 runs by default
    # only on CPUs with AMX, core.device.autocast_dtype)
    exact = tmp_path / "prob32"
    assert main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "case0.tif"),
                 "--output", str(tmp_path / "pred32"), "--prob", str(exact), "--device", "cpu",
                 "--no-amp"]) == 0
    ref = load_model(ckpt, "cpu").predict(read_image(tmp_path / "case0.tif"), amp=False)
    np.testing.assert_allclose(tifffile.imread(exact / "case0.tif"),
                               np.squeeze(ref.probabilities), atol=1e-6)
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    (truth_dir / "case0.tif").write_bytes((tmp_path / "case0_label.tif").read_bytes())
    res = tmp_path / "res.json"
    assert main(["evaluate", "--pred", str(out_dir), "--truth", str(truth_dir),
                 "--json", str(res)]) == 0
    data = json.loads(res.read_text())
    assert 0.0 <= data["mean_dice"] <= 1.0
    assert "case0" in data["cases"]
    assert 0.0 <= data["pooled"]["1"]["dice"] <= 1.0  # all pixels together
    ts = tmp_path / "m.pt"
    assert main(["export", "--model", str(ckpt), "--format", "torchscript", "--out", str(ts)]) == 0
    assert ts.stat().st_size > 0


def test_user_errors_are_one_line_without_traceback(tmp_path: Path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"weights": 1}))
    img = tmp_path / "img.png"
    img.write_text("this is not a png")
    cases = [
        ["predict", "--model", "no-such-model", "--input", str(tmp_path), "--output", "o"],
        ["predict", "--model", str(evil), "--input", str(tmp_path), "--output", "o"],
        ["predict", "--model", str(evil), "--input", str(tmp_path / "missing.nii.gz"),
         "--output", "o"],
        ["evaluate", "--pred", str(tmp_path / "nothing"), "--truth", str(tmp_path)],
        ["train", "--data", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.ckpt")],
    ]
    for argv in cases:
        proc = subprocess.run([sys.executable, "-m", "napari_drunet", *argv], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 2, (argv, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, proc.stderr)
        assert "Traceback" not in proc.stderr


def _drive_crops(drive_root: Path, dest: Path, n: int = 2, size: int = 128) -> Path:
    """Write n crops of DRIVE training images (inside the FOV) to a temporary dataset."""
    import imageio.v3 as iio

    entries = []
    for i, img_path in enumerate(sorted((drive_root / "training" / "images").glob("*.tif"))[:n]):
        case = img_path.name.split("_")[0]
        img = np.moveaxis(read_image(img_path).array, 0, -1)  # DRIVE TIFFs are LZW-compressed
        lab = iio.imread(drive_root / "training" / "1st_manual" / f"{case}_manual1.gif")
        lab = np.asarray(lab).squeeze()
        y0, x0 = 200, 300  # temporal side of the disc: many vessels of all calibres
        tifffile.imwrite(dest / f"{case}.tif", img[y0:y0 + size, x0:x0 + size])
        tifffile.imwrite(dest / f"{case}_label.tif",
                         (lab[y0:y0 + size, x0:x0 + size] > 0).astype(np.uint8))
        entries.append({"image": f"{case}.tif", "label": f"{case}_label.tif"})
        del i
    ds = dest / "dataset.json"
    ds.write_text(json.dumps({"labels": {"0": "background", "1": "vessel"}, "training": entries}))
    return ds


@pytest.mark.slow
def test_end_to_end_on_two_drive_crops(tmp_path: Path, drive_root: Path):
    ds = _drive_crops(drive_root, tmp_path)
    ckpt = tmp_path / "drive.ckpt"
    assert main(["train", "--data", str(ds), "--arch", "drunet", "--out", str(ckpt),
                 "--max-steps", "150", "--epochs", "15", "--lr", "5e-3", "--features", "8,16,32",
                 "--patch-size", "64", "--batch-size", "4", "--fg-fraction", "0.5",
                 "--device", "cpu"]) == 0
    pred_dir = tmp_path / "pred"
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for f in tmp_path.glob("*.tif"):
        if not f.name.endswith("_label.tif"):
            (imgs / f.name).write_bytes(f.read_bytes())
    prob_dir = tmp_path / "prob"
    assert main(["predict", "--model", str(ckpt), "--input", str(imgs), "--output",
                 str(pred_dir), "--prob", str(prob_dir), "--device", "cpu"]) == 0
    truth = tmp_path / "truth"
    truth.mkdir()
    for f in tmp_path.glob("*_label.tif"):
        (truth / f.name.replace("_label", "")).write_bytes(f.read_bytes())
    res = tmp_path / "res.json"
    assert main(["evaluate", "--pred", str(pred_dir), "--truth", str(truth), "--prob",
                 str(prob_dir), "--json", str(res)]) == 0
    mean = json.loads(res.read_text())["mean"]["mean"]
    # 150 steps of a tiny net on two crops already separates vessels from background far above
    # chance: AUC 0.5 is chance; an all-vessel mask scores Dice = 2f/(1+f) ~ 0.2 here.
    assert mean["auc"]["mean"] > 0.85
    assert mean["dice"]["mean"] > 0.4


def test_train_rotate_and_scale_reach_the_recipe(tmp_path: Path, synthetic_dataset: Path):
    from napari_drunet.core.models.checkpoint import read_meta

    ckpt = tmp_path / "aug.ckpt"
    assert main(["train", "--data", str(synthetic_dataset), "--dims", "2", "--out", str(ckpt),
                 "--max-steps", "4", "--epochs", "1", "--rotate", "20", "--scale", "0.2",
                 "--degrade", "0.5", *TINY]) == 0
    config = read_meta(ckpt)["training"]["config"]
    assert config["rotate"] == 20.0 and config["scale"] == 0.2 and config["degrade"] == 0.5


def test_widen_then_finetune_trains_the_wider_network(tmp_path: Path, synthetic_dataset: Path,
                                                      capsys):
    from napari_drunet.core.models.checkpoint import read_meta

    ckpt, wide, tuned = tmp_path / "m.ckpt", tmp_path / "wide.ckpt", tmp_path / "tuned.ckpt"
    assert main(["train", "--data", str(synthetic_dataset), "--dims", "2", "--out", str(ckpt),
                 "--max-steps", "4", "--epochs", "1", *TINY]) == 0
    assert main(["widen", "--model", str(ckpt), "--factor", "2", "--out", str(wide)]) == 0
    assert main(["finetune", "--model", str(wide), "--data", str(synthetic_dataset),
                 "--out", str(tuned), "--max-steps", "4", "--epochs", "1", "--patch-size", "32",
                 "--batch-size", "2", "--device", "cpu"]) == 0
    meta = read_meta(tuned)
    assert meta["arch_kwargs"]["features"] == [16, 32]
    assert meta["provenance"]["parent"]  # the wider file is the parent of the fine-tuned one
    assert read_meta(wide)["provenance"]["widened_from"]["factor"] == 2.0


def test_finetune_follows_the_round_defaults(tmp_path: Path, synthetic_dataset: Path,
                                            monkeypatch):
    """drunet finetune takes its steps, learning rate and patch from default_round_settings
    (the one place of the widget's and `drunet project finetune`'s defaults)."""
    from napari_drunet.core.correction import round as rounds
    from napari_drunet.core.models.checkpoint import read_meta

    ckpt, tuned = tmp_path / "m.ckpt", tmp_path / "tuned.ckpt"
    assert main(["train", "--data", str(synthetic_dataset), "--dims", "2", "--out", str(ckpt),
                 "--max-steps", "2", "--epochs", "1", *TINY]) == 0
    monkeypatch.setattr(rounds, "default_round_settings", lambda model=None, project=None:
                        rounds.RoundSettings(steps=3, lr=2e-4, patch_2d=16))
    assert main(["finetune", "--model", str(ckpt), "--data", str(synthetic_dataset),
                 "--out", str(tuned), "--batch-size", "2", "--device", "cpu"]) == 0
    meta = read_meta(tuned)["training"]
    assert (meta["config"]["max_steps"], meta["config"]["lr"]) == (3, 2e-4)
    assert meta["config"]["patch_size"] == [16, 16] and not meta["config"]["only_weighted"]
    assert meta["config"]["time_budget"] is None


def test_finetune_under_another_normalization(tmp_path: Path, synthetic_dataset: Path, capsys):
    """drunet finetune --normalization: the checkpoint continues under the new input
    normalisation, its statistics re-estimated first; an unknown mode is a one-line error."""
    from napari_drunet.core.models.checkpoint import read_meta

    ckpt, tuned = tmp_path / "m.ckpt", tmp_path / "tuned.ckpt"
    assert main(["train", "--data", str(synthetic_dataset), "--dims", "2", "--out", str(ckpt),
                 "--max-steps", "3", "--epochs", "1", *TINY]) == 0
    common = ["finetune", "--model", str(ckpt), "--data", str(synthetic_dataset),
              "--max-steps", "2", "--epochs", "1", "--patch-size", "32", "--batch-size", "2",
              "--device", "cpu"]
    assert main([*common, "--out", str(tuned), "--normalization", "minmax"]) == 0
    assert "re-estimated on 3 case(s)" in capsys.readouterr().out
    meta = read_meta(tuned)
    assert read_meta(ckpt)["normalization"]["mode"] != "minmax"
    assert meta["normalization"]["mode"] == "minmax"
    assert meta["training"]["config"]["normalization"]["mode"] == "minmax"
    assert main([*common, "--out", str(tmp_path / "x.ckpt"), "--normalization", "bogus"]) != 0
    assert "unknown normalization mode" in capsys.readouterr().err


def test_adapt_writes_a_model_for_another_site(tmp_path: Path, synthetic_dataset: Path, capsys):
    """drunet adapt: statistics re-estimated on a folder of the site's images, weights kept;
    the result predicts like any model file; bad inputs give one-line errors."""
    from napari_drunet.core.models.checkpoint import read_meta
    from napari_drunet.core.models.model import load_model

    ckpt, adapted = tmp_path / "m.ckpt", tmp_path / "site.safetensors"
    assert main(["train", "--data", str(synthetic_dataset), "--dims", "2", "--out", str(ckpt),
                 "--max-steps", "3", "--epochs", "1", *TINY]) == 0
    site = tmp_path / "site"
    site.mkdir()
    rng = np.random.default_rng(5)
    for i in range(2):  # another "scanner": darker, noisier
        img, _ = _disk_image(rng)
        noisy = 0.5 * img + rng.normal(0, 20, img.shape)
        tifffile.imwrite(site / f"s{i}.tif", noisy.clip(0, 255).astype(np.uint8))
    capsys.readouterr()
    assert main(["adapt", "--model", str(ckpt), "--input", str(site), "--out", str(adapted),
                 "--device", "cpu"]) == 0
    assert "re-estimated on 2 image(s)" in capsys.readouterr().out
    meta = read_meta(adapted)
    assert meta["adaptation"]["images"] == 2 and meta["adaptation"]["batches"] == 2
    assert meta["provenance"]["adapted_from"]["images"] == ["s0.tif", "s1.tif"]
    old, new = load_model(ckpt, "cpu"), load_model(adapted, "cpu")
    assert not torch_equal(old, new, "running_mean") and torch_equal(old, new, "weight")
    assert main(["predict", "--model", str(adapted), "--input", str(site / "s0.tif"),
                 "--output", str(tmp_path / "out")]) == 0
    assert read_image(tmp_path / "out" / "s0.tif").array.shape == (1, 48, 48)
    # errors: missing input, empty folder, a model without batch norm
    assert main(["adapt", "--model", str(ckpt), "--input", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "x.ckpt")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["adapt", "--model", str(ckpt), "--input", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "x.ckpt")]) == 2
    inorm = tmp_path / "inorm.ckpt"
    assert main(["train", "--data", str(synthetic_dataset), "--dims", "2", "--out", str(inorm),
                 "--max-steps", "2", "--epochs", "1", "--norm", "instance", *TINY]) == 0
    capsys.readouterr()
    assert main(["adapt", "--model", str(inorm), "--input", str(site),
                 "--out", str(tmp_path / "x.ckpt")]) == 2
    assert "no batch-norm layers" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()


def torch_equal(a, b, suffix: str) -> bool:
    sa, sb = a.network.state_dict(), b.network.state_dict()
    return all(bool((sa[k] == sb[k]).all()) for k in sa if k.endswith(suffix))
