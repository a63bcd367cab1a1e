"""Child processes killed (SIGKILL) by ``test_crash_safety.py``; not a test module.

Usage: ``python child.py MODE WORKDIR``. Every completed durable action prints one flushed
line, so the parent knows what must survive the kill:

* ``finetune``: fine-tunes ``WORKDIR/init.safetensors`` for 3 steps again and again with
  ``out=WORKDIR/model.safetensors``; after each run ``saved RUN SHA256``.
* ``project``: saves corrections of ``WORKDIR/proj`` (3 cases) from a background writer thread,
  like the GUI autosave, ``ack I`` after each save returned; every 4th save it also adds a
  model version, activates it and prints ``version ID SHA256``.
* ``autosave``: like ``project`` but through the GUI's real autosave ``Tracker`` on a napari
  Labels layer (``NAPARI_DRUNET_SYNC=1``: the write happens in ``save_now``).
"""

from __future__ import annotations

import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SHAPE = (24, 24)
N_CASES = 3


def pattern(i: int) -> np.ndarray:
    """The correction saved at step ``i`` (distinct for every i)."""
    out = np.zeros(SHAPE, np.uint8)
    out.flat[(np.arange(40) * 7 + i * 13) % out.size] = 1
    out[i % SHAPE[0], : 1 + i % SHAPE[1]] = 1
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _finetune(work: Path) -> None:
    import torch

    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import Case
    from napari_drunet.core.train.loop import TrainConfig, finetune

    torch.set_num_threads(1)
    init = load_model(work / "init.safetensors", "cpu")
    rng = np.random.default_rng(0)
    cases = [Case.from_arrays(f"c{i}", rng.random((1, 32, 32)).astype(np.float32),
                              np.pad(pattern(i), 4)) for i in range(2)]
    out = work / "model.safetensors"
    run = 0
    while True:
        cfg = TrainConfig(max_steps=3, epochs=1, patch_size=(16, 16), batch_size=2,
                          device="cpu", seed=run, val_fraction=0.0, warmup_steps=0)
        finetune(init, cases, cfg, out=out)
        print(f"saved {run} {sha(out)}", flush=True)
        run += 1


def _project_setup(work: Path):
    from napari_drunet.core.correction.project import Project
    from napari_drunet.core.models.model import load_model

    folder = work / "proj"
    if (folder / "project.json").exists():
        project = Project.open(folder)
    else:
        project = Project.create(folder)
        for c in range(N_CASES):
            project.add_case(f"case{c}", np.ones((1, *SHAPE), np.float32),
                             np.zeros(SHAPE, np.uint8))
    model = load_model(work / "init.safetensors", "cpu")
    if project.versions.active is None:
        project.versions.add(model, source="initial")
    return project, model


def _new_version(project, model, i: int) -> None:
    import torch

    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(0.01 * (i + 1))
    vid = project.versions.add(model, parent=project.versions.active, source=f"step {i}",
                               activate=True)
    print(f"version {vid} {sha(project.versions.path(vid))}", flush=True)


def _project(work: Path) -> None:
    project, model = _project_setup(work)
    writer = ThreadPoolExecutor(max_workers=1)  # the GUI autosave writes off the GUI thread
    i = 0
    while True:
        writer.submit(project.save_correction, f"case{i % N_CASES}", pattern(i),
                      edited=pattern(i) > 0).result()
        print(f"ack {i}", flush=True)
        if i % 4 == 3:
            _new_version(project, model, i)
        i += 1


def _autosave(work: Path) -> None:
    import os

    os.environ["NAPARI_DRUNET_SYNC"] = "1"
    from napari.layers import Labels

    from napari_drunet.gui._autosave import Tracker

    project, model = _project_setup(work)
    trackers = []
    for c in range(N_CASES):
        layer = Labels(project.load_case(f"case{c}").correction.copy(), name=f"case{c}")
        trackers.append((layer, Tracker(project, f"case{c}", layer)))
    failures: list[str] = []
    for _, t in trackers:
        t.failed.connect(failures.append)
    i = 0
    while True:
        layer, tracker = trackers[i % N_CASES]
        layer.data = pattern(i)
        tracker.save_now()
        if failures:
            print(f"failed {failures[-1]}", flush=True)
            return
        print(f"ack {i}", flush=True)
        if i % 4 == 3:
            _new_version(project, model, i)
        i += 1


if __name__ == "__main__":
    mode, workdir = sys.argv[1], Path(sys.argv[2])
    {"finetune": _finetune, "project": _project, "autosave": _autosave}[mode](workdir)
