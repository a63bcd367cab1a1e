"""Crash safety: processes are SIGKILLed while fine-tuning, while saving corrections (autosave)
and while adding model versions; afterwards every file loads, every correction whose save had
returned is there, and the active model is the last one activated.

The kill moment is random (seeded per iteration) after the first durable write, so over the
iterations kills land in training steps, in ``save_correction``/``add_model_version`` and in
the atomic writes themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from child import N_CASES, pattern  # noqa: E402
from rel_helpers import CHILD, REPO, save_tiny  # noqa: E402

pytestmark = pytest.mark.slow
ITERATIONS = 3


class Child:
    """A ``child.py`` process whose stdout lines are collected by a thread."""

    def __init__(self, mode: str, work: Path):
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                   QT_QPA_PLATFORM="offscreen")
        self.proc = subprocess.Popen([sys.executable, str(CHILD), mode, str(work)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_for(self, predicate, timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"child exited early: {self.proc.stderr.read()[-3000:]}")
            if time.monotonic() > end:
                self.kill()
                raise AssertionError("child made no progress")
            time.sleep(0.01)

    def kill(self) -> list[str]:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL, (self.proc.returncode,
                                                         self.proc.stderr.read()[-3000:])
        return list(self.lines)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _non_temp_files(folder: Path) -> list[Path]:
    """Files a reader would use: temporary files are dot-files (``.name.xxxx.tmp``)."""
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]


def test_kill_during_finetuning_leaves_a_loadable_model(tmp_path):
    from napari_drunet.core.models.checkpoint import load_checkpoint, read_meta

    init = save_tiny(tmp_path / "init.safetensors")
    init_sha = _sha(init)
    out = tmp_path / "model.safetensors"
    rng = random.Random(1234)
    kills = []
    for it in range(ITERATIONS):
        child = Child("finetune", tmp_path)
        # first kill: as soon as the checkpoint exists; later ones at a random moment after
        # this child's first save (the earlier file must survive kills before that)
        child.wait_for(out.exists if it == 0 else
                       lambda c=child: any(ln.startswith("saved ") for ln in c.lines))
        time.sleep(rng.uniform(0.0, 0.8))
        lines = child.kill()
        saved = [ln.split()[2] for ln in lines if ln.startswith("saved ")]
        kills.append(len(saved))
        net, meta = load_checkpoint(out)  # never a partial file under the real name
        assert meta["provenance"]["parent"] == init_sha
        assert meta["training"]["config"]["max_steps"] == 3
        # the file is the last one the child acknowledged, or the next run's (saved, not acked)
        current = _sha(out)
        assert current == (saved[-1] if saved else current) or \
            meta["training"]["config"]["seed"] == len(saved), (saved, meta["training"])
        assert _sha(init) == init_sha, "the starting model was modified"
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert all(name.endswith(".tmp") for name in leftovers), leftovers
        assert sorted(p.name for p in _non_temp_files(tmp_path)) == \
            ["init.safetensors", "model.safetensors"]
        for p in tmp_path.glob("*.safetensors"):
            read_meta(p)
        del it, net
    print("finetune runs completed before each kill:", kills)


def _check_project(folder: Path, lines: list[str], init_sha: str) -> dict:
    """Reopen after a kill and check corrections, manifest, versions; returns a summary."""
    from napari_drunet.core.correction.project import Project
    from napari_drunet.core.models.checkpoint import load_checkpoint

    manifest = json.loads((folder / "project.json").read_text())  # valid JSON
    project = Project.open(folder)
    acked = [int(ln.split()[1]) for ln in lines if ln.startswith("ack ")]
    versions = [ln.split()[1:] for ln in lines if ln.startswith("version ")]
    assert not [ln for ln in lines if ln.startswith("failed")], lines
    last = max(acked, default=-1)
    for c in range(N_CASES):
        rec = project.load_case(f"case{c}")
        done = [i for i in acked if i % N_CASES == c]
        expected = [pattern(max(done))] if done else [np.zeros_like(pattern(0))]
        if (last + 1) % N_CASES == c:  # the save the kill interrupted may have committed
            expected.append(pattern(last + 1))
        assert any(np.array_equal(rec.correction, e) for e in expected), \
            (c, done, last, "a completed correction was lost")
        if done:
            assert rec.edited[pattern(max(done)) > 0].all()
    # the active version: the last one acknowledged, or the one being added at the kill
    ids = [v["id"] for v in project.versions.entries()]
    assert project.versions.active == ids[-1]
    if versions:
        last_vid, last_sha = versions[-1]
        assert last_vid in ids
        assert ids.index(project.versions.active) - ids.index(last_vid) in (0, 1)
        if project.versions.active == last_vid:
            assert _sha(project.versions.path(last_vid)) == last_sha
    else:
        assert ids[0] == "v001" and _sha(project.versions.path("v001")) is not None
    model = project.versions.load_active("cpu")
    assert model.network is not None
    for p in _non_temp_files(folder):  # every visible file is complete
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                assert data.files
        elif p.suffix == ".safetensors":
            load_checkpoint(p)
    for p in folder.rglob(".*"):  # temporary files, and the lock file shared by processes
        assert p.name.endswith((".tmp", ".safetensors", ".npz", ".json", ".project.lock")), p
    del manifest, init_sha
    return {"acks": len(acked), "versions": len(ids)}


@pytest.mark.parametrize("mode", ["project", "autosave"])
def test_kill_during_correction_saves_and_version_adds(tmp_path, mode):
    if mode == "autosave":
        pytest.importorskip("napari")
        pytest.importorskip("qtpy")
    init = save_tiny(tmp_path / "init.safetensors")
    init_sha = _sha(init)
    folder = tmp_path / "proj"
    rng = random.Random(99 if mode == "project" else 7)
    summary = []
    for it in range(ITERATIONS):
        if folder.exists():  # every child starts from cleared corrections (its acks from 0)
            from napari_drunet.core.correction.project import Project

            project = Project.open(folder)
            for c in range(N_CASES):
                project.save_correction(f"case{c}", np.zeros_like(pattern(0)))
        child = Child(mode, tmp_path)
        child.wait_for(lambda c=child: any(ln.startswith("ack ") for ln in c.lines))
        time.sleep(rng.uniform(0.0, 0.6))
        lines = child.kill()
        summary.append(_check_project(folder, lines, init_sha))
        # the project keeps working after the crash: later saves and versions succeed
        from napari_drunet.core.correction.project import Project

        project = Project.open(folder)
        project.save_correction("case0", pattern(1000 + it))
        assert np.array_equal(project.load_case("case0").correction, pattern(1000 + it))
    assert sum(s["acks"] for s in summary) >= ITERATIONS
    print(mode, summary)
