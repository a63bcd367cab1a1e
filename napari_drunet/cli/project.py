"""``drunet project status|finetune|adapt PROJECT_DIR``: a corrections project without napari.

``finetune`` runs the same correction round as the Fine-tune widget
(:func:`~napari_drunet.core.correction.round.correction_round` with
:func:`~napari_drunet.core.correction.round.default_round_settings`, options overriding them)
and prints the comparison on the held-back cases; ``--promote`` makes the new version active
when it is recommended. ``adapt`` is the widget's "Adapt to the project's images".
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from .options import set_threads
from .progress import drive


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``project`` and its actions to the ``drunet`` sub-command parsers ``sub``."""
    p = sub.add_parser("project", help="a corrections project without napari: status, one "
                       "correction round (finetune), adapt")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    s = actions.add_parser("status", help="cases, versions, active version, held-back Dice")
    s.add_argument("project_dir", help="project folder (holds project.json)")
    s.add_argument("--json", action="store_true", help="print JSON")

    f = actions.add_parser("finetune", help="one correction round with the Fine-tune "
                           "widget's defaults: fine-tune, compare on held-back cases, save a "
                           "version")
    f.add_argument("project_dir", help="project folder (holds project.json)")
    f.add_argument("--steps", type=int, help="optimizer steps (the round's budget)")
    f.add_argument("--time-cap", type=float,
                   help="seconds after which training stops even if the steps are not done "
                   "(0 = none)")
    f.add_argument("--lr", type=float, help="learning rate")
    f.add_argument("--holdout", type=int,
                   help="corrected cases held back to compare on (default: 1 in 5, at least 1)")
    f.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    f.add_argument("--freeze-norm", action="store_true",
                   help="keep the batch-norm statistics of the starting model")
    f.add_argument("--no-guard", action="store_true",
                   help="no forgetting guard (no L2-SP, no replay of uncorrected cases)")
    f.add_argument("--all-pixels", action="store_true",
                   help="count every pixel of a corrected case, not only the edited ones")
    f.add_argument("--adapt-first", action="store_true",
                   help="adapt the batch-norm statistics to the project's images first")
    f.add_argument("--keep-threshold", action="store_true",
                   help="keep the active version's threshold (default: re-chosen on the "
                   "corrected cases)")
    f.add_argument("--seed", type=int, help="seed of the split, the patches and the dropout")
    f.add_argument("--promote", action="store_true",
                   help="make the new version active when it is not worse on the held-back "
                   "cases")
    f.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    f.add_argument("--threads", type=int, help="CPU threads for torch")

    a = actions.add_parser("adapt", help="re-estimate the active model's batch-norm "
                           "statistics on the project's images (no labels), compare on the "
                           "corrected cases, save a version")
    a.add_argument("project_dir", help="project folder (holds project.json)")
    a.add_argument("--promote", action="store_true",
                   help="make the new version active when it is not worse")
    a.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    a.add_argument("--threads", type=int, help="CPU threads for torch")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run one ``drunet project`` action; return the exit status."""
    from ..core.correction.project import Project

    project = Project.open(args.project_dir)
    if args.action == "status":
        return _status(project, args.json)
    set_threads(args.threads)
    model = project.versions.load_active(args.device)
    if args.action == "finetune":
        return _finetune(project, model, args)
    return _adapt(project, model, args)


def status_report(project: Any) -> dict[str, Any]:
    """What ``drunet project status`` prints: cases, versions, active version."""
    cases = []
    for name in project.cases():
        meta = project.case_meta(name)
        cases.append({"case": name, "corrected": project.is_corrected(name),
                      "reviewed": bool(meta["reviewed_all"] or meta["reviewed_slices"]),
                      "held_back": name in project.feedback.holdout,
                      "model_version": meta["model_version"]})
    versions = [{"id": v["id"], "parent": v["parent"], "created": v["created"],
                 "source": v["source"], "metrics": v["metrics"]} for v in project.versions.entries()]
    return {"project": str(project.folder), "active_version": project.versions.active,
            "cases": cases, "versions": versions}


def _status(project: Any, as_json: bool) -> int:
    report = status_report(project)
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    cases = report["cases"]
    n_corr = sum(c["corrected"] for c in cases)
    n_rev = sum(c["reviewed"] for c in cases)
    print(f"project {report['project']}: {len(cases)} case(s), {n_corr} corrected "
          f"({n_rev} reviewed), {len(cases) - n_corr} to correct")
    for c in cases:
        state = "held back" if c["held_back"] else "corrected" if c["corrected"] else "-"
        print(f"  {c['case']:<24} {state:<9} {'reviewed' if c['reviewed'] else '':<8} "
              f"predicted by {c['model_version']}")
    print(f"versions ({len(report['versions'])}), active {report['active_version']}:")
    for v in report["versions"]:
        mark = "*" if v["id"] == report["active_version"] else " "
        print(f" {mark}{v['id']}  parent {v['parent'] or '-':<5} {_metrics_text(v['metrics'])}"
              f"  {v['source'] or ''}".rstrip())
    return 0


def _metrics_text(m: dict[str, Any]) -> str:
    """Held-back Dice (new vs previous), steps and threshold of a version, when recorded."""
    parts = []
    if m.get("holdout_dice") is not None:
        parts.append(f"held-back Dice {m['holdout_dice']:.4f} (previous "
                     f"{m['holdout_dice_parent']:.4f})")
    if m.get("steps") is not None:
        parts.append(f"{m['steps']} steps {m.get('stop_reason', '')}".rstrip())
    if m.get("threshold") is not None:
        parts.append(f"threshold {m['threshold']:g}")
    return ", ".join(parts) or "-"


def _settings(project: Any, model: Any, args: argparse.Namespace) -> Any:
    """The round's defaults for ``model`` in ``project``, with the options given."""
    from ..core.correction.round import default_round_settings

    base = default_round_settings(model, project)
    changes: dict[str, Any] = {"device": args.device}
    for key, value in (("steps", args.steps), ("lr", args.lr), ("holdout", args.holdout),
                       ("seed", args.seed)):
        if value is not None:
            changes[key] = value
    if args.time_cap is not None:
        changes["time_cap_s"] = args.time_cap or None
    if args.freeze_encoder:
        changes["train_layers"] = "decoder"
    if args.freeze_norm:
        changes["freeze_norm"] = True
    if args.no_guard:
        changes.update(l2sp=0.0, replay_fraction=0.0)
    if args.all_pixels:
        changes["only_edited"] = False
    if args.adapt_first:
        changes["adapt_first"] = True
    if args.keep_threshold:
        changes["choose_threshold"] = False
    return replace(base, **changes).validate()


def _finetune(project: Any, model: Any, args: argparse.Namespace) -> int:
    from ..core.correction import round as rounds

    settings = _settings(project, model, args)
    out = drive(rounds.correction_round(project, model, settings), "correction round")
    print(out.summary())
    _print_comparison(out.comparison, "held-back case")
    return _maybe_promote(project, out, args.promote)


def _adapt(project: Any, model: Any, args: argparse.Namespace) -> int:
    from ..core.correction import round as rounds

    out = drive(rounds.adaptation_round(project, model, args.device), "adapting")
    print(out.summary())
    _print_comparison(out.comparison, "corrected case")
    return _maybe_promote(project, out, args.promote)


def _print_comparison(cmp: Any, what: str) -> None:
    if not cmp.cases:
        return
    width = max(len(what), *(len(n) for n in cmp.cases))
    print(f"  {what:<{width}}  previous     new")
    for name, d in cmp.cases.items():
        print(f"  {name:<{width}}  {d['old']:8.4f}  {d['new']:6.4f}")
    print(f"  {'mean':<{width}}  {cmp.old:8.4f}  {cmp.new:6.4f}")


def _maybe_promote(project: Any, out: Any, promote: bool) -> int:
    if not promote:
        print(f"{out.version} saved, not made active: {project.versions.active} stays active "
              "(--promote makes a version that is not worse active)")
    elif out.recommend:
        project.versions.set_active(out.version)
        print(f"promoted: {out.version} is now active")
    else:
        why = "no held-back case to compare on" if out.recommend is None else \
            "worse on the held-back cases"
        print(f"not promoted ({why}): {project.versions.active} stays active")
    return 0
