"""Validation during training (:mod:`napari_drunet.core.train.loop`).

Each validation case is predicted whole with sliding-window inference and scored with the Dice
of every foreground class within its region mask; a binary model at its threshold, or at the
best pooled one over the validation cases (``TrainConfig.val_threshold = "best"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from ..errors import Cancelled
from ..progress import Progress, mapped
from .config import TrainConfig
from .sampling import PreparedCase


def _nanmean(values: Any) -> float:
    values = np.asarray(values, float)
    return float(np.nanmean(values)) if values.size and not np.isnan(values).all() else math.nan


def run_validation(net: torch.nn.Module, cases: list[PreparedCase], cfg: TrainConfig, patch: tuple,
              device: torch.device, should_stop: Callable[[], bool] | None, step: int,
              total: int) -> Generator[Progress, None, tuple[float, list[float]] | None]:
    """Predict each validation case whole (sliding window); Dice per foreground class within
    its region mask. Return (mean Dice over cases, Dice per class), or None when stopped."""
    from ..evaluation.metrics import evaluate_case
    from ..evaluation.threshold import pooled_best_threshold
    from ..infer.config import InferenceConfig
    from ..infer.predict import predict_iter, probabilities_to_labels

    # on a CPU the checkpoint choice stays float32 (training steps may run in bf16 there):
    # the same choice on every machine, whether or not it has AMX
    icfg = InferenceConfig(tile_size=patch, batch_size=cfg.batch_size, slice_axis=cfg.slice_axis,
                           device=str(device), amp=cfg.amp and device.type == "cuda",
                           threshold=cfg.threshold)
    k = int(net.config["out_channels"])
    labels = [1] if k == 1 else list(range(1, k))
    probs = []
    for case in cases:
        try:
            prob = yield from mapped(predict_iter(net, case.image, icfg),
                                     lambda _, name=case.name: Progress(step, total, f"validating {name}"),
                                     should_stop)
        except Cancelled:
            return None
        probs.append(prob)
    threshold = cfg.threshold
    if k == 1 and cfg.val_threshold == "best" and probs:
        threshold = pooled_best_threshold([p[0] for p in probs], [c.label for c in cases],
                                          [c.mask for c in cases])[0]
    per_case = []
    for case, prob in zip(cases, probs, strict=True):
        res = evaluate_case(probabilities_to_labels(prob, threshold), case.label,
                            mask=case.mask, labels=labels, hd=False)
        per_case.append([res["per_class"][c]["dice"] for c in labels])
    table = np.array(per_case, float)
    mean = _nanmean([_nanmean(row) for row in table])
    return (0.0 if math.isnan(mean) else mean), [_nanmean(col) for col in table.T]
