"""GUI scenario of ``benchmarks/perf.py`` (run under Xvfb): event-loop stalls and click-to-mask.

A 10 ms ``QTimer`` heartbeat runs in a real napari viewer while inference and fine-tuning run in
napari ``thread_worker``\\ s; the longest interval between two heartbeats is the worst stall a
user would feel. Click-to-mask goes through the Segment widget (Run button to labels layer).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


class Heartbeat:
    """Timestamps of a 10 ms QTimer; :meth:`longest` is the longest gap (ms) in a window."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def longest(self, start: float, end: float) -> float:
        t = [x for x in self.ticks if start <= x <= end]
        return 1000.0 * max(np.diff(t), default=0.0) if len(t) > 1 else float("nan")

    def ticks_in(self, start: float, end: float) -> int:
        return sum(start <= x <= end for x in self.ticks)


def _run_worker(gen_factory: Any, on_yield: Any = None, on_return: Any = None) -> float:
    """Run a generator in a napari thread_worker inside a nested Qt event loop; return seconds."""
    from napari.qt.threading import create_worker
    from qtpy.QtCore import QEventLoop

    loop = QEventLoop()
    worker = create_worker(gen_factory, _start_thread=False)
    if on_yield is not None:
        worker.yielded.connect(on_yield)
    if on_return is not None:
        worker.returned.connect(on_return)
    errors: list[BaseException] = []
    worker.errored.connect(errors.append)
    worker.finished.connect(loop.quit)
    t0 = time.perf_counter()
    worker.start()
    loop.exec_()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def _wait(seconds: float) -> None:
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


def gui(opts: dict[str, Any]) -> dict[str, Any]:
    import napari
    import torch

    from napari_drunet.core.models.model import Model
    from napari_drunet.core.train.loop import default_finetune_config, finetune_iter

    from ._perf_common import drive_cases, drive_image, load_network

    torch.set_num_threads(opts["threads"])
    viewer = napari.Viewer(show=True)
    rgb, source = drive_image()
    layer = viewer.add_image(rgb, rgb=True, name="drive")
    net, desc = load_network(opts["model"], "cpu")
    model = Model(net, {"threshold": 0.5}, device="cpu")
    beat = Heartbeat(10)
    _wait(0.5)
    out: dict[str, Any] = {"network": desc, "image": source}

    # opening the plugin: its widgets start the background warm-up (gui/_warmup.py) that moves
    # one-off imports (torch._dynamo, pandas, skimage.color) out of the first runs; measured
    # here as a phase of its own, from the widget's creation until the warm-up has finished
    from napari_drunet.gui import _warmup
    from napari_drunet.gui.segment import SegmentWidget

    t0 = time.perf_counter()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="segment")
    created = time.perf_counter()
    while not _warmup.wait(0.0):
        _wait(0.01)
    _wait(0.2)
    t1 = time.perf_counter()
    out["plugin_open"] = {"create_widget_ms": 1000.0 * (created - t0),
                          "warmup_seconds": _warmup.seconds(),
                          "warmup_enabled": _warmup.enabled(),
                          "longest_stall_during_warmup_ms": beat.longest(created, t1)}

    # inference: a cold run (first of the session), then warm runs; the result is shown as a
    # labels layer on the GUI thread (first time: a new layer; then its data is replaced)
    def inference_phase(n_pred: int) -> dict[str, Any]:
        shown: list[float] = []

        def job():
            pred = None
            for _ in range(n_pred):
                pred = yield from model.predict_iter(rgb, is_rgb=True)
            return pred

        def show(pred: Any) -> None:
            t = time.perf_counter()
            shown.append(t)
            if "drive labels" in viewer.layers:
                viewer.layers["drive labels"].data = pred.mask
            else:
                viewer.add_labels(pred.mask, name="drive labels")
            shown.append(time.perf_counter())

        t0 = time.perf_counter()
        secs = _run_worker(job, lambda rec: None, show)
        _wait(0.2)
        t1 = time.perf_counter()
        return {"seconds": secs, "runs": n_pred, "heartbeats": beat.ticks_in(t0, t1),
                "longest_stall_ms": beat.longest(t0, t1),
                "longest_stall_while_running_ms": beat.longest(t0, shown[0]),
                "show_result_ms": 1000.0 * (shown[1] - shown[0])}

    out["inference_cold"] = inference_phase(1)
    out["inference"] = inference_phase(3)

    # fine-tuning on 5 corrected slices (a few steps, with validation): cold, then warm
    cases, val, _, data = drive_cases(5, 0)
    steps = 4 if opts["quick"] else 20
    cfg = default_finetune_config(patch_size=(256, 256), batch_size=2, steps_per_epoch=2,
                                  max_steps=steps, device="cpu", num_threads=opts["threads"])

    def finetune_phase() -> dict[str, Any]:
        def finetune_job():
            return (yield from finetune_iter(model, cases, cfg, val_cases=val))

        t0 = time.perf_counter()
        secs = _run_worker(finetune_job, lambda rec: None)
        _wait(0.2)
        t1 = time.perf_counter()
        return {"seconds": secs, "steps": steps, "data": data,
                "longest_stall_ms": beat.longest(t0, t1), "heartbeats": beat.ticks_in(t0, t1)}

    out["finetune_cold"] = finetune_phase()
    out["finetune"] = finetune_phase()

    # click-to-mask through the Segment widget (model file loaded on the first run)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.safetensors"
            model.save(path)
            widget.set_image_layers([layer.name])
            widget.set_model_source(str(path))
            idx = widget.device_combo.findText("cpu")
            widget.device_combo.setCurrentIndex(idx)
            clicks = []
            for _ in range(3):
                t0 = time.perf_counter()
                job = widget.run()
                while job is not None and job.running:
                    _wait(0.002)
                clicks.append(time.perf_counter() - t0)
                if job is not None and job.error is not None:
                    raise job.error
            t1 = time.perf_counter()
            out["widget_click_to_mask"] = {"first_s": clicks[0], "warm_s": min(clicks[1:]),
                                           "longest_stall_ms": beat.longest(t0, t1)}
    except Exception as exc:  # the widget is optional for this benchmark
        out["widget_click_to_mask"] = {"error": f"{type(exc).__name__}: {exc}"}
    beat.timer.stop()
    viewer.close()
    return out
