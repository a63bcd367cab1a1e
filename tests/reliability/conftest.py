"""Fixtures of the reliability tests (helpers live in ``rel_helpers.py`` beside this file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import (  # noqa: E402
    save_tiny,
    write_bad_files,
    write_odd_files,
)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny models: 1/3/4-channel 2D, 3D, 3-class 2D, a U-Net, plus damaged copies."""
    d = tmp_path_factory.mktemp("models")
    out = {"m1": save_tiny(d / "m1.safetensors"),
           "m3": save_tiny(d / "m3.safetensors", in_channels=3),
           "m4": save_tiny(d / "m4.safetensors", in_channels=4),
           "m3d": save_tiny(d / "m3d.safetensors", spatial_dims=3),
           "mc3": save_tiny(d / "mc3.safetensors", out_channels=3),
           "unet": save_tiny(d / "unet.safetensors", arch="unet")}
    data = out["m1"].read_bytes()
    for name, cut in (("truncated", len(data) // 2), ("truncated_header", 40), ("one_byte", 1)):
        out[name] = d / f"{name}.safetensors"
        out[name].write_bytes(data[:cut])
    # another architecture's weights under a DRU-Net recipe
    from safetensors.torch import load_file, save_file

    from napari_drunet.core.models.checkpoint import read_meta

    meta = read_meta(out["m1"])
    out["other_arch"] = d / "other_arch.safetensors"
    save_file(load_file(out["unet"]), out["other_arch"],
              metadata={"napari_drunet": json.dumps(meta)})
    out["plain_safetensors"] = d / "plain.safetensors"
    save_file(load_file(out["m1"]), out["plain_safetensors"])
    out["text"] = d / "text.ckpt"
    out["text"].write_text("not a model\n")
    out["empty"] = d / "empty.ckpt"
    out["empty"].write_bytes(b"")
    return out


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    return write_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="session")
def odd_files(tmp_path_factory) -> dict[str, Path]:
    return write_odd_files(tmp_path_factory.mktemp("odd"))
