"""Sliding-window inference: tiling, blending, slice-wise 3D, TTA, progress, cancel, OOM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_drunet.core.errors import InputError
from napari_drunet.core.infer import config as tiling
from napari_drunet.core.infer import predict as inf
from napari_drunet.core.infer.predict import (
    InferenceConfig,
    gaussian_importance_map,
    predict,
    predict_iter,
    probabilities_to_labels,
)
from napari_drunet.core.infer.tiling import flip_sets, tile_slices, tile_starts
from napari_drunet.core.nets.networks import build_model


def pointwise(dims: int = 2, cin: int = 1, k: int = 1) -> nn.Module:
    """1x1 convolutions: receptive field of one pixel, so tiling must not change anything."""
    torch.manual_seed(0)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return nn.Sequential(conv(cin, 4, 1), nn.Tanh(), conv(4, k, 1)).eval()


def local(dims: int = 2, cin: int = 1, k: int = 1) -> nn.Module:
    """Two 3x3 convolutions: receptive field 5."""
    torch.manual_seed(0)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return nn.Sequential(conv(cin, 4, 3, padding=1), nn.Tanh(), conv(4, k, 3, padding=1)).eval()


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CPU = dict(device="cpu", amp=False)  # float32: these compare exact paths (bf16: test_fastpaths)


def test_gaussian_importance_map():
    g = gaussian_importance_map((32, 20), sigma_scale=0.125)
    assert g.shape == (32, 20) and g.dtype == np.float32
    assert g.max() == pytest.approx(1.0)
    assert g.min() > 0
    np.testing.assert_allclose(g, g[::-1, :], rtol=1e-6)
    np.testing.assert_allclose(g, g[:, ::-1], rtol=1e-6)
    row = g[:, 10]
    assert np.all(np.diff(row[:16]) > 0) and np.all(np.diff(row[16:]) < 0)
    # the centre outweighs the corner by orders of magnitude
    assert g[16, 10] / g[0, 0] > 1e3
    g3 = gaussian_importance_map((8, 8, 8))
    assert g3.shape == (8, 8, 8) and g3.max() == pytest.approx(1.0)


@pytest.mark.parametrize("size,tile,overlap", [(61, 32, 0.25), (57, 32, 0.5), (100, 16, 0.0),
                                               (32, 32, 0.25), (10, 32, 0.25)])
def test_tile_starts_cover_with_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0
    if size <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == size
    gaps = np.diff(starts)
    assert np.all(gaps > 0) and np.all(gaps <= tile * (1 - overlap) + 1)
    assert len(tile_slices((size, size), (tile, tile), overlap)) == len(starts) ** 2


@pytest.mark.parametrize("shape,tile", [((57, 61), 32), ((40, 33), 16), ((20, 24), 64)])
def test_tiled_equals_whole_for_pointwise_net(shape, tile):
    net = pointwise()
    image = rand(1, *shape)
    whole = predict(net, image, InferenceConfig(**CPU))
    tiled = predict(net, image, InferenceConfig(tile_size=tile, batch_size=3, **CPU))
    assert whole.shape == tiled.shape == (1, *shape)
    assert whole.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    with torch.no_grad():
        direct = torch.sigmoid(net(torch.from_numpy(image)[None]))[0].numpy()
    np.testing.assert_allclose(whole, direct, atol=1e-6)


def test_tiled_close_to_whole_for_local_net():
    net = local()
    image = rand(1, 57, 61)
    whole = predict(net, image, InferenceConfig(**CPU))
    tiled = predict(net, image, InferenceConfig(tile_size=32, overlap=0.5, **CPU))
    diff = np.abs(tiled - whole)
    assert diff.max() < 0.05
    assert diff.mean() < 2e-3
    # constant blending weighs tile-edge errors more than Gaussian blending
    flat = predict(net, image, InferenceConfig(tile_size=32, overlap=0.5, blend="constant", **CPU))
    assert np.abs(flat - whole).mean() > diff.mean()


def test_tiled_close_to_whole_for_unet():
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=2, in_channels=1, out_channels=1,
                      features=(8, 16)).eval()
    image = rand(1, 48, 52)
    whole = predict(net, image, InferenceConfig(**CPU))
    tiled = predict(net, image, InferenceConfig(tile_size=32, overlap=0.5, **CPU))
    assert tiled.shape == (1, 48, 52)
    assert np.abs(tiled - whole)[:, 8:-8, 8:-8].mean() < 0.02


def test_multiclass_softmax_and_labels():
    net = pointwise(k=3)
    prob = predict(net, rand(1, 20, 22), InferenceConfig(tile_size=16, **CPU))
    assert prob.shape == (3, 20, 22)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    labels = probabilities_to_labels(prob)
    assert labels.shape == (20, 22) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, prob.argmax(0))


def test_probabilities_to_labels_binary():
    prob = np.array([[[0.2, 0.5], [0.7, 0.49]]], dtype=np.float32)
    np.testing.assert_array_equal(probabilities_to_labels(prob, 0.5), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(probabilities_to_labels(prob, 0.3), [[0, 1], [1, 1]])
    with pytest.raises(InputError):
        probabilities_to_labels(np.zeros((4, 4)))


@pytest.mark.parametrize("axis", [0, 2])
def test_slicewise_3d_equals_per_slice_loop(axis):
    net = local()
    volume = rand(1, 5, 18, 21)
    out = predict(net, volume, InferenceConfig(slice_axis=axis, batch_size=2, **CPU))
    assert out.shape == (1, 5, 18, 21)
    n = volume.shape[1 + axis]
    for i in range(n):
        sl = np.take(volume, i, axis=1 + axis)
        ref = predict(net, sl, InferenceConfig(**CPU))
        np.testing.assert_allclose(np.take(out, i, axis=1 + axis), ref, atol=1e-6)


def test_slicewise_tiled_progress_counts_slices_times_tiles():
    net = pointwise()
    volume = rand(1, 3, 40, 40)
    records = []
    out = predict(net, volume, InferenceConfig(tile_size=32, batch_size=1, **CPU),
                  callback=records.append)
    n_tiles = 3 * len(tile_slices((40, 40), (32, 32), 0.25))
    assert len(records) == n_tiles and records[-1].step == n_tiles
    whole = predict(net, volume, InferenceConfig(**CPU))
    np.testing.assert_allclose(out, whole, atol=1e-5)


def test_3d_patches():
    net = pointwise(dims=3, cin=2, k=2)
    volume = rand(2, 17, 16, 19)
    info: dict = {}
    tiled = predict(net, volume, InferenceConfig(tile_size=(8, 8, 8), **CPU), info=info)
    whole = predict(net, volume, InferenceConfig(**CPU))
    assert tiled.shape == (2, 17, 16, 19)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    assert info["mode"] == "3d" and info["tiles"] > 8 and info["tile_size"] == [8, 8, 8]

    torch.manual_seed(0)
    unet = build_model("unet", spatial_dims=3, in_channels=1, out_channels=1,
                       features=(8, 16)).eval()
    vol = rand(1, 16, 16, 16)
    a = predict(unet, vol, InferenceConfig(**CPU))
    b = predict(unet, vol, InferenceConfig(tile_size=12, overlap=0.5, **CPU))
    assert a.shape == b.shape == (1, 16, 16, 16)
    assert np.abs(a - b)[:, 4:-4, 4:-4, 4:-4].mean() < 0.03


def test_default_tile_plan():
    cfg = InferenceConfig(**CPU)
    assert inf.plan_tile(cfg, (300, 400), 2) == (300, 400)  # whole image fits
    assert inf.plan_tile(cfg, (1200, 1000), 2) == (632, 1000)  # cut in two, 64 px overlap
    assert inf.plan_tile(cfg, (700, 2000), 2) == (700, 1032)
    assert inf.plan_tile(cfg, (100, 110, 120), 3) == (100, 110, 120)
    assert inf.plan_tile(cfg, (40, 300, 300), 3) == (40, 158, 300)
    assert inf.plan_tile(InferenceConfig(max_tile_pixels=100, **CPU), (30, 30), 2) == (30, 30)
    assert inf.plan_tile(InferenceConfig(tile_size=24, **CPU), (300, 400), 2) == (24, 24)
    info: dict = {}
    predict(pointwise(), rand(1, 30, 40), InferenceConfig(max_tile_pixels=500, **CPU), info=info)
    assert info["tiles"] == 1 and info["tile_size"] == [30, 40]


@pytest.mark.parametrize("shape,multiple", [((584, 565), 16), ((1168, 1130), 16),
                                            ((2048, 2048), 16), ((1025, 1024), 1),
                                            ((160, 160, 160), 8), ((300, 512, 512), 8),
                                            ((129, 128, 128), 1)])
def test_planned_tiles_cover_once_with_a_pixel_margin(shape, multiple):
    """Images over the single-pass limit are cut into balanced tiles: every pixel is covered,
    neighbours overlap by at least the margin, and the network runs over little more than the
    image (fixed 512^2 / 96^3 tiles with a 25 % overlap ran it over 1.8-4x)."""
    cfg = InferenceConfig(**CPU)
    dims = len(shape)
    tile = tiling.plan_tile(cfg, shape, dims, multiple)
    assert all(t % multiple == 0 or t == s for t, s in zip(tile, shape, strict=True))
    assert math.prod(tile) <= max(math.prod(shape), tiling.DEFAULT_MAX_PIXELS[dims]) * 1.1
    wins = tiling.tile_windows(cfg, shape, tile)
    cover = np.zeros(shape, dtype=np.int32)
    for w in wins:
        cover[w] += 1
    assert cover.min() >= 1
    margin = tiling.OVERLAP_PX[dims]
    for axis, n in enumerate(shape):
        starts = sorted({w[axis].start for w in wins})
        stops = sorted({w[axis].stop for w in wins})
        assert stops[-1] == n and starts[0] == 0
        assert all(b - a >= min(margin, n) for a, b in zip(starts[1:], stops[:-1], strict=True))
    redundancy = len(wins) * math.prod(tile) / math.prod(shape)
    assert redundancy < (1.0001 if math.prod(shape) <= tiling.DEFAULT_MAX_PIXELS[dims] else 1.5)


def test_tta_shape_and_flip_equivariance():
    net = local(k=2)
    image = rand(1, 24, 26)
    cfg = InferenceConfig(tta=True, **CPU)
    out = predict(net, image, cfg)
    assert out.shape == (2, 24, 26)
    flipped = predict(net, image[:, ::-1, :].copy(), cfg)
    np.testing.assert_allclose(flipped, out[:, ::-1, :], atol=1e-5)
    flipped = predict(net, image[:, :, ::-1].copy(), cfg)
    np.testing.assert_allclose(flipped, out[:, :, ::-1], atol=1e-5)
    # without TTA a random 3x3 net is not flip-equivariant, so TTA changed something
    plain = predict(net, image, InferenceConfig(**CPU))
    assert np.abs(plain - out).max() > 1e-3
    assert len(flip_sets(2)) == 4 and len(flip_sets(3)) == 8
    vol = predict(local(dims=3), rand(1, 8, 8, 8), InferenceConfig(tta=True, **CPU))
    assert vol.shape == (1, 8, 8, 8)


def test_progress_yields_at_least_once_per_tile():
    net = pointwise()
    image = rand(1, 57, 61)
    n_tiles = len(tile_slices((57, 61), (32, 32), 0.25))
    gen = predict_iter(net, image, InferenceConfig(tile_size=32, batch_size=1, **CPU))
    records = []
    try:
        while True:
            rec = next(gen)
            records.append(rec)
            # between yields, the caller is not left in inference mode
            assert not torch.is_inference_mode_enabled()
    except StopIteration as stop:
        result = stop.value
    assert len(records) >= n_tiles
    assert records[-1].step == records[-1].total == n_tiles
    assert [r.step for r in records] == sorted(r.step for r in records)
    assert result.shape == (1, 57, 61)
    batched = []
    predict(net, image, InferenceConfig(tile_size=32, batch_size=4, **CPU), callback=batched.append)
    assert len(batched) == math.ceil(n_tiles / 4)


def test_closing_generator_early_has_no_side_effects():
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=1, features=(8, 16),
                      dropout=0.2)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    gen = predict_iter(net, rand(1, 64, 64), InferenceConfig(tile_size=32, batch_size=1, **CPU))
    next(gen)
    next(gen)
    gen.close()
    assert net.training and all(m.training for m in net.modules())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.is_inference_mode_enabled()


def test_oom_fallback_halves_tiles(monkeypatch):
    net = pointwise()
    real_forward = nn.Sequential.forward
    seen = []

    def forward(self, x):
        seen.append(tuple(x.shape))
        if x.shape[0] * x.shape[-1] * x.shape[-2] > 16 * 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real_forward(self, x)

    monkeypatch.setattr(nn.Sequential, "forward", forward)
    image = rand(1, 40, 36)
    info: dict = {}
    records = []
    out = predict(net, image, InferenceConfig(tile_size=32, batch_size=2, **CPU), info=info,
                  callback=records.append)
    monkeypatch.setattr(nn.Sequential, "forward", real_forward)
    assert len(info["warnings"]) == 1 and "out of memory" in info["warnings"][0]
    assert info["tile_size"] == [16, 16] and info["batch_size"] == 1
    assert records[-1].metrics["warnings"] == info["warnings"]
    np.testing.assert_allclose(out, predict(net, image, InferenceConfig(**CPU)), atol=1e-5)
    assert seen[0] == (2, 1, 32, 32) and seen[-1] == (1, 1, 16, 16)


def test_oom_fallback_to_cpu_and_giving_up():
    def run(attempt):
        if attempt["device"] == "cuda":
            raise RuntimeError("CUDA error: out of memory")
        yield inf.Progress(1, 1)
        return attempt["device"]

    attempts = [{"tile": (64, 64), "batch": 4, "device": "cuda"},
                {"tile": (32, 32), "batch": 1, "device": "cuda"},
                {"tile": (64, 64), "batch": 4, "device": "cpu"}]
    warnings: list[str] = []
    assert inf.run_to_end(inf.run_with_oom_fallback(run, attempts, warnings)) == "cpu"
    assert len(warnings) == 2 and "retried on cpu" in warnings[1]
    with pytest.raises(InputError, match="out of memory even with tile"):
        inf.run_to_end(inf.run_with_oom_fallback(run, attempts[:2], []))

    def broken(attempt):
        raise RuntimeError("shape mismatch")
        yield  # pragma: no cover

    warnings = []
    with pytest.raises(RuntimeError, match="shape mismatch"):
        inf.run_to_end(inf.run_with_oom_fallback(broken, attempts, warnings))
    assert warnings == []


def test_mc_dropout_flag_samples_and_restores_modes():
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=1, features=(8, 16),
                      dropout=0.3).eval()
    image = rand(1, 24, 24)
    cfg = InferenceConfig(mc_dropout=True, **CPU)
    a, b = predict(net, image, cfg), predict(net, image, cfg)
    assert np.abs(a - b).max() > 1e-4
    assert not any(m.training for m in net.modules())
    c, d = predict(net, image, InferenceConfig(**CPU)), predict(net, image, InferenceConfig(**CPU))
    np.testing.assert_array_equal(c, d)


def test_fold_bn_and_channels_last_match():
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=1,
                      features=(8, 16)).train()
    with torch.no_grad():
        net(torch.randn(4, 1, 16, 16))  # non-trivial running statistics
    net.eval()
    image = rand(1, 30, 28)
    ref = predict(net, image, InferenceConfig(**CPU))
    folded = predict(net, image, InferenceConfig(fold_bn=True, **CPU))
    np.testing.assert_allclose(folded, ref, atol=1e-4)
    cl = predict(net, image, InferenceConfig(channels_last=True, **CPU))
    np.testing.assert_allclose(cl, ref, atol=1e-5)
    assert all(p.is_contiguous() for p in net.parameters())


def test_input_errors():
    with pytest.raises(InputError, match="3D network cannot segment a 2D image"):
        predict(pointwise(dims=3), rand(1, 8, 8), InferenceConfig(**CPU))
    net2 = build_model("unet", spatial_dims=2, in_channels=3, out_channels=1, features=(8, 16))
    with pytest.raises(InputError, match="expects 3 channel"):
        predict(net2, rand(1, 16, 16), InferenceConfig(**CPU))
    with pytest.raises(InputError, match="mode '3d'"):
        predict(pointwise(), rand(1, 4, 8, 8), InferenceConfig(mode="3d", **CPU))
    with pytest.raises(InputError, match="tile_size"):
        predict(pointwise(), rand(1, 8, 8), InferenceConfig(tile_size=(8, 8, 8), **CPU))
    with pytest.raises(InputError, match="2 or 3 spatial"):
        predict(pointwise(), rand(8, 8), InferenceConfig(**CPU))
    for bad in (dict(overlap=1.0), dict(batch_size=0), dict(mode="4d"), dict(blend="max"),
                dict(tile_size=0)):
        with pytest.raises(InputError):
            InferenceConfig(**bad)
    with pytest.raises(InputError, match="unknown inference option"):
        InferenceConfig.from_options(tile=3)
    assert InferenceConfig.from_options(tile_size=[8, 8]).tile_size == (8, 8)
