"""Shared fixtures: the real datasets beside the checkout, skipped with a reason when absent."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

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


@pytest.fixture(scope="session")
def drive_root(shared_data: Path) -> Path:
    root = shared_data / "DRIVE"
    if not (root / "training" / "images").is_dir():
        pytest.skip("DRIVE not found under ../shared/data")
    return root


@pytest.fixture(scope="session")
def hippocampus_root(shared_data: Path) -> Path:
    root = shared_data / "MSD_Task04_Hippocampus"
    if not (root / "imagesTr").is_dir():
        pytest.skip("MSD_Task04_Hippocampus not found under ../shared/data")
    return root


@pytest.fixture
def bench_script():
    """Loader of a script in ``benchmarks/`` as a module: ``bench_script("training_curves")``."""

    def load(name: str) -> ModuleType:
        if str(REPO / "benchmarks") not in sys.path:  # as when run as a script
            sys.path.insert(0, str(REPO / "benchmarks"))
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


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
