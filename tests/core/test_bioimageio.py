"""bioimage.io export: the package validates with bioimageio.spec, and its test output is
reproduced by bioimageio.core's own test of the package (both weight formats)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

spec = pytest.importorskip("bioimageio.spec", reason="the bioimageio extra is not installed")
pytest.importorskip("bioimageio.core", reason="the bioimageio extra is not installed")

from napari_drunet.cli import main  # noqa: E402
from napari_drunet.core.image.normalization import normalize  # noqa: E402
from napari_drunet.core.models.bioimageio import (  # noqa: E402
    export_bioimageio,
    recipe_normalization,
    training_data_license,
)
from napari_drunet.core.models.model import Model, load_model  # noqa: E402
from napari_drunet.core.nets.networks import build_model  # noqa: E402


def _model(dims: int, classes: int) -> Model:
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=dims, in_channels=1, out_channels=classes,
                      features=(4, 8))
    labels = {str(k): f"class{k}" for k in range(max(2, classes))}
    return Model(net.eval(), {"normalization": {"mode": "percentile_zscore"}, "threshold": 0.5,
                              "label_names": labels}, device="cpu", name="tiny")


def _members(zip_path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.mark.parametrize(("dims", "classes"), [(2, 1), (3, 3)])
def test_package_validates_and_reproduces_its_test_output(tmp_path, dims, classes):
    from bioimageio.spec import load_description

    model = _model(dims, classes)
    out = export_bioimageio(model, tmp_path / "model.zip")
    descr = load_description(out)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary
    assert set(descr.weights.model_fields_set) >= {"torchscript", "onnx"}
    files = _members(out)
    assert {"rdf.yaml", "README.md", "cover.png", "weights.pt", "weights.onnx",
            "test_input.npy", "test_output.npy"} <= set(files)
    assert "zero_mean_unit_variance" in files["rdf.yaml"].decode()

    # the test output is what our own pipeline gives with the exported recipe
    (tmp_path / "x").mkdir()
    for name in ("test_input.npy", "test_output.npy"):
        (tmp_path / "x" / name).write_bytes(files[name])
    x = np.load(tmp_path / "x" / "test_input.npy")
    y = np.load(tmp_path / "x" / "test_output.npy")
    norm = normalize(x[0], recipe_normalization(model.meta["normalization"]))
    ours = model.predict(norm, normalized=True, axis_order="keep", amp=False).probabilities
    np.testing.assert_allclose(y[0], ours, atol=1e-5)
    assert y.shape == (1, classes, *x.shape[2:])

    from bioimageio.core import test_model

    summary = test_model(out)
    assert summary.status == "passed", summary.format()


def test_training_data_licence_from_the_model_card():
    assert training_data_license("Training data and terms: MSD Task04, CC-BY-SA 4.0: ...") \
        == "CC-BY-SA-4.0"
    assert training_data_license("DRIVE, research use") == "BSD-3-Clause"


def test_cli_export_bioimageio(tmp_path, capsys):
    path = _model(2, 1).save(tmp_path / "m.safetensors")
    assert main(["export", "--model", str(path), "--format", "bioimageio",
                 "--out", str(tmp_path / "pkg" / "model.zip")]) == 0
    assert (tmp_path / "pkg" / "model.zip").is_file()
    assert "wrote" in capsys.readouterr().out
    assert load_model(path).spatial_dims == 2


def test_packaged_model_carries_its_training_data_licence(tmp_path):
    from bioimageio.spec import load_description

    out = export_bioimageio(load_model("hippocampus", "cpu"), tmp_path / "hip.zip")
    descr = load_description(out)
    assert descr.validation_summary.status == "valid-format"
    assert descr.license == "CC-BY-SA-4.0"  # MSD Task04, named in the model card
    readme = _members(out)["README.md"].decode()
    assert "Hippocampus" in readme and "percentile" in readme  # card + export notes


def test_a_recipe_without_bioimageio_operation_exports_normalised_input(tmp_path):
    """``fundus_local`` (the retina model's input recipe) has no bioimage.io operation: the
    package says its input is normalised by napari-drunet, its test input is such an image,
    and bioimageio.core's own test of the package passes."""
    from bioimageio.core import test_model

    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=3, out_channels=1, features=(4, 8))
    spec_ = {"mode": "fundus_local"}
    model = Model(net.eval(), {"normalization": spec_, "threshold": 0.5}, device="cpu",
                  name="fundus")
    out = export_bioimageio(model, tmp_path / "fundus.zip")
    files = _members(out)
    assert "zero_mean_unit_variance" not in files["rdf.yaml"].decode()
    assert "fundus_local" in files["README.md"].decode()
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "in.npy").write_bytes(files["test_input.npy"])
    (tmp_path / "x" / "out.npy").write_bytes(files["test_output.npy"])
    x, y = np.load(tmp_path / "x" / "in.npy"), np.load(tmp_path / "x" / "out.npy")
    ours = model.predict(x[0], normalized=True, axis_order="keep", amp=False).probabilities
    np.testing.assert_allclose(y[0], ours, atol=1e-5)  # the network alone, on the test input
    assert test_model(out).status == "passed"
