"""Read and write medical images and label maps (NIfTI, TIFF, PNG/JPEG/BMP/GIF).

Every image is returned as an :class:`ImageData` whose ``array`` is channel-first
``(C, *spatial)`` with the file's own dtype; spatial axes are ``(H, W)`` in 2D and ``(Z, Y, X)``
in 3D. Conventions per format:

* **NIfTI** (``.nii``, ``.nii.gz``, nibabel): nibabel's ``(X, Y, Z[, C])`` is transposed to
  ``(C, Z, Y, X)`` and the voxel sizes are reversed to ``(sz, sy, sx)``. A volume whose third
  axis has length 1 (``(X, Y)`` or ``(X, Y, 1)``) is a **2D** image ``(C, Y, X)``. A 5D
  ``(X, Y, Z, 1, C)`` vector image is accepted. ``affine`` is nibabel's affine, untouched, and
  ``meta`` keeps the original on-disk shape, qform/sform and units so that :func:`write_label`
  with ``like=`` reproduces the source geometry exactly.
* **TIFF** (tifffile): the series' axes are used: ``C``/``S`` are channels, ``Y``/``X`` the
  plane and any other axis (``Z``, ``Q``, ``I``, ``T`` ...) the depth; length-1 axes are
  dropped. Without metadata two leading axes (``QQYX``) are read as ``(Z, C)`` like ImageJ
  hyperstacks. Alpha samples are dropped. Spacing comes from ImageJ metadata (``spacing`` for Z,
  resolution tags for Y/X) or from tifffile's JSON ``spacing``; otherwise it is 1.0.
* **PNG/JPEG/BMP/GIF** (Pillow): grayscale ``(1, H, W)``; RGB ``(3, H, W)`` with
  ``is_rgb=True``; RGBA/LA lose their alpha (noted in ``meta['warnings']``); palette images become
  grayscale values when the palette is gray, RGB otherwise (:func:`read_label` uses the palette
  *indices*); only the first frame of an animated GIF is read.

Writers go through :func:`napari_drunet.core.atomic.atomic_path`: a failed write leaves no file.
The output extension chooses the format. Binary masks go to PNG/BMP/GIF/TIFF as 0/255 (the
DRIVE/ISIC convention: 0/1 looks black in every image viewer) and to NIfTI as 0/1 class
indices; multi-class maps keep their indices 0..K. Readers map 0/255 masks back to 0/1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, refuse_overwrite
from ..errors import DrunetError, InputError
from .data import ImageData

SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".nii.gz", ".nii", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif",
)
_FORMATS = {".nii.gz": "nifti", ".nii": "nifti", ".tif": "tiff", ".tiff": "tiff", ".png": "png",
            ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp", ".gif": "gif"}
_NAMES = {"nifti": "NIfTI", "tiff": "TIFF", "png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF"}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF"}


# ----------------------------------------------------------------------------- paths
def _ext(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def is_supported(path: str | os.PathLike) -> bool:
    """True when the file name ends with one of :data:`SUPPORTED_EXTENSIONS` (any case)."""
    return _ext(path) in _FORMATS


def format_of(path: str | os.PathLike) -> str:
    """Format name for a path's extension, or :class:`InputError` if unsupported."""
    ext = _ext(path)
    if ext not in _FORMATS:
        raise InputError(f"unsupported file type {ext or '(none)'!r} for {Path(path).name}; "
                         f"use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    return _FORMATS[ext]


def strip_extension(path: str | os.PathLike) -> str:
    """Base name without the (possibly double, e.g. ``.nii.gz``) extension."""
    name = Path(path).name
    ext = _ext(name)
    return name[: len(name) - len(ext)] if ext and name.lower().endswith(ext) else name


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Supported image files directly inside ``folder`` (hidden files skipped), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_supported(p))


def _check_readable(path: str | os.PathLike) -> tuple[Path, str]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    fmt = format_of(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes)")
    return path, fmt


# ----------------------------------------------------------------------------- reading
def _why(exc: BaseException) -> str:
    """One-line reason for a library error on a bad file."""
    text = str(exc).strip()
    if isinstance(exc, EOFError) or ("Expected" in text and "bytes" in text) \
            or "truncated" in text.lower():
        return "the file is truncated or damaged"
    if "cannot identify image file" in text:  # Pillow
        return "unrecognised content (wrong extension, or the file is damaged)"
    if "Cannot work out file type" in text:  # nibabel: not a NIfTI header
        return "not a NIfTI file (wrong extension, or the file is damaged or truncated)"
    if "not a gzip file" in text:
        return "not gzip-compressed (a .nii.gz file must be; is the extension right?)"
    return text.splitlines()[0] if text else type(exc).__name__


def read_image(path: str | os.PathLike) -> ImageData:
    """Read an image file as channel-first :class:`ImageData`.

    Raises
    ------
    InputError
        Missing path, folder, unsupported extension, empty/corrupt/mislabelled file, zero-size
        axes or a shape that is not 2D/3D with optional channels.
    """
    from . import formats as fmts
    from .dicom import is_dicom_source

    if is_dicom_source(path) and not is_supported(path):  # a DICOM folder, DICOMDIR or .dcm
        from .dicom import read_dicom

        return read_dicom(path)
    path, fmt = _check_readable(path)
    try:
        if fmt == "nifti":
            img = fmts.read_nifti(path)
        elif fmt == "tiff":
            img = fmts.read_tiff(path)
        else:
            img = fmts.read_pil(path, fmt)
    except DrunetError:
        raise
    except MemoryError:
        raise InputError(f"{path.name} is too large to load into memory") from None
    except Exception as exc:  # any library error on a bad file becomes one line
        raise InputError(f"cannot read {path.name} as {_NAMES[fmt]}: {_why(exc)}") from None
    img.path = str(path)
    if not img.array.dtype.isnative:  # e.g. big-endian NIfTI: torch needs native byte order
        img.array = img.array.astype(img.array.dtype.newbyteorder("="))
    if np.issubdtype(img.array.dtype, np.floating) or np.issubdtype(img.array.dtype, np.complexfloating):
        if np.iscomplexobj(img.array):
            raise InputError(f"{path.name} holds complex values; save magnitude images instead")
        bad = int(img.array.size - np.count_nonzero(np.isfinite(img.array)))
        if bad:
            img.meta.setdefault("warnings", []).append(
                f"{bad} NaN/Inf values (replaced by finite values at normalization)")
    return img


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, ImageData]:
    """Read a label map: integer ``(*spatial)`` class indices plus the file's :class:`ImageData`.

    Binary masks stored as ``{0, 255}`` (e.g. DRIVE GIFs), ``{0, 1}`` or bool become ``{0, 1}``
    ``uint8``; other non-negative integer labels keep their dtype; integral floats become ints.
    Palette images give their palette indices. An RGB mask is accepted when its channels are
    equal. JPEG masks are thresholded at 128 (lossy format). Otherwise :class:`InputError`.
    """
    from . import formats as fmts

    path, fmt = _check_readable(path)
    if fmt in ("png", "gif", "bmp"):
        try:
            img = fmts.read_pil(path, fmt, palette_as_index=True)
        except DrunetError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read {path.name} as {_NAMES[fmt]}: {_why(exc)}") from None
        img.path = str(path)
    else:
        img = read_image(path)
    arr = img.array
    if arr.shape[0] > 1:
        if all(np.array_equal(arr[0], arr[c]) for c in range(1, arr.shape[0])):
            arr = arr[:1]
        else:
            raise InputError(f"{path.name} has {arr.shape[0]} different channels; a label map needs one")
    lab = arr[0]
    if fmt == "jpeg":
        img.meta.setdefault("warnings", []).append("JPEG mask thresholded at 128")
        lab = (lab >= 128).astype(np.uint8)
    img.meta["label_map"] = True  # saving an edited mask back over itself is no data loss
    return as_label_map(lab, name=path.name), img


def as_label_map(lab: np.ndarray, name: str = "label") -> np.ndarray:
    """Validate/convert an array to non-negative integer class indices (see :func:`read_label`)."""
    lab = np.asarray(lab)
    if lab.dtype == bool:
        return lab.astype(np.uint8)
    if np.issubdtype(lab.dtype, np.floating):
        if not np.all(np.isfinite(lab)) or not np.array_equal(lab, np.round(lab)):
            raise InputError(f"{name} holds non-integer values; a label map needs class indices")
        if lab.size and lab.min() < 0:
            raise InputError(f"{name} has negative values; labels must be class indices >= 0")
        top = float(lab.max()) if lab.size else 0.0
        if top >= 2 ** 31:
            raise InputError(f"{name} holds values up to {top:.3g}; not a label map of class indices")
        lab = lab.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int64)
    elif not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"{name} has dtype {lab.dtype}; a label map needs integers")
    if lab.size and lab.min() < 0:
        raise InputError(f"{name} has negative values; labels must be class indices >= 0")
    values = np.unique(lab) if lab.size else np.array([], lab.dtype)
    if len(values) and values[-1] == 255 and set(values.tolist()) <= {0, 255}:
        return (lab == 255).astype(np.uint8)
    return lab


# ----------------------------------------------------------------------------- writing
def _prepare_like(shape: tuple[int, ...], like: ImageData | None, what: str) -> None:
    if like is not None and tuple(like.shape_spatial) != tuple(shape):
        raise InputError(f"{what} shape {tuple(shape)} does not match the image's spatial shape "
                         f"{tuple(like.shape_spatial)}")
    if len(shape) not in (2, 3):
        raise InputError(f"{what} must be 2D or 3D, got shape {tuple(shape)}")
    if 0 in shape:
        raise InputError(f"{what} has a zero-size axis: shape {tuple(shape)}")


# formats opened by image viewers, where a binary mask is shown 0 = black, 255 = white
_VIEWABLE_MASK_FORMATS = ("png", "bmp", "gif", "tiff")


def write_label(path: str | os.PathLike, labels: np.ndarray, like: ImageData | None = None,
                scale_binary: bool | None = None) -> Path:
    """Write an integer label map ``(*spatial)`` atomically; the extension picks the format.

    Parameters
    ----------
    path : path-like
        ``.nii``/``.nii.gz`` (2D or 3D), ``.tif``/``.tiff`` (2D or 3D), ``.png``/``.bmp``/``.gif``
        (2D). JPEG is refused (lossy).
    labels : np.ndarray
        Non-negative integer or bool class indices; integral floats are accepted.
    like : ImageData, optional
        Source image: its spatial shape must match, and its geometry is copied (NIfTI affine,
        qform/sform and on-disk axis layout; TIFF/NIfTI spacing).
    scale_binary : bool, optional
        Write a binary mask as 0/255 instead of 0/1. ``None`` (default): 0/255 for PNG, BMP,
        GIF and TIFF when the map holds only 0 and 1, 0/1 for NIfTI. ``False``: never (a map of
        class indices that happens to hold only 0 and 1). ``True``: always (binary masks only).

    Returns
    -------
    Path
        The written file.
    """
    from . import formats as fmts

    fmt = format_of(path)
    lab = as_label_map(np.asarray(labels), name="labels")
    _prepare_like(lab.shape, like, "label map")
    binary = not lab.size or int(lab.max()) <= 1
    if scale_binary and not binary:
        raise InputError("scale_binary=True needs a binary (0/1) mask")
    if scale_binary is None:
        scale_binary = binary and fmt in _VIEWABLE_MASK_FORMATS
    if scale_binary:
        lab = lab.astype(np.uint8) * 255
    top = int(lab.max()) if lab.size else 0
    check_label_target(path, lab.ndim, top)
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    return _write(path, fmt, lab.astype(dtype, copy=False)[None], like, fmts, channels=False)


def check_label_target(path: str | os.PathLike, spatial_dims: int, top: int = 1) -> None:
    """Raise :class:`InputError` when a label map of ``spatial_dims`` axes and largest label
    ``top`` cannot be saved as ``path`` (lossy, 2D-only or 8-bit formats).

    :func:`write_label` checks this; callers run it before the work (an inference of minutes
    must not end in "PNG holds 2D images only").
    """
    fmt = format_of(path)
    if fmt == "jpeg":
        raise InputError("JPEG is lossy and would corrupt a label map; use .png, .tif or .nii.gz")
    if fmt in _PIL_FORMATS and spatial_dims != 2:
        raise InputError(f"{fmt.upper()} holds 2D images only; save a 3D label map as .nii.gz or .tif")
    if fmt in ("bmp", "gif") and top >= 256:
        raise InputError(f"{fmt.upper()} holds 8-bit values only ({top} labels); use .png or .tif")
    if fmt == "png" and top >= 65536:
        raise InputError(f"PNG holds at most 65535 labels; got {top}; use .tif or .nii.gz")


def write_probability(path: str | os.PathLike, prob: np.ndarray, like: ImageData | None = None) -> Path:
    """Write float32 probabilities ``(K, *spatial)`` (or ``(*spatial)``) as TIFF or NIfTI.

    ``(*spatial)`` is recognised when it equals ``like``'s spatial shape or when ``prob`` is 2D;
    without ``like`` a 3D array is read as ``(K, H, W)`` and a 4D one as ``(K, Z, Y, X)``.
    TIFF files are ImageJ hyperstacks (``CYX``/``ZCYX``) that :func:`read_image` reads back as
    ``(K, *spatial)``; NIfTI files hold ``(X, Y, Z[, K])`` with the source geometry.
    """
    from . import formats as fmts

    fmt = format_of(path)
    prob = np.asarray(prob, dtype=np.float32)
    if like is not None and prob.shape == tuple(like.shape_spatial):
        prob = prob[None]
    elif prob.ndim == 2:
        prob = prob[None]
    if prob.ndim not in (3, 4):
        raise InputError(f"probabilities must be (K, *spatial) with 2 or 3 spatial axes, got {prob.shape}")
    _prepare_like(prob.shape[1:], like, "probability map")
    if fmt not in ("nifti", "tiff"):
        raise InputError("probabilities are floats: save them as .tif or .nii.gz, not "
                         f"{fmt.upper()}")
    return _write(path, fmt, prob, like, fmts, channels=True)


def _write(path, fmt: str, data: np.ndarray, like: ImageData | None, fmts, channels: bool) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    if like is not None and not like.meta.get("label_map"):
        refuse_overwrite([path], [like.path], "probability map" if channels else "label map")
    try:
        with atomic_path(path) as tmp:
            if fmt == "nifti":
                fmts.write_nifti(tmp, data, like, channels)
            elif fmt == "tiff":
                fmts.write_tiff(tmp, data, like, channels)
            else:
                fmts.write_pil(tmp, data[0], _PIL_FORMATS[fmt])
    except DrunetError:
        raise
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
