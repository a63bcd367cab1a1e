"""Fixtures of the GUI tests: a tiny freshly built model saved as a checkpoint (no packaged weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def save_tiny_model(path: Path, in_channels: int = 1, spatial_dims: int = 2, seed: int = 0,
                    **meta_updates) -> Path:
    import torch

    from napari_drunet.core.image.normalization import default_spec
    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model

    torch.manual_seed(seed)
    net = build_model("drunet", spatial_dims=spatial_dims, in_channels=in_channels,
                      out_channels=1, features=(4, 8), dropout=0.2)
    meta = {"normalization": default_spec(), "threshold": 0.5,
            "label_names": {"0": "background", "1": "object"}, **meta_updates}
    return Model(net, meta, device="cpu", name="tiny").save(path)


@pytest.fixture
def tiny_ckpt(tmp_path) -> Path:
    return save_tiny_model(tmp_path / "tiny.safetensors")


def disc_image(size: int = 32, seed: int = 0) -> np.ndarray:
    """A bright disc on a noisy background, float32 (size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2 - seed) ** 2) < (size / 4) ** 2
    return (disc * 1.0 + 0.2 * rng.normal(size=(size, size))).astype(np.float32)


def make_corrected_project(folder: Path, ckpt: Path):
    """A project of 3 disc cases predicted by ``ckpt``: c0 corrected, c1 reviewed, c2 untouched."""
    from napari_drunet.core.correction.project import Project
    from napari_drunet.core.models.model import load_model

    proj = Project.create(folder)
    model = load_model(ckpt, "cpu")
    vid = proj.versions.add(model, source=str(ckpt))
    for i in range(3):
        img = disc_image(32, i)
        proj.add_case(f"c{i}", img, model.predict(img).mask, model_version=vid)
    proj.save_correction("c0", (disc_image(32, 0) > 0.5).astype(np.uint8))
    proj.mark_reviewed("c1", "all")
    return proj


@pytest.fixture
def corrected_project(tmp_path, tiny_ckpt):
    return make_corrected_project(tmp_path / "proj", tiny_ckpt)


JOB_WAIT_MS = 60_000


def segment_layer(qtbot, seg, name: str):
    """Segment image layer ``name`` with the Segment widget; its labels layer once done."""
    seg.set_image_layers([name])
    job = seg.run()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=JOB_WAIT_MS)
    assert job.error is None, job.error
    return seg.viewer.layers[f"{name} labels"]


def wait_job(qtbot, widget, timeout: int = JOB_WAIT_MS) -> None:
    """Wait until the job of ``widget`` (if any) has ended, and check that it did not fail."""
    job = widget.job
    if job is not None:
        qtbot.waitUntil(lambda: not job.running, timeout=timeout)
        assert job.error is None, job.error


def add_case(qtbot, corr, name: str | None = None) -> str | None:
    """``corr.add_current_result(name)``, then wait until the case files are written."""
    added = corr.add_current_result(name)
    if added is not None:
        wait_job(qtbot, corr)
    return added


def open_project(qtbot, corr, folder):
    """``corr.open_project(folder)``, then wait until its last case is shown."""
    project = corr.open_project(folder)
    if project is not None:
        wait_job(qtbot, corr)
    return project


def show_case(qtbot, corr, name: str):
    """``corr.show_case(name)``, waiting until the case is read; its labels layer."""
    layer = corr.show_case(name)
    if layer is None:
        wait_job(qtbot, corr)
        layer = corr.case_layer(name)
    return layer


def small_finetune(qtbot, ft, budget_s: int):
    """A 4-step fine-tune of 32² patches, one case held back, run to its end without error."""
    ft.steps_spin.setValue(4)
    ft.budget_spin.setValue(budget_s)
    ft.holdout_spin.setValue(1)
    ft.extra_config = {"batch_size": 2, "patch_size": (32, 32), "num_threads": 1}
    job = ft.start()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=JOB_WAIT_MS)
    assert job.error is None, job.error
    return job


@pytest.fixture
def errors(monkeypatch):
    """Collect the error notifications instead of showing them."""
    shown: list[str] = []
    monkeypatch.setattr("napari_drunet.gui._workers.show_error", shown.append)
    return shown


@pytest.fixture
def make_disc():
    return disc_image


@pytest.fixture
def make_model(tmp_path):
    def make(name: str = "m.safetensors", **kw) -> Path:
        return save_tiny_model(tmp_path / name, **kw)

    return make
