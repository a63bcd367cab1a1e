"""The fine-tune ETA never promises more time than the time budget leaves (issue 16.6)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_drunet.core.train.dataset import Case
from napari_drunet.core.train.loop import TrainConfig, train_iter


def _case(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    lab = np.zeros((48, 48), np.int64)
    lab[10:30, 12:34] = 1
    img = rng.normal(0, 0.5, (1, 48, 48)) + 1.5 * lab
    return Case.from_arrays(f"c{seed}", img.astype(np.float32), lab)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_eta_is_capped_by_the_time_budget(schedule):
    budget = 1.5
    cfg = TrainConfig(features=(4, 8), epochs=1000, steps_per_epoch=10, patch_size=(32, 32),
                      batch_size=2, device="cpu", val_fraction=0.0, dropout=0.0,
                      time_budget=budget, schedule=schedule, num_threads=1)
    gen = train_iter([_case(0)], cfg)
    started = time.perf_counter()
    etas = []
    while True:
        try:
            rec = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        eta = rec.metrics.get("eta_s")
        if eta is not None:
            left = budget - (time.perf_counter() - started)
            etas.append(eta)
            # the generator's clock started a little before ours: a small slack
            assert eta <= max(0.0, left) + 0.25, (rec.step, eta, left)
    assert result.stop_reason == "time_budget" and etas
    assert etas[-1] < budget  # the last estimate is about what is left, not 10 000 steps
