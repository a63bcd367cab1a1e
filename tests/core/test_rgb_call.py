"""The README's call: ``load_model("retina-vessels").predict(photo)`` with an (H, W, 3) array."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from napari_drunet.cli import main
from napari_drunet.core.errors import InputError
from napari_drunet.core.models.model import Model, list_models, load_model
from napari_drunet.core.nets.networks import build_model


def _tiny(in_channels: int) -> Model:
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=in_channels, out_channels=1,
                      features=[8, 16])
    return Model(net, {}, device="cpu", name="tiny")


@pytest.mark.parametrize("in_channels", [3, 1])
def test_hw3_array_is_an_rgb_photo(in_channels):
    photo = np.random.default_rng(0).integers(0, 255, (40, 36, 3), dtype=np.uint8)
    model = _tiny(in_channels)
    plain = model.predict(photo)
    explicit = model.predict(photo, is_rgb=True)
    assert plain.mask.shape == (40, 36)
    np.testing.assert_array_equal(plain.mask, explicit.mask)
    np.testing.assert_array_equal(plain.probabilities, explicit.probabilities)
    rgba = np.concatenate([photo, np.full((40, 36, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(model.predict(rgba).mask, plain.mask)  # alpha dropped


def test_ambiguous_shape_names_is_rgb_and_channel_axis():
    image = np.zeros((3, 32, 3), np.float32)  # (C, H, W) with W = 3, or (H, W, C) with H = 3
    with pytest.raises(InputError, match=r"ambiguous.*is_rgb=True.*channel_axis=0"):
        _tiny(3).predict(image)
    assert _tiny(3).predict(image, channel_axis=0).mask.shape == (32, 3)
    assert _tiny(3).predict(image, is_rgb=True).mask.shape == (3, 32)


def test_channel_first_and_grey_volumes_keep_their_meaning():
    rng = np.random.default_rng(1)
    assert _tiny(3).predict(rng.random((3, 32, 30))).mask.shape == (32, 30)  # (C, H, W)
    assert _tiny(1).predict(rng.random((5, 32, 30))).mask.shape == (5, 32, 30)  # slice-wise
    # is_rgb=False: the caller says it is not a photo, so (H, W, 3) stays a 3-pixel-wide volume
    assert _tiny(1).predict(rng.random((32, 30, 3)), is_rgb=False).mask.shape == (32, 30, 3)


@pytest.mark.slow
def test_readme_call_and_cli_give_the_same_mask_on_a_drive_photo(drive_root, tmp_path):
    if "retina-vessels" not in list_models():
        pytest.skip("packaged weights not installed")
    src = drive_root / "test" / "images" / "01_test.tif"
    photo = np.asarray(Image.open(src).convert("RGB"))  # (584, 565, 3) uint8, read by Pillow
    model = load_model("retina-vessels", device="cpu")
    t0 = time.perf_counter()
    pred = model.predict(photo)
    t_array = time.perf_counter() - t0
    out = tmp_path / "mask.png"
    t0 = time.perf_counter()
    assert main(["predict", "--model", "retina-vessels", "--input", str(src), "--output",
                 str(out), "--device", "cpu"]) == 0
    t_cli = time.perf_counter() - t0
    cli_mask = np.asarray(Image.open(out)) > 0
    assert pred.mask.shape == photo.shape[:2] == cli_mask.shape
    np.testing.assert_array_equal(pred.mask > 0, cli_mask)
    truth = np.asarray(Image.open(drive_root / "test" / "1st_manual" / "01_manual1.gif")) > 0
    dice = 2 * np.sum((pred.mask > 0) & truth) / (np.sum(pred.mask > 0) + truth.sum())
    assert dice > 0.75, dice  # vessels, not a 584-slice volume of 565 x 3 strips
    assert t_array < 2.0 * t_cli + 1.0, (t_array, t_cli)  # the CLI also loads the model
