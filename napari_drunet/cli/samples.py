"""``drunet samples``: copy the packaged sample images (and their licences) into a folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``samples`` sub-command."""
    p = sub.add_parser("samples", help="copy the packaged sample images into a folder")
    p.add_argument("--out", required=True, help="destination folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``drunet samples``; returns the exit status."""
    import shutil

    from .._sample_data import SAMPLES_DIR, sample_paths

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for key, src in sample_paths().items():
        src = Path(src)
        suffix = "".join(src.suffixes[-2:]) if src.name.endswith(".nii.gz") else src.suffix
        dst = out / f"{key}{suffix}"
        shutil.copyfile(src, dst)
        print(f"{key}: {dst}")
    # CC-BY-SA asks that the attribution travel with the copy
    readme = SAMPLES_DIR / "README.md"
    shutil.copyfile(readme, out / "SAMPLES-README.md")
    print(f"sources and licenses (hippocampus: MSD Task04, CC-BY-SA 4.0): "
          f"{out / 'SAMPLES-README.md'}")
    return 0
