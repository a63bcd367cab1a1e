"""Longest GUI event-loop stall per user action, through the plugin's own widgets.

    xvfb-run -a python -m benchmarks.gui_stalls [--steps 6] [--trace] [--no-finetune] [--json out.json]

A 5 ms ``QTimer`` probe runs in a real napari viewer while the script clicks what a user clicks:
dock Segment (the first widget of the session: it starts the warm-up), dock Corrections, dock
Fine-tune, open a correction project (it restores its last case), show another case, open and
segment a DRIVE fundus photograph (2D) and the packaged MRI sample (3D), each a first time (new
labels layer) and again with the probability layer, add the current result as a case (after
each opened image, napari alone adds the same image and a labels layer of its shape: the floor
of an action that shows a new layer, measured in the same run), fine-tune a few steps, Stop a
fine-tune. An action's window runs from the click until its job has ended and the loop has been idle 0.3 s;
its figure is the longest gap between two probe ticks inside it (a gap of 5 ms means no stall),
with the CPU time the GUI thread used inside one gap (its own work, apart from the waiting for a
core that a loaded machine adds). The project is written by a child process first, so that nothing of the
engine is imported in this process before Segment is docked (as in a fresh napari session).

Needs the packaged models; DRIVE (``$DRUNET_SHARED_DATA/DRIVE``) is optional (synthetic image
otherwise). Not a test: timings depend on the machine's load (repeat and report the spread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import DATA, REPO

DRIVE_IMAGE = DATA / "DRIVE" / "test" / "images" / "01_test.tif"


class Probe:
    """Ticks of a ``interval_ms`` QTimer: wall time, the GUI thread's CPU time and the time
    spent painting the window so far (:class:`PaintClock`).

    On a loaded machine a gap between two ticks is the GUI thread's own work plus the time it
    waited for a core (or for the GIL); the CPU time it used inside the gap is the first part
    alone, the figure that does not grow with the other jobs on the machine.
    """

    def __init__(self, interval_ms: int = 5) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.paint = PaintClock()
        self.ticks: list[tuple[float, float, float]] = [self._now()]
        self.timer = QTimer()
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.setInterval(interval_ms)
        # the callback runs on the GUI thread: thread_time() is that thread's CPU time
        self.timer.timeout.connect(lambda: self.ticks.append(self._now()))
        self.timer.start()

    def _now(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.thread_time(), self.paint.seconds

    def longest(self, start: float, end: float) -> tuple[float, float, float]:
        """(longest gap, most GUI-thread CPU inside one gap, longest gap apart from the
        window's painting) in ms, between the last tick before ``start`` and ``end``."""
        before = [t for t in self.ticks if t[0] <= start]
        inside = [t for t in self.ticks if start < t[0] <= end]
        ticks = before[-1:] + inside
        pairs = list(zip(ticks, ticks[1:], strict=False))
        if not pairs:
            return float("nan"), float("nan"), float("nan")
        wall = max(b[0] - a[0] for a, b in pairs)
        cpu = max(b[1] - a[1] for a, b in pairs)
        unpainted = max((b[0] - a[0]) - (b[2] - a[2]) for a, b in pairs)
        return 1000.0 * wall, 1000.0 * cpu, 1000.0 * unpainted


class PaintClock:
    """Seconds the GUI thread spent painting the viewer window (its paint and update-request
    events, which is where the OpenGL canvas is rendered and composed).

    Under Xvfb the renderer is Mesa's software rasteriser (llvmpipe): one repaint of a
    1600×1000 viewer takes 30-100 ms there, and about a millisecond on a graphics card. The
    column that leaves it out is the work of the plugin and of napari's Python code.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._filter: Any = None
        self._inside = False

    def watch(self, widgets: list[Any]) -> None:
        from qtpy.QtCore import QEvent, QObject

        clock = self
        kinds = (QEvent.UpdateRequest, QEvent.Paint)

        class Filter(QObject):
            def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
                if clock._inside or event.type() not in kinds:
                    return False
                clock._inside = True  # deliver it here, timed, and stop it from going on
                t0 = time.perf_counter()
                try:
                    type(obj).event(obj, event)
                finally:
                    clock.seconds += time.perf_counter() - t0
                    clock._inside = False
                return True

        self._filter = Filter()
        for widget in widgets:
            widget.installEventFilter(self._filter)


class StackSampler:
    """(``--trace``) A thread that records where the GUI thread is while the probe is late:
    the frames of our package, napari and the engine's libraries, counted per action."""

    def __init__(self, probe: Probe, late_s: float = 0.03) -> None:
        import collections
        import threading

        self.probe, self.late_s, self.action = probe, late_s, ""
        self.counts: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)
        self.main = threading.main_thread().ident
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import traceback

        while True:
            time.sleep(0.005)
            if time.perf_counter() - self.probe.ticks[-1][0] < self.late_s:
                continue
            frame = sys._current_frames().get(self.main)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            keep = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack
                    if "napari_drunet" in f.filename or "gui_stalls" in f.filename]
            deepest = stack[-1]
            where = " < ".join(reversed(keep[-3:])) + f" | {Path(deepest.filename).name}:" \
                f"{deepest.lineno} {deepest.name}"
            self.counts[self.action][where] += 1

    def report(self, top: int = 6) -> None:
        for action, counter in self.counts.items():
            print(f"\n[{action}] GUI thread while the probe was late (5 ms samples):")
            for where, n in counter.most_common(top):
                print(f"  {n:5d}  {where}")


def pump(seconds: float) -> None:
    """Run the event loop for ``seconds``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


def wait_until(done: Callable[[], bool], timeout: float = 600.0) -> None:
    t0 = time.perf_counter()
    while not done():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("action did not finish")
        pump(0.01)


def idle(widgets: list[Any]) -> bool:
    """No job of these widgets is running."""
    return all(getattr(w, "job", None) is None or not w.job.running for w in widgets)


def make_project(folder: str) -> None:
    """(child process) A project with the packaged retina model and two DRIVE-like cases."""
    from dataclasses import replace

    import numpy as np

    from napari_drunet.core.correction.project import Project
    from napari_drunet.core.image.io import ImageData, read_image
    from napari_drunet.core.models.model import load_model

    proj = Project.create(folder)
    model = load_model("retina-vessels", "cpu")
    vid = proj.versions.add(model, source="retina-vessels")
    image = read_image(DRIVE_IMAGE) if DRIVE_IMAGE.exists() else ImageData(
        np.random.default_rng(0).random((3, 584, 565), np.float32), is_rgb=True)
    for i in range(2):
        # an RGB photo, as the Segment widget stores it (shown again as one RGB layer)
        img = replace(image, array=np.ascontiguousarray(image.array[:, :, ::-1])) if i else image
        pred = model.predict(img)
        proj.add_case(f"case{i}", img, pred.mask, pred.probabilities, model_version=vid)
    truth = proj.load_case("case0").correction
    truth[100:200, 100:200] = 1  # an edit: the case counts as corrected
    proj.save_correction("case0", truth)
    proj.mark_reviewed("case1", "all")


#: action, longest stall ms, most GUI-thread CPU ms in one, longest stall apart from painting
#: ms, seconds, load
Row = tuple[str, float, float, float, float, float]


def run(steps: int, trace: bool = False, finetune: bool = True) -> list[Row]:
    import napari

    viewer = napari.Viewer(show=True)
    probe = Probe(5)
    # the window composes the GL canvas; the canvas widget renders it (napari's private
    # attributes: this benchmark alone reaches into them)
    probe.paint.watch([viewer.window._qt_window,
                       viewer.window._qt_viewer.canvas._scene_canvas.native])
    sampler = StackSampler(probe) if trace else None
    pump(1.0)
    rows: list[Row] = []

    def action(name: str, click: Callable[[], Any], widgets: list[Any],
               until: Callable[[], bool] | None = None) -> None:
        if sampler is not None:
            sampler.action = name
        t0 = time.perf_counter()
        click()
        wait_until(lambda: idle(widgets) and (until is None or until()))
        t_done = time.perf_counter()
        pump(0.3)
        wall, cpu, unpainted = probe.longest(t0, time.perf_counter())
        rows.append((name, wall, cpu, unpainted, t_done - t0, os.getloadavg()[0]))
        print(f"{name:40s} {wall:8.1f} ms (GUI-thread CPU {cpu:6.1f} ms, "
              f"apart from painting {unpainted:6.1f} ms)  "
              f"({rows[-1][4]:.2f} s, load {rows[-1][5]:.1f})", flush=True)

    def napari_alone(data: Any, rgb: bool) -> None:
        """The same image and a labels layer of its shape added by napari alone (no plugin
        code): the floor of every action that shows a new layer, in this run."""
        import numpy as np

        shape = data.shape[:-1] if rgb else data.shape
        kind = f"{len(shape)}D {'x'.join(map(str, shape))}"
        action(f"napari alone: add_image {kind}",
               lambda: viewer.add_image(np.array(data), rgb=rgb, name="napari alone"), [])
        action(f"napari alone: add_labels {kind}",
               lambda: viewer.add_labels(np.zeros(shape, np.uint8), name="napari alone labels"),
               [])
        for layer_name in ("napari alone labels", "napari alone"):
            viewer.layers.remove(layer_name)
        pump(0.3)

    from napari_drunet.gui import _warmup

    docked: dict[str, Any] = {}

    def dock_segment() -> None:
        from napari_drunet.gui.segment import SegmentWidget

        docked["seg"] = SegmentWidget(viewer)
        viewer.window.add_dock_widget(docked["seg"], name="Segment")

    # until the warm-up has finished (it imports torch & co. in a thread: a stall there counts)
    action("dock Segment (first widget + warm-up)", dock_segment, [],
           until=lambda: _warmup.wait(0.0))

    def dock(key: str, name: str) -> Callable[[], None]:
        def click() -> None:
            from napari_drunet.gui.corrections import CorrectionsWidget
            from napari_drunet.gui.finetune import FinetuneWidget

            docked[key] = {"corr": CorrectionsWidget, "ft": FinetuneWidget}[key](viewer)
            viewer.window.add_dock_widget(docked[key], name=name)
        return click

    # one at a time, as the Plugins menu docks them
    action("dock Corrections", dock("corr", "Corrections"), [])
    action("dock Fine-tune", dock("ft", "Fine-tune"), [])
    seg, corr, ft = docked["seg"], docked["corr"], docked["ft"]
    seg.device_combo.setCurrentText("cpu")
    ft.device_combo.setCurrentText("cpu")

    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "project")
        subprocess.run([sys.executable, "-m", "benchmarks.gui_stalls", "--make-project", folder],
                       check=True, cwd=REPO)
        pump(0.5)
        action("open project (restores the last case)", lambda: corr.open_project(folder),
               [corr], until=lambda: "case1 labels" in viewer.layers)

        action("show another case (case0)", lambda: corr.show_case("case0"), [corr],
               until=lambda: "case0 labels" in viewer.layers)

        fundus = str(DRIVE_IMAGE) if DRIVE_IMAGE.exists() else None
        if fundus:
            action("open image 2D (DRIVE photo)",
                   lambda: viewer.open(fundus, plugin="napari-drunet"), [])
            name = viewer.layers[-1].name
        else:
            import numpy as np

            name = "fundus"
            viewer.add_image(np.random.default_rng(0).random((584, 565, 3), np.float32),
                             rgb=True, name=name)
        napari_alone(viewer.layers[name].data, rgb=True)
        seg.refresh_layers()
        seg.set_image_layers([name])
        seg.set_model_source("retina-vessels")
        action("segment 2D (first: loads the model)", seg.run, [seg])
        seg.prob_check.setChecked(True)
        action("segment 2D (again, + probability layer)", seg.run, [seg])
        action("add current result as case", corr.add_current_result, [corr],
               until=lambda: name in corr.trackers)

        from napari_drunet._sample_data import HIPPOCAMPUS_MRI

        action("open image 3D (sample MRI)",
               lambda: viewer.open(str(HIPPOCAMPUS_MRI), plugin="napari-drunet"), [])
        napari_alone(viewer.layers[-1].data, rgb=False)
        seg.refresh_layers()
        seg.set_image_layers([viewer.layers[-1].name])
        seg.set_model_source("hippocampus")
        seg.prob_check.setChecked(False)
        action("segment 3D (first: loads the model)", seg.run, [seg])
        seg.prob_check.setChecked(True)
        action("segment 3D (again, + probability layer)", seg.run, [seg])

        if not finetune:
            viewer.close()
            if sampler is not None:
                sampler.report()
            return rows
        ft.steps_spin.setValue(steps)
        ft.budget_spin.setValue(0)
        # the round's own patches (128² in 2D), a validation every 3 steps
        ft.extra_config = {"batch_size": 2, "steps_per_epoch": 3}
        action(f"fine-tune {steps} steps (first)", ft.start, [ft])
        action(f"fine-tune {steps} steps (again)", ft.start, [ft])

        # when the training loop itself returns after Stop (the job then still compares the
        # best weights on the held-back cases and saves them as a version)
        import napari_drunet.core.train.loop as training

        marks: dict[str, float] = {}
        real = training.finetune_iter

        def timed(*args: Any, **kwargs: Any):
            result = yield from real(*args, **kwargs)
            marks["trained"] = time.perf_counter()
            return result

        training.finetune_iter = timed
        ft.steps_spin.setValue(100000)
        ft.start()
        wait_until(lambda: len(ft.plot.series.get("loss", [])) >= 2)
        t_stop = time.perf_counter()
        action("Stop fine-tune (until it has ended)", ft.stop, [ft])
        training.finetune_iter = real
        print(f"  Stop -> training loop returned: {marks['trained'] - t_stop:.2f} s", flush=True)
        rows.append(("Stop: until the training loop returned (s in last column)",
                     float("nan"), float("nan"), float("nan"), marks["trained"] - t_stop,
                     os.getloadavg()[0]))
    if sampler is not None:
        sampler.action = ""
        sampler.report()
    viewer.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--json", default=None)
    ap.add_argument("--trace", action="store_true", help="where the GUI thread was while late")
    ap.add_argument("--no-finetune", action="store_true", help="stop before fine-tuning")
    ap.add_argument("--make-project", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_project:
        make_project(args.make_project)
        return
    rows = run(args.steps, args.trace, not args.no_finetune)
    print("\n| action | longest stall (ms) | GUI-thread CPU in one stall (ms) "
          "| longest stall apart from painting (ms) | duration (s) | load |"
          "\n|---|---|---|---|---|---|")
    for name, ms, cpu, unpainted, secs, load in rows:
        print(f"| {name} | {ms:.0f} | {cpu:.0f} | {unpainted:.0f} | {secs:.2f} | {load:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"action": n, "longest_stall_ms": ms, "gui_cpu_ms": cpu,
              "longest_stall_apart_from_painting_ms": up, "seconds": s, "load": ld}
             for n, ms, cpu, up, s, ld in rows], indent=1))


if __name__ == "__main__":
    main()
