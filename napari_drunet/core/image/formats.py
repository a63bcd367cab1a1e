"""Format back-ends of :mod:`napari_drunet.core.image.io` (NIfTI, TIFF, Pillow formats).

Private: call :func:`napari_drunet.core.image.io.read_image` and friends instead. Readers raise
library exceptions freely; ``io`` turns them into one-line :class:`InputError` messages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .data import ImageData

_ALPHA_EXTRASAMPLES = (1, 2)  # TIFF ExtraSamples: associated / unassociated alpha


# ----------------------------------------------------------------------------- NIfTI
def read_nifti(path: Path) -> ImageData:
    """nibabel ``(X, Y, Z[, C])`` -> ``(C, Z, Y, X)``; a length-1 Z axis gives a 2D image."""
    import nibabel as nib

    img = nib.load(str(path), mmap=False)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path.name} is not a NIfTI image")
    hdr = img.header
    data = np.asanyarray(img.dataobj)
    shape = tuple(int(s) for s in data.shape)
    if data.ndim == 5 and shape[3] == 1:  # (X, Y, Z, 1, C) vector image
        data = data[:, :, :, 0, :]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise InputError(f"{path.name} has shape {shape}; expected (X, Y, Z) or (X, Y, Z, C)")
    if 0 in data.shape:
        raise InputError(f"{path.name} has a zero-size axis: shape {shape}")
    zooms = [float(z) for z in hdr.get_zooms()[:3]] + [1.0] * 3
    warnings = []
    for i in range(3):
        if not np.isfinite(zooms[i]) or zooms[i] <= 0:
            warnings.append(f"invalid voxel size {zooms[i]} on axis {i} replaced by 1.0")
            zooms[i] = 1.0
    zooms = _zooms_in_mm(path, zooms[:3], hdr.get_xyzt_units()[0], warnings) + [1.0] * 3
    arr = data.transpose(3, 2, 1, 0)  # (C, Z, Y, X)
    if arr.shape[1] == 1:
        arr, spacing = arr[:, 0], (zooms[1], zooms[0])
    else:
        spacing = (zooms[2], zooms[1], zooms[0])
    qform, qcode = img.get_qform(coded=True)
    sform, scode = img.get_sform(coded=True)
    affine = img.affine.copy()
    if not usable_affine(affine):  # it would crash the writer after the work is done
        warnings.append("singular or non-finite affine in the header: ignored (voxel grid "
                        "axes assumed)")
        affine = np.diag([float(z) for z in hdr.get_zooms()[:3]] + [1.0])
        if not usable_affine(affine):
            affine = np.eye(4)
        qform, qcode, sform, scode = None, 0, None, 0
    meta = {
        "nifti_shape": list(shape),
        "zooms": [float(z) for z in hdr.get_zooms()],
        "qform": None if qform is None else qform.tolist(), "qform_code": int(qcode),
        "sform": None if sform is None else sform.tolist(), "sform_code": int(scode),
        "xyzt_units": [str(u) for u in hdr.get_xyzt_units()],
        "disk_dtype": str(hdr.get_data_dtype()),
    }
    if warnings:
        meta["warnings"] = warnings
    return ImageData(np.ascontiguousarray(arr), spacing, affine, str(path), "nifti", False, meta)


#: Voxel sizes read from a header are converted to millimetres (NIfTI ``xyzt_units``).
_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}
#: Voxel sizes outside this range (mm) are no medical image's: a header in the wrong units.
PLAUSIBLE_MM = (1e-4, 1e3)


def _zooms_in_mm(path: Path, zooms: list[float], unit: str, warnings: list[str]) -> list[float]:
    """Header voxel sizes in mm; unknown units are taken as mm (the NIfTI convention)."""
    scale = _TO_MM.get(str(unit), 1.0)
    mm = [z * scale for z in zooms]
    if scale != 1.0:
        warnings.append(f"voxel size stored in {unit}s: {tuple(zooms)} read as {tuple(mm)} mm")
    low, high = PLAUSIBLE_MM
    if any(not low <= z <= high for z in mm):
        raise InputError(f"{path.name}: voxel size {tuple(mm)} mm (header units {unit!r}) is not "
                         "plausible; fix pixdim / xyzt_units in the header")
    return mm


def usable_affine(affine: np.ndarray | None) -> bool:
    """True for a finite 4x4 affine with an invertible 3x3 part (a voxel-to-world map)."""
    if affine is None:
        return False
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        return False
    return abs(float(np.linalg.det(a[:3, :3]))) > 1e-12


def write_nifti(tmp: Path, data: np.ndarray, like: ImageData | None, channels: bool) -> None:
    """Write ``(C, *spatial)`` as ``(X, Y, Z[, C])`` with ``like``'s geometry when given."""
    import nibabel as nib

    vol = data[:, None] if data.ndim == 3 else data  # 2D -> Z of length 1
    xyz = vol.transpose(3, 2, 1, 0)  # (X, Y, Z, C)
    n = xyz.shape[3]
    meta = like.meta if (like is not None and like.format == "nifti") else {}
    orig = meta.get("nifti_shape")
    if orig and len(orig) == 2 and xyz.shape[2] == 1 and n == 1:
        xyz = xyz[:, :, 0]  # source was a 2D (X, Y) NIfTI
    out = xyz[..., 0] if n == 1 else xyz
    if like is not None and usable_affine(like.affine):
        affine = np.asarray(like.affine, dtype=np.float64)
    else:  # none, or a damaged one (a layer's metadata) that nibabel would choke on
        sp = like.spacing if like is not None else (1.0,) * (data.ndim - 1)
        sp = tuple(sp) if len(sp) == 3 else (1.0, *sp)
        affine = np.diag([sp[2], sp[1], sp[0], 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(out), affine)
    if meta and usable_affine(like.affine):
        q, s = meta.get("qform"), meta.get("sform")
        img.set_qform(None if q is None else np.asarray(q), code=int(meta.get("qform_code", 0)))
        img.set_sform(None if s is None else np.asarray(s), code=int(meta.get("sform_code", 0)))
        units = meta.get("xyzt_units")
        if units:
            img.header.set_xyzt_units(*units)
    elif like is not None and like.affine is None:
        img.header.set_xyzt_units("unknown")
    elif like is not None and like.format == "dicom":  # scanner coordinates, for every reader
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
    else:
        img.header.set_xyzt_units("mm")
    img.set_data_dtype(out.dtype)
    nib.save(img, str(tmp))


# ----------------------------------------------------------------------------- TIFF
def _resolution_spacing(page, tag: str) -> float:
    t = page.tags.get(tag)
    if t is None:
        return 1.0
    num, den = t.value if isinstance(t.value, tuple) else (t.value, 1)
    return float(den) / float(num) if num and den else 1.0


def read_tiff(path: Path) -> ImageData:
    """Read the first series of a TIFF using its axes (``C``/``S`` channels, other axes = Z)."""
    import tifffile

    with tifffile.TiffFile(str(path)) as tf:
        if not tf.series:
            raise InputError(f"{path.name} contains no readable image (empty or damaged TIFF)")
        series = tf.series[0]
        axes = series.axes
        try:
            data = series.asarray()
        except ValueError as exc:
            if "imagecodecs" not in str(exc):
                raise
            data = None  # compression tifffile cannot decode without imagecodecs (e.g. LZW)
        page = tf.pages[0]
        ij = tf.imagej_metadata
        shaped = tf.shaped_metadata
        photometric = int(getattr(page, "photometric", 1))
        extrasamples = tuple(int(e) for e in (getattr(page, "extrasamples", ()) or ()))
        res_y, res_x = _resolution_spacing(page, "YResolution"), _resolution_spacing(page, "XResolution")
    if data is None:
        data = _read_tiff_pil(path, axes)
    if 0 in data.shape:
        raise InputError(f"{path.name} has a zero-size axis: shape {data.shape}")
    ax = list(axes)
    keep = [i for i, a in enumerate(ax) if data.shape[i] != 1 or a in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    ax = [ax[i] for i in keep]
    if "Y" not in ax or "X" not in ax:
        raise InputError(f"{path.name}: unsupported TIFF axes {axes!r}")
    chan = [i for i, a in enumerate(ax) if a in "CS"]
    depth = [i for i, a in enumerate(ax) if a not in "CSYX"]
    if not chan and len(depth) == 2:  # no metadata: (Z, C, Y, X) like ImageJ hyperstacks
        chan, depth = [depth[1]], [depth[0]]
    if len(chan) > 1:
        raise InputError(f"{path.name} has several channel axes ({axes}); save one channel axis")
    if len(depth) > 1:
        raise InputError(f"{path.name} has {len(depth) + 2} spatial axes ({axes}); at most 3 are supported")
    arr = data.transpose(chan + depth + [ax.index("Y"), ax.index("X")])
    if not chan:
        arr = arr[None]
    warnings: list[str] = []
    is_rgb = False
    if chan and ax[chan[0]] == "S":
        n_alpha = sum(1 for e in extrasamples if e in _ALPHA_EXTRASAMPLES)
        if n_alpha and arr.shape[0] - n_alpha >= 1:
            arr = arr[: arr.shape[0] - n_alpha]
            warnings.append("alpha channel dropped")
        is_rgb = photometric == 2 and arr.shape[0] == 3
    nsp = arr.ndim - 1
    spacing: tuple[float, ...] = (1.0,) * nsp
    if ij is not None:
        z = float(ij.get("spacing", 1.0) or 1.0)
        spacing = (res_y, res_x) if nsp == 2 else (z, res_y, res_x)
    elif shaped and isinstance(shaped[0], dict) and "spacing" in shaped[0]:
        sp = shaped[0]["spacing"]
        if isinstance(sp, (list, tuple)) and len(sp) == nsp:
            spacing = tuple(float(s) for s in sp)
    spacing = tuple(s if np.isfinite(s) and s > 0 else 1.0 for s in spacing)
    meta = {"tiff_axes": axes}
    if warnings:
        meta["warnings"] = warnings
    return ImageData(np.ascontiguousarray(arr), spacing, None, str(path), "tiff", is_rgb, meta)


def _read_tiff_pil(path: Path, axes: str) -> np.ndarray:
    """Decode every page with Pillow (fallback for LZW/JPEG TIFFs without imagecodecs)."""
    from PIL import Image

    frames = []
    with Image.open(str(path)) as im:
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            frames.append(np.asarray(im))
    data = np.stack(frames) if len(frames) > 1 else frames[0]
    n_axes = len(axes)
    if data.ndim != n_axes:  # series axes disagree with Pillow's pages: keep Pillow's layout
        raise InputError(f"{path.name}: cannot decode this compressed TIFF; install imagecodecs")
    return data


def write_tiff(tmp: Path, data: np.ndarray, like: ImageData | None, channels: bool) -> None:
    """Labels as ``YX``/``ZYX``, probabilities as ``CYX``/``ZCYX`` ImageJ hyperstacks."""
    import tifffile

    nsp = data.ndim - 1
    spacing = tuple(like.spacing) if like is not None else (1.0,) * nsp
    if not channels:
        arr, axes = data[0], "YX" if nsp == 2 else "ZYX"
    elif nsp == 2:
        arr, axes = data, "CYX"
    else:
        arr, axes = data.transpose(1, 0, 2, 3), "ZCYX"
    arr = np.ascontiguousarray(arr)
    if arr.dtype in (np.uint8, np.uint16, np.float32):
        md = {"axes": axes}
        if nsp == 3:
            md["spacing"] = spacing[0]
        if like is not None and like.format == "nifti":
            md["unit"] = "mm"
        tifffile.imwrite(str(tmp), arr, imagej=True, metadata=md,
                         resolution=(1.0 / spacing[-1], 1.0 / spacing[-2]))
    else:
        tifffile.imwrite(str(tmp), arr, metadata={"axes": axes, "spacing": list(spacing)})


# ----------------------------------------------------------------------------- Pillow
def _gray_palette(im, idx: np.ndarray, tol: int) -> np.ndarray | None:
    """Palette as gray levels when the entries used are gray (channels within ``tol``)."""
    pal = im.getpalette()
    if not pal or not idx.size:
        return None
    pal = np.asarray(pal, dtype=np.int32).reshape(-1, 3)
    used = np.unique(idx)
    if used[-1] >= len(pal):
        return None
    sub = pal[used]
    if int((sub.max(axis=1) - sub.min(axis=1)).max()) > tol:
        return None
    return np.rint(pal.mean(axis=1)).astype(np.uint8)


def read_pil(path: Path, fmt: str, palette_as_index: bool = False) -> ImageData:
    """PNG/JPEG/BMP/GIF (first frame) via Pillow; alpha dropped; gray palettes give values.

    With ``palette_as_index`` a colour-palette image gives its palette indices (label maps).
    """
    from PIL import Image

    warnings: list[str] = []
    with Image.open(str(path)) as im:
        im.load()
        if getattr(im, "n_frames", 1) > 1:
            warnings.append(f"only the first of {im.n_frames} frames was read")
        mode = im.mode
        if mode in ("P", "PA"):
            idx = np.asarray(im.getchannel(0) if mode == "PA" else im)
            # labels: exact gray palettes only (else indices); images: nearly gray is gray
            gray = _gray_palette(im, idx, 0 if palette_as_index else 8)
            if gray is not None:
                arr = gray[idx]
            elif palette_as_index:
                arr = idx.copy()
            else:
                arr = np.asarray(im.convert("RGB"))
            if mode == "PA":
                warnings.append("alpha channel dropped")
        elif mode in ("RGBA", "LA", "RGBa", "La"):
            arr = np.asarray(im)[..., :-1]
            warnings.append("alpha channel dropped")
        elif mode in ("1", "L", "I", "F", "RGB") or mode.startswith("I;16"):
            arr = np.asarray(im)
        else:  # CMYK, YCbCr, LAB, HSV, RGBX ...
            arr = np.asarray(im.convert("RGB"))
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if 0 in arr.shape:
        raise InputError(f"{path.name} has a zero-size axis: shape {arr.shape}")
    is_rgb = arr.ndim == 3
    arr = np.moveaxis(arr, -1, 0) if is_rgb else arr[None]
    meta = {"pil_mode": mode}
    if warnings:
        meta["warnings"] = warnings
    return ImageData(np.ascontiguousarray(arr), (1.0, 1.0), None, str(path), fmt, is_rgb, meta)


def write_pil(tmp: Path, lab: np.ndarray, pil_format: str) -> None:
    """Write a 2D uint8 (or uint16 for PNG) array losslessly."""
    from PIL import Image

    if lab.dtype == np.uint16:
        im = Image.fromarray(lab.astype("<u2")) if pil_format == "PNG" else None
    else:
        im = Image.fromarray(lab.astype(np.uint8))
    if im is None:
        raise InputError(f"{pil_format} holds 8-bit values only")
    im.save(str(tmp), format=pil_format, **({"optimize": False} if pil_format == "GIF" else {}))
