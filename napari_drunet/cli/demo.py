"""``drunet demo``: napari with a sample segmented by the default model."""

from __future__ import annotations

import argparse
import sys
import warnings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``demo`` sub-command."""
    p = sub.add_parser("demo", help="open napari with a sample segmented by the default model")
    p.add_argument("--model", default=None,
                   help="default: the packaged model that fits the sample")
    p.add_argument("--sample", default="fundus", choices=("fundus", "hippocampus"))
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``drunet demo``; returns the exit status."""
    from ..gui.demo import launch_demo

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        # main() silences library warnings; the demo's "UNTRAINED network" fallback notice
        # must still reach the user
        warnings.filterwarnings("always", message=".*UNTRAINED", category=UserWarning)
        warnings.showwarning = one_line
        launch_demo(model=args.model, sample=args.sample, run=True)
    return 0
