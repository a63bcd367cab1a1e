"""The images named by ``--input`` and the names of the files written for them (predict, adapt)."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError


def input_files(src: Path) -> list[Path]:
    """The image files of ``--input``: the file itself or the supported images in a folder."""
    from ..core.image.dicom import is_dicom_source
    from ..core.image.io import SUPPORTED_EXTENSIONS, list_images

    if not src.exists():
        raise InputError(f"input not found: {src}")
    inputs = list_images(src) if src.is_dir() else [src]
    if not inputs and is_dicom_source(src):  # a folder of DICOM slices is one image
        inputs = [src]
    if not inputs:
        raise InputError(f"no supported images in {src} ({', '.join(SUPPORTED_EXTENSIONS)}, "
                         "or DICOM)")
    return inputs


def mask_ext(fmt: str) -> str:
    return {"nifti": ".nii.gz", "tiff": ".tif", "dicom": ".nii.gz"}.get(fmt, ".png")


def input_base(path: Path) -> tuple[str, str]:
    """Base name of an input's outputs and its mask extension (a DICOM series gives a NIfTI
    mask with the series' geometry, named after its folder)."""
    from ..core.image.dicom import is_dicom_source, source_name
    from ..core.image.io import format_of, is_supported, strip_extension

    if not is_supported(path) and is_dicom_source(path):
        return source_name(path), mask_ext("dicom")
    return strip_extension(path), mask_ext(format_of(path))


def read_input(path: Path, series: str | None):
    """An input image; ``series`` picks one series of a DICOM source (refused for others)."""
    from ..core.image.dicom import is_dicom_source, read_dicom
    from ..core.image.io import is_supported, read_image

    if not is_supported(path) and is_dicom_source(path):
        return read_dicom(path, series=series)
    if series:
        raise InputError(f"--series applies to DICOM inputs; {path.name} is not DICOM")
    return read_image(path)
