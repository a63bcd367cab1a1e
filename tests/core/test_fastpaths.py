"""Inference fast paths: BN folding, channels-last, the cached inference copy, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from napari_drunet.core.infer import tiling
from napari_drunet.core.infer.predict import InferenceConfig, predict, prepared_network
from napari_drunet.core.infer.tiling import divide_by_weight, gaussian_importance_map, tile_slices
from napari_drunet.core.nets.networks import build_model

CPU = dict(device="cpu", amp=False)  # float32: these compare exact paths (bf16: test_fastpaths)
PLAIN = dict(fold_bn=False, channels_last=False, **CPU)


def trained_like(dims: int = 2, cin: int = 1, k: int = 1, features=(8, 16)) -> torch.nn.Module:
    """Small DRU-Net whose batch norms have non-trivial running statistics and affine terms."""
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=dims, in_channels=cin, out_channels=k,
                      features=features).train()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        net(torch.randn(4, cin, *([16] * dims)) * 2 + 0.5)
    return net.eval()


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("fold_bn, channels_last", [(True, False), (False, True), (True, True)])
def test_2d_fast_paths_match_reference(fold_bn, channels_last):
    net = trained_like(2, cin=3, k=2)
    image = rand(3, 37, 45)
    ref = predict(net, image, InferenceConfig(tile_size=24, **PLAIN))
    fast = predict(net, image, InferenceConfig(tile_size=24, fold_bn=fold_bn,
                                               channels_last=channels_last, **CPU))
    np.testing.assert_allclose(fast, ref, atol=1e-4)


def test_3d_fast_paths_match_reference():
    net = trained_like(3)
    image = rand(1, 20, 18, 22)
    ref = predict(net, image, InferenceConfig(tile_size=16, **PLAIN))
    for opts in ({"fold_bn": True}, {"fold_bn": True, "channels_last": True}):
        fast = predict(net, image, InferenceConfig(tile_size=16, **{**CPU, **opts}))
        np.testing.assert_allclose(fast, ref, atol=1e-4)


def test_defaults_are_the_fast_paths_and_are_reported():
    cfg = InferenceConfig()
    assert cfg.fold_bn is True and cfg.channels_last is True
    info: dict = {}
    net = trained_like(2)
    out = predict(net, rand(1, 24, 24), InferenceConfig(**CPU), info=info)
    assert info["fast_paths"] == {"inference_mode": True, "fold_bn": True,
                                  "channels_last": True, "compile": False, "amp": False}
    np.testing.assert_allclose(out, predict(net, rand(1, 24, 24), InferenceConfig(**PLAIN)),
                               atol=1e-4)
    info3: dict = {}
    net3 = trained_like(3)
    out3 = predict(net3, rand(1, 8, 8, 8), InferenceConfig(**CPU), info=info3)
    assert info3["fast_paths"]["channels_last"] is True  # 3D too: 1.2-1.7x at 2 threads
    np.testing.assert_allclose(out3, predict(net3, rand(1, 8, 8, 8), InferenceConfig(**PLAIN)),
                               atol=1e-4)


def test_cpu_autocasts_to_bf16_only_where_it_has_amx(monkeypatch):
    """On a CPU with AMX tiles inference runs in bf16 (2.3-4x faster convolutions there);
    elsewhere, and with ``amp=False``, in float32. bf16 moves probabilities a little only."""
    from napari_drunet.core import device as dev

    cpu = torch.device("cpu")
    net = trained_like(2, cin=3, k=2)
    image = rand(3, 37, 45)
    ref = predict(net, image, InferenceConfig(**CPU))
    for amx in (False, True):
        monkeypatch.setattr(dev, "_cpu_has_amx", lambda amx=amx: amx)
        assert dev.autocast_dtype(cpu) == (torch.bfloat16 if amx else None)
        assert dev.autocast_dtype(cpu, enabled=False) is None
        info: dict = {}
        out = predict(net, image, InferenceConfig(device="cpu"), info=info)
        assert info["fast_paths"]["amp"] == ("bfloat16" if amx else False)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, atol=0.05 if amx else 1e-4)
        assert amx == (np.abs(out - ref).max() > 1e-4)  # bf16 really ran
        info = {}
        predict(net, image, InferenceConfig(device="cpu", amp=False), info=info)
        assert info["fast_paths"]["amp"] is False


def test_caller_network_is_never_modified():
    net = trained_like(2)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    predict(net, rand(1, 30, 30), InferenceConfig(tile_size=16, channels_last=True, **CPU))
    assert net.training and all(m.training for m in net.modules())
    assert all(p.is_contiguous() for p in net.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_prepared_copy_is_cached_until_weights_change():
    net = trained_like(2)
    a = prepared_network(net, fold_bn=True, channels_last=True)
    assert a is not net and prepared_network(net, fold_bn=True, channels_last=True) is a
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in a.modules())
    assert prepared_network(net, fold_bn=False, channels_last=False) is net
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        net.head.weight.mul_(-1.0)  # an optimiser step changes weights in place
    b = prepared_network(net, fold_bn=True, channels_last=True)
    assert b is not a
    with torch.inference_mode():
        torch.testing.assert_close(b(x.contiguous(memory_format=torch.channels_last)), net(x),
                                   atol=1e-4, rtol=1e-4)


def test_predictions_follow_weight_updates():
    """A cached folded copy must never serve stale weights (fine-tuning validates in between)."""
    net = trained_like(2)
    image = rand(1, 24, 24)
    first = predict(net, image, InferenceConfig(**CPU))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05)
    second = predict(net, image, InferenceConfig(**CPU))
    np.testing.assert_allclose(second, predict(net, image, InferenceConfig(**PLAIN)), atol=1e-4)
    assert np.abs(second - first).max() > 1e-3


def test_divide_by_weight_slabs_equal_full_weight_map():
    tile, shape = (8, 6, 10), (21, 13, 25)
    windows = tile_slices(shape, tile, 0.4)
    imp = gaussian_importance_map(tile)
    full = np.zeros(shape, np.float32)
    for win in windows:
        full[win] += imp[tuple(slice(0, w.stop - w.start) for w in win)]
    values = rand(2, 1, *shape)
    out = values.copy()
    divide_by_weight(out, windows, imp, max_elements=3 * 13 * 25)  # slabs of 3 planes
    np.testing.assert_allclose(out, values / full, rtol=1e-6)


@pytest.mark.parametrize("mode", ["3d", "slices"])
def test_peak_numpy_memory_is_input_plus_output(mode, monkeypatch):
    """No full-size weight map or final copy: numpy peak stays near one output volume."""
    monkeypatch.setattr(tiling, "_SLAB_ELEMENTS", 8 * 64 * 64)  # slabs smaller than the volume
    torch.manual_seed(0)
    dims = 3 if mode == "3d" else 2
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    net = torch.nn.Sequential(conv(1, 2, 1), torch.nn.Tanh(), conv(2, 1, 1)).eval()
    image = rand(1, 40, 64, 64)
    cfg = InferenceConfig(tile_size=16 if dims == 3 else 32, batch_size=2, slice_axis=2, **CPU)
    predict(net, image[:, :8, :16, :16], cfg)  # warm-up
    tracemalloc.start()
    try:
        out = predict(net, image, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (1, 40, 64, 64) and out.flags.c_contiguous
    assert peak < 1.35 * image.nbytes, peak / image.nbytes
