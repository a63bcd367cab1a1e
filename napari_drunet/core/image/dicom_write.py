"""Write a volume as a DICOM MR series (one file per slice, or one Enhanced multi-frame file).

For demonstrations and tests of :mod:`napari_drunet.core.image.dicom` (e.g. a DICOM copy of an MSD
volume for the screenshot), not for clinical archives: the files carry the geometry and pixel
tags a viewer needs, with made-up patient and study identifiers.

The geometry is taken from a RAS affine in nibabel's ``(X, Y, Z)`` voxel order (the
:class:`~napari_drunet.core.image.io.ImageData` convention) and converted to DICOM's LPS:
ImageOrientationPatient from the directions of the X (columns) and Y (rows) voxel axes,
ImagePositionPatient of slice ``k`` = origin + ``k`` times the Z axis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def _geometry(affine: np.ndarray) -> tuple[list[float], list[float], np.ndarray, np.ndarray]:
    """(ImageOrientationPatient, PixelSpacing, origin, slice step) in LPS from a RAS affine."""
    lps = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    dx, dy = (float(np.linalg.norm(lps[:3, i])) for i in (0, 1))
    iop = [*(lps[:3, 0] / dx), *(lps[:3, 1] / dy)]
    return [round(float(v), 8) for v in iop], [dy, dx], lps[:3, 3], lps[:3, 2]


def _stored(volume: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    stored = np.round((np.asarray(volume, dtype=np.float64) - intercept) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise InputError("values do not fit 16-bit DICOM pixels with this rescale slope/intercept")
    return stored.astype(np.int16)


def _frame_of_reference(study_uid: str) -> str:
    """One frame of reference per study (the same UID for each of its series)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[study_uid])


def _base(series_uid: str, study_uid: str, description: str, number: int,
          sop_class: str) -> Any:
    frame_uid = _frame_of_reference(study_uid)
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Demo^Volume", "DRUNET0", "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "MR", number, description
    ds.FrameOfReferenceUID = frame_uid
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def write_series(volume: np.ndarray, affine: np.ndarray, folder: str | os.PathLike, *,
                 description: str = "volume", series_number: int = 1,
                 series_uid: str | None = None, study_uid: str | None = None,
                 rescale: tuple[float, float] = (1.0, 0.0), names: list[str] | None = None,
                 multiframe: bool = False) -> list[Path]:
    """Write ``volume`` ``(Z, Y, X)`` with a RAS ``affine`` as DICOM files in ``folder``.

    Parameters
    ----------
    volume : np.ndarray
        Pixel values (after rescale); stored as int16 ``(value - intercept) / slope``.
    affine : np.ndarray
        4x4 RAS voxel-to-world matrix in ``(X, Y, Z)`` voxel order (as ``ImageData.affine``).
    folder : path-like
        Created if missing; other files in it are left alone (several series may share it).
    rescale : (slope, intercept)
        RescaleSlope / RescaleIntercept written into every slice.
    names : list of str, optional
        File name per slice (default ``slice_0000.dcm`` ...), e.g. shuffled for tests.
    multiframe : bool
        One Enhanced MR file with per-frame positions instead of one file per slice.

    Returns
    -------
    list of Path
        The files written.
    """
    from pydicom.uid import generate_uid

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(f"write_series needs a (Z, Y, X) volume, got shape {volume.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    iop, spacing, origin, step = _geometry(affine)
    stored = _stored(volume, *rescale)
    thickness = float(np.linalg.norm(step))
    if multiframe:
        return [_write_multiframe(stored, folder, iop, spacing, origin, step, thickness, rescale,
                                  _base(series_uid, study_uid, description, series_number,
                                        _ENHANCED_MR_STORAGE))]
    names = names or [f"slice_{k:04d}.dcm" for k in range(len(stored))]
    written = []
    for k, plane in enumerate(stored):
        ds = _base(series_uid, study_uid, description, series_number, _MR_STORAGE)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [round(float(v), 6) for v in origin + k * step]
        ds.ImageOrientationPatient, ds.PixelSpacing = iop, spacing
        ds.SliceThickness = thickness
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.Rows, ds.Columns = plane.shape
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        ds.save_as(folder / names[k], enforce_file_format=True)
        written.append(folder / names[k])
    return written


def _write_multiframe(stored: np.ndarray, folder: Path, iop, spacing, origin, step,
                      thickness: float, rescale: tuple[float, float], ds: Any) -> Path:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def item(**values) -> Dataset:
        d = Dataset()
        for key, value in values.items():
            setattr(d, key, value)
        return d

    shared = item(PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=iop)]),
                  PixelMeasuresSequence=Sequence([item(PixelSpacing=spacing,
                                                       SliceThickness=thickness)]),
                  PixelValueTransformationSequence=Sequence([item(
                      RescaleSlope=rescale[0], RescaleIntercept=rescale[1],
                      RescaleType="US")]))
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        item(PlanePositionSequence=Sequence([item(ImagePositionPatient=[
            round(float(v), 6) for v in origin + k * step])]))
        for k in range(len(stored))])
    ds.InstanceNumber, ds.NumberOfFrames = 1, len(stored)
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    path = folder / "multiframe.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
