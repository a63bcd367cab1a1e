"""Tests of the network families, their blocks and the registry."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from napari_drunet.core.nets import blocks
from napari_drunet.core.nets.networks import (
    ARCHITECTURES,
    _pad_to_multiple,
    build_model,
    count_parameters,
    describe_architectures,
    fold_batchnorm,
    list_architectures,
)

ARCHS = list_architectures()
TINY = (8, 16, 32)
SHAPES = {2: (37, 45), 3: (13, 17, 19)}


def test_registry_lists_all_families():
    assert set(ARCHS) == {"drunet", "unet", "resunet", "runet", "r2unet", "attention_unet"}
    assert set(ARCHITECTURES) == set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("in_ch,out_ch", [(1, 1), (1, 3), (2, 1)])
def test_forward_backward_any_size(arch, dims, in_ch, out_ch):
    torch.manual_seed(0)
    net = build_model(arch, spatial_dims=dims, in_channels=in_ch, out_channels=out_ch,
                      features=TINY)
    x = torch.randn(2, in_ch, *SHAPES[dims], requires_grad=True)
    y = net(x)
    assert y.shape == (2, out_ch, *SHAPES[dims])
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters())
    assert any(p.grad.abs().sum() > 0 for p in net.encoder[0].parameters())


@pytest.mark.parametrize("arch", ["drunet", "attention_unet", "r2unet"])
@pytest.mark.parametrize("opts", [
    {"act": "prelu", "norm": "instance"},
    {"act": "leakyrelu", "norm": "group"},
    {"norm": "none", "up_mode": "interpolate"},
])
def test_variants(arch, opts):
    net = build_model(arch, spatial_dims=2, in_channels=1, out_channels=2, features=TINY, **opts)
    y = net(torch.randn(1, 1, 20, 23))
    assert y.shape == (1, 2, 20, 23) and torch.isfinite(y).all()
    kinds = {type(m) for m in net.modules()}
    if opts.get("act") == "prelu":
        assert nn.PReLU in kinds and nn.ReLU not in kinds
    if opts.get("norm") == "none":
        assert not any(issubclass(k, nn.modules.batchnorm._NormBase) for k in kinds)
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    if opts.get("norm") == "group":
        assert nn.GroupNorm in kinds and nn.BatchNorm2d not in kinds


@pytest.mark.parametrize("kwargs,match", [
    ({"spatial_dims": 4}, "spatial_dims"),
    ({"spatial_dims": 1}, "spatial_dims"),
    ({"in_channels": 0}, "in_channels"),
    ({"out_channels": 1.5}, "out_channels"),
    ({"features": (8,)}, "at least 2"),
    ({"features": (8, 0)}, "features"),
    ({"features": "abc"}, "features"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"act": "gelu"}, "act"),
    ({"norm": "layer"}, "norm"),
    ({"up_mode": "pixelshuffle"}, "up_mode"),
])
@pytest.mark.parametrize("arch", ["drunet", "runet"])
def test_invalid_arguments(arch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(arch, **{"features": TINY, **kwargs})


def test_invalid_recurrence_and_unknown_options():
    with pytest.raises(ValueError, match="t must be"):
        build_model("r2unet", t=0)
    with pytest.raises(ValueError, match="unknown architecture.*drunet"):
        build_model("vnet")
    with pytest.raises(ValueError, match="unknown option.*depth"):
        build_model("drunet", depth=4)
    with pytest.raises(ValueError, match="unknown option.*t"):
        build_model("unet", t=2)


def test_wrong_input_shape_raises():
    net = build_model("unet", spatial_dims=2, in_channels=2, features=TINY)
    with pytest.raises(ValueError, match="expects input"):
        net(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="expects input"):
        net(torch.zeros(1, 2, 8, 16, 16))


def _count(net, cls):
    return sum(type(m) is cls for m in net.modules())


@pytest.mark.parametrize("features", [(8, 16), (8, 16, 32, 64)])
def test_unit_structure_per_family(features):
    depth = len(features)
    levels = 2 * depth - 1
    drunet = build_model("drunet", features=features)
    assert _count(drunet, blocks.ResidualUnit) == levels
    assert len(drunet.encoder) == depth  # encoder levels + bridge
    assert all(_count(level, blocks.ResidualUnit) == 1 for level in drunet.encoder)
    assert _count(drunet, nn.Dropout2d) == levels  # dropout in every unit by default
    assert _count(build_model("resunet", features=features), blocks.ResConvUnit) == levels
    runet = build_model("runet", features=features)
    assert _count(runet, blocks.RCNNBlock) == levels and _count(runet, blocks.RRCNNBlock) == 0
    r2 = build_model("r2unet", features=features)
    assert _count(r2, blocks.RRCNNBlock) == levels
    assert _count(r2, blocks.RecurrentBlock) == 2 * levels
    assert _count(build_model("attention_unet", features=features),
                  blocks.AttentionGate) == depth - 1
    assert _count(build_model("unet", features=features), blocks.DoubleConv) == levels


def test_residual_unit_is_residual():
    unit = blocks.ResidualUnit(2, 4, 4, norm="batch").eval()
    last_bn = unit.body[1][1]
    nn.init.zeros_(last_bn.weight)  # F(x) == 0 -> output is act(x)
    x = torch.randn(1, 4, 9, 9)
    assert torch.allclose(unit(x), torch.relu(x))
    proj = blocks.ResidualUnit(3, 2, 5)
    assert isinstance(proj.shortcut, blocks.ConvNormAct)
    assert proj(torch.randn(1, 2, 4, 4, 4)).shape == (1, 5, 4, 4, 4)


@pytest.mark.parametrize("t", [1, 2, 3])
def test_recurrent_block_unrolls_t_steps(t):
    block = blocks.RecurrentBlock(2, 4, t=t)
    calls = []
    block.conv.register_forward_hook(lambda mod, inp, out: calls.append((inp[0], out)))
    x = torch.randn(1, 4, 6, 6)
    out = block(x)
    assert len(calls) == t + 1  # shared weights applied 1 + t times
    assert torch.equal(calls[0][0], x)
    for (inp, _), (_, prev) in zip(calls[1:], calls[:-1], strict=True):
        assert torch.allclose(inp, x + prev)  # feed-forward input + recurrent state
    assert torch.equal(out, calls[-1][1])


def test_rrcnn_adds_residual_rcnn_does_not():
    torch.manual_seed(1)
    rcnn = blocks.RCNNBlock(2, 3, 4).eval()
    rrcnn = blocks.RRCNNBlock(2, 3, 4).eval()
    rrcnn.load_state_dict(rcnn.state_dict())
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(rrcnn(x), rcnn(x) + rcnn.project(x), atol=1e-6)


def test_attention_gate_coefficients():
    gate = blocks.AttentionGate(2, 8, 16)
    x, g = torch.randn(2, 8, 10, 12), torch.randn(2, 16, 5, 6)
    q = gate.attention(x, g)
    assert q.shape == (2, 1, 10, 12)
    assert (q >= 0).all() and (q <= 1).all()
    assert gate(x, g).shape == x.shape


@pytest.mark.parametrize("arch", ARCHS)
def test_config_round_trip_and_json(arch):
    net = build_model(arch, spatial_dims=3, in_channels=2, out_channels=3, features=TINY,
                      dropout=0.2, act="prelu")
    cfg = json.loads(json.dumps(net.config))
    assert cfg == net.config and cfg["arch"] == arch and cfg["features"] == list(TINY)
    again = build_model(**cfg)
    assert again.config == net.config
    a, b = net.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    again.load_state_dict(a)


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_is_deterministic(arch):
    net = build_model(arch, features=TINY, dropout=0.3).eval()
    x = torch.randn(1, 1, 24, 19)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_encoder_freezing_and_decoder_parameters():
    net = build_model("drunet", features=TINY)
    enc = {id(p) for p in net.encoder.parameters()}
    dec = net.decoder_parameters()
    assert enc and dec and not enc & {id(p) for p in dec}
    assert len(enc) + len(dec) == len(list(net.parameters()))
    total = count_parameters(net)
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == sum(p.numel() for p in dec) < total
    assert count_parameters(net) == total


def test_describe_architectures_default_size():
    rows = describe_architectures()
    assert [r["name"] for r in rows] == ARCHS
    for row in rows:
        assert row["description"] and row["params"] > 0
    params = {r["name"]: r["params"] for r in rows}
    assert params["drunet"] == count_parameters(build_model("drunet"))
    assert params["drunet"] * 4 < 10e6  # default DRIVE model < 10 MB in float32
    small = {r["name"]: r["params"] for r in describe_architectures(features=TINY)}
    assert all(small[a] < params[a] for a in ARCHS)


@pytest.mark.parametrize("size", [(16, 24), (17, 3), (1, 1)])
def test_pad_to_multiple(size):
    x = torch.randn(1, 2, *size)
    padded, before = _pad_to_multiple(x, 8)
    assert all(s % 8 == 0 and s >= o for s, o in zip(padded.shape[2:], size, strict=True))
    crop = padded[:, :, before[0]:before[0] + size[0], before[1]:before[1] + size[1]]
    assert torch.equal(crop, x)


def test_output_is_aligned_with_input():
    """Make the network point-wise (centre-only kernels, coarse path zeroed): each output pixel
    must then equal the output of a constant image of that input pixel's value, which fails if
    the internal padding and the final crop are misaligned."""
    net = build_model("unet", features=(4, 8, 8), norm="none").eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                centre = m.weight[:, :, 1, 1].clone()
                m.weight.zero_()
                m.weight[:, :, 1, 1] = centre
            elif isinstance(m, nn.ConvTranspose2d):
                m.weight.zero_()
                m.bias.zero_()
        x = torch.randn(1, 1, 7, 5)
        y = net(x)
        constant = x.reshape(-1, 1, 1, 1).expand(-1, 1, 4, 4)
        expected = net(constant)[:, 0, 0, 0].reshape(7, 5)
    assert not torch.allclose(y[0, 0], y[0, 0].mean().expand(7, 5))
    assert torch.allclose(y[0, 0], expected, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_batchnorm_same_output(arch):
    torch.manual_seed(2)
    net = build_model(arch, spatial_dims=2, in_channels=2, out_channels=2, features=TINY)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    with torch.no_grad():
        for _ in range(3):  # move the running statistics away from (0, 1)
            net(torch.randn(2, 2, 24, 24) * 3 + 1)
    net.eval()
    folded = fold_batchnorm(net)
    assert _count(folded, nn.BatchNorm2d) == 0 < _count(net, nn.BatchNorm2d)
    assert not folded.training
    x = torch.randn(1, 2, 29, 31)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-4)


def test_fold_batchnorm_keeps_original_training_state():
    net = build_model("drunet", features=TINY)
    fold_batchnorm(net)
    assert net.training and _count(net, nn.BatchNorm2d) > 0


def test_channels_last_matches_contiguous():
    net = build_model("drunet", features=TINY).eval()
    x = torch.randn(2, 1, 32, 28)
    with torch.no_grad():
        ref = net(x)
        out = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5)
