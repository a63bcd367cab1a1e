"""Property-based fuzzing (hypothesis) of the readers, model-file loading, dataset.json parsing
and prediction. The contract: a bad input raises the matching ``DrunetError`` subclass with a
one-line message; anything accepted is valid (checked below). Example counts are in
``docs/reliability.md`` (``FUZZ_EXAMPLES`` here; ``DRUNET_FUZZ_SCALE=10`` multiplies them)."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import make_dataset, save_tiny  # noqa: E402

from napari_drunet.core.errors import CheckpointError, DataError, InputError  # noqa: E402

FUZZ_EXAMPLES = {"random_bytes": 400, "mutated_files": 400, "model_files": 150,
                 "dataset_json": 150, "predict_arrays": 150}
SCALE = max(1, int(os.environ.get("DRUNET_FUZZ_SCALE", "1")))  # e.g. 10 for a long hunt
EXTENSIONS = (".nii.gz", ".nii", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAGIC = (b"", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00",
         b"\x1f\x8b\x08\x00", b"\\\x01\x00\x00", b"GIF89a", b"BM", b"\xff\xd8\xff\xe0", b"PK\x03\x04")


def _fuzz(name: str):
    return settings(max_examples=FUZZ_EXAMPLES[name] * SCALE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check_image(img) -> None:
    arr = img.array
    assert arr.ndim in (3, 4) and min(arr.shape) >= 1, arr.shape
    assert arr.dtype.kind in "biuf", arr.dtype
    assert len(img.spacing) == arr.ndim - 1
    assert all(np.isfinite(s) and s > 0 for s in img.spacing), img.spacing
    assert img.affine is None or img.affine.shape == (4, 4)


def _read_both(path: Path) -> None:
    """read_image and read_label: InputError with one line, or a valid result."""
    from napari_drunet.core.image.io import read_image, read_label

    try:
        _check_image(read_image(path))
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc), repr(str(exc))
    try:
        labels, img = read_label(path)
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc), repr(str(exc))
    else:
        assert labels.shape == img.shape_spatial
        assert labels.dtype.kind in "iu" and (labels.size == 0 or labels.min() >= 0)


@pytest.mark.filterwarnings("ignore::UserWarning")
@_fuzz("random_bytes")
@given(ext=st.sampled_from(EXTENSIONS), magic=st.sampled_from(MAGIC),
       body=st.binary(max_size=1500))
def test_random_bytes_never_crash_the_readers(workdir, ext, magic, body):
    path = workdir / f"random{ext}"
    path.write_bytes(magic + body)
    _read_both(path)


def _valid_files() -> dict[str, bytes]:
    """Small valid files of every format (bytes), to be mutated."""
    import nibabel as nib
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    out = {}
    img8 = rng.integers(0, 255, (12, 10), dtype=np.uint8)
    for fmt, ext in (("PNG", ".png"), ("BMP", ".bmp"), ("GIF", ".gif"), ("JPEG", ".jpg")):
        buf = io.BytesIO()
        Image.fromarray(img8).save(buf, format=fmt)
        out[f"gray{ext}"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (9, 7, 4), dtype=np.uint8), "RGBA").save(buf, "PNG")
    out["rgba.png"] = buf.getvalue()
    for name, arr, kw in (("u16.tif", rng.integers(0, 60000, (6, 8)).astype(np.uint16), {}),
                          ("vol.tif", rng.random((3, 6, 5)).astype(np.float32),
                           {"imagej": True, "metadata": {"axes": "ZYX", "spacing": 2.0}}),
                          ("rgb.tif", rng.integers(0, 255, (6, 5, 3), dtype=np.uint8),
                           {"photometric": "rgb"})):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, **kw)
        out[name] = buf.getvalue()
    vol = nib.Nifti1Image(rng.random((5, 4, 3)).astype(np.float32), np.diag([1.0, 2.0, 3.0, 1]))
    out["vol.nii"] = vol.to_bytes()
    import gzip

    out["vol.nii.gz"] = gzip.compress(vol.to_bytes(), mtime=0)
    return out


VALID = _valid_files()


@st.composite
def mutations(draw):
    name = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[name])
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(("flip", "set", "truncate", "insert")))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF)))
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    ext = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
    return ext, bytes(data)


@_fuzz("mutated_files")
@given(case=mutations())
def test_mutated_valid_files_never_crash_the_readers(workdir, case):
    ext, data = case
    path = workdir / f"mutated{ext}"
    path.write_bytes(data)
    _read_both(path)


@pytest.fixture(scope="module")
def checkpoint_bytes(workdir) -> bytes:
    return save_tiny(workdir / "tiny.safetensors").read_bytes()


@_fuzz("model_files")
@given(data=st.data())
def test_mutated_model_files_are_refused_or_load(workdir, checkpoint_bytes, data):
    """Header/tensor corruption: CheckpointError, or a network that loads and runs."""
    import torch

    from napari_drunet.core.models.checkpoint import load_checkpoint

    raw = bytearray(checkpoint_bytes)
    header_end = 8 + int.from_bytes(raw[:8], "little")
    region = data.draw(st.sampled_from(("length", "header", "tensors", "truncate")))
    if region == "truncate":
        del raw[data.draw(st.integers(0, len(raw) - 1)):]
    else:
        lo, hi = {"length": (0, 7), "header": (8, header_end - 1),
                  "tensors": (header_end, len(raw) - 1)}[region]
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(lo, hi))] = data.draw(st.integers(0, 255))
    path = workdir / "mutated.safetensors"
    path.write_bytes(bytes(raw))
    try:
        net, meta = load_checkpoint(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 16, 16))
    assert out.shape == (1, 1, 16, 16) and isinstance(meta, dict)


PATHS = st.sampled_from(["img0.tif", "lab0.tif", "missing.tif", "../outside.tif", "/etc/hostname",
                         "", "img0.tif/..", "./img0.tif", "sub/../img0.tif", "dataset.json"])
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(), PATHS,
                      st.text(max_size=8))
JSON = st.recursive(JSON_LEAF, lambda kids: st.one_of(
    st.lists(kids, max_size=3),
    st.dictionaries(st.sampled_from(["image", "label", "mask", "weight", "name", "training",
                                     "labels", "0", "1", "x"]), kids, max_size=4)), max_leaves=12)
ENTRY = st.fixed_dictionaries({"image": st.one_of(PATHS, st.lists(PATHS, max_size=2))},
                              optional={"label": PATHS, "mask": PATHS, "weight": PATHS,
                                        "name": st.text(max_size=6)})


@_fuzz("dataset_json")
@given(spec=st.one_of(JSON, st.fixed_dictionaries(
    {"training": st.lists(st.one_of(ENTRY, JSON), max_size=3)},
    optional={"labels": st.one_of(JSON, st.dictionaries(st.sampled_from(["0", "1", "2"]),
                                                        st.text(max_size=5)))})))
def test_random_dataset_json_is_refused_or_loads(workdir, spec):
    from napari_drunet.core.train.dataset import load_dataset

    root = workdir / "ds"
    if not (root / "img0.tif").exists():
        make_dataset(root, n=1)
    path = root / "dataset.json"
    path.write_text(json.dumps(spec))
    try:
        cases, names = load_dataset(path)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    for case in cases:
        files = case.meta["image"] + [case.meta["label"] or str(root / "img0.tif")]
        for f in files:  # nothing outside the dataset folder was read
            assert os.path.normpath(os.path.abspath(f)).startswith(str(root)), f
        assert case.label is None or case.label.shape == case.image.shape_spatial
    assert all(str(k).isdigit() for k in names)


@pytest.fixture(scope="module")
def tiny_models(workdir):
    from napari_drunet.core.models.model import load_model

    return {2: load_model(save_tiny(workdir / "m2.safetensors"), "cpu"),
            3: load_model(save_tiny(workdir / "m3d.safetensors", spatial_dims=3), "cpu")}


DTYPES = st.sampled_from([np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64,
                          np.float16, np.float32, np.float64])


@st.composite
def images(draw):
    dtype = np.dtype(draw(DTYPES))
    dims = draw(st.sampled_from((2, 3)))
    shape = tuple(draw(st.integers(1, 20 if dims == 2 else 9)) for _ in range(dims))
    if draw(st.booleans()):  # constant image
        value = draw(hnp.from_dtype(dtype, allow_nan=True, allow_infinity=True))
        arr = np.full(shape, value, dtype)
    else:
        arr = draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(
            dtype, allow_nan=True, allow_infinity=True, allow_subnormal=True)))
    return arr, draw(st.booleans())


@_fuzz("predict_arrays")
@given(case=images())
def test_predict_random_arrays(tiny_models, case):
    arr, use_3d_model = case
    model = tiny_models[3] if arr.ndim == 3 and use_3d_model else tiny_models[2]
    # documented (Model.prepare): for a 1-channel 2D model (H, W, 3|4) is an RGB photo and
    # (1, H, W) channel-first; a shape that reads both ways is refused, naming is_rgb
    slices = arr.ndim == 3 and model is tiny_models[2]
    photo, first = slices and arr.shape[-1] in (3, 4), slices and arr.shape[0] == 1
    if photo and first:
        with pytest.raises(InputError, match="is_rgb"):
            model.predict(arr)
        return
    pred = model.predict(arr)
    spatial = arr.shape[:2] if photo else arr.shape[1:] if first else arr.shape
    assert pred.mask.shape == spatial
    prob = pred.probabilities
    assert prob.shape == (1, *spatial) and prob.dtype == np.float32
    assert np.isfinite(prob).all() and prob.min() >= 0.0 and prob.max() <= 1.0
    assert set(np.unique(pred.mask).tolist()) <= {0, 1}
