"""``drunet adapt``: a copy of a model whose batch-norm statistics fit another site's images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.atomic import check_writable
from .inputs import input_files
from .options import THREADS, set_threads, tuple_of_ints
from .progress import drive


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``adapt`` sub-command."""
    p = sub.add_parser("adapt", help="adapt a model to another site's images, no labels needed "
                       "(re-estimates its batch-norm statistics)")
    p.add_argument("--model", default="retina-vessels", help="packaged model name or checkpoint")
    p.add_argument("--input", required=True, help="image file or folder of the site's images")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors / .ckpt)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tile-size", type=tuple_of_ints, help="tile size (default: the model's)")
    p.add_argument("--axis-order", choices=("auto", "search", "keep"), default="auto",
                   help="3D volumes: as for predict")
    p.add_argument("--threads", type=THREADS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``drunet adapt``; returns the exit status."""
    from ..core.image.io import read_image
    from ..core.models.model import load_model
    from ..core.train.adapt import LazyImages, adapt_batchnorm_iter

    set_threads(args.threads)
    src = Path(args.input)
    inputs = input_files(src)
    check_writable(args.out, "model file")
    model = load_model(args.model, device=args.device)
    opts: dict = {"axis_order": args.axis_order}
    if args.tile_size is not None:
        opts["tile_size"] = args.tile_size
    adapted = drive(adapt_batchnorm_iter(model, LazyImages(inputs, read_image), **opts),
                     "adapt")
    provenance = dict(model.meta.get("provenance") or {})
    provenance.pop("created", None)  # a new file gets a new creation time
    provenance["adapted_from"] = {"model": str(model.path or args.model),
                                  "images": [p.name for p in inputs]}
    adapted.save(args.out, provenance=provenance)
    info = adapted.meta["adaptation"]
    print(f"wrote {args.out}: batch-norm statistics of {info['layers']} layers re-estimated on "
          f"{info['images']} image(s); use it like any model: drunet predict --model {args.out}")
    return 0
