"""The plugin's background warm-up: it must really load what the first runs would import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from napari_drunet.gui import _state, _warmup

PROBE = r"""
import gc, json, sys
from napari_drunet.gui import _warmup
thresholds = gc.get_threshold()
watched = ["torch._dynamo", "scipy.stats", "skimage.transform", "pandas",
           "napari_drunet.core.evaluation.metrics", "napari_drunet.core.train.loop"]
before = {m: m in sys.modules for m in watched}
thread = _warmup.start()
done = _warmup.wait(300)
after = {m: m in sys.modules for m in watched}
import pint
# napari's layer transforms use pint's application registry; built lazily, it is 0.4-0.6 s of
# parsing in the first layer of a session
after["pint registry"] = type(pint.get_application_registry().get()).__name__ == "UnitRegistry"
print(json.dumps({"started": thread is not None, "done": done, "seconds": _warmup.seconds(),
                  "before": before, "after": after, "same": _warmup.start() is thread,
                  "frozen": gc.get_freeze_count(), "thresholds_kept": gc.get_threshold() == thresholds}))
"""


def _probe(**env: str) -> dict:
    full = dict(os.environ, **env)
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=600, env=full)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_warmup_imports_what_the_first_runs_need():
    res = _probe(NAPARI_DRUNET_WARMUP="1")
    # a fresh interpreter has none of them: the warm-up is what loads them
    assert not any(res["before"].values()), res["before"]
    assert res["started"] and res["done"] and res["same"]
    assert all(res["after"].values()), res["after"]
    assert isinstance(res["seconds"], float) and res["seconds"] > 0
    # what the imports created is out of the collector's way, not scanned by a long collection
    assert res["frozen"] > 100_000 and res["thresholds_kept"]


GIL_PROBE = r"""
import json, threading, time
from napari_drunet.gui import _warmup
out = {}
def load():
    t0 = time.perf_counter()
    out["loaded"] = _warmup.preload_torch_libraries()
    out["seconds"] = time.perf_counter() - t0
thread = threading.Thread(target=load)
gaps, last = [], time.perf_counter()
thread.start()
while thread.is_alive():
    time.sleep(0.002)
    now = time.perf_counter()
    gaps.append(now - last)
    last = now
import torch
out["longest_gap"], out["works"] = max(gaps), float(torch.ones(2).sum()) == 2.0
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libtorch.so: Linux wheels")
def test_torch_libraries_load_without_holding_the_gil():
    """``dlopen`` of libtorch took 1.3-1.8 s with the GIL held (the window froze meanwhile)."""
    proc = subprocess.run([sys.executable, "-c", GIL_PROBE], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["loaded"] == ["libtorch.so"] and res["works"]
    # holding the GIL, the main thread's loop would stop for the whole load
    assert res["longest_gap"] < 0.5 * res["seconds"], res


def test_warmup_can_be_disabled():
    res = _probe(NAPARI_DRUNET_WARMUP="0")
    assert not res["started"] and res["done"] and res["seconds"] is None
    assert not res["after"]["torch._dynamo"]


def test_every_widget_starts_the_warmup(monkeypatch):
    calls = []
    monkeypatch.setattr(_warmup, "start", lambda: calls.append(1))

    class Viewer:  # get_state only needs a weak-referenceable object
        pass

    viewer = Viewer()
    state = _state.get_state(viewer)
    assert calls == [1]
    assert _state.get_state(viewer) is state
    assert len(calls) == 2


def test_segment_says_loading_until_the_engine_is_there(make_napari_viewer, monkeypatch):
    from napari_drunet.gui.segment import SegmentWidget

    waiting = []
    monkeypatch.setattr(_warmup, "when_ready", waiting.append)
    seg = SegmentWidget(make_napari_viewer())
    assert seg.status.text() == "loading the engine…" and seg.model_combo.count() == 0
    for callback in waiting:  # what the end of the warm-up calls on the GUI thread
        callback()
    assert seg.status.text() == "" and seg.model_combo.count() > 0
