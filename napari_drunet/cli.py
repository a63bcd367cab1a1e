"""The ``drunet`` command line: train, finetune, widen, predict, evaluate, export, models,
samples, demo, project.

User mistakes (bad paths, unreadable files, incompatible models) end with one line
``error: ...`` on stderr and exit status 2, without a traceback.

This module holds the argument parser and :func:`main`; the ``cmd_*`` handlers live in
:mod:`napari_drunet._cli_commands` (re-exported here).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from ._cli_commands import (
    cmd_adapt,
    cmd_demo,
    cmd_evaluate,
    cmd_export,
    cmd_models,
    cmd_predict,
    cmd_samples,
    cmd_train,
    cmd_widen,
)
from ._cli_project import add_project_parser, cmd_project
from .core.errors import DrunetError


def _tuple_of_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected integers like 256 or 256,256: {text!r}") from err
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def _features(text: str) -> tuple[int, ...]:
    from .core.checkpoint import MAX_LEVELS, MAX_WIDTH

    values = _tuple_of_ints(text)
    if len(values) > MAX_LEVELS or max(values) > MAX_WIDTH:
        raise argparse.ArgumentTypeError(f"at most {MAX_LEVELS} levels of at most {MAX_WIDTH} "
                                         f"channels: {text!r}")
    return values


def _bounded(kind: type, low: float | None = None, high: float | None = None,
             what: str = "value"):
    """argparse type: a ``kind`` number (finite) in ``[low, high]``."""
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number: {text!r}") from None
        if not math.isfinite(value) or (low is not None and value < low) or \
                (high is not None and value > high):
            span = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            raise argparse.ArgumentTypeError(f"{what} must be in {span}: {text!r}")
        return value

    return parse


_THREADS = _bounded(int, 1, 1024, "thread count")
_SEED = _bounded(int, 0, 2 ** 32 - 1, "seed")
_FRACTION = _bounded(float, 0.0, 1.0, "fraction")


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
    p.add_argument("--lr", type=_bounded(float, 0.0, None, "learning rate"),
                   help="learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--loss", help="bce, dice, bce_dice, ce, focal, ce_dice or auto")
    p.add_argument("--val-fraction", type=float, help="fraction of cases held out for validation")
    p.add_argument("--fg-fraction", type=float, help="fraction of foreground-centred patches")
    p.add_argument("--no-augment", action="store_true", help="disable augmentation")
    p.add_argument("--rotate", type=float,
                   help="augment: largest rotation in degrees (30%% of patches; 0 = off)")
    p.add_argument("--scale", type=float,
                   help="augment: largest zoom, e.g. 0.25 = x0.8 to x1.25 (30%% of patches)")
    p.add_argument("--degrade", type=float,
                   help="augment: share of patches given blur / noise / JPEG artefacts, as from "
                   "other cameras (0 = off)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=_SEED, default=0)
    p.add_argument("--threads", type=_THREADS, help="CPU threads for torch")
    if finetune:
        p.add_argument("--model", required=True, help="packaged model name or checkpoint file")
        p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
        p.add_argument("--l2sp", type=float, help="L2-SP strength toward the start weights")
        p.add_argument("--replay", help="dataset.json of earlier cases to replay (forgetting guard)")
        p.add_argument("--replay-fraction", type=float, help="share of each batch from --replay")
        p.add_argument("--only-weighted", action="store_true",
                       help="count only pixels of each case's 'weight' map (edited/reviewed)")
        p.add_argument("--keep-threshold", action="store_true",
                       help="keep the model's binary threshold (default: re-chosen on the "
                       "labelled cases, the --val-data ones when given)")
    else:
        p.add_argument("--arch", default="drunet", help="network (see `drunet models`)")
        p.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2D or 3D network")
        p.add_argument("--features", type=_features, help="channels per level, e.g. 16,32,64,128")
        p.add_argument("--dropout", type=float)
        p.add_argument("--act", choices=("relu", "prelu", "leakyrelu"))
        p.add_argument("--norm", choices=("batch", "instance", "group", "none"))
        p.add_argument("--normalization", help="percentile_zscore, zscore, minmax or none")


class _Parser(argparse.ArgumentParser):
    """Argument errors as one ``error: ...`` line and exit status 2, like every other user
    error (argparse prints the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} "
                  "--help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="drunet", description="DRU-Net segmentation of 2D/3D medical images.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_train_options(sub.add_parser("train", help="train a network from scratch"), finetune=False)
    _add_train_options(sub.add_parser("finetune", help="fine-tune a model on new/corrected cases"),
                       finetune=True)

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
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--tile-size", type=_tuple_of_ints, help="tile size; default: whole image if it fits")
    p.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (0-0.9)")
    p.add_argument("--max-pixels", type=_bounded(int, 0, None, "--max-pixels"),
                   help="size guard: refuse larger images (default 2**28 pixels/voxels; "
                   "0 = no guard)")
    p.add_argument("--threshold", type=_FRACTION,
                   help="foreground threshold in [0, 1] (binary models)")
    p.add_argument("--mode", choices=("auto", "2d", "3d"), default="auto",
                   help="2d = slice-wise for 3D volumes with a 2D model")
    p.add_argument("--slice-axis", type=int, default=None, help="slice axis for slice-wise 3D")
    p.add_argument("--axis-order", choices=("auto", "search", "keep"), default="auto",
                   help="3D: bring the volume to the model's training orientation (auto: by "
                   "the NIfTI header, else by trying the 6 axis orders where the model asks "
                   "for it; search: always try them; keep: use the volume as stored)")
    p.add_argument("--threads", type=_THREADS)

    p = sub.add_parser("evaluate", help="compare predicted masks with ground truth")
    p.add_argument("--pred", required=True, help="folder (or file) of predicted masks")
    p.add_argument("--truth", required=True, help="folder (or file) of ground-truth masks")
    p.add_argument("--mask", help="folder (or file) of region masks (e.g. DRIVE FOV)")
    p.add_argument("--prob", help="folder of probability maps (for AUC)")
    p.add_argument("--json", help="write per-case and mean results to this JSON file")
    p.add_argument("--no-hd", action="store_true", help="skip Hausdorff distances")

    p = sub.add_parser("export", help="export a model to ONNX, TorchScript or a bioimage.io "
                       "package")
    p.add_argument("--model", required=True)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "bioimageio"),
                   help="bioimageio: a .zip for ilastik, deepImageJ, QuPath and bioimage.io")
    p.add_argument("--out", required=True)

    p = sub.add_parser("widen", help="grow a model's width, keeping its predictions (Net2Net)")
    p.add_argument("--model", required=True, help="packaged model name or checkpoint file")
    p.add_argument("--factor", type=_bounded(float, 1.0, 16.0, "factor"), default=1.5,
                   help="width multiplier per level (1 to 16)")
    p.add_argument("--noise", type=float, default=0.01,
                   help="noise on the copied weights, share of each layer's weight std")
    p.add_argument("--seed", type=_SEED, default=0)
    p.add_argument("--out", required=True, help="output checkpoint")

    p = sub.add_parser("adapt", help="adapt a model to another site's images, no labels needed "
                       "(re-estimates its batch-norm statistics)")
    p.add_argument("--model", default="retina-vessels", help="packaged model name or checkpoint")
    p.add_argument("--input", required=True, help="image file or folder of the site's images")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors / .ckpt)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tile-size", type=_tuple_of_ints, help="tile size (default: the model's)")
    p.add_argument("--axis-order", choices=("auto", "search", "keep"), default="auto",
                   help="3D volumes: as for predict")
    p.add_argument("--threads", type=_THREADS)

    p = sub.add_parser("models", help="list architectures and packaged models")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("samples", help="copy the packaged sample images into a folder")
    p.add_argument("--out", required=True, help="destination folder")

    p = sub.add_parser("demo", help="open napari with a sample segmented by the default model")
    p.add_argument("--model", default=None,
                   help="default: the packaged model that fits the sample")
    p.add_argument("--sample", default="fundus", choices=("fundus", "hippocampus"))

    add_project_parser(sub)
    return parser


def _version() -> str:
    from . import __version__

    return f"napari-drunet {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``drunet`` command."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a bad argument (one line printed)
        return int(stop.code or 0)
    handlers = {
        "train": lambda a: cmd_train(a, finetune=False),
        "finetune": lambda a: cmd_train(a, finetune=True),
        "predict": cmd_predict, "evaluate": cmd_evaluate, "export": cmd_export,
        "models": cmd_models, "widen": cmd_widen, "adapt": cmd_adapt, "samples": cmd_samples,
        "demo": cmd_demo, "project": cmd_project,
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
