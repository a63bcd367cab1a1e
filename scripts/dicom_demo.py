"""Write a small DICOM series from an MSD hippocampus volume (for the screenshot and demos).

    python scripts/dicom_demo.py OUT_FOLDER [--case hippocampus_001] [--data ../shared/data]

Then ``napari OUT_FOLDER`` (choose napari-drunet) or
``drunet predict --model hippocampus --input OUT_FOLDER --output masks/``. With ``--two`` a
second, sagittally resliced series is written into the same folder (to show the series choice).
The Python entry point is :func:`write_demo_series`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_drunet.core.image.dicom_write import write_series
from napari_drunet.core.image.io import read_image

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_demo_series(out: str | Path, case: str = "hippocampus_001",
                      data: str | Path = DEFAULT_DATA, two: bool = False) -> list[Path]:
    """DICOM MR files of one MSD Task04 image (its NIfTI geometry kept) in ``out``."""
    src = Path(data) / "MSD_Task04_Hippocampus" / "imagesTr" / f"{case}.nii.gz"
    img = read_image(src)
    vol = np.round(img.array[0]).astype(np.int32)
    files = write_series(vol, img.affine, out, description=f"T1 {case}", series_number=1,
                         names=[f"IM{k:04d}" for k in range(vol.shape[0])])
    if two:  # the same volume sliced along x: a second series with its own geometry
        sag = np.ascontiguousarray(vol.transpose(2, 0, 1))  # (X, Z, Y) = slices along x
        aff = img.affine[:, [1, 2, 0, 3]]  # voxel (y, z, x) of the new array -> world
        files += write_series(sag, aff, out, description=f"T1 {case} sagittal", series_number=2,
                              names=[f"SAG{k:04d}" for k in range(sag.shape[0])])
    return files


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder for the DICOM files")
    p.add_argument("--case", default="hippocampus_001")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding MSD_Task04_Hippocampus")
    p.add_argument("--two", action="store_true", help="also write a sagittal second series")
    args = p.parse_args(argv)
    files = write_demo_series(args.out, args.case, args.data, args.two)
    print(f"wrote {len(files)} DICOM files to {args.out}")


if __name__ == "__main__":
    main()
