"""The plugin's background warm-up: it must really load what the first runs would import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from napari_drunet.gui import _state, _warmup

PROBE = r"""
import json, sys
from napari_drunet.gui import _warmup
watched = ["torch._dynamo", "scipy.stats", "skimage.transform", "pandas",
           "napari_drunet.core.metrics", "napari_drunet.core.training"]
before = {m: m in sys.modules for m in watched}
thread = _warmup.start()
done = _warmup.wait(300)
after = {m: m in sys.modules for m in watched}
print(json.dumps({"started": thread is not None, "done": done, "seconds": _warmup.seconds(),
                  "before": before, "after": after, "same": _warmup.start() is thread}))
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
