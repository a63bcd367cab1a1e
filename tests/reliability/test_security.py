"""Security: model files never execute code, paths from files cannot leave their folder,
outputs stay in the chosen folder, and nothing connects to the network at run time."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import (  # noqa: E402
    MARKER_NAME,
    make_dataset,
    plant_malicious,
    run_cli,
    save_tiny,
)

from napari_drunet.core.errors import CheckpointError, DataError  # noqa: E402


# --------------------------------------------------------------------------- model files
def test_planted_pickles_are_refused_everywhere(tmp_path):
    """Raw pickles, torch.save zips and a pickle behind a safetensors-like length prefix,
    named .ckpt/.safetensors/.pt/.pth: refused by every loader, payload never run."""
    from napari_drunet.core.correction.project import Project
    from napari_drunet.core.models.checkpoint import load_checkpoint, read_meta
    from napari_drunet.core.models.model import load_model

    evil, marker = plant_malicious(tmp_path)
    for label, path in evil.items():
        for loader in (read_meta, load_checkpoint, load_model):
            with pytest.raises(CheckpointError, match="safetensors") as info:
                loader(path)
            assert "\n" not in str(info.value), label
    # a project whose model version file was replaced by a pickle
    project = Project.create(tmp_path / "proj")
    vid = project.versions.add(load_model(save_tiny(tmp_path / "ok.safetensors"), "cpu"))
    project.versions.path(vid).write_bytes(evil["pickle.safetensors"].read_bytes())
    with pytest.raises(CheckpointError):
        Project.open(tmp_path / "proj").versions.load_active("cpu")
    assert not marker.exists()


def test_recipe_json_is_data_not_code(tmp_path):
    """Strings in the recipe that look like code are never evaluated."""
    from safetensors.torch import load_file, save_file

    from napari_drunet.core.models.checkpoint import load_checkpoint, read_meta

    good = save_tiny(tmp_path / "good.safetensors")
    marker = tmp_path / MARKER_NAME
    code = f"__import__('os').system('touch {marker}')"
    meta = read_meta(good)
    for key, value in (("arch", code), ("arch_kwargs", {"act": code}),
                       ("normalization", {"mode": code}), ("threshold", code)):
        m = json.loads(json.dumps(meta))
        m[key] = value
        path = tmp_path / "tampered.safetensors"
        save_file(load_file(good), path, metadata={"napari_drunet": json.dumps(m)})
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
    assert not marker.exists()


def test_cli_refuses_planted_pickle_in_a_real_process(tmp_path):
    evil, marker = plant_malicious(tmp_path)
    img = tmp_path / "img.tif"
    import tifffile

    tifffile.imwrite(img, np.zeros((16, 16), np.uint8))
    proc = run_cli("predict", "--model", evil["torch.save.safetensors"], "--input", img,
                   "--output", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "pickle" in proc.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- paths
def test_dataset_paths_cannot_leave_the_dataset_folder(tmp_path):
    from napari_drunet.core.train.dataset import load_dataset

    root = tmp_path / "data"
    make_dataset(root, n=1)
    outside = tmp_path / "secret.tif"
    outside.write_bytes((root / "img0.tif").read_bytes())
    for image in ("../secret.tif", str(outside), "sub/../../secret.tif", "./../secret.tif",
                  "~/secret.tif", ["img0.tif", "../secret.tif"]):
        for key in ("image", "label", "mask", "weight"):
            entry = {"image": "img0.tif", "label": "lab0.tif"}
            entry[key] = image if key == "image" or isinstance(image, str) else image[1]
            spec = {"training": [entry], "allow_outside": True}  # the file cannot grant itself
            (root / "dataset.json").write_text(json.dumps(spec))
            with pytest.raises(DataError, match="outside the dataset folder"):
                load_dataset(root / "dataset.json")
    # explicitly allowed by the caller: works
    (root / "dataset.json").write_text(json.dumps(
        {"training": [{"image": "../secret.tif", "label": "lab0.tif"}]}))
    cases, _ = load_dataset(root / "dataset.json", allow_outside=True)
    assert len(cases) == 1
    # inside paths written in odd ways stay allowed
    (root / "dataset.json").write_text(json.dumps(
        {"training": [{"image": "./x/../img0.tif", "label": str(root / "lab0.tif")}]}))
    assert len(load_dataset(root / "dataset.json")[0]) == 1


def test_predict_outputs_stay_in_the_output_folder(tmp_path, capsys):
    """Output names are input base names; symbolic links in the output folder are replaced,
    never followed; a linked input is written under its own (link) name."""
    import tifffile

    from napari_drunet.cli import main

    model = save_tiny(tmp_path / "m.safetensors")
    src, out, victim_dir = tmp_path / "in", tmp_path / "out", tmp_path / "victim"
    for d in (src, out, victim_dir):
        d.mkdir()
    img = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    tifffile.imwrite(src / "a.tif", img)
    tifffile.imwrite(victim_dir / "b.tif", img)
    (src / "b.tif").symlink_to(victim_dir / "b.tif")  # input through a link
    (src / "..c.tif").write_bytes((src / "a.tif").read_bytes())  # hidden: skipped
    (src / "d..tif").write_bytes((src / "a.tif").read_bytes())
    victim = victim_dir / "important.txt"
    victim.write_text("keep me")
    (out / "a.tif").symlink_to(victim)  # a planted link where a mask will be written
    argv = ["predict", "--model", str(model), "--input", str(src), "--output", str(out),
            "--device", "cpu"]
    assert main(argv) == 0
    capsys.readouterr()
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in victim_dir.iterdir()) == ["b.tif", "important.txt"]
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "d..tif"]
    assert not any(p.is_symlink() for p in out.iterdir())
    assert tifffile.imread(victim_dir / "b.tif").shape == (16, 16)
    for p in out.iterdir():
        assert tifffile.imread(p).shape == (16, 16)
    # a planted link to a folder at a mask's name: refused, nothing written through it
    (out / "d..tif").unlink()
    (out / "d..tif").symlink_to(victim_dir)
    assert main(argv) == 2
    assert "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in victim_dir.iterdir()) == ["b.tif", "important.txt"]


def test_project_case_names_cannot_escape(tmp_path):
    from napari_drunet.core.correction.project import Project

    p = Project.create(tmp_path / "proj")
    for name in ("../../evil", "/abs/evil", "..", ".", "a/../../b", "~root", "c:\\x", ""):
        p.add_case(name or "empty", np.zeros((1, 4, 4)), np.zeros((4, 4), np.uint8))
        p.save_correction(name or "empty", np.ones((4, 4), np.uint8))
    cases = (tmp_path / "proj" / "cases").resolve()
    for entry in (tmp_path / "proj" / "cases").iterdir():
        assert entry.resolve().parent == cases
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_tampered_project_manifest_cannot_redirect_writes(tmp_path):
    from napari_drunet.core.correction.project import Project

    p = Project.create(tmp_path / "proj")
    p.add_case("a", np.zeros((1, 4, 4)), np.zeros((4, 4), np.uint8))
    folder = p.case_meta("a")["folder"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "prediction.npz").write_bytes(
        (tmp_path / "proj" / "cases" / folder / "prediction.npz").read_bytes())
    manifest = json.loads((tmp_path / "proj" / "project.json").read_text())
    manifest["cases"]["a"]["folder"] = "../../outside"
    (tmp_path / "proj" / "project.json").write_text(json.dumps(manifest))
    try:
        Project.open(tmp_path / "proj").save_correction("a", np.ones((4, 4), np.uint8))
    except DataError:
        pass
    assert sorted(p.name for p in outside.iterdir()) == ["prediction.npz"]


# --------------------------------------------------------------------------- network
class NetworkGuard:
    """Record (and refuse) every attempt to resolve names or open internet connections."""

    def __init__(self, monkeypatch):
        self.attempts: list[str] = []
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

        def refuse(what):
            self.attempts.append(what)
            raise OSError(f"network access attempted in a test: {what}")

        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                refuse(f"connect {address}")
            return real_connect(sock, address)

        def connect_ex(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                refuse(f"connect_ex {address}")
            return real_connect_ex(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "create_connection",
                            lambda address, *a, **k: refuse(f"create_connection {address}"))
        monkeypatch.setattr(socket, "getaddrinfo",
                            lambda host, *a, **k: refuse(f"getaddrinfo {host}"))
        monkeypatch.setattr(socket, "gethostbyname", lambda host: refuse(f"gethostbyname {host}"))


GUARD_PRELUDE = """
import socket, sys
def _refuse(what):
    sys.stderr.write('NETWORK ATTEMPT: %s\\n' % (what,))
    raise OSError('network access attempted')
_connect = socket.socket.connect
def _guarded(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(address)
    return _connect(sock, address)
socket.socket.connect = _guarded
socket.create_connection = lambda address, *a, **k: _refuse(address)
socket.getaddrinfo = lambda host, *a, **k: _refuse(host)
"""


def test_no_network_in_process(monkeypatch, tmp_path):
    """Importing every module, loading, predicting, training and exporting: no connection."""
    guard = NetworkGuard(monkeypatch)
    import napari_drunet

    skipped = []
    for mod in pkgutil.walk_packages(napari_drunet.__path__, "napari_drunet."):
        if mod.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(mod.name)
        except ImportError as exc:  # e.g. no Qt binding on a headless CI image
            skipped.append(f"{mod.name}: {exc}")
    from napari_drunet.core.errors import InputError
    from napari_drunet.core.models.export import export_model
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import Case
    from napari_drunet.core.train.loop import TrainConfig, finetune

    model = load_model(save_tiny(tmp_path / "m.safetensors"), device="auto")
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    pred = model.predict(image, tta=True)
    assert pred.mask.shape == (32, 32)
    label = (image > 0.5).astype(np.uint8)
    result = finetune(model, [Case.from_arrays("c", image[None], label)],
                      TrainConfig(max_steps=3, patch_size=(16, 16), batch_size=2, device="cpu"),
                      out=tmp_path / "ft.safetensors")
    assert result.steps == 3
    export_model(result.model, "torchscript", tmp_path / "m.pt", (1, 1, 32, 32))
    try:
        export_model(result.model, "onnx", tmp_path / "m.onnx", (1, 1, 32, 32))
    except InputError:
        pass  # the installed torch needs onnxscript; not a network question
    assert guard.attempts == [], guard.attempts
    assert not [s for s in skipped if "napari_drunet" in s.split(":")[1]], skipped


@pytest.mark.slow
def test_no_network_in_cli_processes(tmp_path):
    ds = make_dataset(tmp_path / "data", n=1)
    model = save_tiny(tmp_path / "m.safetensors")
    runs = [
        ("predict", "--model", model, "--input", tmp_path / "data" / "img0.tif", "--output",
         tmp_path / "out", "--tta"),
        ("finetune", "--model", model, "--data", ds, "--out", tmp_path / "ft.safetensors",
         "--max-steps", "2", "--patch-size", "16", "--batch-size", "1", "--device", "cpu"),
    ]
    for argv in runs:
        proc = run_cli(*argv, cwd=tmp_path, prelude=GUARD_PRELUDE)
        assert "NETWORK ATTEMPT" not in proc.stderr, (argv, proc.stderr)
        assert proc.returncode == 0, (argv, proc.stderr[-2000:])
    assert (tmp_path / "ft.safetensors").is_file()
    assert os.listdir(tmp_path / "out") == ["img0.tif"]
