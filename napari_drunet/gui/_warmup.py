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

Two stalls were left inside the warm-up thread itself, both measured with a probe on the main
thread: the dynamic loading of ``libtorch_cpu`` (1.3-1.8 s under load; CPython's extension
loader and ``ctypes.CDLL`` hold the GIL during ``dlopen``), and CPython's full garbage
collections among the ~10^6 objects the imports create (80-190 ms each, twice per torch import;
the final ``gc.collect()`` 200-300 ms). So the libraries are first loaded by calling libc's
``dlopen`` through ctypes (a foreign call: the GIL is released), full collections are held off
while the imports run, and what the imports created is then moved out of the collector's way
with ``gc.freeze()`` (instant) instead of being scanned by ``gc.collect()``.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: modules imported lazily on first use: by napari's first image layer (xarray, to check whether
#: the data is an xarray: 110 modules, 0.3-1 s), by its first labels layer (pandas, skimage.color),
#: by our engine on the first fine-tune (metrics -> scipy.stats, rescaling -> scipy.ndimage,
#: skimage.transform; ~400 modules, a 270 ms stall when they were not warmed up)
#: and by the plugin's reader on the first image opened, on the GUI thread (imports measured
#: under load 16: nibabel 2.6 s, tifffile 0.13 s, PIL 0.08 s), the project module on the first
#: case
MODULES = ("torch", "napari_drunet.core.device", "napari_drunet.core.models.model", "pandas", "xarray",
           "skimage.color", "scipy.linalg", "scipy.ndimage", "skimage.transform",
           "napari_drunet.core.evaluation.metrics", "napari_drunet.core.image.rescale",
           "napari_drunet.core.train.loop", "napari_drunet.core.infer.predict",
           "nibabel", "tifffile", "PIL.Image", "napari_drunet.core.correction.project")

_lock = threading.Lock()
_thread: threading.Thread | None = None
_seconds: float | None = None
_devices: list[str] | None = None
_waiting: list[Callable[[list[str]], None]] = []
_notifier: Any = None  # a QObject of the GUI thread: its signal brings the end of the warm-up


def enabled() -> bool:
    return os.environ.get("NAPARI_DRUNET_WARMUP", "1").strip().lower() not in ("0", "false", "no")


#: torch's C++ libraries, loaded by path before ``import torch`` (its dependencies follow)
TORCH_LIBRARIES = ("libtorch.so", "libtorch.dylib")
_RTLD_NOW = 2


def preload_torch_libraries() -> list[str]:
    """``dlopen`` torch's C++ libraries with the GIL released; the names loaded.

    ``import torch`` then finds them loaded (same files, by path: no second copy). Where libc's
    ``dlopen`` cannot be called (Windows) nothing is done and torch loads them itself.
    """
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return []
    try:
        dlopen = ctypes.CDLL(None).dlopen  # a CDLL function: ctypes releases the GIL around it
    except (AttributeError, OSError, TypeError):
        return []
    dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    lib = os.path.join(os.path.dirname(spec.origin), "lib")
    loaded = []
    for name in TORCH_LIBRARIES:
        path = os.path.join(lib, name)
        if os.path.exists(path) and dlopen(path.encode(), _RTLD_NOW):
            loaded.append(name)
    return loaded


class _NoFullCollections:
    """Hold off CPython's full (generation 2) collections while the imports run; on exit move
    every object alive into the permanent generation (``gc.freeze``), which later full
    collections skip. Young garbage is still collected meanwhile."""

    def __enter__(self) -> None:
        self.thresholds = gc.get_threshold()
        gc.set_threshold(self.thresholds[0], self.thresholds[1], 1_000_000)

    def __exit__(self, *exc: object) -> None:
        gc.freeze()
        gc.set_threshold(*self.thresholds)


def _work() -> None:
    global _seconds, _devices
    t0 = time.perf_counter()
    with _NoFullCollections():
        _import_modules()
    try:
        from ..core.device import available_devices

        _devices = available_devices()
    except Exception as exc:
        log.debug("warm-up: no device list: %s", exc)
        _devices = ["auto", "cpu"]
    _seconds = time.perf_counter() - t0
    if _notifier is not None:
        _notifier.done.emit()  # queued to the GUI thread


def _import_modules() -> None:
    try:
        preload_torch_libraries()
    except Exception as exc:  # torch then loads them itself (with the GIL held)
        log.debug("warm-up: cannot preload torch's libraries: %s", exc)
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
    try:
        _first_layer_costs()
    except Exception as exc:  # another napari / vispy version: the first layer pays them
        log.debug("warm-up: first-layer costs not paid: %s", exc)


def _first_layer_costs() -> None:
    """What napari's first labels layer computes once per process, apart from GL: its default
    random colormap (the real ``skimage.color`` import, which skimage defers to first use) and
    vispy's dash patterns of the polygon tool's lines (cached after the first time); 0.4-0.9 s
    each under load, on the GUI thread, when the first result was shown. And pint's unit
    registry, which napari's layer transforms build on first use by parsing pint's unit
    definitions (0.4-0.6 s of Python in the first layer of a session: the first case of an
    opened project)."""
    import pint
    from napari.utils.colormaps import label_colormap
    from vispy.visuals.line.dash_atlas import DashAtlas

    label_colormap(49, 0.5, background_value=0)
    DashAtlas()
    pint.get_application_registry().pixel  # noqa: B018 (the attribute builds the registry)


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
ENGINE = ("torch", "napari_drunet.core.device", "napari_drunet.core.models.model",
          "napari_drunet.core.models.checkpoint")


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
