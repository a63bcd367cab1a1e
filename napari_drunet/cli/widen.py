"""``drunet widen``: a wider copy of a model with the same predictions (Net2Net)."""

from __future__ import annotations

import argparse

from ..core.atomic import check_writable
from .options import SEED, bounded


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``widen`` sub-command."""
    p = sub.add_parser("widen", help="grow a model's width, keeping its predictions (Net2Net)")
    p.add_argument("--model", required=True, help="packaged model name or checkpoint file")
    p.add_argument("--factor", type=bounded(float, 1.0, 16.0, "factor"), default=1.5,
                   help="width multiplier per level (1 to 16)")
    p.add_argument("--noise", type=float, default=0.01,
                   help="noise on the copied weights, share of each layer's weight std")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", required=True, help="output checkpoint")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``drunet widen``; returns the exit status."""
    from ..core.models.widen import widen_checkpoint
    from ..core.nets.networks import count_parameters

    check_writable(args.out, "model file")
    wide = widen_checkpoint(args.model, args.out, args.factor, noise=args.noise, seed=args.seed)
    n = count_parameters(wide)
    features = ",".join(str(f) for f in wide.config["features"])
    print(f"wrote {args.out}: features {features}, {n / 1e6:.2f} M parameters "
          "(same predictions until fine-tuned: drunet finetune --model ...)")
    return 0
