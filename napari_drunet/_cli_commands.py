"""Handlers of the ``drunet`` sub-commands (the parser and ``main`` are in :mod:`.cli`).

Each ``cmd_*`` function receives the parsed arguments, does the work (progress bars on a
terminal only) and returns the exit status; user mistakes raise
:class:`~napari_drunet.core.errors.DrunetError`, which :func:`napari_drunet.cli.main` turns into
one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from .core.atomic import check_writable, refuse_overwrite, same_file
from .core.errors import InputError


def _progress_bar(total: int | None, desc: str):
    from tqdm import tqdm

    # bars only on a terminal: in logs and pipes their carriage returns are noise, and stderr
    # must stay one clean "error: ..." line when a command fails
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
                disable=not sys.stderr.isatty(), leave=False)


#: Without a terminal, a job running longer than this prints a progress line this often.
LOG_EVERY_S = 30.0


def _log_progress(desc: str, rec, started: float, state: dict) -> None:
    """Progress lines for logs and pipes (no bar there): a long single image is not silent."""
    now = time.monotonic()
    if now - state.get("last", started) < LOG_EVERY_S:
        return
    state["last"] = now
    share = f" ({100 * rec.step / rec.total:.0f} %)" if rec.total else ""
    print(f"{desc}: {rec.step}/{rec.total or '?'}{share} after {now - started:.0f} s",
          file=sys.stderr, flush=True)


def _drive(gen, desc: str, quiet: bool = False):
    """Run a progress generator with a tqdm bar (none if ``quiet``); return its result."""
    from .core.progress import drive

    if quiet:
        return drive(gen)
    bar = None
    last = 0
    started, state = time.monotonic(), {}

    def show(rec) -> None:
        nonlocal bar, last
        if not sys.stderr.isatty():
            _log_progress(desc, rec, started, state)
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

    try:
        return drive(gen, show)
    finally:
        if bar is not None:
            bar.close()


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_train(args: argparse.Namespace, finetune: bool) -> int:
    from .core.dataset import load_dataset
    from .core.training import TrainConfig, default_finetune_config, train_iter

    _set_threads(args.threads)
    check_writable(args.out, "model file")
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
        "rotate": args.rotate, "scale": args.scale, "degrade": args.degrade,
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
    if finetune and not args.keep_threshold:
        _rechoose_threshold(result.model, val or cases, init.threshold, args.out)
    print(f"saved {args.out}: {result.steps} steps in {time.time() - t0:.0f} s, "
          f"best validation Dice {best_txt}")
    return 0


def _rechoose_threshold(model, cases, parent: float, out: str) -> None:
    """The binary threshold re-chosen on the labelled ``cases`` (the validation cases when
    given), as a correction round does; the model file ``out`` is written again with it."""
    from .core.threshold import choose_threshold_iter

    choice = _drive(choose_threshold_iter(model, cases, parent), "threshold")
    if choice is None:  # multi-class: arg-max, no threshold
        return
    choice.apply(model)
    model.save(out)
    print(f"threshold {choice.threshold:g}" + ("" if choice.chosen else " kept") +
          f": {choice.reason}")


def _input_files(src: Path) -> list[Path]:
    """The image files of ``--input``: the file itself or the supported images in a folder."""
    from .core.dicom import is_dicom_source
    from .core.io import SUPPORTED_EXTENSIONS, list_images

    if not src.exists():
        raise InputError(f"input not found: {src}")
    inputs = list_images(src) if src.is_dir() else [src]
    if not inputs and is_dicom_source(src):  # a folder of DICOM slices is one image
        inputs = [src]
    if not inputs:
        raise InputError(f"no supported images in {src} ({', '.join(SUPPORTED_EXTENSIONS)}, "
                         "or DICOM)")
    return inputs


def _predict_jobs(args: argparse.Namespace, src: Path
                  ) -> list[tuple[str, str, list[Path], Callable]]:
    """What ``drunet predict`` segments: ``(name, mask extension, files, read)`` per input (a
    file or DICOM series of ``--input``, or a study of ``--data`` with its channel files)."""
    if args.data:
        from .core.io import format_of
        from .core.study import dataset_studies

        return [(st.name, _mask_ext(format_of(st.files[0])), list(st.files), st.read)
                for st in dataset_studies(src, args.split, args.allow_outside)]
    series = getattr(args, "series", None)
    return [(*_input_base(p), [p], functools.partial(_read_input, p, series))
            for p in _input_files(src)]


def cmd_predict(args: argparse.Namespace) -> int:
    from .core.io import (
        SUPPORTED_EXTENSIONS,
        check_label_target,
        write_label,
        write_probability,
    )
    from .core.model import load_model

    _set_threads(args.threads)
    src = Path(args.data or args.input)
    jobs = _predict_jobs(args, src)
    out = Path(args.output)
    single_file = (len(jobs) == 1 and (not src.is_dir() or jobs[0][2] == [src])) and any(
        out.name.lower().endswith(e) for e in SUPPORTED_EXTENSIONS)
    # outputs are named after each input's base name (never a path), so they stay in --output;
    # two inputs mapping to one file, probabilities over masks or a mask over its own image
    # would lose results or the scan itself: all refused before any work
    prob_dir = Path(args.prob) if args.prob else None
    _refuse_input_folder(src, out if not single_file else None, "--output")
    _refuse_input_folder(src, prob_dir, "--prob")
    if prob_dir is not None and same_file(prob_dir, out if not single_file else out.parent):
        raise InputError("--prob must be another folder than --output (the probability maps "
                         "would replace the masks)")
    targets: dict[Path, str] = {}
    for base, ext, files, _ in jobs:
        t = out if single_file else out / (base + ext)
        key = Path(os.path.abspath(t))
        if key in targets:
            raise InputError(f"{files[0].name} and {targets[key]} would both be written to {t}; "
                             "rename one of them")
        targets[key] = files[0].name
    probs = ([prob_dir / (base + ext) for base, *_ in jobs for ext in (".tif", ".nii.gz")]
             if prob_dir is not None else [])
    refuse_overwrite([*targets, *probs], [f for _, _, files, _ in jobs for f in files])
    check_writable(out, "output" if single_file else "folder")
    if prob_dir is not None:
        check_writable(prob_dir, "folder")
    if single_file:
        check_label_target(out, 2)  # a lossy or unknown format: before any work
    model = load_model(args.model, device=args.device)
    opts = {"tta": args.tta, "mode": args.mode, "axis_order": args.axis_order}
    for key in ("tile_size", "overlap", "threshold", "slice_axis"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    if args.max_pixels is not None:
        opts["max_image_pixels"] = args.max_pixels or None
    for base, ext, files, read in jobs:
        image = read()
        label = base if args.data else files[0].name
        target = out if single_file else out / (base + ext)
        scale = model.out_channels == 1 and target.suffix.lower() in (".png", ".bmp")
        check_label_target(target, image.ndim_spatial, 255 if scale else
                           max(1, model.out_channels - 1))
        pred = _drive(model.predict_iter(image, **opts), f"predict {label}")
        notes = [w for w in image.meta.get("warnings", []) if "NaN/Inf" not in w]
        for note in [*notes, *pred.info.get("warnings", [])]:
            print(f"warning: {label}: {note}", file=sys.stderr)
        # a multi-class map stays class indices even when it holds only 0 and 1
        write_label(target, pred.mask, like=image,
                    scale_binary=None if model.out_channels == 1 else False)
        if args.prob:
            pext = ".nii.gz" if image.array.ndim == 4 else ".tif"
            write_probability(prob_dir / (base + pext), pred.probabilities, like=image)
        print(f"{base if args.data else files[0]} -> {target}")
    return 0


def _refuse_input_folder(src: Path, folder: Path | None, option: str) -> None:
    """Refuse writing results into the folder of images being segmented (``--input d
    --output d``): masks would replace or mix with the scans and be read as images next time."""
    if folder is not None and src.is_dir() and same_file(folder, src):
        raise InputError(f"{option} {folder} is the --input folder; results would replace or "
                         "mix with the images: choose another folder")


def _mask_ext(fmt: str) -> str:
    return {"nifti": ".nii.gz", "tiff": ".tif", "dicom": ".nii.gz"}.get(fmt, ".png")


def _input_base(path: Path) -> tuple[str, str]:
    """Base name of an input's outputs and its mask extension (a DICOM series gives a NIfTI
    mask with the series' geometry, named after its folder)."""
    from .core.dicom import is_dicom_source, source_name
    from .core.io import format_of, is_supported, strip_extension

    if not is_supported(path) and is_dicom_source(path):
        return source_name(path), _mask_ext("dicom")
    return strip_extension(path), _mask_ext(format_of(path))


def _read_input(path: Path, series: str | None):
    """An input image; ``series`` picks one series of a DICOM source (refused for others)."""
    from .core.dicom import is_dicom_source, read_dicom
    from .core.io import is_supported, read_image

    if not is_supported(path) and is_dicom_source(path):
        return read_dicom(path, series=series)
    if series:
        raise InputError(f"--series applies to DICOM inputs; {path.name} is not DICOM")
    return read_image(path)


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
    from .core.metrics import PooledMetrics, evaluate_case, format_table, summarize

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


def cmd_export(args: argparse.Namespace) -> int:
    from .core.export import export_model
    from .core.model import load_model

    check_writable(args.out, "export file")
    model = load_model(args.model, device="cpu")
    if args.format == "bioimageio":
        from .core.bioimageio import export_bioimageio

        print(f"wrote {export_bioimageio(model, args.out)}")
        return 0
    size = 64 if model.spatial_dims == 3 else 256
    shape = (1, model.in_channels) + (size,) * model.spatial_dims
    path = export_model(model.network, args.format, args.out, example_shape=shape)
    print(f"wrote {path}")
    return 0


def cmd_widen(args: argparse.Namespace) -> int:
    from .core.networks import count_parameters
    from .core.widen import widen_checkpoint

    check_writable(args.out, "model file")
    wide = widen_checkpoint(args.model, args.out, args.factor, noise=args.noise, seed=args.seed)
    n = count_parameters(wide)
    features = ",".join(str(f) for f in wide.config["features"])
    print(f"wrote {args.out}: features {features}, {n / 1e6:.2f} M parameters "
          "(same predictions until fine-tuned: drunet finetune --model ...)")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from .core.adapt import LazyImages, adapt_batchnorm_iter
    from .core.io import read_image
    from .core.model import load_model

    _set_threads(args.threads)
    src = Path(args.input)
    inputs = _input_files(src)
    check_writable(args.out, "model file")
    model = load_model(args.model, device=args.device)
    opts: dict = {"axis_order": args.axis_order}
    if args.tile_size is not None:
        opts["tile_size"] = args.tile_size
    adapted = _drive(adapt_batchnorm_iter(model, LazyImages(inputs, read_image), **opts),
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
    rows = packaged or [{"name": "(none)", "arch": "", "dims": "", "labels": {}}]
    width = max(16, *(len(m["name"]) + 2 for m in rows))
    for m in rows:
        labels = ", ".join(str(v) for v in (m["labels"] or {}).values())
        print(f"  {m['name']:<{width}}{m['arch'] or '':<16}{m['dims'] or ''}D  {labels}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    import shutil

    from ._sample_data import SAMPLES_DIR, sample_paths

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
