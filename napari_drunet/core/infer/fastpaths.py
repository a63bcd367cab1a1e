"""Fast paths and fallbacks of sliding-window inference (:mod:`napari_drunet.core.infer.predict`).

* :func:`prepared_network`: a private inference copy of a network (batch norms folded,
  channels-last, ``torch.compile``), cached weakly per network until its weights change.
* :func:`set_modes`: eval mode for inference (dropout kept active for Monte-Carlo dropout),
  returning the flags to restore.
* :func:`run_with_oom_fallback`: tries a list of attempts in turn (e.g. half tiles, then the
  CPU) until one does not run out of memory.
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from collections.abc import Callable, Generator, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..memory import is_out_of_memory
from ..progress import Progress
from .tiling import network_dims


# ---------------------------------------------------------------------- out-of-memory fallback
def run_with_oom_fallback(run: Callable[[dict[str, Any]], Generator[Progress, None, Any]],
                           attempts: Sequence[dict[str, Any]],
                           warnings: list[str]) -> Generator[Progress, None, Any]:
    """Run ``run(attempt)`` for each attempt in turn until one finishes without running out of
    memory; every retry appends a line to ``warnings``. Other errors propagate at once."""
    for i, attempt in enumerate(attempts):
        try:
            return (yield from run(attempt))
        except Exception as exc:  # noqa: BLE001 - filtered just below
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if i == len(attempts) - 1:
                raise InputError(
                    f"out of memory even with tile {attempt['tile']} and batch "
                    f"{attempt['batch']} on {attempt['device']}; try a smaller tile_size") from None
            nxt = attempts[i + 1]
            warnings.append(
                f"out of memory on {attempt['device']} (tile {attempt['tile']}, batch "
                f"{attempt['batch']}); retried on {nxt['device']} with tile {nxt['tile']}, "
                f"batch {nxt['batch']}")
    raise AssertionError("no attempts")  # pragma: no cover


# --------------------------------------------------------------------------- prepared networks
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()


def _fingerprint(network: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced, moved or updated in place."""
    return tuple((t.data_ptr(), t._version, str(t.device))
                 for t in itertools.chain(network.parameters(), network.buffers()))


def prepared_network(network: nn.Module, fold_bn: bool = True, channels_last: bool = False,
                     compile: bool = False) -> nn.Module:
    """Inference copy of ``network``: batch norms folded, channels-last, compiled as asked.

    The copy is cached per network (weakly) and rebuilt when the network's weights change, so
    repeated predictions with the same model pay for the copy once. Without any option the
    network itself is returned.
    """
    if not (fold_bn or channels_last or compile):
        return network
    key = (bool(fold_bn), bool(channels_last), bool(compile))
    stamp = _fingerprint(network)
    with _PREPARED_LOCK:
        cached = _PREPARED.get(network, {}).get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    from ..nets.networks import fold_batchnorm

    net = fold_batchnorm(network) if fold_bn else copy.deepcopy(network).eval()
    if channels_last:
        dims = network_dims(network)
        net = net.to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
    if compile:
        net = torch.compile(net, dynamic=False)
    with _PREPARED_LOCK:
        _PREPARED.setdefault(network, {})[key] = (stamp, net)
    return net


def set_modes(net: nn.Module, mc_dropout: bool) -> dict[nn.Module, bool]:
    saved = {m: m.training for m in net.modules()}
    net.eval()
    if mc_dropout:
        for m in net.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.train()
    return saved
