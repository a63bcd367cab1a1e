"""A real viewer session killed (SIGKILL) by ``test_case_persistence.py``; not a test module.

Usage: ``python case_session_child.py WORKDIR``. Opens a napari viewer with the Segment and
Corrections widgets, segments three images (2D, 3D, 2D) with the tiny models in ``WORKDIR``
and adds each as a case of ``WORKDIR/proj`` -- all three labels layers stay open -- then paints
on each case in turn with napari's brush (``Labels.paint``), the Qt event loop running between
strokes. Right after the last stroke it writes what every layer shows to ``WORKDIR/expected.npz``,
prints ``done`` and keeps the event loop running until it is killed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

# (case, point, label): every case is painted, the first one twice (after the others)
STROKES = [("img2d", (4, 5), 2), ("vol", (3, 6, 7), 2), ("photo", (20, 9), 3),
           ("img2d", (25, 22), 3), ("vol", (10, 2, 12), 3)]


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    disc = (((yy - 16) ** 2 + (xx - 15) ** 2) < 64).astype(np.float32)
    zz, yv, xv = np.mgrid[:16, :16, :16]
    ball = (((zz - 8) ** 2 + (yv - 8) ** 2 + (xv - 8) ** 2) < 20).astype(np.float32)
    return {"img2d": disc + 0.2 * rng.normal(size=disc.shape).astype(np.float32),
            "vol": ball + 0.2 * rng.normal(size=ball.shape).astype(np.float32),
            "photo": disc.T + 0.2 * rng.normal(size=disc.shape).astype(np.float32)}


def _wait(app, job) -> None:
    while job.running:
        app.processEvents()
    if job.error is not None:
        raise RuntimeError(f"{job.desc} failed: {job.error}")


def _pump(app, seconds: float) -> None:
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


def main(work: Path) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_drunet.gui.corrections import CorrectionsWidget
    from napari_drunet.gui.segment import SegmentWidget

    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    seg, corr = SegmentWidget(viewer), CorrectionsWidget(viewer)
    corr.create_project(work / "proj")
    images = _images()
    for name, arr in images.items():
        viewer.add_image(arr, name=name, scale=(2.0,) * arr.ndim if arr.ndim == 3 else (0.5, 0.5))
    for name, arr in images.items():
        seg.set_model_source(str(work / ("tiny3d.safetensors" if arr.ndim == 3
                                         else "tiny2d.safetensors")))
        seg.set_image_layers([name])
        _wait(app, seg.run())
        if corr.add_current_result() != name:
            raise RuntimeError(f"could not add case {name}")
        _wait(app, corr.job)  # the case files are written in a worker
    for i, (case, point, label) in enumerate(STROKES):
        if i:
            _pump(app, 0.2)  # the event loop runs between strokes, as when a user paints
        layer = viewer.layers[f"{case} labels"]
        layer.brush_size = 3
        layer.selected_label = label
        layer.paint(point, label, refresh=True)
        print(f"stroke {case}", flush=True)
    truth = {case: np.asarray(viewer.layers[f"{case} labels"].data) for case in images}
    with open(work / "expected.npz", "wb") as fh:
        np.savez(fh, **truth)
        fh.flush()
        os.fsync(fh.fileno())
    print("done", flush=True)
    app.exec_()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
