"""Tests of TorchScript / ONNX export."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from napari_drunet.core.errors import InputError
from napari_drunet.core.models.export import export_model
from napari_drunet.core.nets.networks import build_model

TINY = (8, 16, 32)


def _trained_like(arch: str, dims: int = 2, in_ch: int = 2, out_ch: int = 1) -> nn.Module:
    torch.manual_seed(0)
    net = build_model(arch, spatial_dims=dims, in_channels=in_ch, out_channels=out_ch,
                      features=TINY)
    with torch.no_grad():  # non-trivial batch-norm statistics
        net(torch.randn(2, in_ch, *(16,) * dims) * 2 + 1)
    return net.eval()


def _load_script(path, extra=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), _extra_files=extra if extra is not None else {})


@pytest.mark.parametrize("arch,dims", [("drunet", 2), ("attention_unet", 2), ("r2unet", 3)])
def test_torchscript_round_trip_other_sizes(tmp_path, arch, dims):
    net = _trained_like(arch, dims)
    example = (1, 2) + ((37, 45) if dims == 2 else (13, 17, 19))
    out = export_model(net, "torchscript", tmp_path / "sub" / "model.pt", example)
    assert out == tmp_path / "sub" / "model.pt" and out.is_file()
    extra = {"config.json": ""}
    loaded = _load_script(out, extra)
    assert json.loads(extra["config.json"]) == net.config
    for shape in [example, (2, 2) + ((32, 29) if dims == 2 else (16, 9, 20))]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(loaded(x), net(x), atol=1e-4)
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["model.pt"]  # no temp files


def test_export_does_not_touch_the_network(tmp_path):
    net = build_model("drunet", features=TINY)  # training mode
    before = {k: v.clone() for k, v in net.state_dict().items()}
    export_model(SimpleNamespace(network=net), "torchscript", tmp_path / "m.pt", (1, 1, 32, 32))
    assert net.training
    assert all(p.requires_grad for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_unfolded_export_matches(tmp_path):
    net = _trained_like("unet", in_ch=1)
    out = export_model(net, "torchscript", tmp_path / "m.pt", (1, 1, 24, 24), fold_bn=False)
    loaded = _load_script(out)
    assert any("BatchNorm" in m.original_name for m in loaded.modules())
    x = torch.randn(1, 1, 21, 26)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-5)


def test_bad_format_and_shape(tmp_path):
    net = build_model("unet", features=TINY)
    with pytest.raises(InputError, match="unknown export format"):
        export_model(net, "tflite", tmp_path / "m.tflite", (1, 1, 32, 32))
    with pytest.raises(InputError, match="example shape"):
        export_model(net, "torchscript", tmp_path / "m.pt", (1, 32, 32))
    with pytest.raises(InputError, match="example shape"):
        export_model(net, "torchscript", tmp_path / "m.pt", (1, 3, 32, 32))
    with pytest.raises(InputError, match="not a network"):
        export_model(object(), "onnx", tmp_path / "m.onnx", (1, 1, 32, 32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arch,dims", [("attention_unet", 2), ("drunet", 3)])
def test_onnx_export(tmp_path, arch, dims):
    onnx = pytest.importorskip("onnx")
    net = _trained_like(arch, dims, in_ch=2, out_ch=3)
    example = (1, 2) + ((37, 45) if dims == 2 else (13, 17, 19))
    out = export_model(net, "onnx", tmp_path / "model.onnx", example)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["napari_drunet"]) == net.config
    assert [i.name for i in model.graph.input] == ["image"]
    dims_in = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims_in][2:] and all(d.dim_param for d in dims_in[2:])
    try:
        from onnx.reference import ReferenceEvaluator
    except ImportError:  # pragma: no cover - old onnx
        return
    session = ReferenceEvaluator(model)
    for shape in [example, (2, 2) + ((20, 33) if dims == 2 else (9, 16, 11))]:
        x = torch.randn(shape)
        (logits,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            assert torch.allclose(torch.from_numpy(logits), net(x), atol=1e-4)
