"""What the benchmark scripts share: the data folder, their argparse blocks, the fixed DRIVE
and MSD splits, the training-recipe options and the CLI runner.

* **Data**: :data:`DATA` is the ``shared/data`` folder beside the checkout
  (``$DRUNET_SHARED_DATA`` overrides it, as for the tests; ``$DRUNET_DATA`` too, the older name); :func:`add_data_option` makes a
  ``--drive`` / ``--root`` ... option defaulting to one of its datasets.
* **Options**: :func:`add_accuracy_options` (the four below), :func:`add_run_options` (``--threads``, ``--seed``, ``--device``, ``--out``),
  :func:`add_training_options` (budget, steps, epochs, patch, batch, learning rate, with each
  script's defaults), :func:`add_cycle_options` (``--skip-train``, ``--init``, ``--tta``) and
  :func:`add_recipe_options` (augmentation, ``--keep-last``) with :func:`recipe_flags` /
  :func:`recipe_summary`.
* **Splits** (docs/results.md): DRIVE :data:`TRAIN_IDS` / :data:`VAL_IDS` (test: the 20
  official test images); MSD Task04 :func:`split_msd`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DRUNET_SHARED_DATA") or os.environ.get("DRUNET_DATA")
            or REPO.parent / "shared" / "data")

#: DRIVE training images 21-36 train, 37-40 validate (model and threshold choice)
TRAIN_IDS = list(range(21, 37))
VAL_IDS = [37, 38, 39, 40]
MSD_HIPPOCAMPUS = "MSD_Task04_Hippocampus"

#: ``meta["card"]`` of the packaged models (what ``core.models.fit`` checks)
FUNDUS = {"modality": "colour fundus photograph", "dims": [2], "channels": "rgb",
          "example": "a DRIVE fundus photograph, 565 x 584 px RGB TIFF (any size: the field of "
                     "view is rescaled)"}
MRI_CROP = {"modality": "T1-weighted MRI crop around one hippocampus", "dims": [3],
            "channels": "grey",
            "example": "MSD Task04 hippocampus_150.nii.gz (the bundled sample), a 37 x 49 x 34 "
                       "voxel crop at 1 mm, one channel"}
BRAIN_MRI = {"modality": "brain MRI study, FLAIR + T1c (co-registered, each z-scored inside the "
                         "brain as in BraTS2015_6)", "dims": [3], "channels": "2-channel",
             "example": "a BraTS 2015 study: Flair and T1c NIfTI files of 240 x 240 x 155 voxels "
                        "at 1 mm, opened together as one 2-channel image (FLAIR first)"}
DERMOSCOPY = {"modality": "dermoscopy photograph of a skin lesion", "dims": [2], "channels": "rgb",
              "example": "an ISIC 2017 dermoscopy photograph, 256 x 192 px RGB JPEG, one lesion "
                         "in the middle (any size: it is resized)"}


# ------------------------------------------------------------------------------------ options
def add_data_option(ap: argparse.ArgumentParser, flag: str, dataset: str,
                    help: str | None = None) -> None:
    """``flag`` (e.g. ``--drive``) naming a dataset folder, by default ``DATA / dataset``."""
    ap.add_argument(flag, default=str(DATA / dataset), help=help or f"{dataset} folder")


def add_run_options(ap: argparse.ArgumentParser, threads: int = 2, seed: bool = True,
                    device: str | None = None, out: bool = True) -> None:
    """``--threads`` (torch intra-op threads), ``--seed``, ``--device`` (when a default is
    given) and a required ``--out`` folder."""
    ap.add_argument("--threads", type=int, default=threads)
    if seed:
        ap.add_argument("--seed", type=int, default=0)
    if device is not None:
        ap.add_argument("--device", default=device)
    if out:
        ap.add_argument("--out", required=True)


def add_training_options(ap: argparse.ArgumentParser, *, max_steps: int, epochs: int | None,
                         patch_size: str | None, batch_size: int | None, lr: float) -> None:
    """The ``drunet train`` options every accuracy script passes on, with its defaults
    (``epochs=None``: no ``--epochs`` option)."""
    ap.add_argument("--time-budget", type=float, default=None, help="seconds (wall clock)")
    ap.add_argument("--max-steps", type=int, default=max_steps,
                    help="optimizer steps (reproducible)")
    if epochs is not None:
        ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--patch-size", default=patch_size)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--lr", type=float, default=lr)


def add_accuracy_options(ap: argparse.ArgumentParser, **training: int | float | str | None,
                         ) -> None:
    """The options of an accuracy run (``drive_accuracy``, ``hippocampus_accuracy``):
    :func:`add_training_options` with the script's defaults ``training``, then
    :func:`add_run_options`, :func:`add_cycle_options` and :func:`add_recipe_options`."""
    add_training_options(ap, **training)
    add_run_options(ap)
    add_cycle_options(ap)
    add_recipe_options(ap)


def add_cycle_options(ap: argparse.ArgumentParser, init: bool = True) -> None:
    """``--skip-train`` (re-score ``<out>/model.ckpt``), ``--init`` (continue from a
    checkpoint) and ``--tta`` (flip test-time augmentation)."""
    ap.add_argument("--skip-train", action="store_true", help="reuse <out>/model.ckpt")
    if init:
        ap.add_argument("--init", default=None, help="continue training from this checkpoint")
    ap.add_argument("--tta", action="store_true", help="flip test-time augmentation")


def add_recipe_options(ap: argparse.ArgumentParser) -> None:
    """Training-recipe options: ``--rotate`` / ``--scale`` / ``--degrade`` (passed on to
    ``drunet train/finetune`` when given) and ``--keep-last`` (no validation during training;
    the last weights are kept)."""
    ap.add_argument("--rotate", type=float, default=None, help="augment: largest rotation (deg)")
    ap.add_argument("--scale", type=float, default=None, help="augment: largest zoom (0.25)")
    ap.add_argument("--degrade", type=float, default=None,
                    help="augment: share of patches with blur / noise / JPEG artefacts")
    ap.add_argument("--keep-last", action="store_true",
                    help="no validation during training: keep the last weights (thresholds "
                    "are still tuned on the validation images)")


def recipe_flags(args: argparse.Namespace, val_json: Path) -> list[str]:
    """The ``drunet train/finetune`` options for :func:`add_recipe_options`' arguments."""
    val = ["--val-fraction", "0"] if args.keep_last else ["--val-data", str(val_json)]
    return val + [f"--{k}={v}" for k in ("rotate", "scale", "degrade")
                  if (v := getattr(args, k)) is not None]


def recipe_summary(args: argparse.Namespace) -> dict:
    """The recipe options as recorded in ``summary.json``."""
    return {k: getattr(args, k) for k in ("rotate", "scale", "degrade", "keep_last")}


# --------------------------------------------------------------------------------------- runs
def drunet(*args: str) -> None:
    """Run ``drunet ARGS`` (the project's CLI) in a subprocess of this interpreter."""
    print("+ drunet", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "napari_drunet", *args], check=True)


def write_summary(out: Path, summary: dict) -> None:
    """Write ``<out>/summary.json`` and ``<out>/history.csv`` (the training log of
    ``<out>/model.ckpt``, one row per epoch), then print the summary."""
    from .history import load_history, write_csv

    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_csv(load_history(out), out / "history.csv")
    print(json.dumps(summary, indent=2))


def split_msd(root: str | Path, out: Path) -> tuple[list, list, list]:
    """The fixed MSD Task04 split: test = cases whose number is divisible by 5; of the others
    every 8th (sorted) validates, the rest train. Returns (train, validation, test entries);
    writes ``out/all.json`` (train + test), ``out/train.json`` and ``out/val.json``."""
    from napari_drunet.core.train.dataset import read_dataset_json, write_dataset_json

    from .datasets import make_msd_dataset

    spec = read_dataset_json(make_msd_dataset(root, out / "all.json", test_every=5))
    train_all, test = spec["training"], spec["test"]
    val = train_all[::8]
    train = [e for i, e in enumerate(train_all) if i % 8]
    labels = spec.get("labels")
    write_dataset_json(out / "train.json", train, labels, allow_outside=True)
    write_dataset_json(out / "val.json", val, labels, allow_outside=True)
    return train, val, test
