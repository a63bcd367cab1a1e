"""Model files: round trip, recipe, and every refusal (pickles, truncation, mismatches)."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_drunet.core.errors import CheckpointError
from napari_drunet.core.models.checkpoint import (
    FORMAT_VERSION,
    METADATA_KEY,
    check_compatible,
    file_sha256,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from napari_drunet.core.nets.networks import build_model


def _net(arch: str = "drunet", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = dict(spatial_dims=2, in_channels=1, out_channels=1, features=(8, 16))
    cfg.update(kw)
    net = build_model(arch, **cfg)
    # make batch-norm statistics non-trivial so that the round trip checks buffers too
    net.train()
    with torch.no_grad():
        net(torch.randn(2, cfg["in_channels"], *(8,) * cfg["spatial_dims"]))
    return net.eval()


META = {"normalization": {"mode": "zscore"}, "label_names": {"0": "background", "1": "vessel"},
        "threshold": 0.4, "inference": {"mode": "2d", "tile_size": (32, 32)},
        "training": {"config": {"lr": 1e-3}, "history": [{"epoch": 1, "loss": float("nan")}]},
        "metrics": {"val_dice": np.float32(0.5)}, "provenance": {"parent": None}}


def _write_raw(path: Path, tensors: dict[str, torch.Tensor], meta_text: str | None) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=None if meta_text is None else {METADATA_KEY: meta_text})
    return path


def test_round_trip_identical_outputs(tmp_path):
    net = _net(dropout=0.1)
    path = save_checkpoint(tmp_path / "m.safetensors", net, META)
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    x = torch.randn(1, 1, 24, 20)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["arch"] == "drunet"
    assert meta["arch_kwargs"]["features"] == [8, 16]
    assert meta["arch_kwargs"]["dropout"] == pytest.approx(0.1)
    assert meta["threshold"] == 0.4
    assert meta["inference"]["tile_size"] == [32, 32]
    assert meta["training"]["history"][0]["loss"] is None  # NaN is stored as null
    assert meta["metrics"]["val_dice"] == pytest.approx(0.5)
    assert meta["provenance"]["created"]  # filled in
    assert meta["package_version"]
    assert read_meta(path) == meta
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_round_trip_3d_multiclass(tmp_path):
    net = _net("unet", spatial_dims=3, in_channels=2, out_channels=3)
    path = save_checkpoint(tmp_path / "m3.ckpt", net, {})
    loaded, meta = load_checkpoint(path, device="cpu")
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert meta["arch"] == "unet" and meta["arch_kwargs"]["out_channels"] == 3


def test_save_rejects_non_json_meta(tmp_path):
    with pytest.raises(CheckpointError, match="not a plain JSON value"):
        save_checkpoint(tmp_path / "x.safetensors", _net(), {"bad": object()})
    with pytest.raises(CheckpointError, match="not a string"):
        save_checkpoint(tmp_path / "x.safetensors", _net(), {"bad": {(1, 2): 3}})
    assert not (tmp_path / "x.safetensors").exists()


def test_save_needs_config(tmp_path):
    with pytest.raises(CheckpointError, match="config"):
        save_checkpoint(tmp_path / "x.safetensors", torch.nn.Conv2d(1, 1, 3), {})


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_malicious_pickle_refused_and_never_run(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    if how == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}))
    else:
        torch.save({"state_dict": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        read_meta(path)
    assert not marker.exists()


def test_truncated_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _net(), {})
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)
    cut.write_bytes(data[:20])  # inside the header
    with pytest.raises(CheckpointError, match="truncated"):
        read_meta(cut)
    cut.write_bytes(data[:3])
    with pytest.raises(CheckpointError, match="not a safetensors"):
        read_meta(cut)


def test_missing_and_invalid_json(tmp_path):
    tensors = {"w": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="not a napari-drunet model"):
        read_meta(_write_raw(tmp_path / "a.safetensors", tensors, None))
    with pytest.raises(CheckpointError, match="invalid model recipe JSON"):
        read_meta(_write_raw(tmp_path / "b.safetensors", tensors, "{not json"))
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_meta(_write_raw(tmp_path / "c.safetensors", tensors, "[1, 2]"))
    with pytest.raises(CheckpointError, match="format_version"):
        read_meta(_write_raw(tmp_path / "d.safetensors", tensors, '{"arch": "unet"}'))
    # a header that is not JSON at all
    bad = tmp_path / "e.safetensors"
    bad.write_bytes(struct.pack("<Q", 10) + b"{garbage!!" + b"\0" * 8)
    with pytest.raises(CheckpointError, match="unreadable header"):
        read_meta(bad)


def _recipe(net, **changes) -> str:
    config = dict(net.config)
    meta = {"format_version": FORMAT_VERSION, "arch": config.pop("arch"), "arch_kwargs": config}
    meta.update(changes)
    return json.dumps(meta)


def test_newer_format_version(tmp_path):
    net = _net()
    path = _write_raw(tmp_path / "new.safetensors", dict(net.state_dict()),
                      _recipe(net, format_version=FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="newer than this napari-drunet"):
        load_checkpoint(path)


def test_unknown_arch_and_bad_kwargs(tmp_path):
    net = _net()
    path = _write_raw(tmp_path / "u.safetensors", dict(net.state_dict()), _recipe(net, arch="vit9"))
    with pytest.raises(CheckpointError, match="unknown architecture 'vit9'"):
        load_checkpoint(path)
    kwargs = dict(net.config, colour="red")
    kwargs.pop("arch")
    path = _write_raw(tmp_path / "k.safetensors", dict(net.state_dict()),
                      _recipe(net, arch_kwargs=kwargs))
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        load_checkpoint(path)


def test_weights_of_another_architecture(tmp_path):
    drunet, unet = _net("drunet"), _net("unet")
    # recipe says unet but the tensors are DRU-Net's
    path = _write_raw(tmp_path / "w.safetensors", dict(drunet.state_dict()), _recipe(unet))
    with pytest.raises(CheckpointError, match="checkpoint weights do not match architecture 'unet'"):
        load_checkpoint(path)
    # same arch, other widths: shape mismatch
    wide = _net("unet", features=(8, 32))
    path = _write_raw(tmp_path / "s.safetensors", dict(wide.state_dict()), _recipe(unet))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path)


def test_file_sha256(tmp_path):
    import hashlib

    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1000)
    assert file_sha256(p) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_check_compatible():
    meta = {"arch_kwargs": {"in_channels": 3, "spatial_dims": 2}}
    check_compatible(meta, in_channels=3, spatial_dims=2)
    check_compatible(meta, in_channels=3, spatial_dims=3)  # slice by slice
    with pytest.raises(CheckpointError, match="expects 3 input channel"):
        check_compatible(meta, in_channels=1)
    with pytest.raises(CheckpointError, match="3D model"):
        check_compatible({"arch_kwargs": {"in_channels": 1, "spatial_dims": 3}}, spatial_dims=2)
