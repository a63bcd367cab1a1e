"""Shared fixtures: the real datasets beside the checkout, skipped with a reason when absent."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    env = os.environ.get("DRUNET_SHARED_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real datasets absent: ../shared/data (or $DRUNET_SHARED_DATA) not found")
    return root


def dataset_root(shared_data: Path, name: str, marker: str) -> Path:
    """``shared_data / name``, or skip the test when its folder ``marker`` is missing."""
    root = shared_data / name
    if not (root / marker).is_dir():
        pytest.skip(f"{name} not found under ../shared/data")
    return root


@pytest.fixture(scope="session")
def drive_root(shared_data: Path) -> Path:
    return dataset_root(shared_data, "DRIVE", "training/images")


@pytest.fixture(scope="session")
def isic_root(shared_data: Path) -> Path:
    return dataset_root(shared_data, "ISIC2017", "test/images")


@pytest.fixture(scope="session")
def brats_root(shared_data: Path) -> Path:
    return dataset_root(shared_data, "BraTS2015_6", "test")


@pytest.fixture(scope="session")
def hippocampus_root(shared_data: Path) -> Path:
    return dataset_root(shared_data, "MSD_Task04_Hippocampus", "imagesTr")


@pytest.fixture
def bench_script():
    """A module of the ``benchmarks`` package (run as ``python -m benchmarks.NAME``):
    ``bench_script("training_curves")``."""
    return lambda name: importlib.import_module(f"benchmarks.{name}")


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests use tiny models; one intra-op thread avoids oversubscribing CI's 2 cores."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


ROUND_SIZE = 48  # a 32² patch fits, and a disc has ~450 foreground pixels


def fundus_disk(size: int = 160, diameter: int = 130) -> np.ndarray:
    """A synthetic fundus photograph ``(3, size, size)``: a bright disk (the FOV) on black."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disk = (yy ** 2 + xx ** 2) <= (diameter / 2) ** 2
    rng = np.random.default_rng(0)
    img = np.zeros((3, size, size), np.float32)
    img[0] = disk * (150 + rng.normal(0, 5, disk.shape))
    img[1] = disk * (80 + rng.normal(0, 5, disk.shape))
    img[2] = disk * 30
    return img


def round_disc(seed: int, size: int = ROUND_SIZE):
    """A bright disc on a noisy background (float32 image) and its mask (uint8)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - size / 2) ** 2 + (xx - size / 2 - seed) ** 2) < (size / 4) ** 2
    return (mask + 0.3 * rng.normal(size=mask.shape)).astype(np.float32), mask.astype(np.uint8)


@pytest.fixture
def make_round_project():
    """Builder of a tiny correction project (no Qt): 4 disc cases predicted by a fresh tiny
    binary model of threshold ``threshold``; c0, c1 corrected, c2 reviewed, c3 untouched."""

    def make(folder: Path, threshold: float = 0.37, seed: int = 0):
        import torch

        from napari_drunet.core.correction.project import Project
        from napari_drunet.core.image.normalization import default_spec
        from napari_drunet.core.models.model import Model
        from napari_drunet.core.nets.networks import build_model

        torch.manual_seed(seed)
        net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=1,
                          features=(4, 8), dropout=0.2)
        model = Model(net, {"normalization": default_spec(), "threshold": threshold},
                      device="cpu")
        project = Project.create(folder)
        vid = project.versions.add(model, source="tiny")
        for i in range(4):
            image, _ = round_disc(i)
            project.add_case(f"c{i}", image, model.predict(image).mask, model_version=vid)
        for i in (0, 1):
            project.save_correction(f"c{i}", round_disc(i)[1])
        project.mark_reviewed("c2", "all")
        return project

    return make
