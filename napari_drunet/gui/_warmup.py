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

Importing torch itself is the largest of those costs (2.9-7 s): the first Segment widget used to
import it on the GUI thread to list the devices. The warm-up lists them instead, and
:func:`fill_devices` completes the widgets' device boxes when it is done; :func:`when_ready`
defers what needs the engine (the Segment widget's model list reads model headers).
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: modules imported lazily on first use: by napari's first labels layer (pandas, skimage.color),
#: by our engine on the first fine-tune (metrics -> scipy.stats, rescaling -> scipy.ndimage,
#: skimage.transform; ~400 modules, a 270 ms stall when they were not warmed up)
MODULES = ("torch", "napari_drunet.core.device", "napari_drunet.core.model", "pandas", "skimage.color", "scipy.linalg", "scipy.ndimage", "skimage.transform",
           "napari_drunet.core.metrics", "napari_drunet.core.rescale",
           "napari_drunet.core.training", "napari_drunet.core.inference")

_lock = threading.Lock()
_thread: threading.Thread | None = None
_seconds: float | None = None
_devices: list[str] | None = None
_waiting: list[Callable[[list[str]], None]] = []
_notifier: Any = None  # a QObject of the GUI thread: its signal brings the end of the warm-up


def enabled() -> bool:
    return os.environ.get("NAPARI_DRUNET_WARMUP", "1").strip().lower() not in ("0", "false", "no")


def _work() -> None:
    global _seconds, _devices
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
    try:
        from ..core.device import available_devices

        _devices = available_devices()
    except Exception as exc:
        log.debug("warm-up: no device list: %s", exc)
        _devices = ["auto", "cpu"]
    _seconds = time.perf_counter() - t0
    if _notifier is not None:
        _notifier.done.emit()  # queued to the GUI thread


def _make_notifier() -> Any:
    from qtpy.QtCore import QObject, Signal

    class Notifier(QObject):
        done = Signal()

    notifier = Notifier()
    notifier.done.connect(_deliver)
    return notifier


def _deliver() -> None:
    while _waiting:
        callback = _waiting.pop(0)
        try:
            callback()
        except Exception as exc:  # a widget closed meanwhile, say: the others still get theirs
            log.error("napari-drunet: after the warm-up: %s", exc, exc_info=exc)


#: what the widgets need before they can list models and devices (torch, via core.model)
ENGINE = ("torch", "napari_drunet.core.device", "napari_drunet.core.model",
          "napari_drunet.core.checkpoint")


def _imported(names: tuple[str, ...]) -> bool:
    """Every module fully imported (not half-way in another thread: importing it here would
    wait for that thread, holding the GUI)."""
    for name in names:
        module = sys.modules.get(name)
        if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
            return False
    return True


def when_ready(callback: Callable[[], None]) -> None:
    """Call ``callback()`` on the GUI thread as soon as the engine (torch) is imported: at
    once when it already is or when the warm-up is off (it then imports torch here), else when
    the warm-up thread has finished."""
    global _notifier
    if not enabled() or _imported(ENGINE) or _devices is not None:
        callback()
        return
    if _notifier is None:
        _notifier = _make_notifier()
    _waiting.append(callback)
    start()
    if _devices is not None:  # it ended between the check and the append
        _deliver()


def devices() -> list[str]:
    """The device names a user can pick (listed by the warm-up, else now)."""
    if _devices is not None:
        return list(_devices)
    from ..core.device import available_devices

    return available_devices()


def fill_devices(combo: Any) -> None:
    """Put "auto" and "cpu" into the device box ``combo`` now, the accelerators (cuda, mps)
    once the warm-up has imported torch; the user's choice is kept."""
    combo.addItems(["auto", "cpu"])

    def fill() -> None:
        from ._progress import is_deleted

        if is_deleted(combo):
            return
        current = combo.currentText()
        for name in devices():
            if combo.findText(name) < 0:
                combo.addItem(name)
        combo.setCurrentText(current)

    when_ready(fill)


def start() -> threading.Thread | None:
    """Start the warm-up thread (once per process); return it, or None when disabled."""
    global _thread, _notifier
    if not enabled():
        return None
    with _lock:
        if _thread is None:
            if _notifier is None and threading.current_thread() is threading.main_thread():
                _notifier = _make_notifier()
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
