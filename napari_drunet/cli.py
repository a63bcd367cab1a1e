"""The ``drunet`` command line: train, finetune, predict, evaluate, export, models, demo.

User mistakes (bad paths, unreadable files, incompatible models) end with one line
``error: ...`` on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .core.errors import DrunetError, InputError


def _tuple_of_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected integers like 256 or 256,256: {text!r}") from err
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def _add_train_options(p: argparse.ArgumentParser, finetune: bool) -> None:
    p.add_argument("--data", required=True, help="MSD-style dataset.json")
    p.add_argument("--allow-outside", action="store_true",
                   help="allow dataset paths outside the dataset.json folder")
    p.add_argument("--val-data", help="dataset.json of validation cases (default: --val-fraction "
                   "of --data held out)")
    p.add_argument("--out", required=True, help="output checkpoint (.ckpt / .safetensors)")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--steps-per-epoch", type=int, help="optimizer steps per epoch")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--time-budget", type=float, help="stop after this many seconds (keeps the best)")
    p.add_argument("--patch-size", type=_tuple_of_ints, help="e.g. 256 or 96,96,96")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--loss", help="bce, dice, bce_dice, ce, focal, ce_dice or auto")
    p.add_argument("--val-fraction", type=float, help="fraction of cases held out for validation")
    p.add_argument("--fg-fraction", type=float, help="fraction of foreground-centred patches")
    p.add_argument("--no-augment", action="store_true", help="disable augmentation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    if finetune:
        p.add_argument("--model", required=True, help="packaged model name or checkpoint file")
        p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
        p.add_argument("--l2sp", type=float, help="L2-SP strength toward the start weights")
        p.add_argument("--replay", help="dataset.json of earlier cases to replay (forgetting guard)")
        p.add_argument("--replay-fraction", type=float, help="share of each batch from --replay")
        p.add_argument("--only-weighted", action="store_true",
                       help="count only pixels of each case's 'weight' map (edited/reviewed)")
    else:
        p.add_argument("--arch", default="drunet", help="network (see `drunet models`)")
        p.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2D or 3D network")
        p.add_argument("--features", type=_tuple_of_ints, help="channels per level, e.g. 16,32,64,128")
        p.add_argument("--dropout", type=float)
        p.add_argument("--act", choices=("relu", "prelu", "leakyrelu"))
        p.add_argument("--norm", choices=("batch", "instance", "group", "none"))
        p.add_argument("--normalization", help="percentile_zscore, zscore, minmax or none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drunet", description="DRU-Net segmentation of 2D/3D medical images.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_train_options(sub.add_parser("train", help="train a network from scratch"), finetune=False)
    _add_train_options(sub.add_parser("finetune", help="fine-tune a model on new/corrected cases"),
                       finetune=True)

    p = sub.add_parser("predict", help="segment images with a model")
    p.add_argument("--model", default="retina-vessels", help="packaged model name or checkpoint")
    p.add_argument("--input", required=True, help="image file or folder")
    p.add_argument("--output", required=True, help="mask file or folder")
    p.add_argument("--prob", help="folder for float32 probability maps (TIFF 2D, NIfTI 3D)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--tile-size", type=_tuple_of_ints, help="tile size; default: whole image if it fits")
    p.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (0-0.9)")
    p.add_argument("--threshold", type=float, help="foreground threshold (binary models)")
    p.add_argument("--mode", choices=("auto", "2d", "3d"), default="auto",
                   help="2d = slice-wise for 3D volumes with a 2D model")
    p.add_argument("--slice-axis", type=int, default=None, help="slice axis for slice-wise 3D")
    p.add_argument("--threads", type=int)

    p = sub.add_parser("evaluate", help="compare predicted masks with ground truth")
    p.add_argument("--pred", required=True, help="folder (or file) of predicted masks")
    p.add_argument("--truth", required=True, help="folder (or file) of ground-truth masks")
    p.add_argument("--mask", help="folder (or file) of region masks (e.g. DRIVE FOV)")
    p.add_argument("--prob", help="folder of probability maps (for AUC)")
    p.add_argument("--json", help="write per-case and mean results to this JSON file")
    p.add_argument("--no-hd", action="store_true", help="skip Hausdorff distances")

    p = sub.add_parser("export", help="export a model to ONNX or TorchScript")
    p.add_argument("--model", required=True)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", required=True)

    p = sub.add_parser("models", help="list architectures and packaged models")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("samples", help="copy the packaged sample images into a folder")
    p.add_argument("--out", required=True, help="destination folder")

    p = sub.add_parser("demo", help="open napari with a sample segmented by the default model")
    p.add_argument("--model", default="retina-vessels")
    p.add_argument("--sample", default="fundus", choices=("fundus", "hippocampus"))
    return parser


def _version() -> str:
    from . import __version__

    return f"napari-drunet {__version__}"


def _progress_bar(total: int | None, desc: str):
    from tqdm import tqdm

    # bars only on a terminal: in logs and pipes their carriage returns are noise, and stderr
    # must stay one clean "error: ..." line when a command fails
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
                disable=not sys.stderr.isatty(), leave=False)


def _drive(gen, desc: str, quiet: bool = False):
    """Run a progress generator with a tqdm bar (none if ``quiet``); return its result."""
    if quiet:
        from .core.progress import run_to_end

        return run_to_end(gen)
    bar = None
    last = 0
    try:
        while True:
            try:
                rec = next(gen)
            except StopIteration as stop:
                return stop.value
            if bar is None:
                bar = _progress_bar(rec.total, desc)
            if rec.total and bar.total != rec.total:
                bar.total = rec.total
            bar.update(max(0, rec.step - last))
            last = rec.step
            post = {k: f"{v:.4g}" for k, v in rec.metrics.items()
                    if isinstance(v, (int, float)) and k in ("loss", "val_dice", "lr")}
            if post:
                bar.set_postfix(post, refresh=False)
    finally:
        if bar is not None:
            bar.close()


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _check_writable(target: str | os.PathLike, what: str = "output") -> None:
    """Fail early (before any work) when ``target`` cannot be written.

    The nearest existing ancestor must be a folder in which a file can be created (tried for
    real: permission bits do not stop root, and /proc-like folders refuse only on creation).
    """
    target = Path(target)
    if target.is_dir() and what != "folder":
        raise InputError(f"cannot write {what} {target}: it is a folder; give a file name")
    probe = target if what == "folder" else target.parent
    while not probe.exists():
        if probe.is_symlink():  # dangling link: creating folders through it fails later
            raise InputError(f"cannot write {target}: {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write {target}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".drunet-write-test.", dir=probe)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc} ({probe})") from None
    os.close(fd)
    os.unlink(tmp)


def cmd_train(args: argparse.Namespace, finetune: bool) -> int:
    from .core.dataset import load_dataset
    from .core.training import TrainConfig, default_finetune_config, train_iter

    _set_threads(args.threads)
    _check_writable(args.out, "model file")
    cases, label_names = load_dataset(args.data, allow_outside=args.allow_outside)
    if not cases:
        raise InputError(f"{args.data}: no training cases")
    init = replay = val = None
    if args.val_data:
        val, _ = load_dataset(args.val_data, allow_outside=args.allow_outside)
    if finetune:
        from .core.model import load_model

        init = load_model(args.model, device=args.device)
        cfg = default_finetune_config()
        if args.replay:
            replay, _ = load_dataset(args.replay, allow_outside=args.allow_outside)
    else:
        cfg = TrainConfig(arch=args.arch, spatial_dims=args.dims)
    overrides = {
        "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "max_steps": args.max_steps,
        "time_budget": args.time_budget, "patch_size": args.patch_size,
        "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "loss": args.loss, "val_fraction": args.val_fraction, "fg_fraction": args.fg_fraction,
        "device": args.device, "seed": args.seed,
    }
    if args.no_augment:
        overrides["augment"] = False
    if finetune:
        overrides.update(freeze_encoder=args.freeze_encoder or None, l2sp=args.l2sp,
                         replay_fraction=args.replay_fraction,
                         only_weighted=args.only_weighted or None)
    else:
        overrides.update(features=args.features, dropout=args.dropout, act=args.act,
                         norm=args.norm)
        if args.normalization:
            overrides["normalization"] = {"mode": args.normalization}
        if label_names:
            overrides["label_names"] = label_names
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    if cfg.patch_size and len(cfg.patch_size) == 1:  # "--patch-size 64" = 64 on every axis
        dims = init.spatial_dims if init is not None else cfg.spatial_dims
        cfg.patch_size = cfg.patch_size * dims
    t0 = time.time()
    is_main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    result = _drive(train_iter(cases, cfg, init=init, val_cases=val, replay_cases=replay,
                               out=args.out),
                    "fine-tune" if finetune else "train", quiet=not is_main)
    if result is None or not is_main:
        return 0
    best = result.best_val_dice
    best_txt = f"{best:.4f}" if best is not None else "n/a"
    print(f"saved {args.out}: {result.steps} steps in {time.time() - t0:.0f} s, "
          f"best validation Dice {best_txt}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .core.io import (
        SUPPORTED_EXTENSIONS,
        format_of,
        list_images,
        read_image,
        strip_extension,
        write_label,
        write_probability,
    )
    from .core.model import load_model

    _set_threads(args.threads)
    src = Path(args.input)
    if not src.exists():
        raise InputError(f"input not found: {src}")
    inputs = list_images(src) if src.is_dir() else [src]
    if not inputs:
        raise InputError(f"no supported images in {src} ({', '.join(SUPPORTED_EXTENSIONS)})")
    out = Path(args.output)
    single_file = (not src.is_dir()) and any(out.name.lower().endswith(e)
                                             for e in SUPPORTED_EXTENSIONS)
    # outputs are named after each input's base name (never a path), so they stay in --output;
    # two inputs mapping to one file, or probabilities over masks, would lose results
    targets: dict[Path, Path] = {}
    for p in inputs:
        t = out if single_file else out / (strip_extension(p) + _mask_ext(format_of(p)))
        key = Path(os.path.abspath(t))
        if key in targets:
            raise InputError(f"{p.name} and {targets[key].name} would both be written to {t}; "
                             "rename one of them")
        targets[key] = p
    if args.prob and os.path.abspath(args.prob) == os.path.abspath(out if not single_file
                                                                   else out.parent):
        raise InputError("--prob must be another folder than --output (the probability maps "
                         "would replace the masks)")
    _check_writable(out, "output" if single_file else "folder")
    if args.prob:
        _check_writable(args.prob, "folder")
    model = load_model(args.model, device=args.device)
    opts = {"tta": args.tta, "mode": args.mode}
    for key in ("tile_size", "overlap", "threshold", "slice_axis"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    for path in inputs:
        image = read_image(path)
        pred = _drive(model.predict_iter(image, **opts), f"predict {path.name}")
        notes = [w for w in image.meta.get("warnings", []) if "NaN/Inf" not in w]
        for note in [*notes, *pred.info.get("warnings", [])]:
            print(f"warning: {path.name}: {note}", file=sys.stderr)
        base = strip_extension(path)
        target = out if single_file else out / (base + _mask_ext(image.format))
        write_label(target, pred.mask, like=image,
                    scale_binary=model.out_channels == 1 and target.suffix.lower() in (".png", ".bmp"))
        if args.prob:
            ext = ".nii.gz" if image.array.ndim == 4 else ".tif"
            write_probability(Path(args.prob) / (base + ext), pred.probabilities, like=image)
        print(f"{path} -> {target}")
    return 0


def _mask_ext(fmt: str) -> str:
    return {"nifti": ".nii.gz", "tiff": ".tif"}.get(fmt, ".png")


def _match_files(pred_dir: Path, other: Path, kind: str) -> dict[str, Path]:
    """Map each prediction base name to a file in ``other`` (exact base name, else case number)."""
    from .core.io import list_images, strip_extension

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


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .core.atomic import atomic_write_json
    from .core.io import list_images, read_image, read_label, strip_extension
    from .core.metrics import evaluate_case, format_table, summarize

    pred_src = Path(args.pred)
    if not pred_src.exists():
        raise InputError(f"predictions not found: {pred_src}")
    if args.json:
        _check_writable(args.json, "results file")
    preds = [pred_src] if pred_src.is_file() else list_images(pred_src)
    if not preds:
        raise InputError(f"no predicted masks in {pred_src}")
    truths = _match_files(pred_src, Path(args.truth), "truth")
    masks = _match_files(pred_src, Path(args.mask), "mask") if args.mask else {}
    probs = _match_files(pred_src, Path(args.prob), "probability") if args.prob else {}
    names, results = [], []
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
        names.append(name)
    print(format_table(names, results))
    if args.json:
        summary = summarize(results)
        atomic_write_json(args.json, {"cases": dict(zip(names, results, strict=True)),
                                      "mean": summary, "mean_dice": summary.get("dice")})
        print(f"wrote {args.json}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .core.export import export_model
    from .core.model import load_model

    _check_writable(args.out, "export file")
    model = load_model(args.model, device="cpu")
    size = 64 if model.spatial_dims == 3 else 256
    shape = (1, model.in_channels) + (size,) * model.spatial_dims
    path = export_model(model.network, args.format, args.out, example_shape=shape)
    print(f"wrote {path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .core.checkpoint import read_meta
    from .core.model import list_models, model_path
    from .core.networks import describe_architectures

    archs = describe_architectures()
    packaged = []
    for name in list_models():
        meta = read_meta(model_path(name))
        packaged.append({"name": name, "arch": meta.get("arch"),
                         "dims": meta.get("arch_kwargs", {}).get("spatial_dims"),
                         "labels": meta.get("label_names"), "metrics": meta.get("metrics", {})})
    if args.json:
        print(json.dumps({"architectures": archs, "packaged_models": packaged}, indent=2))
        return 0
    print("Architectures (parameters for the default 2D, 1-channel, binary configuration):")
    for a in archs:
        print(f"  {a['name']:<16}{a['params']:>12,}  {a['description']}")
    print("\nPackaged models:")
    for m in packaged or [{"name": "(none)", "arch": "", "dims": "", "labels": {}}]:
        labels = ", ".join(str(v) for v in (m["labels"] or {}).values())
        print(f"  {m['name']:<16}{m['arch'] or '':<16}{m['dims'] or ''}D  {labels}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    import shutil

    from ._sample_data import sample_paths

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for key, src in sample_paths().items():
        src = Path(src)
        suffix = "".join(src.suffixes[-2:]) if src.name.endswith(".nii.gz") else src.suffix
        dst = out / f"{key}{suffix}"
        shutil.copyfile(src, dst)
        print(f"{key}: {dst}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .gui.demo import launch_demo

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        # main() silences library warnings; the demo's "UNTRAINED network" fallback notice
        # must still reach the user
        warnings.filterwarnings("always", message=".*UNTRAINED", category=UserWarning)
        warnings.showwarning = one_line
        launch_demo(model=args.model, sample=args.sample, run=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``drunet`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "train": lambda a: cmd_train(a, finetune=False),
        "finetune": lambda a: cmd_train(a, finetune=True),
        "predict": cmd_predict, "evaluate": cmd_evaluate, "export": cmd_export,
        "models": cmd_models, "samples": cmd_samples, "demo": cmd_demo,
    }
    # the user sees our one-line messages, not library warnings or log records about bad files
    # (python -W ... or PYTHONWARNINGS bring the warnings back)
    tiff_log = logging.getLogger("tifffile")
    old_level = tiff_log.level
    try:
        with warnings.catch_warnings():
            if not sys.warnoptions:
                warnings.simplefilter("ignore")
            tiff_log.setLevel(logging.CRITICAL)
            return handlers[args.command](args)
    except DrunetError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except OSError as err:  # missing, unreadable or unwritable paths, full disk ...
        text = f"{err.strerror or err}: {err.filename or ''}".rstrip(": ")
        print(f"error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; try a smaller --tile-size or --patch-size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        tiff_log.setLevel(old_level)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
