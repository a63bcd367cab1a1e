"""Helpers of the reliability tests: tiny models, bad/odd input files, malicious model files,
a CLI runner and its assertions. Imported by the test modules (``sys.path`` holds this folder)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child.py")
MARKER_NAME = "PAYLOAD_RAN"


def save_tiny(path: Path, in_channels: int = 1, spatial_dims: int = 2, out_channels: int = 1,
              arch: str = "drunet", seed: int = 0) -> Path:
    """A freshly initialised 2-level model (4/8 channels) saved as a model file."""
    import torch

    from napari_drunet.core.image.normalization import default_spec
    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model

    torch.manual_seed(seed)
    net = build_model(arch, spatial_dims=spatial_dims, in_channels=in_channels,
                      out_channels=out_channels, features=(4, 8), dropout=0.1)
    names = {"0": "background", **{str(i): f"class {i}" for i in range(1, max(2, out_channels))}}
    meta = {"normalization": default_spec(), "threshold": 0.5, "label_names": names}
    return Model(net, meta, device="cpu", name=path.stem).save(path)


class Payload:
    """Pickle whose loading would create a marker file (never must)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_malicious(folder: Path) -> tuple[dict[str, Path], Path]:
    """Malicious model files (raw pickle, torch.save zip, pickle behind a fake header)."""
    import torch

    marker = folder / MARKER_NAME
    payload = Payload(marker)
    files = {}
    raw = pickle.dumps({"state_dict": payload}, protocol=2)
    for ext in (".ckpt", ".safetensors", ".pt", ".pth"):
        files[f"pickle{ext}"] = folder / f"evil_pickle{ext}"
        files[f"pickle{ext}"].write_bytes(raw)
    zipped = folder / "evil_zip.pt"
    torch.save({"state_dict": payload}, zipped)
    files["torch.save.pt"] = zipped
    renamed = folder / "evil_zip.safetensors"
    renamed.write_bytes(zipped.read_bytes())
    files["torch.save.safetensors"] = renamed
    # a plausible safetensors length prefix followed by a pickle
    fake = folder / "evil_header.ckpt"
    fake.write_bytes(len(raw).to_bytes(8, "little") + raw)
    files["fake-header pickle"] = fake
    return files, marker


def write_bad_files(d: Path) -> dict[str, Path]:
    """Unreadable image files: each must give one-line InputError, never a crash."""
    import nibabel as nib
    import tifffile
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = d / name
        files[name].write_bytes(data)

    good = d / "_good"
    good.mkdir(exist_ok=True)
    tifffile.imwrite(good / "g.tif", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)).save(good / "g.png")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), good / "g.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), good / "g.nii")
    text = b"this is a text file, not an image\n" * 8
    for ext in (".png", ".nii.gz", ".nii", ".tif"):
        put(f"empty{ext}", b"")
    for ext in (".nii.gz", ".nii", ".png", ".tif", ".jpg", ".gif", ".bmp"):
        put(f"text{ext}", text)
    for src in ("g.tif", "g.png", "g.nii.gz", "g.nii"):
        raw = (good / src).read_bytes()
        ext = src[1:]
        put(f"truncated_half{ext}", raw[: len(raw) // 2])
        put(f"truncated_head{ext}", raw[:24])
    put("png_named.nii.gz", (good / "g.png").read_bytes())
    put("nifti_named.png", (good / "g.nii.gz").read_bytes())
    put("gzipped_text.nii.gz", gzip.compress(text))
    raw = bytearray((good / "g.tif").read_bytes())
    raw[8:48] = bytes(range(200, 240))
    put("corrupt_ifd.tif", bytes(raw))
    raw = bytearray((good / "g.tif").read_bytes())
    raw[4:8] = (10 ** 9).to_bytes(4, "little")
    put("bad_offset.tif", bytes(raw))
    tifffile.imwrite(d / "one_d.tif", np.arange(10, dtype=np.uint8))
    files["one_d.tif"] = d / "one_d.tif"
    tifffile.imwrite(d / "five_d.tif", np.zeros((2, 3, 4, 8, 8), np.uint8), photometric="minisblack")
    files["five_d.tif"] = d / "five_d.tif"
    nib.save(nib.Nifti1Image(np.zeros((6,), np.float32), np.eye(4)), d / "one_d.nii.gz")
    files["one_d.nii.gz"] = d / "one_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2, 3), np.float32), np.eye(4)), d / "five_d.nii.gz")
    files["five_d.nii.gz"] = d / "five_d.nii.gz"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tifffile.imwrite(d / "zero_axis.tif", np.zeros((0, 8), np.uint8))
    files["zero_axis.tif"] = d / "zero_axis.tif"
    tifffile.imwrite(d / "complex.tif", np.ones((8, 8), np.complex64))
    files["complex.tif"] = d / "complex.tif"
    return files


def write_odd_files(d: Path) -> dict[str, Path]:
    """Valid but unusual images that prediction must handle."""
    import nibabel as nib
    import tifffile
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    f: dict[str, Path] = {}
    nan = rng.random((32, 32)).astype(np.float32)
    nan[3, 3], nan[5, 5], nan[6, 6] = np.nan, np.inf, -np.inf
    arrays = {
        "nan_inf.tif": nan,
        "all_nan.tif": np.full((32, 32), np.nan, np.float32),
        "constant.tif": np.full((32, 32), 7, np.uint16),
        "bool.tif": rng.random((32, 32)) > 0.5,
        "int8.tif": (rng.random((32, 32)) * 200 - 100).astype(np.int8),
        "uint16.tif": (rng.random((32, 32)) * 60000).astype(np.uint16),
        "float64.tif": rng.random((32, 32)) * 1e300,
        "int64.tif": (rng.random((32, 32)) * 1e12).astype(np.int64),
        "one_pixel.tif": np.ones((1, 1), np.uint8),
        "thin.tif": rng.random((1, 40)).astype(np.float32),
    }
    for name, arr in arrays.items():
        tifffile.imwrite(d / name, arr)
        f[name] = d / name
    Image.fromarray((rng.random((32, 32, 4)) * 255).astype(np.uint8), "RGBA").save(d / "rgba.png")
    f["rgba.png"] = d / "rgba.png"
    Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).convert("LA").save(d / "la.png")
    f["la.png"] = d / "la.png"
    Image.fromarray((rng.random((32, 32)) * 65535).astype(np.uint16)).save(d / "uint16.png")
    f["uint16.png"] = d / "uint16.png"
    tifffile.imwrite(d / "rgba.tif", (rng.random((32, 32, 4)) * 255).astype(np.uint8),
                     photometric="rgb", extrasamples=[2])
    f["rgba.tif"] = d / "rgba.tif"
    vol = rng.random((6, 16, 16)).astype(np.float32)
    vol[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(vol.T, np.eye(4)), d / "nan_volume.nii.gz")
    f["nan_volume.nii.gz"] = d / "nan_volume.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 4), np.int8), np.eye(4)), d / "int8_volume.nii.gz")
    f["int8_volume.nii.gz"] = d / "int8_volume.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((16, 16, 4)), np.eye(4)), d / "float64_volume.nii")
    f["float64_volume.nii"] = d / "float64_volume.nii"
    return f


def run_cli(*argv: object, cwd: Path | None = None, timeout: float = 120,
            prelude: str | None = None) -> subprocess.CompletedProcess:
    """``python -m napari_drunet ARGV`` in a subprocess (optionally after ``prelude`` code)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)
    args = [str(a) for a in argv]
    if prelude is None:
        cmd = [sys.executable, "-m", "napari_drunet", *args]
    else:
        code = (prelude + "\nimport runpy, sys\nsys.argv = ['drunet'] + sys.argv[1:]\n"
                "runpy.run_module('napari_drunet', run_name='__main__', alter_sys=True)\n")
        cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env)


def assert_user_error(proc: subprocess.CompletedProcess, context: object = "") -> str:
    """Exit status 2, exactly one stderr line ``error: ...``, no traceback; returns the line."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (context, proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, (context, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (context, proc.stderr[-2000:])
    return lines[0]


def visible_files(folder: Path) -> list[str]:
    """Every file below ``folder`` (temporary ``.name.*.tmp`` files included)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def make_dataset(d: Path, n: int = 2, size: int = 32, labels: dict | None = None,
                 label_value: int = 1, seed: int = 0) -> Path:
    """Small image/label TIFF pairs and their dataset.json inside ``d``."""
    import tifffile

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(8, size - 8, 2)
        lab = (((yy - cy) ** 2 + (xx - cx) ** 2) < 36).astype(np.uint8) * label_value
        img = (lab * 100 + rng.normal(50, 10, lab.shape)).clip(0, 255).astype(np.uint8)
        tifffile.imwrite(d / f"img{i}.tif", img)
        tifffile.imwrite(d / f"lab{i}.tif", lab)
        entries.append({"image": f"img{i}.tif", "label": f"lab{i}.tif"})
    ds = d / "dataset.json"
    ds.write_text(json.dumps({"labels": labels or {"0": "background", "1": "object"},
                              "training": entries}))
    return ds
