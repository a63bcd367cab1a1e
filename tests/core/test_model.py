"""Model API: prepare rules, predict on numpy / ImageData, MC dropout, save/copy, model zoo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_drunet
from napari_drunet.core.errors import CheckpointError, InputError
from napari_drunet.core.image.io import ImageData
from napari_drunet.core.image.normalization import normalize
from napari_drunet.core.infer.predict import InferenceConfig, predict
from napari_drunet.core.models import packaged
from napari_drunet.core.models.model import Model, Prediction, list_models, load_model, model_card
from napari_drunet.core.nets.networks import build_model

NORM = {"mode": "zscore"}


def make_model(dims: int = 2, cin: int = 1, k: int = 1, dropout: float = 0.0, **meta) -> Model:
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=dims, in_channels=cin, out_channels=k,
                      features=(8, 16), dropout=dropout)
    base = {"normalization": NORM, "threshold": 0.5}
    base.update(meta)
    return Model(net, base, device="cpu", name="tiny")


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def test_properties():
    m = make_model(cin=3, k=3, label_names={"1": "liver"})
    assert (m.spatial_dims, m.in_channels, m.out_channels) == (2, 3, 3)
    assert m.label_names == {0: "background", 1: "liver", 2: "class 2"}
    assert m.threshold == 0.5 and m.normalization == NORM
    assert m.meta["arch"] == "drunet" and m.meta["arch_kwargs"]["in_channels"] == 3
    assert make_model().label_names == {0: "background", 1: "foreground"}
    assert "tiny" in repr(m)


def test_predict_numpy_matches_inference():
    m = make_model()
    image = rand(33, 37)
    pred = m.predict(image)
    assert isinstance(pred, Prediction)
    assert pred.mask.shape == (33, 37) and np.issubdtype(pred.mask.dtype, np.integer)
    assert pred.probabilities.shape == (1, 33, 37) and pred.probabilities.dtype == np.float32
    ref = predict(m.network, normalize(image[None], NORM), InferenceConfig(device="cpu"))
    np.testing.assert_allclose(pred.probabilities, ref, atol=1e-6)
    np.testing.assert_array_equal(pred.mask, (ref[0] >= 0.5).astype(np.uint8))
    assert pred.info["device"] == "cpu" and pred.info["tiles"] == 1
    assert pred.info["warnings"] == []
    # threshold option changes the mask, not the probabilities
    low = m.predict(image, threshold=0.0)
    assert low.mask.all() and np.array_equal(low.probabilities, pred.probabilities)


def test_predict_imagedata_and_channel_first_agree():
    m = make_model(cin=2, k=3)
    arr = np.round(rand(2, 20, 24))
    a = m.predict(ImageData(arr.astype(np.uint16)))
    b = m.predict(arr)
    c = m.predict(np.moveaxis(arr, 0, -1), channel_axis=-1)
    assert a.mask.shape == (20, 24) and a.probabilities.shape == (3, 20, 24)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    np.testing.assert_allclose(c.probabilities, b.probabilities, atol=1e-6)
    np.testing.assert_array_equal(a.mask, a.probabilities.argmax(0))


def test_prepare_rules():
    gray2d, rgb2d = make_model(cin=1), make_model(cin=3)
    assert gray2d.prepare(rand(10, 12)).shape == (1, 10, 12)
    assert gray2d.prepare(rand(5, 10, 12)).shape == (1, 5, 10, 12)  # volume, slice-wise
    assert gray2d.prepare(rand(1, 10, 12)).shape == (1, 10, 12)
    assert rgb2d.prepare(rand(3, 10, 12)).shape == (3, 10, 12)
    assert rgb2d.prepare(rand(10, 12, 4), is_rgb=True).shape == (3, 10, 12)  # alpha dropped
    assert rgb2d.prepare(rand(10, 12)).shape == (3, 10, 12)  # gray repeated
    assert make_model(dims=3).prepare(rand(6, 8, 8)).shape == (1, 6, 8, 8)
    assert make_model(dims=3, cin=2).prepare(rand(2, 6, 8, 8)).shape == (2, 6, 8, 8)
    raw = rand(10, 12)
    np.testing.assert_array_equal(gray2d.prepare(raw, normalized=True)[0], raw)
    out = gray2d.prepare(raw)
    assert out.dtype == np.float32 and abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3


def test_rgb_to_gray_model_uses_luminance():
    m = make_model(cin=1)
    rgb = rand(16, 18, 3)
    pred = m.predict(rgb, is_rgb=True)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(pred.probabilities, m.predict(luma).probabilities, atol=1e-5)
    assert "grayscale" in pred.info["warnings"][0]
    img = ImageData(np.moveaxis(rgb, -1, 0), is_rgb=True)
    np.testing.assert_allclose(m.predict(img).probabilities, pred.probabilities, atol=1e-5)


def test_prepare_errors():
    with pytest.raises(InputError, match="expects 2 channel"):
        make_model(cin=2).prepare(rand(3, 10, 10))
    with pytest.raises(InputError, match="expects 1 channel"):
        make_model(cin=1).prepare(rand(3, 4, 10, 10))  # 3 channels, not flagged RGB
    with pytest.raises(InputError, match="is 3D"):
        make_model(dims=3).prepare(rand(10, 10))
    with pytest.raises(InputError, match="last axis"):
        make_model(cin=3).prepare(rand(3, 10, 10), is_rgb=True)
    with pytest.raises(InputError, match="cannot use an image"):
        make_model().prepare(rand(2, 2, 2, 2, 2))
    with pytest.raises(InputError, match="unknown inference option"):
        make_model().predict(rand(8, 8), tiles=4)


def test_volume_with_2d_model_and_3d_model():
    vol = rand(4, 16, 18)
    p2 = make_model().predict(vol, batch_size=2)
    assert p2.mask.shape == (4, 16, 18) and p2.info["mode"] == "2d-slices"
    p3 = make_model(dims=3, k=2).predict(vol, tile_size=8)
    assert p3.probabilities.shape == (2, 4, 16, 18) and p3.info["mode"] == "3d"


def test_meta_inference_defaults_are_used():
    m = make_model(inference={"tile_size": [16, 16], "overlap": 0.5, "tta": True,
                              "unknown_key": 1})
    pred = m.predict(rand(40, 40))
    # the stored tile_size is the training patch: the image still runs in one pass
    assert pred.info["tiles"] == 1 and pred.info["tile_size"] == [40, 40]
    plain = m.predict(rand(40, 40), tta=False)
    assert np.abs(plain.probabilities - pred.probabilities).max() > 1e-4  # tta default used
    explicit = m.predict(rand(40, 40), tile_size=16)
    assert explicit.info["tile_size"] == [16, 16] and explicit.info["tiles"] > 4


def test_predict_iter_yields_progress():
    m = make_model()
    gen = m.predict_iter(rand(40, 40), tile_size=16, batch_size=1)
    records = []
    try:
        while True:
            records.append(next(gen))
    except StopIteration as stop:
        pred = stop.value
    assert len(records) == pred.info["tiles"] >= 9
    assert pred.mask.shape == (40, 40)


def test_mc_dropout():
    m = make_model(dropout=0.3)
    image = rand(24, 24)
    mean, unc = m.mc_dropout(image, n=4, measure="std")
    assert mean.shape == (1, 24, 24) and unc.shape == (24, 24)
    assert unc.max() > 1e-4 and unc.min() >= 0
    _, mi = m.mc_dropout(image, n=4, measure="mutual_info")
    assert mi.max() > 0
    _, ent = m.mc_dropout(image, n=3)
    assert 0 <= ent.min() and ent.max() <= 1.0 + 1e-6
    assert not any(mod.training for mod in m.network.modules())  # modes restored
    records = []
    gen = m.mc_dropout_iter(image, n=2, tile_size=16, batch_size=1)
    try:
        while True:
            records.append(next(gen))
    except StopIteration:
        pass
    assert records[-1].step == records[-1].total == 2 * 4
    with pytest.raises(InputError, match="no dropout"):
        make_model(dropout=0.0).mc_dropout(image)
    with pytest.raises(InputError, match="measure"):
        m.mc_dropout(image, measure="variance")


def test_save_load_copy(tmp_path):
    m = make_model(k=2, label_names={"0": "background", "1": "tumour"},
                   provenance={"created": "2020-01-01T00:00:00", "data": ["a"]})
    path = m.save(tmp_path / "m.safetensors", metrics={"val_dice": 0.9})
    loaded = load_model(path, device="cpu")
    assert loaded.name == "m" and loaded.path == path
    assert loaded.meta["metrics"] == {"val_dice": 0.9}
    assert loaded.label_names[1] == "tumour"
    assert loaded.meta["provenance"]["created"] != "2020-01-01T00:00:00"
    assert loaded.meta["provenance"]["data"] == ["a"]
    image = rand(20, 20)
    np.testing.assert_array_equal(loaded.predict(image).probabilities,
                                  m.predict(image).probabilities)
    dup = m.copy()
    with torch.no_grad():
        next(dup.network.parameters()).add_(1.0)
    assert not torch.equal(next(dup.network.parameters()), next(m.network.parameters()))
    assert napari_drunet.load_model(str(path), device="cpu").out_channels == 2


def test_zoo(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged, "WEIGHTS_DIR", tmp_path)
    assert list_models() == []
    with pytest.raises(CheckpointError, match=r"unknown model 'vessels'.*packaged: none"):
        load_model("vessels")
    make_model(metrics={"dice": 0.8}).save(tmp_path / "vessels.safetensors")
    (tmp_path / "notes.txt").write_text("not a model")
    assert list_models() == ["vessels"]
    assert napari_drunet.list_models() == ["vessels"]
    m = load_model("vessels", device="cpu")
    assert m.name == "vessels" and m.in_channels == 1
    with pytest.raises(CheckpointError, match=r"unknown model 'liver'.*packaged: vessels"):
        load_model("liver")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    card = model_card("vessels")
    assert "drunet" in card and "dice = 0.8" in card
    (tmp_path / "vessels.md").write_text("# Vessels\nTrained on DRIVE.\n")
    assert model_card("vessels").startswith("# Vessels")
    with pytest.raises(CheckpointError):
        model_card("liver")
