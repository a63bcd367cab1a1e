"""Export a model as a bioimage.io package (model description 0.5), for ilastik, deepImageJ,
QuPath, micro-sam and the bioimage.io tools.

The zip holds ``rdf.yaml``, TorchScript and ONNX weights, a test input and the output the
weights give for it, the model card as documentation, a cover image and the checkpoint recipe
under ``config.napari_drunet``. The exported network ends with the model's activation (sigmoid
for a binary model, softmax over classes otherwise), so the output tensor holds the same
probabilities as :meth:`~napari_drunet.core.models.model.Model.predict`; the threshold / arg-max stays
with the consumer (the threshold is recorded in the config).

Input recipe as bioimage.io preprocessing: ``zscore`` and ``percentile_zscore`` become
``zero_mean_unit_variance`` over the spatial axes per channel, ``minmax`` becomes
``scale_range`` 0-100 %, ``none`` nothing; a mode with no bioimage.io operation
(``fundus_local``) is applied before the package: its input is the normalised image, as its
description and test input say. Two parts of our recipe have no bioimage.io operation
and are only noted in the description: the percentile clipping before the z-score and
``mask_nonzero``; rescaling to the training voxel size / fundus scale and reorientation are the
consumer's job (the model card says what the model expects). The test output is computed with
the exported recipe, so any bioimage.io runner reproduces it.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError

if TYPE_CHECKING:
    from .model import Model

_SPDX = [(r"CC[- ]BY[- ]SA[- ]?4\.0", "CC-BY-SA-4.0"), (r"CC[- ]BY[- ]NC[- ]?4\.0", "CC-BY-NC-4.0"),
         (r"CC[- ]BY[- ]?4\.0", "CC-BY-4.0")]


class WithActivation(nn.Module):
    """The network followed by its activation: probabilities out, as ``Model.predict``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.inner = network  # not "network": export_model would unwrap it
        self.binary = int(getattr(network, "out_channels", 1)) == 1
        self.config = dict(getattr(network, "config", {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)


def training_data_license(card: str, default: str = "BSD-3-Clause") -> str:
    """SPDX id of the training data's licence named in a model card (else ``default``)."""
    for pattern, spdx in _SPDX:
        if re.search(pattern, card, re.IGNORECASE):
            return spdx
    return default


#: our normalisation modes that bioimage.io preprocessing can express (or that need none)
_BIOIMAGEIO_MODES = ("zscore", "percentile_zscore", "minmax", "none")


def _preprocessing(spec: dict[str, Any] | None, spatial: list[str]) -> tuple[list, list[str]]:
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        ScaleRangeDescr,
        ScaleRangeKwargs,
        ZeroMeanUnitVarianceDescr,
        ZeroMeanUnitVarianceKwargs,
    )

    spec = spec or {"mode": "percentile_zscore"}
    axes = [AxisId(a) for a in spatial]
    notes = []
    mode = spec.get("mode", "percentile_zscore")
    if spec.get("mask_nonzero"):
        notes.append("statistics were computed over nonzero voxels in training (mask_nonzero); "
                     "bioimage.io normalises over the whole image")
    if mode in ("zscore", "percentile_zscore"):
        if mode == "percentile_zscore":
            notes.append(f"training clipped each channel to its {spec.get('lower', 0.5)}-"
                         f"{spec.get('upper', 99.5)} percentiles before the z-score; "
                         "bioimage.io has no such step, so outliers are not clipped")
        return [ZeroMeanUnitVarianceDescr(kwargs=ZeroMeanUnitVarianceKwargs(axes=axes))], notes
    if mode == "minmax":
        return [ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=axes, min_percentile=0.0,
                                                        max_percentile=100.0))], notes
    if mode not in _BIOIMAGEIO_MODES:
        notes.append(f"the input normalisation {mode!r} has no bioimage.io operation: the "
                     "package expects images already normalised by napari-drunet "
                     f"(napari_drunet.core.image.normalization.normalize(image, {spec!r})); "
                     "its test input is such an image")
    return [], notes


def _prenormalised(spec: dict[str, Any] | None) -> bool:
    """True when the package's input is the normalised image (no bioimage.io operation)."""
    return (spec or {}).get("mode", "percentile_zscore") not in _BIOIMAGEIO_MODES


def recipe_normalization(spec: dict[str, Any] | None) -> dict[str, Any]:
    """Our normalisation spec equal to the exported bioimage.io preprocessing (a mode without
    a bioimage.io operation is kept whole: the package's input is normalised by it)."""
    if _prenormalised(spec):
        return dict(spec)
    mode = (spec or {}).get("mode", "percentile_zscore")
    mode = "zscore" if mode == "percentile_zscore" else mode
    return {"mode": mode, "mask_nonzero": False}


def _cover(image: np.ndarray, prob: np.ndarray, path: Path) -> Path:
    """Input (middle slice) beside the foreground probability, 2:1, as PNG."""
    from PIL import Image

    def plane(a: np.ndarray) -> np.ndarray:
        a = a[a.shape[0] // 2] if a.ndim == 3 else a
        lo, hi = float(a.min()), float(a.max())
        return ((a - lo) / (hi - lo + 1e-8) * 255).astype(np.uint8)

    fg = prob[0] if prob.shape[0] == 1 else 1.0 - prob[0]
    both = np.concatenate([plane(image[0]), plane(fg)], axis=1)
    Image.fromarray(both).resize((512, 256), Image.NEAREST).save(path)
    return path


def export_bioimageio(model: Model, out: str | os.PathLike, *, name: str | None = None,
                      license: str | None = None, test_size: int | None = None) -> Path:
    """Write ``model`` (a :class:`~napari_drunet.core.models.model.Model`) as a bioimage.io zip.

    Parameters
    ----------
    model : Model
        The model to export (its network, recipe and model card).
    out : path-like
        The ``.zip`` package to write.
    name : str, optional
        Package name (default: the model's name).
    license : str, optional
        SPDX licence of the package; default: the training data's licence named in the model
        card (weights learnt from CC-BY-SA data are shared alike), else BSD-3-Clause.
    test_size : int, optional
        Spatial size of the test tensor per axis (default 64 in 2D, 32 in 3D).

    Returns
    -------
    Path
        ``out``.
    """
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model.v0_5 import (
        Author,
        AxisId,
        BatchAxis,
        ChannelAxis,
        FileDescr,
        Identifier,
        InputTensorDescr,
        ModelDescr,
        OnnxWeightsDescr,
        OutputTensorDescr,
        ParameterizedSize,
        SizeReference,
        SpaceInputAxis,
        SpaceOutputAxis,
        TensorId,
        TorchscriptWeightsDescr,
        Version,
        WeightsDescr,
    )

    from ..image.normalization import normalize
    from ..infer.config import InferenceConfig
    from ..infer.predict import predict
    from .export import ONNX_OPSET, export_model
    from .model import model_card

    dims, channels = int(model.spatial_dims), int(model.in_channels)
    levels = len(model.network.config.get("features", (0,) * 4))
    step = 2 ** max(0, levels - 1)
    size = test_size or (64 if dims == 2 else 32)
    if size % step:
        raise InputError(f"test size {size} must be a multiple of {step} for this network")
    spatial = ["y", "x"] if dims == 2 else ["z", "y", "x"]
    card = None
    for key in (model.name, model.path):  # a packaged name has its card; a file a summary
        try:
            card = card or (model_card(str(key)) if key else None)
        except Exception:  # a model built in memory has no file: described from its recipe
            continue
    card = card or f"# {model.name}\n\nDRU-Net ({dims}D), recipe: {model.meta}\n"
    pre, notes = _preprocessing(model.meta.get("normalization"), spatial)
    labels = model.meta.get("label_names") or {"0": "background", "1": "foreground"}
    out_names = ["foreground"] if model.out_channels == 1 else \
        [str(labels.get(str(k), f"class{k}")) for k in range(model.out_channels)]

    rng = np.random.default_rng(0)
    test_in = rng.normal(0.0, 1.0, (1, channels) + (size,) * dims).astype(np.float32)
    net = WithActivation(model.network).eval().cpu()
    spec = model.meta.get("normalization")
    image = normalize(test_in[0], recipe_normalization(spec))
    # float32: the reference output the bioimage.io runtimes (float32) must reproduce
    prob = predict(net.inner, image, InferenceConfig(device="cpu", fold_bn=False, amp=False))
    test_out = prob[None].astype(np.float32)
    if _prenormalised(spec):  # the runner gets what the network saw
        test_in = image[None].astype(np.float32)

    work = Path(tempfile.mkdtemp(prefix="drunet-bioimageio-"))
    np.save(work / "test_input.npy", test_in)
    np.save(work / "test_output.npy", test_out)
    (work / "README.md").write_text(card + ("\n## bioimage.io export notes\n\n" + "\n".join(
        f"- {n}" for n in notes) + "\n" if notes else ""), encoding="utf-8")
    example = (1, channels) + (size,) * dims
    export_model(net, "torchscript", work / "weights.pt", example_shape=example)
    export_model(net, "onnx", work / "weights.onnx", example_shape=example)
    cover = _cover(test_in[0], prob, work / "cover.png")

    in_axes = [BatchAxis(), ChannelAxis(channel_names=[Identifier(f"channel{c}")
                                                       for c in range(channels)])]
    in_axes += [SpaceInputAxis(id=AxisId(a), size=ParameterizedSize(min=step, step=step))
                for a in spatial]
    out_axes = [BatchAxis(), ChannelAxis(channel_names=[Identifier(re.sub(r"\W", "_", n))
                                                        for n in out_names])]
    out_axes += [SpaceOutputAxis(id=AxisId(a), size=SizeReference(
        tensor_id=TensorId("image"), axis_id=AxisId(a))) for a in spatial]
    torchscript = TorchscriptWeightsDescr(source=work / "weights.pt",
                                          pytorch_version=Version(torch.__version__.split("+")[0]))
    descr = ModelDescr(
        name=name or f"napari-drunet {model.name}",
        description=(f"DRU-Net ({dims}D) segmentation exported from napari-drunet; output: "
                     f"probabilities of {', '.join(out_names)}. " + " ".join(notes))[:1000],
        authors=[Author(name="napari-drunet developers")],
        cite=[{"text": "Deep Residual U-Net (DRU-Net)", "doi": "10.1109/LGRS.2018.2802944"}],
        license=license or training_data_license(card),
        documentation=FileDescr(source=work / "README.md"),
        covers=[FileDescr(source=cover)],
        tags=["segmentation", f"{dims}d", "unet", "pytorch", "napari-drunet"],
        inputs=[InputTensorDescr(id=TensorId("image"), axes=in_axes,
                                 test_tensor=FileDescr(source=work / "test_input.npy"),
                                 preprocessing=pre)],
        outputs=[OutputTensorDescr(id=TensorId("probabilities"), axes=out_axes,
                                   test_tensor=FileDescr(source=work / "test_output.npy"))],
        weights=WeightsDescr(
            torchscript=torchscript,
            onnx=OnnxWeightsDescr(source=work / "weights.onnx", opset_version=ONNX_OPSET,
                                  parent="torchscript")),
        config={"napari_drunet": {"threshold": model.meta.get("threshold", 0.5),
                                  "normalization": model.meta.get("normalization"),
                                  "label_names": labels,
                                  "preprocess": model.meta.get("preprocess") or {}}},
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_bioimageio_package(descr, output_path=out)
    return out
