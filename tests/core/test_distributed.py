"""Data-parallel training under ``torchrun`` (2 CPU processes, gloo on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from napari_drunet.core.errors import InputError
from napari_drunet.core.models.checkpoint import read_meta
from napari_drunet.core.train import distributed as ddp

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import hashlib, json, os, sys
    import numpy as np
    import torch
    from napari_drunet.core.train.dataset import Case
    from napari_drunet.core.train.loop import TrainConfig, train

    torch.set_num_threads(1)
    out_dir = sys.argv[1]
    cases = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        lab = np.zeros((32, 32), np.int64)
        y, x = rng.integers(6, 26, 2)
        lab[y - 5:y + 5, x - 5:x + 5] = 1
        img = rng.normal(0, 0.5, (1, 32, 32)) + 1.5 * lab
        cases.append(Case.from_arrays(f"c{seed}", img.astype(np.float32), lab))
    cfg = TrainConfig(features=(8, 16), epochs=2, steps_per_epoch=4, patch_size=(16, 16),
                      batch_size=2, device="cpu", val_fraction=0.0)
    messages = []
    res = train(cases, cfg, out=os.path.join(out_dir, "model.safetensors"),
                callback=lambda p: messages.append(p.message))
    rank = int(os.environ["RANK"])
    digest = hashlib.sha256()
    for key, value in sorted(res.model.network.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"hash": digest.hexdigest(), "steps": res.steps, "path": res.path,
                   "messages": sum(bool(m) for m in messages),
                   "initialized": torch.distributed.is_initialized()}, fh)
''')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp.init_distributed() == (0, 1, 0)
    assert not ddp.is_distributed() and ddp.rank() == 0
    assert ddp.all_reduce_mean(2.5) == 2.5 and ddp.all_reduce_min(3) == 3
    assert ddp.any_rank(True) and not ddp.any_rank(False)
    net = torch.nn.Linear(2, 2)
    assert ddp.wrap(net, torch.device("cpu")) is net and ddp.unwrap(net) is net
    ddp.barrier()
    ddp.cleanup()


def test_world_size_without_torchrun_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(InputError, match="torchrun"):
        ddp.init_distributed()


def test_torchrun_two_processes(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
           "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["hash"] == r1["hash"]  # DDP kept the replicas in sync
    assert r0["steps"] == r1["steps"] == 8
    assert r0["path"] and r1["path"] is None  # only rank 0 writes the checkpoint
    assert r0["messages"] == 8 and r1["messages"] == 0  # only rank 0 reports for printing
    assert not r0["initialized"] and not r1["initialized"]  # the group was left again
    meta = read_meta(tmp_path / "model.safetensors")
    assert meta["training"]["config"]["epochs"] == 2
