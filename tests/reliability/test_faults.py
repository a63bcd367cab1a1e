"""Faults: simulated CUDA out-of-memory, cancelled inference and training, determinism."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import REPO, save_tiny  # noqa: E402

from napari_drunet.core.errors import InputError  # noqa: E402


@pytest.fixture
def model(tmp_path):
    from napari_drunet.core.models.model import load_model

    return load_model(save_tiny(tmp_path / "m.safetensors"), "cpu")


def _state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _oom_above(monkeypatch, net: torch.nn.Module, limit: int) -> list[tuple[int, ...]]:
    """Make the network's class raise CUDA OOM for inputs with more than ``limit`` pixels
    (class-level, so the inference fast path's folded copy fails the same way)."""
    cls = type(net)
    real = cls.forward
    seen: list[tuple[int, ...]] = []

    def forward(self, x, *a, **k):
        seen.append(tuple(x.shape))
        if int(np.prod(x.shape[2:])) * x.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, x, *a, **k)

    monkeypatch.setattr(cls, "forward", forward)
    return seen


def test_simulated_cuda_oom_falls_back_to_smaller_tiles(model, monkeypatch):
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    reference = model.predict(image, tile_size=32, batch_size=1)
    before = _state(model.network)
    seen = _oom_above(monkeypatch, model.network, 40 * 40)
    pred = model.predict(image, tile_size=64, batch_size=4)
    assert any("out of memory" in w for w in pred.info["warnings"]), pred.info
    assert pred.info["tile_size"] == [32, 32] and pred.info["batch_size"] == 1
    assert seen[0][2:] == (64, 64) and seen[-1][2:] == (32, 32)
    assert pred.mask.shape == (64, 64) and np.isfinite(pred.probabilities).all()
    np.testing.assert_allclose(pred.probabilities, reference.probabilities, atol=1e-4)
    assert _same(before, _state(model.network)) and not model.network.training


def test_oom_at_every_size_is_one_line_error(model, monkeypatch):
    _oom_above(monkeypatch, model.network, 0)
    with pytest.raises(InputError, match="out of memory") as info:
        model.predict(np.zeros((32, 32), np.float32))
    assert "\n" not in str(info.value)
    assert not model.network.training


def test_oom_during_training_is_one_line_error_and_init_untouched(model, monkeypatch, tmp_path):
    from napari_drunet.core.train.dataset import Case
    from napari_drunet.core.train.loop import TrainConfig, finetune

    before = _state(model.network)
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    _oom_above(monkeypatch, model.network, 0)
    with pytest.raises(InputError, match="out of memory") as info:
        finetune(model, [Case.from_arrays("c", image, image[0] > 0.5)],
                 TrainConfig(max_steps=3, patch_size=(16, 16), batch_size=2, device="cpu"),
                 out=tmp_path / "ft.safetensors")
    assert "\n" not in str(info.value)
    assert _same(before, _state(model.network))
    assert not (tmp_path / "ft.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("was_training", [False, True])
def test_cancelled_inference_restores_the_network(model, was_training):
    net = model.network
    net.train(was_training)
    modes = {n: m.training for n, m in net.named_modules()}
    before = _state(net)
    gen = model.predict_iter(np.random.default_rng(1).random((96, 96)).astype(np.float32),
                             tile_size=32, batch_size=1)
    records = [next(gen), next(gen)]
    assert records[-1].total and records[-1].step < records[-1].total
    gen.close()  # what the GUI's Stop does to a worker's generator
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert _same(before, _state(net))
    assert next(net.parameters()).device.type == "cpu"
    net.eval()
    full = model.predict(np.ones((40, 40), np.float32))  # still usable
    assert full.mask.shape == (40, 40)


def test_cancelled_training_returns_a_consistent_model(model, tmp_path):
    from napari_drunet.core.models.checkpoint import load_checkpoint
    from napari_drunet.core.models.model import Model
    from napari_drunet.core.train.dataset import Case
    from napari_drunet.core.train.loop import TrainConfig, finetune, finetune_iter

    init_before = _state(model.network)
    rng = np.random.default_rng(2)
    cases = [Case.from_arrays(f"c{i}", rng.random((1, 32, 32)).astype(np.float32),
                              rng.random((32, 32)) > 0.7) for i in range(2)]
    cfg = TrainConfig(max_steps=50, patch_size=(16, 16), batch_size=2, device="cpu",
                      val_fraction=0.0)
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    out = tmp_path / "cancelled.safetensors"
    result = finetune(model, cases, cfg, should_stop=should_stop, out=out)
    assert result.stop_reason == "cancelled" and result.steps == 3
    assert _same(init_before, _state(model.network)), "the starting model was modified"
    net, meta = load_checkpoint(out)
    assert _same(_state(result.model.network), _state(net))
    assert meta["training"]["config"]["max_steps"] == 50
    again = Model(net, meta, device="cpu").save(tmp_path / "again.safetensors")
    assert load_checkpoint(again)[1]["arch"] == meta["arch"]
    assert result.model.predict(np.ones((32, 32))).mask.shape == (32, 32)
    # closing the generator (GUI hard stop) also leaves a loadable checkpoint
    closed = tmp_path / "closed.safetensors"
    gen = finetune_iter(model, cases, cfg, out=closed)
    for _ in range(2):
        next(gen)
    gen.close()
    assert load_checkpoint(closed)[1]["provenance"]["parent"] is not None
    assert _same(init_before, _state(model.network))
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors") == \
        ["again.safetensors", "cancelled.safetensors", "closed.safetensors", "m.safetensors"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


DETERMINISM = """
import hashlib, sys
import numpy as np, torch
torch.set_num_threads(1)
from napari_drunet.core.train.dataset import Case
from napari_drunet.core.train.loop import TrainConfig, train
rng = np.random.default_rng(5)
cases = [Case.from_arrays(f"c{i}", rng.random((1, 32, 32)).astype(np.float32),
                          rng.random((32, 32)) > 0.6) for i in range(2)]
cfg = TrainConfig(features=(4, 8), max_steps=int(sys.argv[1]), patch_size=(16, 16),
                  batch_size=2, device="cpu", seed=int(sys.argv[2]), val_fraction=0.0,
                  num_threads=1)
net = train(cases, cfg).model.network
h = hashlib.sha256()
for k, v in sorted(net.state_dict().items()):
    h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
print(h.hexdigest())
"""
STEPS = 6


def _train_digest_in_process(seed: int) -> str:
    namespace: dict = {}
    old = sys.argv
    try:
        sys.argv = ["x", str(STEPS), str(seed)]
        from contextlib import redirect_stdout
        from io import StringIO

        buf = StringIO()
        with redirect_stdout(buf):
            exec(compile(DETERMINISM, "determinism", "exec"), namespace)
        return buf.getvalue().strip()
    finally:
        sys.argv = old


def test_same_seed_same_weights_in_one_process():
    first, second = _train_digest_in_process(3), _train_digest_in_process(3)
    assert first == second
    assert _train_digest_in_process(4) != first  # the seed matters (the test can fail)


def test_same_seed_same_weights_across_processes():
    """A fresh interpreter reproduces this process's weights bit for bit."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", DETERMINISM, str(STEPS), "3"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == _train_digest_in_process(3)


def test_model_copy_is_independent(model):
    """Fine-tuning works on copies; the GUI's live model must never change underneath."""
    twin = model.copy()
    with torch.no_grad():
        for p in twin.network.parameters():
            p.add_(1.0)
    assert not _same(_state(twin.network), _state(model.network))
    assert copy.deepcopy(model.meta) == model.meta
