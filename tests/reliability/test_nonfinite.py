"""Silently wrong models: NaN/Inf weights are never saved nor loaded, adaptation refuses images
that would ruin the statistics, and a stack of photographs is named in a warning."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import assert_user_error, make_dataset, run_cli, save_tiny  # noqa: E402

from napari_drunet.cli import main  # noqa: E402
from napari_drunet.core.errors import CheckpointError, InputError  # noqa: E402
from napari_drunet.core.image.io import ImageData  # noqa: E402
from napari_drunet.core.models.checkpoint import load_checkpoint, read_meta, save_checkpoint  # noqa: E402
from napari_drunet.core.models.model import Model, load_model  # noqa: E402

TINY = ["--max-steps", "3", "--patch-size", "16", "--batch-size", "1", "--device", "cpu",
        "--epochs", "1", "--steps-per-epoch", "3"]


def _one_error(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2, (argv, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("command", ["finetune", "train"])
def test_diverging_training_is_an_error_and_saves_nothing(capsys, tmp_path, models, command):
    ds = make_dataset(tmp_path / "ds")
    out = tmp_path / "m.safetensors"
    extra = ["--model", models["m1"]] if command == "finetune" else ["--features", "4,8"]
    msg = _one_error(capsys, [command, "--data", ds, "--out", out, "--lr", "1e30",
                              "--val-fraction", "0", *TINY, *extra])
    assert "diverged" in msg and "nothing was saved" in msg, msg
    assert not out.exists()


def test_diverging_finetune_keeps_the_validated_file_and_says_so(capsys, tmp_path, models):
    ds = make_dataset(tmp_path / "ds", n=3)
    out = tmp_path / "m.safetensors"
    msg = _one_error(capsys, ["finetune", "--data", ds, "--out", out, "--lr", "1e30",
                              "--val-fraction", "0.34", "--model", models["m1"], *TINY])
    assert "diverged" in msg and "keeps the best weights" in msg, msg
    net, _ = load_checkpoint(out)  # the weights validated before the divergence, all finite
    assert all(torch.isfinite(t).all() for t in net.state_dict().values()
               if t.is_floating_point())


def test_nan_weights_are_never_saved(tmp_path, models):
    model = load_model(models["m1"], "cpu")
    with torch.no_grad():
        next(model.network.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN/Inf"):
        save_checkpoint(tmp_path / "nan.safetensors", model.network, model.meta)
    with pytest.raises(CheckpointError, match="NaN/Inf"):
        model.save(tmp_path / "nan2.safetensors")
    assert list(tmp_path.iterdir()) == []  # not even a temporary file


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_tampered_model_with_nonfinite_weights_is_refused_on_load(tmp_path, models, value):
    from safetensors.torch import load_file, save_file

    tensors = load_file(models["m1"])
    name = next(k for k, t in tensors.items() if t.is_floating_point() and "running" in k)
    tensors[name][0] = value
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad, metadata={"napari_drunet": json.dumps(read_meta(models["m1"]))})
    with pytest.raises(CheckpointError, match="ruined model"):
        load_model(bad, "cpu")
    proc = run_cli("predict", "--model", bad, "--input", tmp_path / "none.tif", "--output",
                   tmp_path / "o")
    assert_user_error(proc)  # input missing first; now an existing input:
    img = tmp_path / "a.tif"
    tifffile.imwrite(img, np.zeros((16, 16), np.uint8))
    line = assert_user_error(run_cli("predict", "--model", bad, "--input", img, "--output",
                                     tmp_path / "o", "--device", "cpu"))
    assert "ruined model" in line and not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["one_pixel", "all_nan_volume", "constant"])
def test_adapt_refuses_unusable_images(capsys, tmp_path, models, case):
    import nibabel as nib

    src = tmp_path / "in"
    src.mkdir()
    if case == "one_pixel":
        tifffile.imwrite(src / "p.tif", np.ones((1, 1), np.uint8))
        model, must = models["m1"], "too small"
    elif case == "all_nan_volume":
        nib.save(nib.Nifti1Image(np.full((16, 16, 16), np.nan, np.float32), np.eye(4)),
                 src / "v.nii.gz")
        model, must = models["m3d"], "no finite pixel"
    else:
        tifffile.imwrite(src / "c.tif", np.full((32, 32), 9, np.uint16))
        model, must = models["m1"], "constant"
    out = tmp_path / "adapted.safetensors"
    msg = _one_error(capsys, ["adapt", "--model", model, "--input", src, "--out", out,
                              "--device", "cpu"])
    assert must in msg, msg
    assert not out.exists()


def test_adapt_still_works_on_usable_images(tmp_path, models):
    from napari_drunet.core.train.adapt import adapt_batchnorm

    rng = np.random.default_rng(0)
    model = load_model(models["m1"], "cpu")
    adapted = adapt_batchnorm(model, [ImageData(rng.random((1, 32, 32)).astype(np.float32))])
    adapted.save(tmp_path / "ok.safetensors")
    load_model(tmp_path / "ok.safetensors", "cpu")


def test_a_stack_of_photographs_is_named_when_the_fov_rescale_is_skipped(tmp_path):
    path = save_tiny(tmp_path / "fov.safetensors")
    model = load_model(path, "cpu")
    model = Model(model.network, {**model.meta, "preprocess": {"fov_diameter": 540}},
                  device="cpu", name="fov")
    stack = np.random.default_rng(0).random((1, 4, 32, 32)).astype(np.float32)
    warnings = model.predict(ImageData(stack)).info["warnings"]
    assert any("stack of 4 images" in w and "FOV" in w for w in warnings), warnings
    single = model.predict(ImageData(stack[:, 0])).info["warnings"]
    assert not any("stack" in w for w in single), single


def test_adapt_api_refuses_and_leaves_the_model_alone(models):
    from napari_drunet.core.train.adapt import adapt_batchnorm

    model = load_model(models["m1"], "cpu")
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    with pytest.raises(InputError, match="constant"):
        adapt_batchnorm(model, [ImageData(np.zeros((1, 32, 32), np.float32))])
    assert all(torch.equal(before[k], v) for k, v in model.network.state_dict().items())
