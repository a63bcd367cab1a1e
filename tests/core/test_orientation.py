"""Axis order of 3D volumes: header reorientation, the axis-order search, training cases, CLI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from napari_drunet import cli
from napari_drunet.core.errors import InputError
from napari_drunet.core.image.io import ImageData, read_image
from napari_drunet.core.image.normalization import normalize
from napari_drunet.core.infer.orientation import (
    AXIS_ORDERS,
    AxisOrder,
    array_codes,
    foreground_score,
    from_header,
    search_axis_order,
)
from napari_drunet.core.models.model import Model
from napari_drunet.core.nets.networks import build_model
from napari_drunet.core.progress import Progress, run_to_end
from napari_drunet.core.train.dataset import Case
from napari_drunet.core.train.sampling import prepare_case

NORM = {"mode": "zscore"}


def tiny_3d(k: int = 3, **pre) -> Model:
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=3, in_channels=1, out_channels=k, features=(4, 8))
    return Model(net, {"normalization": NORM, "preprocess": pre}, device="cpu", name="tiny3d")


def stored_as(data_xyz: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """nibabel's own reorientation of an RAS (identity-affine) volume: ``(data, affine)``."""
    t = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes))
    return apply_orientation(data_xyz, t), np.eye(4) @ inv_ornt_aff(t, data_xyz.shape)


def vol_xyz(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, (12, 16, 10)).astype(np.float32)


def test_axis_order_round_trip_with_flips():
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 5))
    for order in AXIS_ORDERS:
        for flips in ((), (0,), (1, 2), (0, 1, 2)):
            plan = AxisOrder(order, flips)
            y = plan.apply(x)
            assert y.shape[1:] == tuple(x.shape[1:][a] for a in order)
            np.testing.assert_array_equal(plan.restore(y), x)
            np.testing.assert_array_equal(plan.apply_spatial(x[0]), y[0])
    assert not AxisOrder().active and AxisOrder((0, 1, 2), (1,)).active
    assert AxisOrder((0, 2, 1)).apply(x[:, :, :, :4]).flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("codes", ["RAS", "PIL", "RSA", "LPI", "ASR", "IRP"])
def test_header_reorientation_undoes_any_storage_order(codes: str):
    data = vol_xyz()
    stored, affine = stored_as(data, codes)
    ours = data.T[None]  # the reader's (C, Z, Y, X)
    plan = from_header(affine, "RAS")
    assert array_codes(affine) == codes[::-1]
    np.testing.assert_array_equal(plan.apply(stored.T[None]), ours)
    assert plan.active == (codes != "RAS")
    assert ("reoriented from " + codes) in plan.reason or codes == "RAS"


def test_bad_model_orientation_and_degenerate_header():
    for bad in ("RAX", "RAR", "RA", "RLS"):
        with pytest.raises(InputError):
            from_header(np.eye(4), bad)
    assert not from_header(np.zeros((4, 4)), "RAS").active  # no direction: left as it is


def test_foreground_score_counts_confident_foreground_only():
    prob = np.zeros((3, 2, 2, 2), np.float32)
    prob[0] = 1.0
    prob[:, 0, 0, 0] = (0.1, 0.8, 0.1)  # label 1 with 0.8
    prob[:, 1, 1, 1] = (0.2, 0.3, 0.5)  # label 2 with 0.5
    assert foreground_score(prob) == pytest.approx(1.3)
    binary = np.array([[[[0.2, 0.7], [0.9, 0.4]]]], np.float32)
    assert foreground_score(binary, 0.5) == pytest.approx(1.6)
    assert foreground_score(binary, 0.8) == pytest.approx(0.9)


def _stub_run(target: tuple[int, ...]):
    """A 'network' that finds its structure only when the axes have the ``target`` shape."""
    def run(x: np.ndarray):
        yield Progress(1, 2, "tile 1")
        yield Progress(2, 2, "tile 2")
        prob = np.zeros((2, *x.shape[1:]), np.float32)
        prob[0] = 1.0
        if x.shape[1:] == target:
            prob[:, :2, :2, :2] = np.array([0.1, 0.9], np.float32)[:, None, None, None]
        else:
            prob[:, 0, 0, 0] = (0.4, 0.6)
        return prob
    return run


def test_search_keeps_the_order_where_the_structure_is_found():
    arr = np.zeros((1, 4, 5, 6), np.float32)
    records: list[Progress] = []
    gen = search_axis_order(_stub_run((6, 4, 5)), arr)
    plan, prob, scores = run_to_end(gen, records.append)
    assert plan.order == (2, 0, 1) and prob.shape == (2, 6, 4, 5)
    assert len(scores) == 6 and max(scores) == pytest.approx(8 * 0.9)
    assert "(2, 0, 1)" in plan.reason
    assert len(records) == 12 and records[-1].step == records[-1].total == 12
    assert records[0].message.startswith("axis order 1/6")
    # nothing found anywhere: ties keep the stored order
    empty = run_to_end(search_axis_order(_stub_run((9, 9, 9)), arr))[0]
    assert empty.order == (0, 1, 2)  # 0.6 everywhere: equal scores
    assert not empty.active


def _nifti(tmp_path, name: str, data: np.ndarray, affine: np.ndarray):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return read_image(path)


def test_model_reorients_by_header_and_restores_the_result(tmp_path):
    model = tiny_3d(orientation="RAS")
    data = vol_xyz()
    original = _nifti(tmp_path, "ras.nii.gz", data, np.eye(4))
    sag_data, sag_aff = stored_as(data, "PIL")
    sagittal = _nifti(tmp_path, "pil.nii.gz", sag_data, sag_aff)
    p_ras = model.predict(original).probabilities
    pred = model.predict(sagittal)
    assert pred.probabilities.shape[1:] == sagittal.array.shape[1:]
    assert pred.mask.shape == sagittal.array.shape[1:]
    # the sagittal prediction is the RAS prediction stored the sagittal way (nibabel's transform)
    expected = np.stack([stored_as(p.T, "PIL")[0].T for p in p_ras])
    np.testing.assert_allclose(pred.probabilities, expected, atol=1e-5)
    assert pred.info["axis_order"]["order"] != [0, 1, 2] or pred.info["axis_order"]["flips"]
    assert any("reoriented from PIL" in w for w in pred.info["warnings"])
    kept = model.predict(sagittal, axis_order="keep")
    assert not np.allclose(kept.probabilities, expected, atol=1e-3)
    assert "axis_order" not in kept.info
    with pytest.raises(InputError):
        model.predict(sagittal, axis_order="sideways")


def test_model_without_orientation_ignores_the_header(tmp_path):
    model = tiny_3d()
    sag_data, sag_aff = stored_as(vol_xyz(), "PIL")
    sagittal = _nifti(tmp_path, "pil.nii.gz", sag_data, sag_aff)
    np.testing.assert_array_equal(model.predict(sagittal).probabilities,
                                  model.predict(sagittal, axis_order="keep").probabilities)


def test_model_searches_axes_without_a_header_when_asked():
    model = tiny_3d(axis_search=True)
    vol = np.random.default_rng(3).uniform(0, 100, (1, 10, 12, 8)).astype(np.float32)
    pred = model.predict(ImageData(vol))
    assert len(pred.info.get("axis_scores", [])) == 6
    assert pred.probabilities.shape[1:] == vol.shape[1:]
    # the kept order's prediction, restored, is what predicting in that order gives
    order = AxisOrder(tuple(pred.info["axis_order"]["order"])) if "axis_order" in pred.info \
        else AxisOrder()
    direct = model.predict(ImageData(order.apply(vol)), axis_order="keep").probabilities
    np.testing.assert_allclose(pred.probabilities, order.restore(direct), atol=1e-5)
    # TTA: the search runs without it, the kept order is predicted again with it
    tta = model.predict(ImageData(vol), tta=True)
    assert tta.info["tta"] and len(tta.info["axis_scores"]) == 6
    # a 2D model never searches
    net2 = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8))
    m2 = Model(net2, {"normalization": NORM, "preprocess": {"axis_search": True}}, device="cpu")
    assert "axis_scores" not in m2.predict(vol[0, 0]).info


def test_mc_dropout_uses_the_same_orientation(tmp_path):
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=3, in_channels=1, out_channels=3, features=(4, 8),
                      dropout=0.3)
    model = Model(net, {"normalization": NORM, "preprocess": {"orientation": "RAS"}},
                  device="cpu")
    data = vol_xyz()
    original = _nifti(tmp_path, "ras.nii.gz", data, np.eye(4))
    sagittal = _nifti(tmp_path, "pil.nii.gz", *stored_as(data, "PIL"))
    torch.manual_seed(5)
    mean_ras, unc_ras = model.mc_dropout(original, n=2)
    torch.manual_seed(5)  # same dropout masks: the network sees the same input
    mean, unc = model.mc_dropout(sagittal, n=2)
    assert mean.shape[1:] == unc.shape == sagittal.array.shape[1:]
    expected = np.stack([stored_as(p.T, "PIL")[0].T for p in mean_ras])
    np.testing.assert_allclose(mean, expected, atol=1e-5)
    np.testing.assert_allclose(unc, stored_as(unc_ras.T, "PIL")[0].T, atol=1e-5)


def test_training_cases_are_brought_to_the_prediction_order(tmp_path):
    model = tiny_3d(orientation="RAS")
    data = vol_xyz()
    label_xyz = (data > 50).astype(np.uint8)
    sag_data, sag_aff = stored_as(data, "PIL")
    sag_label = stored_as(label_xyz, "PIL")[0]
    image = _nifti(tmp_path, "pil.nii.gz", sag_data, sag_aff)
    case = Case("c", image, sag_label.T.astype(np.int64))
    prepared = prepare_case(case, NORM, orient=model.find_axis_order)
    np.testing.assert_array_equal(prepared.label, label_xyz.T)
    np.testing.assert_allclose(prepared.image, normalize(data.T[None], NORM), atol=1e-5)
    plain = prepare_case(case, NORM)
    np.testing.assert_array_equal(plain.label, case.label)


def test_cli_axis_order_option(tmp_path, capsys):
    model = tiny_3d(orientation="RAS")
    ckpt = model.save(tmp_path / "m.safetensors")
    sag_data, sag_aff = stored_as(vol_xyz(), "PIL")
    nib.save(nib.Nifti1Image(sag_data, sag_aff), str(tmp_path / "pil.nii.gz"))
    outs = {}
    for mode in ("auto", "keep"):
        out = tmp_path / f"{mode}.nii.gz"
        assert cli.main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "pil.nii.gz"),
                         "--output", str(out), "--axis-order", mode]) == 0
        outs[mode] = read_image(out).array
        assert outs[mode].shape[1:] == sag_data.T.shape
    assert "reoriented from PIL" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "pil.nii.gz"),
                     "--output", str(tmp_path / "x.nii.gz"), "--axis-order", "bad"]) == 2
    assert "invalid choice: 'bad'" in capsys.readouterr().err


def test_search_reports_run_details_of_all_passes():
    model = tiny_3d(axis_search=True)
    vol = np.random.default_rng(4).uniform(0, 100, (1, 8, 10, 6)).astype(np.float32)
    info = model.predict(ImageData(vol)).info
    assert {"tiles", "device", "seconds", "mode"} <= set(info)
    assert len(info["axis_scores"]) == 6
