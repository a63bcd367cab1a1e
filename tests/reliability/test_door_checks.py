"""Values checked where they enter (argparse types, the dataset loader, the model loader):
one ``error:`` line, exit status 2, no traceback, before any work starts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import assert_user_error, make_dataset, run_cli  # noqa: E402

from napari_drunet.cli import main  # noqa: E402

TINY = ["--max-steps", "1", "--patch-size", "16", "--batch-size", "1", "--device", "cpu",
        "--epochs", "1"]


def _door(capsys, argv, must: str = "") -> str:
    code = main([str(a) for a in argv])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2, (argv, code, err)
    assert len(err) == 1 and err[0].startswith("error: "), (argv, err)
    assert must.lower() in err[0].lower(), (argv, err[0])
    return err[0]


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    return path


@pytest.mark.parametrize("option, value, must", [
    ("--threshold", "1.5", "threshold"), ("--threshold", "-0.1", "threshold"),
    ("--threshold", "nan", "threshold"), ("--threads", "-1", "--threads"),
    ("--threads", "0", "--threads")])
def test_predict_options(capsys, tmp_path, models, image, option, value, must):
    _door(capsys, ["predict", "--model", models["m1"], "--input", image, "--output",
                   tmp_path / "o", option, value], must)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, must", [
    (["--threads", "-1"], "--threads"), (["--seed", "-5"], "--seed"),
    (["--features", "100000,200000"], "--features"),
    (["--features", ",".join(["4"] * 14)], "levels"), (["--lr", "nan"], "--lr"),
    (["--lr", "-1"], "--lr")])
def test_train_options(capsys, tmp_path, extra, must):
    ds = make_dataset(tmp_path / "ds")
    _door(capsys, ["train", "--data", ds, "--out", tmp_path / "m.safetensors", *TINY, *extra],
          must)
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("factor", ["inf", "nan", "0.5", "1e9"])
def test_widen_factor(capsys, tmp_path, models, factor):
    _door(capsys, ["widen", "--model", models["m1"], "--factor", factor, "--out",
                   tmp_path / "w.safetensors"], "--factor")


def test_argument_errors_are_one_line_in_a_real_process(tmp_path, models, image):
    proc = run_cli("predict", "--model", models["m1"], "--input", image, "--output",
                   tmp_path / "o", "--threshold", "7")
    assert "threshold" in assert_user_error(proc)


def _dataset(tmp_path: Path, **changes) -> Path:
    ds = make_dataset(tmp_path / "ds", n=3)
    spec = json.loads(ds.read_text())
    spec.update(changes)
    ds.write_text(json.dumps(spec))
    return ds


def test_duplicated_cases_are_refused(capsys, tmp_path):
    ds = make_dataset(tmp_path / "ds", n=3)
    spec = json.loads(ds.read_text())
    spec["training"].append(dict(spec["training"][0]))
    spec["training"][-1]["image"] = "./" + spec["training"][-1]["image"]  # same file, respelt
    ds.write_text(json.dumps(spec))
    _door(capsys, ["train", "--data", ds, "--out", tmp_path / "m.safetensors", *TINY],
          "same image")


@pytest.mark.parametrize("labels, must", [
    ({"0": "background", "300": "x"}, "too large"), ({"0": "background", "²": "x"}, "'²'"),
    ({"0": "background", "1": "a", "01": "b"}, "named twice"), (["background"], "labels")])
def test_bad_label_keys(capsys, tmp_path, labels, must):
    ds = _dataset(tmp_path, labels=labels)
    _door(capsys, ["train", "--data", ds, "--out", tmp_path / "m.safetensors", *TINY], must)


@pytest.mark.parametrize("text", [
    '{"labels": {}, "training": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"training": [], "n": 1' + "0" * 5000 + "}"])
def test_hostile_dataset_json(capsys, tmp_path, text):
    ds = tmp_path / "dataset.json"
    ds.write_text(text)
    _door(capsys, ["train", "--data", ds, "--out", tmp_path / "m.safetensors", *TINY],
          "dataset.json")


def _tampered(tmp_path: Path, src: Path, text: str | None = None, **changes) -> Path:
    from safetensors.torch import load_file, save_file

    from napari_drunet.core.models.checkpoint import read_meta

    meta = read_meta(src)
    meta.update(changes)
    out = tmp_path / "tampered.safetensors"
    save_file(load_file(src), out, metadata={"napari_drunet": text or json.dumps(meta)})
    return out


@pytest.mark.parametrize("change", [
    {"preprocess": {"fov_diameter": 0}}, {"preprocess": {"fov_diameter": "big"}},
    {"preprocess": {"spacing": [0, 1, 1]}}, {"preprocess": {"spacing": "1mm"}},
    {"preprocess": [1, 2]}, {"preprocess": {"fov_diameter": 540, "mask_outside_fov": "yes"}}])
def test_tampered_preprocess_recipe(capsys, tmp_path, models, image, change):
    bad = _tampered(tmp_path, models["m1"], **change)
    _door(capsys, ["predict", "--model", bad, "--input", image, "--output", tmp_path / "o",
                   "--device", "cpu"], "preprocess")
    assert not (tmp_path / "o").exists()


def test_recipe_too_deep_for_any_padding(capsys, tmp_path, models, image):
    from napari_drunet.core.models.checkpoint import read_meta

    kwargs = dict(read_meta(models["m1"])["arch_kwargs"], features=[4] * 41)
    bad = _tampered(tmp_path, models["m1"], arch_kwargs=kwargs)
    _door(capsys, ["predict", "--model", bad, "--input", image, "--output", tmp_path / "o",
                   "--device", "cpu"], "41 levels")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  '{"format_version": 1' + "0" * 5000 + "}"])
def test_hostile_model_header(capsys, tmp_path, models, image, text):
    bad = _tampered(tmp_path, models["m1"], text=text)
    _door(capsys, ["predict", "--model", bad, "--input", image, "--output", tmp_path / "o",
                   "--device", "cpu"], "recipe")
