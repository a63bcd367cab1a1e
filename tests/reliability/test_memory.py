"""Out of memory: one recogniser (core.memory.is_out_of_memory) for inference and training,
whatever torch's wording (CUDA, CPU allocator, MemoryError), and a training too big for the
machine refused before it allocates."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import assert_user_error, make_dataset, run_cli, save_tiny  # noqa: E402

from napari_drunet.core.errors import InputError  # noqa: E402
from napari_drunet.core.memory import is_out_of_memory, training_bytes  # noqa: E402
from napari_drunet.core.models.model import load_model  # noqa: E402

ERRORS = {
    "cuda": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
    "cpu": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                "can't allocate memory: you tried to allocate 96000000000 bytes"),
    "memoryerror": lambda: MemoryError(),
}


@pytest.fixture()
def model(tmp_path):
    return load_model(save_tiny(tmp_path / "m.safetensors"), "cpu")


def _always_oom(monkeypatch, net, kind: str) -> None:
    def forward(self, x, *a, **k):
        raise ERRORS[kind]()

    monkeypatch.setattr(type(net), "forward", forward)


def _run(job: str, model, tmp_path) -> None:
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    if job == "inference":
        model.predict(image[0])
    else:
        from napari_drunet.core.train.dataset import Case
        from napari_drunet.core.train.loop import TrainConfig, finetune

        finetune(model, [Case.from_arrays("c", image, image[0] > 0.5)],
                 TrainConfig(max_steps=2, patch_size=(16, 16), batch_size=1, device="cpu"),
                 out=tmp_path / "ft.safetensors")


@pytest.mark.parametrize("kind", sorted(ERRORS))
@pytest.mark.parametrize("job", ["inference", "training"])
def test_out_of_memory_is_one_line_error_in_inference_and_training(model, monkeypatch, tmp_path,
                                                                   job, kind):
    _always_oom(monkeypatch, model.network, kind)
    with pytest.raises(InputError, match="out of memory") as info:
        _run(job, model, tmp_path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "ft.safetensors").exists()


def test_other_errors_are_not_taken_for_out_of_memory():
    assert all(is_out_of_memory(make()) for make in ERRORS.values())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only torch's runtime errors


def test_training_estimate_grows_with_depth_padding():
    shallow = training_bytes([16, 32, 64, 128, 256], (256, 256), 2, 0)
    deep = training_bytes([16] * 14, (256, 256), 2, 0)  # padded to 8192^2
    assert 250e6 < shallow < 500e6  # 347 MB measured on CPU
    assert deep > 100 * shallow


def test_training_too_big_for_the_free_memory_is_refused_first(model, monkeypatch, tmp_path):
    from napari_drunet.core.train.dataset import Case
    from napari_drunet.core.train.loop import TrainConfig, finetune

    monkeypatch.setenv("NAPARI_DRUNET_MAX_MEMORY", "1M")
    calls = []
    real = type(model.network).forward
    monkeypatch.setattr(type(model.network), "forward",
                        lambda self, x, *a, **k: calls.append(1) or real(self, x, *a, **k))
    image = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    with pytest.raises(InputError, match=r"needs about .* GiB are free"):
        finetune(model, [Case.from_arrays("c", image, image[0] > 0.5)],
                 TrainConfig(max_steps=2, patch_size=(64, 64), batch_size=4, device="cpu",
                             val_fraction=0.0), out=tmp_path / "ft.safetensors")
    assert calls == [] and not (tmp_path / "ft.safetensors").exists()


def test_cli_train_refuses_a_training_that_cannot_fit(tmp_path, monkeypatch):
    ds = make_dataset(tmp_path / "ds")
    monkeypatch.setenv("NAPARI_DRUNET_MAX_MEMORY", "2M")
    proc = run_cli("train", "--data", ds, "--out", tmp_path / "m.safetensors", "--max-steps", "1",
                   "--patch-size", "32", "--batch-size", "8", "--device", "cpu",
                   "--features", "16,32,64")
    assert "GiB are free" in assert_user_error(proc)
    assert not (tmp_path / "m.safetensors").exists()
