"""Pay one-off import costs when the plugin opens, not in the middle of the first run.

Measured under Xvfb (docs/performance.md): the first fine-tune of a session stalled napari's
event loop for 270-410 ms because ``torch.optim.AdamW`` imports ``torch._dynamo`` the first time
an optimizer is built and our metrics and rescaling import ~400 scipy/skimage modules; napari's
first labels layer imports ``pandas`` and ``skimage.color`` (~0.9 s of CPU). Imports hold the GIL
in long stretches, so even from a worker thread they freeze the GUI, and the heap they leave
makes CPython's next full garbage collection a 200-300 ms pause (it landed in the first
inference).

:func:`start` runs those imports once per process in a daemon thread as soon as a widget of the
plugin is created, i.e. while the user is still choosing an image and a model. ``wait`` lets a
run (and the benchmarks) make sure the warm-up is over. ``NAPARI_DRUNET_WARMUP=0`` turns it off.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

#: modules imported lazily on first use: by napari's first labels layer (pandas, skimage.color),
#: by our engine on the first fine-tune (metrics -> scipy.stats, rescaling -> scipy.ndimage,
#: skimage.transform; ~400 modules, a 270 ms stall when they were not warmed up)
MODULES = ("pandas", "skimage.color", "scipy.linalg", "scipy.ndimage", "skimage.transform",
           "napari_drunet.core.metrics", "napari_drunet.core.rescale",
           "napari_drunet.core.training", "napari_drunet.core.inference")

_lock = threading.Lock()
_thread: threading.Thread | None = None
_seconds: float | None = None


def enabled() -> bool:
    return os.environ.get("NAPARI_DRUNET_WARMUP", "1").strip().lower() not in ("0", "false", "no")


def _work() -> None:
    global _seconds
    t0 = time.perf_counter()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional module napari may not even need
            log.debug("warm-up: cannot import %s: %s", name, exc)
    try:
        import torch

        # building an optimizer is what imports torch._dynamo (torch.optim's lazy decorators)
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    except Exception as exc:
        log.debug("warm-up: optimizer import failed: %s", exc)
    # the imports leave ~10^6 new long-lived objects; CPython's next full collection (when new
    # objects reach 25 % of the old ones) would scan them all, a 200-300 ms GIL pause that
    # otherwise landed in the first inference. Collect now, while the user is still choosing.
    gc.collect()
    _seconds = time.perf_counter() - t0


def start() -> threading.Thread | None:
    """Start the warm-up thread (once per process); return it, or None when disabled."""
    global _thread
    if not enabled():
        return None
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_work, name="napari-drunet-warmup", daemon=True)
            _thread.start()
        return _thread


def wait(timeout: float | None = None) -> bool:
    """Block until the warm-up has finished (True) or ``timeout`` seconds passed (False)."""
    thread = _thread
    if thread is None:
        return True
    thread.join(timeout)
    return not thread.is_alive()


def seconds() -> float | None:
    """Duration of the finished warm-up, None while it runs or when it never ran."""
    return _seconds
