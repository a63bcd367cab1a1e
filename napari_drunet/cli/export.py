"""``drunet export``: a model as ONNX, TorchScript or a bioimage.io package."""

from __future__ import annotations

import argparse

from ..core.atomic import check_writable


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``export`` sub-command."""
    p = sub.add_parser("export", help="export a model to ONNX, TorchScript or a bioimage.io "
                       "package")
    p.add_argument("--model", required=True)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "bioimageio"),
                   help="bioimageio: a .zip for ilastik, deepImageJ, QuPath and bioimage.io")
    p.add_argument("--out", required=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``drunet export``; returns the exit status."""
    from ..core.models.export import export_model
    from ..core.models.model import load_model

    check_writable(args.out, "export file")
    model = load_model(args.model, device="cpu")
    if args.format == "bioimageio":
        from ..core.models.bioimageio import export_bioimageio

        print(f"wrote {export_bioimageio(model, args.out)}")
        return 0
    size = 64 if model.spatial_dims == 3 else 256
    shape = (1, model.in_channels) + (size,) * model.spatial_dims
    path = export_model(model.network, args.format, args.out, example_shape=shape)
    print(f"wrote {path}")
    return 0
