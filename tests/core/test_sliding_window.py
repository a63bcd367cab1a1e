"""The tile loop as pure geometry that takes a predictor callable (like MONAI's
``sliding_window_inference``): a pointwise predictor blended over tiles gives exactly what it
gives on the whole image, whatever the tiles, overlap, blend and batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_drunet.core.infer.config import InferenceConfig
from napari_drunet.core.infer.predict import network_predictor, predict
from napari_drunet.core.infer.tiling import flip_averaged, sliding_window
from napari_drunet.core.nets.networks import build_model


def pointwise(dims: int, cin: int = 2, k: int = 3) -> torch.nn.Module:
    """A fixed 1x1 convolution + softmax: each output pixel depends on its input pixel only,
    so a correct blend of its tiles equals its output on the untiled image."""
    torch.manual_seed(0)
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(cin, k, 1)
    return torch.nn.Sequential(conv, torch.nn.Softmax(dim=1)).eval()


def untiled(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(image[None])).numpy()[0]


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(("tile", "overlap", "batch"), [((32, 24), 0.25, 1), ((16, 16), 0.5, 3),
                                                         ((64, 64), 0.25, 2)])
def test_blend_of_tiles_equals_the_untiled_prediction(blend, tile, overlap, batch):
    image = np.random.default_rng(1).normal(size=(2, 70, 53)).astype(np.float32)
    net = pointwise(2)
    out = sliding_window(image, tile, lambda x: net(x).detach(), overlap, batch, blend)
    assert out.shape == (3, 70, 53) and out.dtype == np.float32
    np.testing.assert_allclose(out, untiled(net, image), atol=2e-6)


def test_volume_smaller_than_the_tile_on_one_axis_is_padded_and_cropped():
    image = np.random.default_rng(2).normal(size=(2, 9, 40, 33)).astype(np.float32)
    net = pointwise(3)
    out = sliding_window(image, (16, 16, 16), lambda x: net(x).detach(), 0.5, 2)
    assert out.shape == (3, 9, 40, 33)
    np.testing.assert_allclose(out, untiled(net, image), atol=2e-6)


def test_a_tile_dependent_predictor_is_not_hidden_by_the_blend():
    """The comparison can fail: a predictor whose output depends on where the tile lies (a
    zero-padded 3x3 mean sees the tile's border) differs from its untiled output where tiles
    meet (equal blend weights: the Gaussian would make the border pixels count little)."""
    image = np.random.default_rng(3).random((1, 48, 48)).astype(np.float32)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    torch.nn.init.constant_(conv.weight, 1 / 9)
    out = sliding_window(image, (16, 16), lambda x: conv(x).detach(), 0.25, blend="constant")
    whole = untiled(conv.eval(), image)
    assert np.abs(out - whole).max() > 1e-2


def test_flip_averaged_undoes_each_flip():
    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    seen = []

    def record(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.clone())
        return batch * 2

    out = flip_averaged(record, 2)(x)
    assert len(seen) == 4 and torch.equal(seen[3], torch.flip(x, [2, 3]))
    assert torch.equal(out, x * 2)


@pytest.mark.parametrize("tta", [False, True])
def test_predict_is_the_tiler_with_the_network_as_predictor(tta):
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=1,
                      features=(4, 8)).eval()
    image = np.random.default_rng(4).normal(size=(1, 50, 45)).astype(np.float32)
    cfg = InferenceConfig(tile_size=32, overlap=0.25, batch_size=2, tta=tta, device="cpu",
                          fold_bn=False, channels_last=False)
    expected = sliding_window(image, (32, 32), network_predictor(net, cfg, 2,
                                                                 torch.device("cpu")),
                              0.25, 2)
    np.testing.assert_array_equal(predict(net, image, cfg), expected)
