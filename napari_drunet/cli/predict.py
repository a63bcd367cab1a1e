"""``drunet predict``: segment image files, folders or DICOM series with a model."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..core.atomic import check_writable, refuse_overwrite, same_file
from ..core.errors import InputError
from .inputs import input_base, input_files, mask_ext, read_input
from .options import FRACTION, THREADS, bounded, set_threads, tuple_of_ints
from .progress import drive


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``predict`` sub-command."""
    p = sub.add_parser("predict", help="segment images with a model")
    p.add_argument("--model", default="retina-vessels", help="packaged model name or checkpoint")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="image file or folder (also a DICOM series folder, a "
                     "DICOMDIR or a .dcm file)")
    src.add_argument("--data", help="MSD-style dataset.json: segment the studies of --split, "
                     "each one file or a list of channel files (e.g. FLAIR + T1c) stacked in "
                     "the order listed")
    p.add_argument("--split", default="test", help="--data: the list to segment (default test)")
    p.add_argument("--allow-outside", action="store_true",
                   help="--data: allow paths outside the dataset.json folder")
    p.add_argument("--series", help="DICOM: SeriesInstanceUID to segment when the input holds "
                   "several series (the error lists them)")
    p.add_argument("--output", required=True, help="mask file or folder")
    p.add_argument("--prob", help="folder for float32 probability maps (TIFF 2D, NIfTI 3D)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test-time augmentation (default: as the model's recipe says)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision where the device runs it fast (CUDA; bf16 on CPUs "
                   "with AMX, 2-3x faster); --no-amp: float32 (default: on)")
    p.add_argument("--largest-object", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the largest object of each class, holes filled (default: as the "
                   "model's recipe says; on for skin-lesion)")
    p.add_argument("--tile-size", type=tuple_of_ints, help="tile size; default: whole image if it fits")
    p.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (0-0.9)")
    p.add_argument("--max-pixels", type=bounded(int, 0, None, "--max-pixels"),
                   help="size guard: refuse larger images (default 2**28 pixels/voxels; "
                   "0 = no guard)")
    p.add_argument("--threshold", type=FRACTION,
                   help="foreground threshold in [0, 1] (binary models)")
    p.add_argument("--mode", choices=("auto", "2d", "3d"), default="auto",
                   help="2d = slice-wise for 3D volumes with a 2D model")
    p.add_argument("--slice-axis", type=int, default=None, help="slice axis for slice-wise 3D")
    p.add_argument("--axis-order", choices=("auto", "search", "keep"), default="auto",
                   help="3D: bring the volume to the model's training orientation (auto: by "
                   "the NIfTI header, else by trying the 6 axis orders where the model asks "
                   "for it; search: always try them; keep: use the volume as stored)")
    p.add_argument("--threads", type=THREADS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``drunet predict``; returns the exit status."""
    from ..core.image.io import (
        SUPPORTED_EXTENSIONS,
        check_label_target,
        write_label,
        write_probability,
    )
    from ..core.models.model import load_model

    set_threads(args.threads)
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
    opts = {"mode": args.mode, "axis_order": args.axis_order}
    for key in ("tta", "amp", "largest_object", "tile_size", "overlap", "threshold", "slice_axis"):
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
        pred = drive(model.predict_iter(image, **opts), f"predict {label}")
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


def _predict_jobs(args: argparse.Namespace, src: Path
                  ) -> list[tuple[str, str, list[Path], Callable]]:
    """What ``drunet predict`` segments: ``(name, mask extension, files, read)`` per input (a
    file or DICOM series of ``--input``, or a study of ``--data`` with its channel files)."""
    if args.data:
        from ..core.image.io import format_of
        from ..core.train.dataset import dataset_studies

        return [(st.name, mask_ext(format_of(st.files[0])), list(st.files), st.read)
                for st in dataset_studies(src, args.split, args.allow_outside)]
    series = getattr(args, "series", None)
    return [(*input_base(p), [p], functools.partial(read_input, p, series))
            for p in input_files(src)]


def _refuse_input_folder(src: Path, folder: Path | None, option: str) -> None:
    """Refuse writing results into the folder of images being segmented (``--input d
    --output d``): masks would replace or mix with the scans and be read as images next time."""
    if folder is not None and src.is_dir() and same_file(folder, src):
        raise InputError(f"{option} {folder} is the --input folder; results would replace or "
                         "mix with the images: choose another folder")
