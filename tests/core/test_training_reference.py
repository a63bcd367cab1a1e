"""The training loop gives the weights it gave before its split into small functions.

The fingerprints below were recorded with the loop of main at a74c812 (one function with
closures) on CPU, one thread. A change of the random draws, of the step order, of the
schedule or of the best-keeping moves them far beyond the tolerance; float noise of another
CPU stays inside it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_drunet.core.models.model import Model
from napari_drunet.core.train.loop import TrainConfig, TrainResult, default_finetune_config, train

from .test_training import disks

# (fingerprint of the weights, losses of the steps, validation Dice per epoch, steps, reason)
NEW_MODEL = (65.58108203223964, [1.3359732329845428, 1.0528285503387451, 0.8475686609745026],
             [0.33792917004595835, 0.4379462767766066, 0.7834549878345499], 12, "completed")
FINETUNED = (76.63641719007255, [0.9754918813705444, 0.9272941748301188],
             [0.763613068545804, 0.8086838534599728, 0.8777614138438881], 6, "completed")


def fingerprint(net: torch.nn.Module) -> float:
    """One number from every weight and buffer: a fixed random projection of all values."""
    values = torch.cat([v.detach().double().flatten() for v in net.state_dict().values()])
    weights = torch.from_numpy(np.random.default_rng(0).normal(size=values.numel()))
    return float(values @ weights)


def summary(res: TrainResult) -> tuple:
    losses = [h["loss"] for h in res.history if "loss" in h]
    dices = [h.get("val_dice") for h in res.history]
    return fingerprint(res.model.network), losses, dices, res.steps, res.stop_reason


def new_model_run(seed: int = 0) -> TrainResult:
    """A new model: augmentation, dropout, warm-up + cosine, validation and best-keeping."""
    cfg = TrainConfig(features=(8, 16), epochs=3, steps_per_epoch=4, patch_size=(32, 32),
                      batch_size=2, device="cpu", val_fraction=0.34, dropout=0.1, lr=3e-3,
                      warmup_steps=2, rotate=10.0, scale=0.1, degrade=0.5, seed=seed,
                      amp=False)  # recorded in float32 (bf16 runs where the CPU has AMX)
    return train([disks(i) for i in range(3)], cfg)


def finetune_run(init: Model) -> TrainResult:
    """Fine-tuning guards: frozen encoder, L2-SP, replay, validation of the start weights."""
    cfg = default_finetune_config(max_steps=6, steps_per_epoch=3, device="cpu", lr=3e-3,
                                  time_budget=None, freeze_encoder=True, l2sp=1e-2,
                                  replay_fraction=0.5, batch_size=3, amp=False)
    return train([disks(5)], cfg, init, val_cases=[disks(6)], replay_cases=[disks(7)])


def check(got: tuple, expected: tuple) -> None:
    fp, losses, dices, steps, reason = expected
    assert got[0] == pytest.approx(fp, rel=1e-5)
    assert got[1] == pytest.approx(losses, rel=1e-4)
    assert got[2] == pytest.approx(dices, rel=1e-4, abs=1e-6)
    assert got[3:] == (steps, reason)


def test_new_model_weights_as_before():
    res = new_model_run()
    check(summary(res), NEW_MODEL)
    # the fingerprint tells runs apart: another seed is far outside the tolerance
    other = fingerprint(new_model_run(seed=1).model.network)
    assert other != pytest.approx(NEW_MODEL[0], rel=1e-3)


def test_finetuned_weights_as_before():
    init = new_model_run().model
    check(summary(finetune_run(init)), FINETUNED)
