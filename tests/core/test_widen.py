"""Net2WiderNet growth: the wider network computes the same function, for every family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_drunet.core.errors import InputError
from napari_drunet.core.models.widen import (
    channel_map,
    widen_checkpoint,
    widen_network,
    wider_features,
)
from napari_drunet.core.nets.networks import ARCHITECTURES, build_model


def _trained_like(arch: str, dims: int, act: str = "relu", norm: str = "batch") -> torch.nn.Module:
    """A network with non-trivial norm statistics and affine parameters (as after training)."""
    torch.manual_seed(0)
    net = build_model(arch, spatial_dims=dims, in_channels=2, out_channels=3, features=(8, 16, 32),
                      act=act, norm=norm)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.PReLU)):
                m.weight.uniform_(0.1, 2)
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.bias.uniform_(-1, 1)
    return net.eval()


def test_channel_map_spreads_copies_evenly_and_covers_every_channel():
    assert channel_map(4, 4).tolist() == [0, 1, 2, 3]
    assert channel_map(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert channel_map(4, 6).tolist() == [0, 0, 1, 2, 2, 3]
    # the map of a concatenation [a, b] (both 4 -> 6) is the map of 8 -> 12
    assert channel_map(8, 12).tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7]
    with pytest.raises(InputError, match="narrow"):
        channel_map(6, 4)
    assert wider_features((16, 32, 64, 128), 1.5) == [24, 48, 96, 192]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("dims", [2, 3])
def test_wider_network_computes_the_same_function(arch, dims):
    net = _trained_like(arch, dims, act="prelu" if dims == 3 else "relu")
    wide = widen_network(net, 1.5, noise=0.0)
    assert wide.config["features"] == [12, 24, 48] and wide.config["arch"] == arch
    assert not wide.training
    n_old = sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for p in wide.parameters()) > 2 * n_old
    x = torch.randn(2, 2, *(16,) * dims)
    with torch.no_grad():
        ref, out = net(x), wide(x)
    assert torch.allclose(ref, out, atol=1e-4 * float(ref.abs().max()) + 1e-5)


def test_same_function_in_training_mode_and_with_instance_norm():
    net = _trained_like("drunet", 2, norm="instance").train()
    wide = widen_network(net, 2.0, noise=0.0)
    assert wide.training
    torch.manual_seed(1)
    x = torch.randn(3, 2, 24, 24)
    net.eval()  # dropout off; instance norm uses the input's own statistics either way
    wide.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), wide(x), atol=1e-4)


def test_noise_breaks_the_symmetry_between_copies_and_is_seeded():
    net = _trained_like("drunet", 2)
    a = widen_network(net, 2.0, noise=0.05, seed=3)
    b = widen_network(net, 2.0, noise=0.05, seed=3)
    c = widen_network(net, 2.0, noise=0.05, seed=4)
    w = a.encoder[0].body[0][0].weight  # 16 output channels copying 8 in pairs
    assert not torch.equal(w[0], w[1])
    assert torch.equal(w, b.encoder[0].body[0][0].weight)
    assert not torch.equal(w, c.encoder[0].body[0][0].weight)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        ref, out = net(x), a(x)
    assert 0 < float((ref - out).abs().max()) < 0.2 * float(ref.abs().max())


def test_refuses_what_it_cannot_widen():
    net = _trained_like("drunet", 2)
    with pytest.raises(InputError, match=">= 1"):
        widen_network(net, 0.5)
    with pytest.raises(InputError, match="group"):
        widen_network(_trained_like("unet", 2, norm="group"), 1.5)
    with pytest.raises(InputError, match="config"):
        widen_network(torch.nn.Conv2d(1, 1, 3), 1.5)


def test_widened_model_file_keeps_the_recipe_and_the_predictions(tmp_path: Path):
    from napari_drunet.core.models.checkpoint import save_checkpoint
    from napari_drunet.core.models.model import load_model

    src = save_checkpoint(tmp_path / "m.safetensors", _trained_like("drunet", 2), {
        "normalization": {"mode": "zscore"}, "threshold": 0.42,
        "label_names": {"0": "background", "1": "a", "2": "b"},
        "preprocess": {"spacing": [1.0, 1.0]}})
    widen_checkpoint(src, tmp_path / "wide.ckpt", 1.5, noise=0.0)
    old, new = load_model(src, device="cpu"), load_model(tmp_path / "wide.ckpt", device="cpu")
    assert new.network.config["features"] == [12, 24, 48]
    for key in ("normalization", "threshold", "label_names", "preprocess"):
        assert new.meta[key] == old.meta[key]
    assert new.meta["provenance"]["widened_from"]["features"] == [8, 16, 32]
    image = np.random.default_rng(0).normal(size=(2, 40, 36)).astype(np.float32)
    p_old, p_new = old.predict(image).probabilities, new.predict(image).probabilities
    assert np.abs(p_old - p_new).max() < 1e-4


def test_cli_widen(tmp_path: Path, capsys):
    from napari_drunet.cli import main
    from napari_drunet.core.models.checkpoint import read_meta, save_checkpoint

    src = save_checkpoint(tmp_path / "m.safetensors", _trained_like("unet", 3), {})
    out = tmp_path / "w.ckpt"
    assert main(["widen", "--model", str(src), "--factor", "2", "--out", str(out)]) == 0
    assert "features 16,32,64" in capsys.readouterr().out
    assert read_meta(out)["arch_kwargs"]["features"] == [16, 32, 64]
    assert main(["widen", "--model", str(src), "--factor", "0.9", "--out", str(out)]) == 2
    assert "factor must be in [1.0, 16.0]" in capsys.readouterr().err
