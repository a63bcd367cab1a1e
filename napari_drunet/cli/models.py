"""``drunet models``: the architectures and the packaged models."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``models`` sub-command."""
    p = sub.add_parser("models", help="list architectures and packaged models")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``drunet models``; returns the exit status."""
    from ..core.models.checkpoint import read_meta
    from ..core.models.fit import fit_summary
    from ..core.models.model import list_models, model_path
    from ..core.nets.networks import describe_architectures

    archs = describe_architectures()
    packaged = []
    for name in list_models():
        meta = read_meta(model_path(name))
        packaged.append({"name": name, "arch": meta.get("arch"),
                         "dims": meta.get("arch_kwargs", {}).get("spatial_dims"),
                         "labels": meta.get("label_names"), "metrics": meta.get("metrics", {}),
                         "card": meta.get("card") or {}, "fits": fit_summary(meta)})
    if args.json:
        print(json.dumps({"architectures": archs, "packaged_models": packaged}, indent=2))
        return 0
    print("Architectures (parameters for the default 2D, 1-channel, binary configuration):")
    for a in archs:
        print(f"  {a['name']:<16}{a['params']:>12,}  {a['description']}")
    print("\nPackaged models:")
    rows = packaged or [{"name": "(none)", "arch": "", "dims": "", "labels": {}}]
    width = max(16, *(len(m["name"]) + 2 for m in rows))
    for m in rows:
        labels = ", ".join(str(v) for v in (m["labels"] or {}).values())
        print(f"  {m['name']:<{width}}{m['arch'] or '':<16}{m['dims'] or ''}D  {labels}")
        if m.get("fits"):  # which images it is for, so a user can pick before loading one
            print(f"  {'':<{width}}fits: {m['fits']}")
    return 0
