"""Read DICOM series (a folder of slices, a DICOMDIR or a multi-frame file) as :class:`ImageData`.

pydicom (the ``dicom`` extra) rather than SimpleITK/ITK: it is pure Python (a small wheel, no
compiled ITK stack in a napari environment), it exposes every tag we need for the geometry, it
reads Enhanced multi-frame files with their per-frame functional groups, and it decodes RLE,
JPEG and JPEG 2000 through Pillow; JPEG-LS and HTJ2K need the ``dicom-codecs`` extra
(pylibjpeg), and a series compressed with a syntax no installed plugin decodes is refused with
one line naming the syntax and the extra.

Geometry. Slices are sorted by their position along the slice normal (the cross product of the
two ImageOrientationPatient directions), never by file name or InstanceNumber. The voxel
``(x = column, y = row, z = slice)`` maps to DICOM patient coordinates (LPS) as
``IPP_0 + x * dx * row_dir + y * dy * col_dir + z * (IPP_last - IPP_0) / (N - 1)``;
the affine is then flipped to RAS, so it is the same kind of matrix nibabel gives for NIfTI and
the array is ``(C, Z, Y, X)`` as for NIfTI. Masks written with ``write_label(..., like=image)``
therefore carry the series' geometry into the NIfTI file.

Pixel values have RescaleSlope / RescaleIntercept applied (per frame): the raw dtype is kept
when the rescale is the identity, int32 when slope and intercept are integers (CT HU), else
float32. Several series in one folder are listed (:func:`list_series`) and one is chosen with
``series=UID``; they are never mixed. A series whose slices differ in orientation, size or
spacing, or that holds two slices at one position (echoes, time points), is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .data import ImageData

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_CODECS_HINT = "pip install 'napari-drunet[dicom-codecs]' (pylibjpeg with its JPEG-LS/JPEG 2000 plugins)"
_SCAN_LIMIT = 500  # files looked at to decide whether a folder holds DICOM (napari asks often)


@dataclass
class DicomSeries:
    """One series found in a DICOM source (see :func:`list_series`)."""

    uid: str
    description: str
    modality: str
    number: int | None
    files: list[str] = field(default_factory=list)
    frames: int = 0
    rows: int = 0
    columns: int = 0

    def label(self) -> str:
        """One-line description for listings and error messages."""
        what = f"{self.modality or '?'} '{self.description}'" if self.description else self.modality
        return f"{self.uid} ({what}, {self.frames} slice(s) of {self.rows}x{self.columns})"


@dataclass
class _Frame:
    """One 2D frame: its file's dataset, index in a multi-frame file and geometry."""

    ds: Any
    index: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float]
    thickness: float | None
    slope: float
    intercept: float
    number: int


# ----------------------------------------------------------------------------- finding files
def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128) or a ``.dcm`` name."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm" or path.name.upper() == "DICOMDIR":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def is_dicom_source(path: str | os.PathLike) -> bool:
    """True for a DICOM file, a DICOMDIR, or a folder holding DICOM files (any depth)."""
    path = Path(path)
    if not path.is_dir():
        return is_dicom_file(path)
    seen = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_dicom_file(Path(root) / name):
                return True
            seen += 1
            if seen >= _SCAN_LIMIT:
                return False
    return False


def source_name(path: str | os.PathLike) -> str:
    """Base name for outputs: the folder (also a DICOMDIR's folder) or the file's stem."""
    path = Path(path).resolve()
    if path.is_dir():
        return path.name
    return path.parent.name if path.name.upper() == "DICOMDIR" else path.stem


def _dicomdir_files(path: Path) -> list[Path]:
    from pydicom.fileset import FileSet

    return [Path(inst.path) for inst in FileSet(path)]


def _source_files(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError(f"DICOM source not found: {path}")
    if path.is_file():
        return _dicomdir_files(path) if path.name.upper() == "DICOMDIR" else [path]
    if (path / "DICOMDIR").is_file():
        return _dicomdir_files(path / "DICOMDIR")
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / n for n in files
                  if not n.startswith(".") and n.upper() != "DICOMDIR"
                  and is_dicom_file(Path(root) / n)]
    return sorted(found)


# ----------------------------------------------------------------------------- series
def _read_headers(path: Path) -> list[tuple[Path, Any]]:
    import pydicom

    out = []
    for f in _source_files(path):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=f.suffix.lower() == ".dcm")
        except Exception as exc:  # one damaged file must not hide the others' series
            raise InputError(f"cannot read {f.name} as DICOM: {str(exc).splitlines()[0]}") from None
        if "Rows" in ds and "SeriesInstanceUID" in ds:  # skip reports, presentation states
            out.append((f, ds))
    if not out:
        raise InputError(f"no DICOM images in {path}")
    return out


def list_series(path: str | os.PathLike) -> list[DicomSeries]:
    """The image series of a DICOM folder, DICOMDIR or file, in series-number order."""
    series: dict[str, DicomSeries] = {}
    for f, ds in _read_headers(Path(path)):
        uid = str(ds.SeriesInstanceUID)
        s = series.get(uid)
        if s is None:
            number = ds.get("SeriesNumber")
            s = series[uid] = DicomSeries(uid, str(ds.get("SeriesDescription", "")),
                                          str(ds.get("Modality", "")),
                                          None if number in (None, "") else int(number),
                                          rows=int(ds.Rows), columns=int(ds.Columns))
        s.files.append(str(f))
        s.frames += int(ds.get("NumberOfFrames", 1) or 1)
    return sorted(series.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))


def choose_series(found: list[DicomSeries], series: str | None, where: str) -> DicomSeries:
    """The series named by ``series`` (a UID), or the only one; else :class:`InputError`."""
    if series is not None:
        for s in found:
            if s.uid == str(series).strip():
                return s
        raise InputError(f"no series {series} in {where}; it holds: "
                         + "; ".join(s.label() for s in found))
    if len(found) > 1:
        raise InputError(f"{where} holds {len(found)} DICOM series; choose one with "
                         "series=UID (drunet predict --series UID): "
                         + "; ".join(s.label() for s in found))
    return found[0]


def _first(groups: list[Any], sequence: str, attr: str, ds: Any) -> Any:
    """``attr`` from the first functional group holding ``sequence``, else from ``ds`` itself."""
    for group in groups:
        if sequence in group and len(group[sequence].value):
            item = group[sequence][0]
            if attr in item:
                return item[attr].value
    return ds.get(attr)


def _frames_of(ds: Any) -> list[_Frame]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    shared = ds.get("SharedFunctionalGroupsSequence")
    per = ds.get("PerFrameFunctionalGroupsSequence")
    frames = []
    for k in range(n):
        groups = ([per[k]] if per is not None and k < len(per) else []) + \
                 ([shared[0]] if shared is not None and len(shared) else [])
        ipp = _first(groups, "PlanePositionSequence", "ImagePositionPatient", ds)
        iop = _first(groups, "PlaneOrientationSequence", "ImageOrientationPatient", ds)
        spacing = _first(groups, "PixelMeasuresSequence", "PixelSpacing", ds) or (1.0, 1.0)
        thick = _first(groups, "PixelMeasuresSequence", "SliceThickness", ds)
        slope = _first(groups, "PixelValueTransformationSequence", "RescaleSlope", ds)
        icpt = _first(groups, "PixelValueTransformationSequence", "RescaleIntercept", ds)
        pos = None if ipp is None else np.asarray([float(v) for v in ipp])
        orient = None if iop is None else np.asarray([float(v) for v in iop])
        if pos is not None and n > 1 and per is None and orient is not None:
            # classic multi-frame: one position, frames evenly stacked along the normal
            step = float(ds.get("SpacingBetweenSlices") or thick or 1.0)
            pos = pos + k * step * np.cross(orient[:3], orient[3:])
        frames.append(_Frame(ds, k, pos, orient, (float(spacing[0]), float(spacing[1])),
                             None if thick in (None, "") else float(thick),
                             1.0 if slope in (None, "") else float(slope),
                             0.0 if icpt in (None, "") else float(icpt),
                             int(ds.get("InstanceNumber") or 0) * 10000 + k))
    return frames


def _sort_frames(frames: list[_Frame], warnings: list[str]) -> tuple[list[_Frame], np.ndarray]:
    """Frames in order along the slice normal, and the 4x4 LPS voxel-to-patient matrix."""
    if any(f.position is None or f.orientation is None for f in frames):
        warnings.append("no ImagePositionPatient/ImageOrientationPatient: slices sorted by "
                        "InstanceNumber, geometry unknown (identity orientation)")
        frames = sorted(frames, key=lambda f: f.number)
        dy, dx = frames[0].pixel_spacing
        return frames, np.diag([dx, dy, frames[0].thickness or 1.0, 1.0])
    orient = frames[0].orientation
    if any(not np.allclose(f.orientation, orient, atol=1e-4) for f in frames):
        raise InputError("the slices of this series have different orientations (a localizer?); "
                         "a volume needs one orientation")
    if any(not np.allclose(f.pixel_spacing, frames[0].pixel_spacing, rtol=1e-4) for f in frames):
        raise InputError("the slices of this series have different pixel spacings")
    row, col = orient[:3], orient[3:]
    normal = np.cross(row, col)
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    depth = np.array([float(f.position @ normal) for f in frames])
    gaps = np.diff(depth)
    if len(gaps) and gaps.min() < 1e-3:
        raise InputError("this series holds several slices at one position (echoes, time "
                         "points or duplicated files); export one volume per series")
    if len(gaps) and gaps.max() - gaps.min() > 0.01 * gaps.mean() + 1e-3:
        warnings.append(f"uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm); "
                        f"the mean {gaps.mean():.3g} mm is used")
    if len(frames) > 1:
        step = (frames[-1].position - frames[0].position) / (len(frames) - 1)
    else:
        step = normal * (frames[0].thickness or 1.0)
    dy, dx = frames[0].pixel_spacing  # PixelSpacing = (between rows, between columns)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dx, col * dy, step, frames[0].position
    return frames, lps


def _check_decodable(ds: Any, name: str) -> None:
    from pydicom.pixels import get_decoder

    file_meta = getattr(ds, "file_meta", None)
    ts = None if file_meta is None else file_meta.get("TransferSyntaxUID")
    if ts is None or not ts.is_compressed:
        return
    try:
        available = get_decoder(ts).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise InputError(f"{name} is compressed as {ts.name} ({ts}), which no installed decoder "
                         f"reads; {_CODECS_HINT}")


def _pixels(frames: list[_Frame]) -> np.ndarray:
    """Decode each file once; stack its frames in sorted order with the rescale applied."""
    decoded: dict[int, np.ndarray] = {}
    planes = []
    for f in frames:
        key = id(f.ds)
        if key not in decoded:
            _check_decodable(f.ds, Path(str(f.ds.filename or "DICOM file")).name)
            arr = f.ds.pixel_array
            decoded[key] = arr[None] if int(f.ds.get("NumberOfFrames", 1) or 1) == 1 else arr
        planes.append(decoded[key][f.index])
    raw = np.stack(planes)
    slopes = np.array([f.slope for f in frames])
    icpts = np.array([f.intercept for f in frames])
    if np.all(slopes == 1) and np.all(icpts == 0):
        return raw
    integral = np.all(slopes == np.round(slopes)) and np.all(icpts == np.round(icpts))
    dtype = np.int32 if integral and not np.issubdtype(raw.dtype, np.floating) else np.float32
    shape = (-1,) + (1,) * (raw.ndim - 1)
    return (raw.astype(dtype) * slopes.astype(dtype).reshape(shape)
            + icpts.astype(dtype).reshape(shape))


def read_dicom(path: str | os.PathLike, series: str | None = None) -> ImageData:
    """Read one DICOM series as channel-first :class:`ImageData` (format ``'dicom'``).

    Parameters
    ----------
    path : path-like
        A folder of slice files (searched recursively), a DICOMDIR (or a folder holding one) or
        one (multi-frame) DICOM file.
    series : str, optional
        SeriesInstanceUID to read; needed when the source holds several series.

    Returns
    -------
    ImageData
        ``(1, Z, Y, X)`` (``(1, Y, X)`` for one slice, ``(3, Y, X)`` for an RGB frame), spacing
        ``(dz, dy, dx)`` in mm and a RAS affine in nibabel's ``(X, Y, Z)`` voxel order.

    Examples
    --------
    >>> img = read_dicom("CT_folder", series="1.2.826.0.1.3680043.2.1125.1")  # doctest: +SKIP
    >>> img.array.shape, img.spacing
    """
    import pydicom

    path = Path(path)
    chosen = choose_series(list_series(path), series, path.name)
    datasets = [pydicom.dcmread(f, force=True) for f in chosen.files]
    warnings: list[str] = []
    frames, lps = _sort_frames([fr for ds in datasets for fr in _frames_of(ds)], warnings)
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shapes) > 1:
        raise InputError(f"the slices of series {chosen.uid} have different sizes {sorted(shapes)}")
    try:
        pixels = _pixels(frames)
    except InputError:
        raise
    except Exception as exc:  # pydicom decode errors on damaged pixel data become one line
        raise InputError(f"cannot decode the pixels of series {chosen.uid}: "
                         f"{str(exc).splitlines()[0]}") from None
    affine = _LPS_TO_RAS @ lps
    dy, dx = frames[0].pixel_spacing
    dz = float(np.linalg.norm(lps[:3, 2]))
    first = datasets[0]
    rgb = int(first.get("SamplesPerPixel", 1)) == 3
    if rgb and len(frames) != 1:
        raise InputError(f"series {chosen.uid} is a colour stack; only single colour images "
                         "are supported")
    if rgb:
        array, spacing = np.moveaxis(pixels[0], -1, 0), (dy, dx)
    elif len(frames) == 1:
        array, spacing = pixels[:1], (dy, dx)
    else:
        array, spacing = pixels[None], (dz, dy, dx)
    meta: dict[str, Any] = {"dicom": {
        "series_uid": chosen.uid, "description": chosen.description,
        "modality": chosen.modality, "files": len(chosen.files),
        "study_uid": str(first.get("StudyInstanceUID", "")),
        "patient_position": str(first.get("PatientPosition", "")),
    }}
    if warnings:
        meta["warnings"] = warnings
    return ImageData(np.ascontiguousarray(array), spacing, affine, str(path), "dicom", rgb, meta)
