"""Bad inputs through the Python API and the napari adapters: every user mistake raises a
``DrunetError`` subclass whose message is one line; odd-but-valid arrays are segmented."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import make_dataset, plant_malicious  # noqa: E402

from napari_drunet.core.errors import (  # noqa: E402
    CheckpointError,
    DataError,
    DrunetError,
    InputError,
)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    return text


def test_readers_raise_one_line_input_errors(bad_files):
    from napari_drunet.core.image.io import read_image, read_label

    for name, path in bad_files.items():
        for reader in (read_image, read_label):
            with pytest.raises(InputError) as info:
                reader(path)
            assert path.name in _one_line(info.value), (name, str(info.value))


def test_missing_and_folder_paths(tmp_path):
    from napari_drunet.core.image.io import read_image, read_label

    for reader in (read_image, read_label):
        for path, must in ((tmp_path / "missing.nii.gz", "not found"), (tmp_path, "folder"),
                           (tmp_path / "x.xyz", "not found")):
            with pytest.raises(InputError, match=must):
                reader(path)
    (tmp_path / "x.xyz").write_bytes(b"abc")
    with pytest.raises(InputError, match="unsupported file type"):
        read_image(tmp_path / "x.xyz")


def test_napari_reader_and_writer_adapters(bad_files, tmp_path):
    """napari shows reader/writer exceptions as notifications: they must be one-line errors."""
    from napari_drunet._reader import get_reader
    from napari_drunet._writer import write_labels

    for name, path in bad_files.items():
        reader = get_reader(str(path))
        assert reader is not None, name  # supported extension: our reader claims the file
        with pytest.raises(DrunetError) as info:
            reader(str(path))
        _one_line(info.value)
    assert get_reader(str(tmp_path / "a.xyz")) is None
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    lab = np.zeros((8, 8), np.uint8)
    for target, must in ((a_file / "x.tif", "cannot write"), (tmp_path / "x.jpg", "JPEG"),
                         ("/proc/x.tif", "cannot write"), (tmp_path, "")):
        with pytest.raises(InputError, match=must or None) as info:
            write_labels(str(target), lab, {})
        _one_line(info.value)
    with pytest.raises(InputError):
        write_labels(str(tmp_path / "x.tif"), np.zeros((2, 2, 2, 2), np.uint8), {})
    with pytest.raises(InputError, match="negative"):
        write_labels(str(tmp_path / "x.tif"), -np.ones((4, 4), np.int16), {})
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


def test_gui_notifications_are_one_line(monkeypatch):
    """The GUI's job runner shows errors with ``report_error``; check it with real messages."""
    workers = pytest.importorskip("napari_drunet.gui._workers")
    shown: list[str] = []
    monkeypatch.setattr(workers, "show_error", shown.append)
    errors = [InputError("cannot read a.png as PNG: the file is truncated or damaged"),
              CheckpointError("m.ckpt is truncated (10 bytes, 99 expected); re-copy the file"),
              RuntimeError("CUDA error\nsecond line\nthird"), ValueError(""),
              MemoryError()]
    for exc in errors:
        workers.report_error(exc, "segment")
    assert len(shown) == len(errors)
    for text in shown:
        assert text.startswith("segment failed: ") and "\n" not in text, text


def test_predict_refuses_unusable_arrays(models):
    from napari_drunet.core.models.model import load_model

    m1, m3d = load_model(models["m1"], "cpu"), load_model(models["m3d"], "cpu")
    bad = {
        "1D": (m1, np.zeros(10)), "5D": (m1, np.zeros((2, 3, 4, 5, 6))),
        "0-D": (m1, np.float32(1.0)), "zero rows": (m1, np.zeros((0, 5))),
        "zero cols": (m1, np.zeros((5, 0))), "zero depth": (m1, np.zeros((1, 0, 4, 4))),
        "complex": (m1, np.ones((8, 8), np.complex64)), "strings": (m1, np.array([["a", "b"]])),
        "objects": (m1, np.array([["x", 1]], dtype=object)),
        "wrong channels": (m1, np.zeros((2, 8, 8, 8))),
        "2D image for a 3D model": (m3d, np.zeros((16, 16))),
    }
    for what, (model, arr) in bad.items():
        with pytest.raises(InputError) as info:
            model.predict(arr)
        _one_line(info.value)
        del what
    with pytest.raises(InputError, match="RGB"):
        m1.predict(np.zeros((8, 8, 2)), is_rgb=True)
    with pytest.raises(InputError):
        m1.predict(np.zeros((8, 8)), tile_size=0)
    with pytest.raises(InputError, match="unknown inference option"):
        m1.predict(np.zeros((8, 8)), tilesize=8)


def test_predict_accepts_odd_arrays(models):
    from napari_drunet.core.models.model import load_model

    m1, m3 = load_model(models["m1"], "cpu"), load_model(models["m3"], "cpu")
    rng = np.random.default_rng(0)
    nan = rng.random((16, 16)).astype(np.float32)
    nan[0, 0], nan[1, 1], nan[2, 2] = np.nan, np.inf, -np.inf
    cases = {
        "NaN/Inf": (m1, nan, {}), "all NaN": (m1, np.full((8, 8), np.nan), {}),
        "+Inf only": (m1, np.full((8, 8), np.inf, np.float32), {}),
        "constant": (m1, np.full((16, 16), 3.0), {}), "zeros": (m1, np.zeros((16, 16)), {}),
        "bool": (m1, rng.random((16, 16)) > 0.5, {}),
        "int8": (m1, rng.integers(-128, 127, (16, 16)).astype(np.int8), {}),
        "uint16": (m1, rng.integers(0, 65535, (16, 16)).astype(np.uint16), {}),
        "float64 huge": (m1, rng.random((16, 16)) * 1e300, {}),
        "float64 tiny": (m1, rng.random((16, 16)) * 1e-300, {}),
        "float16": (m1, rng.random((16, 16)).astype(np.float16), {}),
        "int64": (m1, rng.integers(-2 ** 40, 2 ** 40, (16, 16)), {}),
        "one pixel": (m1, np.ones((1, 1)), {}), "one row": (m1, np.ones((1, 37)), {}),
        "object numbers": (m1, np.array([[1, 2], [3, 4]], dtype=object), {}),
        "RGBA for 1 channel": (m1, rng.integers(0, 255, (16, 16, 4)).astype(np.uint8),
                               {"is_rgb": True}),
        "RGBA for 3 channels": (m3, rng.integers(0, 255, (16, 16, 4)).astype(np.uint8),
                                {"is_rgb": True}),
        "gray for 3 channels": (m3, rng.random((16, 16)), {}),
        "volume slice-wise": (m1, rng.random((3, 16, 16)).astype(np.float32), {}),
        "NaN, normalized=True": (m1, nan, {"normalized": True}),
    }
    for what, (model, arr, opts) in cases.items():
        pred = model.predict(arr, **opts)
        spatial = arr.shape[:2] if opts.get("is_rgb") else arr.shape
        assert pred.mask.shape == tuple(spatial), what
        assert np.isfinite(pred.probabilities).all(), what
        assert pred.probabilities.min() >= 0 and pred.probabilities.max() <= 1, what
        if "NaN" in what or "Inf" in what:
            assert any("NaN/Inf" in w for w in pred.info["warnings"]), (what, pred.info)


def test_bad_model_files_raise_checkpoint_errors(models, tmp_path):
    from napari_drunet.core.models.checkpoint import load_checkpoint, read_meta
    from napari_drunet.core.models.model import load_model

    for key in ("truncated", "truncated_header", "one_byte", "other_arch", "plain_safetensors",
                "text", "empty"):
        for loader in (load_checkpoint, load_model, read_meta):
            if loader is read_meta and key in ("other_arch",):
                continue  # the recipe is fine; only the weights disagree
            with pytest.raises(CheckpointError) as info:
                loader(models[key])
            _one_line(info.value)
    for path, must in ((tmp_path / "missing.ckpt", "not found"), ("no-such-model", "unknown"),
                       (tmp_path, None)):
        with pytest.raises(CheckpointError, match=must):
            load_model(path)


def test_tampered_recipes_are_refused_on_load(models, tmp_path):
    """Hand-edited recipes fail on load with one line, never later or with another exception;
    absurd sizes are refused before anything is allocated."""
    import copy

    from safetensors.torch import load_file, save_file

    from napari_drunet.core.models.checkpoint import load_checkpoint, read_meta

    tensors, meta = load_file(models["m1"]), read_meta(models["m1"])
    edits = {
        "features huge": ("arch_kwargs", "features", [4, 10 ** 8]),
        "spatial_dims str": ("arch_kwargs", "spatial_dims", "2"),
        "in_channels 3": ("arch_kwargs", "in_channels", 3),
        "unknown kwarg": ("arch_kwargs", "evil", 1),
        "arch os.system": (None, "arch", "os.system"),
        "format 99": (None, "format_version", 99),
        "threshold str": (None, "threshold", "x"),
        "threshold 7": (None, "threshold", 7),
        "labels list": (None, "label_names", ["a"]),
        "normalization bad": (None, "normalization", {"mode": "evil"}),
        "tile_size str": ("inference", "tile_size", "x"),
        "overlap 2": ("inference", "overlap", 2),
    }
    for what, (section, key, value) in edits.items():
        m = copy.deepcopy(meta)
        (m.setdefault(section, {}) if section else m)[key] = value
        path = tmp_path / "edited.safetensors"
        save_file(tensors, path, metadata={"napari_drunet": json.dumps(m)})
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        _one_line(info.value)
        del what


def test_malicious_pickles_never_run(tmp_path):
    from napari_drunet.core.models.checkpoint import load_checkpoint, read_meta
    from napari_drunet.core.models.model import load_model

    evil, marker = plant_malicious(tmp_path)
    for label, path in evil.items():
        for loader in (load_checkpoint, load_model, read_meta):
            with pytest.raises(CheckpointError) as info:
                loader(path)
            text = _one_line(info.value)
            assert "safetensors" in text, (label, text)
    assert not marker.exists()


def test_dataset_errors(tmp_path):
    from napari_drunet.core.train.dataset import Case, load_dataset

    root = tmp_path / "data"
    make_dataset(root, n=1)
    bad = {
        "{not json": "not valid JSON", "[]": "JSON object", '{"training": 5}': "no 'training'",
        '{"training": [5]}': "needs an 'image'", '{"training": [{"image": ""}]}': "file path",
        '{"training": [{"image": ["img0.tif", "../../x.tif"]}]}': "outside",
        '{"training": [{"image": "img0.tif", "label": "/etc/hostname"}]}': "outside",
        '{"training": [{"image": "img0.tif", "mask": "lab0.tif", "label": "nope.tif"}]}':
            "not found",
        '{"labels": {"x": "y"}, "training": [{"image": "img0.tif"}]}': "labels",
        "\udcff": None,
    }
    for text, must in bad.items():
        path = root / "d.json"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(DataError, match=must) as info:
            load_dataset(path)
        _one_line(info.value)
    with pytest.raises(DataError, match="not found"):
        load_dataset(root / "missing.json")
    img = np.zeros((1, 16, 16))
    for kw in ({"label": np.zeros((8, 16), int)}, {"mask": np.zeros((16, 8))},
               {"weight": np.zeros((16,))}, {"label": -np.ones((16, 16), int)},
               {"label": np.full((16, 16), 0.5)}):
        with pytest.raises(DataError):
            Case.from_arrays("c", img, **kw)


def test_training_api_errors_come_before_any_work(models, tmp_path):
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import Case
    from napari_drunet.core.train.loop import TrainConfig, finetune, train

    m1 = load_model(models["m1"], "cpu")
    img = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    lab3 = np.zeros((32, 32), int)
    lab3[4:8, 4:8] = 3
    cfg = TrainConfig(max_steps=2, patch_size=(16, 16), batch_size=1, device="cpu",
                      features=(4, 8))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(DataError, match="labels go up to 3"):
        finetune(m1, [Case.from_arrays("c", img, lab3)], cfg)
    with pytest.raises(DataError, match="channel"):
        finetune(m1, [Case.from_arrays("c", np.repeat(img, 3, 0), lab3 > 0)], cfg)
    with pytest.raises(DataError, match="no label"):
        train([Case.from_arrays("c", img)], cfg)
    with pytest.raises(DataError, match="no training cases"):
        train([], cfg)
    with pytest.raises(InputError, match="training option"):
        train([Case.from_arrays("c", img, lab3 > 0)], TrainConfig(lr=-1))
    for out in (a_file / "m.ckpt", "/proc/m.ckpt", tmp_path):
        with pytest.raises(CheckpointError, match="cannot write") as info:
            train([Case.from_arrays("c", img, lab3 > 0)], cfg, out=out)
        _one_line(info.value)
    with pytest.raises(CheckpointError, match="cannot write"):
        m1.save(a_file / "m.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_writers_refuse_unwritable_and_mismatched(tmp_path):
    from napari_drunet.core.image.io import ImageData, write_label, write_probability

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    lab = np.zeros((8, 8), np.uint8)
    like = ImageData(np.zeros((1, 8, 9)))
    cases = [(write_label, a_file / "m.tif", lab, None), (write_label, "/proc/m.png", lab, None),
             (write_label, tmp_path / "m.tif", lab, like),
             (write_label, tmp_path / "m.png", np.zeros((2, 8, 8), np.uint8), None),
             (write_label, tmp_path / "m.gif", np.full((8, 8), 300), None),
             (write_probability, tmp_path / "p.png", lab.astype(np.float32), None),
             (write_probability, a_file / "p.tif", lab.astype(np.float32), None)]
    for writer, path, data, ref in cases:
        with pytest.raises(InputError) as info:
            writer(path, data, like=ref)
        _one_line(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_project_user_errors(tmp_path):
    from napari_drunet.core.correction.project import Project

    p = Project.create(tmp_path / "proj")
    p.add_case("a", np.zeros((1, 8, 8)), np.zeros((8, 8), np.uint8))
    for call, exc in (
        (lambda: Project.create(tmp_path / "proj"), DataError),
        (lambda: p.save_correction("a", np.zeros((4, 4), np.uint8)), DataError),
        (lambda: p.save_correction("nope", np.zeros((8, 8), np.uint8)), DataError),
        (lambda: p.save_correction("a", -np.ones((8, 8), np.int16)), DataError),
        (lambda: p.add_case("a", np.zeros((1, 8, 8)), np.zeros((8, 8), np.uint8)), DataError),
        (lambda: p.add_case("b", np.zeros((1, 8, 8)), np.zeros((4, 8), np.uint8)), DataError),
        (lambda: p.mark_reviewed("a", [99]), DataError),
        (lambda: p.versions.load_active(), DataError),
        (lambda: Project.open(tmp_path / "nothing"), DataError),
    ):
        with pytest.raises(exc) as info:
            call()
        _one_line(info.value)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "project.json").write_text('{"schema_version": 1, "cases": ')
    with pytest.raises(DataError, match="unreadable"):
        Project.open(tmp_path / "broken")
