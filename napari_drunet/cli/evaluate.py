"""``drunet evaluate``: predicted masks against ground truth, per case, mean and pooled."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.atomic import check_writable
from ..core.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate`` sub-command."""
    p = sub.add_parser("evaluate", help="compare predicted masks with ground truth")
    p.add_argument("--pred", required=True, help="folder (or file) of predicted masks")
    p.add_argument("--truth", required=True, help="folder (or file) of ground-truth masks")
    p.add_argument("--mask", help="folder (or file) of region masks (e.g. DRIVE FOV)")
    p.add_argument("--prob", help="folder of probability maps (for AUC)")
    p.add_argument("--json", help="write per-case and mean results to this JSON file")
    p.add_argument("--no-hd", action="store_true", help="skip Hausdorff distances")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``drunet evaluate``; returns the exit status."""
    import numpy as np

    from ..core.atomic import atomic_write_json
    from ..core.evaluation.metrics import PooledMetrics, evaluate_case, format_table, summarize
    from ..core.image.io import list_images, read_image, read_label, strip_extension

    pred_src = Path(args.pred)
    if not pred_src.exists():
        raise InputError(f"predictions not found: {pred_src}")
    if args.json:
        check_writable(args.json, "results file")
    preds = [pred_src] if pred_src.is_file() else list_images(pred_src)
    if not preds:
        raise InputError(f"no predicted masks in {pred_src}")
    truths = _match_files(pred_src, Path(args.truth), "truth")
    masks = _match_files(pred_src, Path(args.mask), "mask") if args.mask else {}
    probs = _match_files(pred_src, Path(args.prob), "probability") if args.prob else {}
    names, results, pooled = [], [], PooledMetrics()
    for p in preds:
        name = strip_extension(p)
        pred, _ = read_label(p)
        truth, truth_img = read_label(truths[name])
        if pred.shape != truth.shape:
            raise InputError(f"{name}: prediction shape {pred.shape} != truth shape {truth.shape}")
        mask = read_label(masks[name])[0] > 0 if name in masks else None
        prob = read_image(probs[name]).array.astype(np.float32) if name in probs else None
        results.append(evaluate_case(pred, truth, prob=prob, mask=mask,
                                     spacing=truth_img.spacing, hd=not args.no_hd))
        pooled.add(pred, truth, mask=mask, prob=prob)
        names.append(name)
    print(format_table(names, results))
    pooled_res = pooled.result()
    for label, res in pooled_res.items():  # all pixels together, as vessel papers report
        print(f"pooled over {len(names)} case(s), label {label}: "
              + "  ".join(f"{k} {res[k]:.4f}" for k in ("dice", "sensitivity", "specificity",
                                                         "accuracy", "auc") if k in res))
    if args.json:
        summary = summarize(results)
        atomic_write_json(args.json, {"cases": dict(zip(names, results, strict=True)),
                                      "mean": summary, "mean_dice": summary.get("dice"),
                                      "pooled": pooled_res})
        print(f"wrote {args.json}")
    return 0


def _match_files(pred_dir: Path, other: Path, kind: str) -> dict[str, Path]:
    """Map each prediction base name to a file in ``other`` (exact base name, else case number)."""
    from ..core.image.io import list_images, strip_extension

    if other.is_file():
        return {strip_extension(p): other for p in ([pred_dir] if pred_dir.is_file()
                                                     else list_images(pred_dir))}
    if not other.is_dir():
        raise InputError(f"{kind} not found: {other}")
    files = list_images(other)
    by_name = {strip_extension(f): f for f in files}
    by_key: dict[str, list[Path]] = {}
    for f in files:
        by_key.setdefault(_case_key(strip_extension(f)), []).append(f)
    preds = [pred_dir] if pred_dir.is_file() else list_images(pred_dir)
    matched = {}
    for p in preds:
        name = strip_extension(p)
        if name in by_name:
            matched[name] = by_name[name]
        elif len(by_key.get(_case_key(name), [])) == 1:
            matched[name] = by_key[_case_key(name)][0]
        else:
            raise InputError(f"no {kind} file matches prediction '{p.name}' in {other}")
    return matched


def _case_key(name: str) -> str:
    """Case identifier: the first number in the name (``01_test`` and ``01_manual1`` -> ``1``)."""
    import re

    m = re.search(r"\d+", name)
    return str(int(m.group())) if m else name
