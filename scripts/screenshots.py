"""Screenshots of the clinician's loop in the real napari GUI, for ``docs/user-guide.md``.

Runs napari under a virtual X display (re-executes itself with ``xvfb-run`` when ``DISPLAY`` is
unset), drives the plugin's widgets programmatically and saves one PNG per step::

    .venv/bin/python scripts/screenshots.py                       # packaged models if present
    .venv/bin/python scripts/screenshots.py --model m.safetensors --steps 20 --threads 2

Steps: sample fundus opened; segmented; a correction painted (Corrections widget shows "how much
did I fix"); fine-tuning running and finished (loss/Dice plot, comparison on the held-back case,
Promote/Keep previous); model versions; the no-label adaptation to the project's images
(``11-adapt.png``); MC-dropout uncertainty; the 3D hippocampus MRI sample segmented
(only with a 3D model: ``--model3d``, default the packaged ``hippocampus``); the same sample
written as a DICOM series and opened as a folder (``12-dicom-series.png``); a BraTS study
folder (FLAIR + T1c) opened as one 2-channel image and segmented by the model the widget
proposes, ``brain-tumour`` (``13-brain-tumour.png``; only with ``--brats`` or
``../shared/data/BraTS2015_6`` present); an ISIC dermoscopy photograph enlarged to a clinic's
1536 x 1152 px, segmented by ``skin-lesion`` with its recipe's TTA and largest-object boxes
ticked (``14-skin-lesion.png``; only with ``--isic`` or ``../shared/data/ISIC2017`` present).

Without the packaged ``retina-vessels`` model an UNTRAINED DRU-Net is built in a temporary folder
(a warning is printed): every widget still works but the masks are meaningless.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
XVFB_FLAG = "NAPARI_DRUNET_SCREENSHOTS_XVFB"
WINDOW = (1600, 1000)
MAX_BYTES = 300_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="retina-vessels",
                    help="2D model: packaged name or checkpoint (default retina-vessels; an "
                         "untrained network when it is not packaged)")
    ap.add_argument("--model3d", default="hippocampus",
                    help="3D model for the hippocampus MRI shot (skipped when not available)")
    ap.add_argument("--brats", default=str(REPO.parent / "shared" / "data" / "BraTS2015_6" / "test"
                                           / "brats_2013_pat0001_1"),
                    help="a BraTS study folder for the multi-modal shot (skipped when absent)")
    ap.add_argument("--isic", default=str(REPO.parent / "shared" / "data" / "ISIC2017" / "test"
                                          / "images" / "test_0003.jpg"),
                    help="an ISIC photograph for the skin-lesion shot (skipped when absent)")
    ap.add_argument("--out", default=str(REPO / "docs" / "images"), help="output folder")
    ap.add_argument("--steps", type=int, default=10, help="fine-tuning steps (default 10)")
    ap.add_argument("--mc", type=int, default=4, help="MC-dropout samples (default 4)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    ap.add_argument("--device", default="cpu", help="device for inference and training")
    ap.add_argument("--keep", action="store_true", help="keep the temporary project folder")
    return ap.parse_args(argv)


def reexec_under_xvfb() -> None:
    """Run this script again under ``xvfb-run`` when there is no display."""
    if os.environ.get("DISPLAY") or os.environ.get(XVFB_FLAG):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("error: no DISPLAY and no xvfb-run (apt-get install xvfb xauth)")
    env = dict(os.environ, **{XVFB_FLAG: "1", "QT_QPA_PLATFORM": "xcb"})
    cmd = [xvfb, "-a", "-s", f"-screen 0 {WINDOW[0]}x{WINDOW[1]}x24", sys.executable,
           str(Path(__file__).resolve()), *sys.argv[1:]]
    os.execvpe(xvfb, cmd, env)


# ------------------------------------------------------------------------------ Qt helpers
def pump(seconds: float = 0.3) -> None:
    """Process Qt events for ``seconds`` (lets layers, docks and toasts render)."""
    from qtpy.QtWidgets import QApplication

    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Process Qt events until ``predicate()`` is true (error after ``timeout`` seconds)."""
    from qtpy.QtWidgets import QApplication

    t0 = time.time()
    while not predicate():
        if time.time() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.02)


def wait_job(job: Any, what: str, timeout: float = 1800) -> Any:
    """Wait for a widget job; raise if it failed or never started."""
    if job is None:
        raise RuntimeError(f"{what} did not start (see the notification above)")
    t0 = time.time()
    wait_for(lambda: not job.running, timeout, what)
    if job.error is not None:
        raise RuntimeError(f"{what} failed: {job.error}") from job.error
    print(f"  {what}: {time.time() - t0:.1f} s", flush=True)
    return job.result


def dismiss_toasts(viewer: Any) -> None:
    """Close the notification pop-ups still shown over the canvas."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:  # private napari module moved: keep the pop-ups
        return
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    pump(0.3)


def camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def save_png(viewer: Any, path: Path, toasts: bool = False) -> Path:
    """Screenshot of the whole window; shrunk (palette, then size) to stay under 300 KB."""
    from PIL import Image

    if not toasts:
        dismiss_toasts(viewer)
    pump(0.5)
    arr = viewer.screenshot(canvas_only=False, flash=False)
    img = Image.fromarray(arr[..., :3])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    width = img.width
    while path.stat().st_size > MAX_BYTES:
        small = img if width == img.width else img.resize(
            (width, round(img.height * width / img.width)), Image.LANCZOS)
        small.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                       dither=Image.Dither.NONE).save(path, optimize=True)
        width = int(width * 0.85)
    print(f"  wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
          f"({path.stat().st_size // 1024} KB)", flush=True)
    return path


# ------------------------------------------------------------------------------ models
def resolve_model(name: str, folder: Path) -> str:
    """``name`` if packaged or a file, else an untrained fundus-scale DRU-Net (with a warning)."""
    from napari_drunet.core.models.model import list_models

    if Path(name).is_file() or name in list_models():
        return name
    import torch

    from napari_drunet.core.image.normalization import default_spec
    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model

    warnings.warn(f"model {name!r} is not packaged: the screenshots use an UNTRAINED DRU-Net "
                  "(masks are meaningless); re-run once the trained model is packaged",
                  stacklevel=2)
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=3, out_channels=1,
                      features=(16, 32, 64, 128), dropout=0.1)
    meta = {"normalization": default_spec(), "threshold": 0.5,
            "label_names": {"0": "background", "1": "vessel"},
            "preprocess": {"fov_diameter": 540, "mask_outside_fov": True}}
    return str(Model(net, meta, device="cpu", name="untrained").save(
        folder / "untrained-retina.safetensors"))


# ------------------------------------------------------------------------------ the loop
class Session:
    """One napari window with the four plugin widgets docked on the right."""

    def __init__(self, args: argparse.Namespace, work: Path):
        import napari
        from qtpy.QtCore import Qt

        warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
        warnings.filterwarnings("ignore", message=".*System theme detection.*")
        self.args, self.work, self.out = args, work, Path(args.out)
        self.viewer = napari.Viewer(title="napari-drunet")
        qt_window = self.viewer.window._qt_window
        qt_window.resize(*WINDOW)
        qt_window.move(0, 0)
        self.docks, self.widgets = {}, {}
        for i, name in enumerate(("Segment", "Corrections", "Fine-tune", "Model versions")):
            dock, widget = self.viewer.window.add_plugin_dock_widget("napari-drunet", name,
                                                                     tabify=i > 0)
            self.docks[name], self.widgets[name] = dock, widget
        qt_window.resizeDocks([self.docks["Segment"]], [470], Qt.Horizontal)
        self.show_dock("Segment")
        pump(1.0)

    def show_dock(self, name: str) -> None:
        self.docks[name].show()
        self.docks[name].raise_()
        pump(0.2)

    def shot(self, filename: str, toasts: bool = False) -> Path:
        return save_png(self.viewer, self.out / filename, toasts)

    def only_visible(self, *names: str) -> None:
        """Show just the layers ``names``."""
        for layer in self.viewer.layers:
            layer.visible = layer.name in names

    def segment(self, layer: str) -> Any:
        seg = self.widgets["Segment"]
        seg.set_image_layers([layer])
        wait_job(seg.run(), f"segmenting {layer}")
        return self.viewer.layers[f"{layer} labels"]


def _endpoints(skeleton: Any) -> Any:
    """(N, 2) coordinates of the skeleton pixels with exactly one neighbour."""
    import numpy as np
    from scipy import ndimage

    neighbours = ndimage.convolve(skeleton.astype(np.uint8), np.ones((3, 3), np.uint8),
                                  mode="constant") - 1
    return np.argwhere(skeleton & (neighbours == 1))


def plan_correction(image: Any, prediction: Any) -> dict[str, Any]:
    """Choose what a user would fix in a vessel mask: isolated specks and a broken vessel.

    Returns ``centre`` (y, x) of the region to zoom on, its half-size ``half``, ``specks`` (a
    list of (y, x, brush) erase dabs) and ``stroke`` (points of a paint stroke bridging the gap
    between two vessel ends; a drawn curve when the mask is empty, e.g. an untrained model).
    """
    import numpy as np
    from scipy import ndimage
    from skimage.draw import line
    from skimage.morphology import skeletonize

    from napari_drunet.core.image.rescale import fov_mask

    h, w = prediction.shape
    half = max(50, min(h, w) // 16)
    inside = ndimage.binary_erosion(fov_mask(np.moveaxis(image, -1, 0)), iterations=half)
    fg = prediction > 0
    comp, n = ndimage.label(fg, structure=np.ones((3, 3)))
    objects = ndimage.find_objects(comp)
    sizes = ndimage.sum_labels(fg, comp, index=np.arange(1, n + 1)) if n else np.zeros(0)
    specks = []  # small isolated blobs: likely false positives
    for i, sl in enumerate(objects):
        y, x = (sl[0].start + sl[0].stop) // 2, (sl[1].start + sl[1].stop) // 2
        side = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
        if 8 <= sizes[i] <= 250 and side <= 20 and inside[y, x]:
            specks.append((y, x, side + 4))
    # gaps: ends of two different vessel pieces 8-40 px apart (a broken vessel)
    big = np.isin(comp, 1 + np.flatnonzero(sizes >= 400)) if n else fg  # vessels, not specks
    ends = [tuple(e) for e in _endpoints(skeletonize(big)) if inside[tuple(e)]]
    best = None
    if ends:
        pts = np.array(ends)
        owner = comp[pts[:, 0], pts[:, 1]]
        dist = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
        dist[owner[:, None] == owner[None, :]] = np.inf
        dist[(dist < 8) | (dist > 40)] = np.inf
        if np.isfinite(dist).any():
            # prefer gaps with many specks around them (one view shows both kinds of fix)
            score = dist.copy()
            for (i, j) in zip(*np.nonzero(np.isfinite(dist)), strict=True):
                mid = (pts[i] + pts[j]) / 2
                near = sum(abs(y - mid[0]) < half and abs(x - mid[1]) < half for y, x, _ in specks)
                score[i, j] = dist[i, j] - 15 * near
            i, j = np.unravel_index(np.argmin(score), score.shape)
            best = (pts[i], pts[j])
    if best is not None:
        rr, cc = line(int(best[0][0]), int(best[0][1]), int(best[1][0]), int(best[1][1]))
        stroke = list(zip(rr.tolist(), cc.tolist(), strict=True))
        centre = (int((best[0][0] + best[1][0]) // 2), int((best[0][1] + best[1][1]) // 2))
    else:
        ys, xs = np.nonzero(inside)
        centre = (int(ys.mean()), int(xs.mean())) if ys.size else (h // 2, w // 2)
        stroke = [(int(centre[0] + 0.5 * half * np.sin(np.pi * t) - half // 4),
                   int(centre[1] - half // 2 + t * half)) for t in np.linspace(0.0, 1.0, 80)]
    cy, cx = centre
    specks = [sp for sp in specks if abs(sp[0] - cy) < 0.9 * half and abs(sp[1] - cx) < 0.9 * half]
    return {"centre": centre, "half": half, "specks": specks, "stroke": stroke}


def paint_correction(labels: Any, plan: dict[str, Any]) -> None:
    """Apply ``plan`` with napari's own paint/erase operations (undoable, like mouse strokes)."""
    h, w = labels.data.shape
    labels.mode = "erase"
    for y, x, brush in plan["specks"]:
        labels.brush_size = brush
        labels.paint((y, x), 0, refresh=False)
    labels.mode = "paint"
    labels.selected_label = 1
    labels.brush_size = 6
    with labels.block_history():  # one stroke = one undo step
        for y, x in plan["stroke"]:
            labels.paint((min(max(y, 0), h - 1), min(max(x, 0), w - 1)), 1, refresh=False)
    labels.refresh()


def dicom_shot(s: Session, model3d: str, work: Path) -> Path:
    """Write the 3D sample as a DICOM series, open the folder in napari, segment it."""
    import numpy as np

    from napari_drunet._sample_data import HIPPOCAMPUS_MRI
    from napari_drunet.core.image.dicom_write import write_series
    from napari_drunet.core.image.io import read_image

    img = read_image(HIPPOCAMPUS_MRI)
    folder = work / "DICOM" / "study-0001"
    write_series(np.round(img.array[0]).astype(np.int32), img.affine, folder,
                 description="T1 hippocampus (MSD case 150)", series_number=3)
    viewer, seg = s.viewer, s.widgets["Segment"]
    viewer.layers.clear()
    viewer.open(str(folder), plugin="napari-drunet")
    seg.set_model_source(model3d)
    name = seg.selected_layer_names()[0]  # the series just opened is the target
    vol = s.segment(name)
    viewer.dims.ndisplay = 2
    viewer.dims.set_point(0, float(vol.data.shape[0] // 2 * vol.scale[0]))
    viewer.reset_view()
    s.show_dock("Segment")
    return s.shot("12-dicom-series.png")


def brats_shot(s: Session, folder: Path) -> Path:
    """Open a study folder (FLAIR + T1c files) in napari and segment it with the model the
    Segment widget proposes for a 2-channel volume (expected: ``brain-tumour``)."""
    import numpy as np

    viewer, seg = s.viewer, s.widgets["Segment"]
    viewer.layers.clear()
    viewer.open(str(folder), plugin="napari-drunet")
    pump(0.5)
    names = seg.selected_layer_names()  # both channels of the study, checked together
    print(f"   targets {names}, model {seg.model_source()}", flush=True)
    if seg.model_source() != "brain-tumour":
        raise SystemExit(f"the widget proposed {seg.model_source()!r} for a FLAIR + T1c study")
    wait_job(seg.run(), f"segmenting {folder.name}")
    labels = next(la for la in viewer.layers if la.name.endswith("labels"))
    mid = int(np.argmax((labels.data > 0).sum(axis=(1, 2))))  # the largest tumour section
    viewer.dims.ndisplay = 2
    viewer.dims.set_point(0, float(mid * labels.scale[0]))
    viewer.layers[names[1]].visible = False  # FLAIR under the labels
    viewer.reset_view()
    s.show_dock("Segment")
    return s.shot("13-brain-tumour.png")


def skin_shot(s: Session, photo: Path, work: Path) -> Path:
    """A dermoscopy photograph at a clinic's size, ``skin-lesion`` chosen in the model list (a
    2D RGB photograph fits the fundus model as well: pixels do not say the modality); the
    widget ticks the recipe's boxes and returns one lesion on the photograph's grid."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    viewer, seg = s.viewer, s.widgets["Segment"]
    viewer.layers.clear()
    big = work / f"clinic_{photo.stem}.jpg"
    Image.open(photo).resize((1536, 1152), Image.Resampling.BICUBIC).save(big, quality=95)
    viewer.open(str(big), plugin="napari-drunet")
    pump(0.5)
    seg.set_model_source("skin-lesion")
    if not (seg.tta_check.isChecked() and seg.object_check.isChecked()):
        raise SystemExit("skin-lesion's recipe boxes (TTA, largest object) are not ticked")
    wait_job(seg.run(), f"segmenting {big.name}")
    labels = viewer.layers[f"{big.stem} labels"]
    objects = ndimage.label(np.asarray(labels.data) > 0)[1]
    print(f"   mask {labels.data.shape}, {objects} object(s)", flush=True)
    if labels.data.shape != (1152, 1536) or objects != 1:
        raise SystemExit("the lesion mask is not one object on the photograph's grid")
    labels.contour = 4  # the outline over the lesion, as a dermatologist checks it
    viewer.reset_view()
    s.show_dock("Segment")
    return s.shot("14-skin-lesion.png")


def run(args: argparse.Namespace) -> list[str]:
    import numpy as np
    import torch
    from qtpy.QtWidgets import QApplication

    torch.set_num_threads(max(1, args.threads))
    work = Path(tempfile.mkdtemp(prefix="drunet-screenshots-"))
    made: list[str] = []
    try:
        model = resolve_model(args.model, work)
        s = Session(args, work)
        viewer, seg = s.viewer, s.widgets["Segment"]
        corr, ft, ver = s.widgets["Corrections"], s.widgets["Fine-tune"], s.widgets["Model versions"]

        print("1. sample fundus", flush=True)
        viewer.open_sample("napari-drunet", "fundus")
        seg.set_model_source(model)
        if args.device in [seg.device_combo.itemText(i) for i in range(seg.device_combo.count())]:
            seg.device_combo.setCurrentText(args.device)
        seg.prob_check.setChecked(True)
        viewer.reset_view()
        made.append(s.shot("01-sample-fundus.png").name)

        print("2. segment", flush=True)
        labels = s.segment("fundus")
        viewer.layers["fundus probability"].visible = False
        viewer.layers.selection.active = labels
        made.append(s.shot("02-segmented.png").name)

        print("3. correct", flush=True)
        project_dir = work / "my-corrections"
        if corr.create_project(project_dir) is None:
            raise RuntimeError("could not create the corrections project")
        if corr.add_current_result() is None:
            raise RuntimeError("could not add the result as a case")
        wait_job(corr.job, "writing the case")  # the case files are written in a worker
        project = seg.state.project
        prediction = np.asarray(labels.data).copy()
        plan = plan_correction(np.asarray(viewer.layers["fundus"].data), prediction)
        print(f"   erasing {len(plan['specks'])} speck(s), painting a {len(plan['stroke'])}-pixel "
              "stroke over a vessel gap")
        viewer.reset_view()
        camera(viewer).zoom *= min(prediction.shape) / (2.8 * plan["half"])
        camera(viewer).center = plan["centre"]
        labels.mode = "paint"
        s.show_dock("Corrections")
        made.append(s.shot("03-before-correction.png", toasts=True).name)
        paint_correction(labels, plan)
        wait_for(lambda: project.case_meta("fundus")["changed_fraction"] > 0, 60, "autosave")
        corr.flush()
        pump(0.5)
        made.append(s.shot("04-corrected.png").name)

        # a second corrected case, so that one can be held back to compare versions
        print("   second case (mirrored copy of the sample, standing in for another patient)")
        data = viewer.layers["fundus"].data
        viewer.add_image(np.ascontiguousarray(data[:, ::-1]), name="fundus-2", rgb=True)
        labels2 = s.segment("fundus-2")
        corr.add_current_result()
        wait_job(corr.job, "writing the second case")
        labels2.selected_label = 1
        labels2.paint((data.shape[0] // 2, data.shape[1] // 2), 1, refresh=True)
        corr.mark_case_reviewed()
        corr.flush()
        s.only_visible("fundus", "fundus labels")
        viewer.layers.selection.active = labels

        print("4. fine-tune", flush=True)
        s.show_dock("Fine-tune")
        ft.steps_spin.setValue(args.steps)
        ft.budget_spin.setValue(600)
        if args.device in [ft.device_combo.itemText(i) for i in range(ft.device_combo.count())]:
            ft.device_combo.setCurrentText(args.device)
        ft.extra_config = {"batch_size": 2, "patch_size": (192, 192),
                           "num_threads": args.threads}
        viewer.reset_view()
        job = ft.start()
        if job is None:
            raise RuntimeError("fine-tuning did not start")
        wait_for(lambda: not job.running or len(ft.plot.series.get("loss", [])) >= 3, 1800,
                 "the first fine-tuning steps")
        if job.running:
            made.append(s.shot("05-finetune-running.png").name)
        wait_job(job, "fine-tuning")
        made.append(s.shot("06-finetune-compare.png").name)

        print("5. promote (or keep previous, as the comparison advises) + versions", flush=True)
        recommended = ft.outcome.comparison.recommend is not False
        new_version = ft.outcome.version
        if recommended:
            ft.promote()
        else:
            ft.keep_previous()
        print(f"   {new_version} {'promoted' if recommended else 'not promoted (worse)'}")
        s.show_dock("Model versions")
        ver.select_version(new_version)
        made.append(s.shot("07-versions.png").name)

        print("5b. adapt to the project's images (no labels), then keep the previous", flush=True)
        s.show_dock("Fine-tune")
        wait_job(ft.adapt(), "adapting to the project's images")
        made.append(s.shot("11-adapt.png").name)
        ft.keep_previous()

        print("6. uncertainty", flush=True)
        s.show_dock("Segment")
        seg.set_image_layers(["fundus"])
        seg.mc_spin.setValue(max(2, args.mc))
        wait_job(seg.run_uncertainty(), "MC-dropout uncertainty")
        s.only_visible("fundus uncertainty")
        viewer.reset_view()
        made.append(s.shot("08-uncertainty.png").name)

        print("7. 3D sample", flush=True)
        from napari_drunet._sample_data import HIPPOCAMPUS_LAYER
        from napari_drunet.core.models.model import list_models

        if Path(args.model3d).is_file() or args.model3d in list_models():
            corr.flush()
            viewer.layers.clear()
            viewer.open_sample("napari-drunet", "hippocampus")
            seg.set_model_source(args.model3d)
            seg.prob_check.setChecked(False)
            vol = s.segment(HIPPOCAMPUS_LAYER)
            viewer.dims.set_point(0, float(np.asarray(vol.data.shape[0] // 2) * vol.scale[0]))
            viewer.reset_view()
            made.append(s.shot("09-hippocampus.png").name)
            viewer.dims.ndisplay = 3
            camera(viewer).angles = (-20.0, 35.0, 150.0)
            viewer.layers[HIPPOCAMPUS_LAYER].opacity = 0.35
            pump(1.0)
            made.append(s.shot("10-hippocampus-3d.png").name)
            print("8. DICOM series (the 3D sample written as DICOM slices, opened as a folder)")
            made.append(dicom_shot(s, args.model3d, work).name)
        else:
            print(f"   skipped: no 3D model {args.model3d!r} (package it, or pass --model3d)")
        if Path(args.brats).is_dir() and "brain-tumour" in list_models():
            print("9. BraTS study (FLAIR + T1c folder, one 2-channel image)", flush=True)
            made.append(brats_shot(s, Path(args.brats)).name)
        else:
            print(f"   skipped: no BraTS study at {args.brats} or no brain-tumour model")
        if Path(args.isic).is_file() and "skin-lesion" in list_models():
            print("10. dermoscopy photograph at a clinic's size (skin-lesion)", flush=True)
            made.append(skin_shot(s, Path(args.isic), work).name)
        else:
            print(f"   skipped: no ISIC photograph at {args.isic} or no skin-lesion model")
        corr.flush()
        viewer.close()
        QApplication.processEvents()
    finally:
        if args.keep:
            print(f"project and models kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return made


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, args.threads)))
    os.environ.setdefault("MKL_NUM_THREADS", str(max(1, args.threads)))
    reexec_under_xvfb()
    t0 = time.time()
    made = run(args)
    print(f"{len(made)} screenshots in {args.out} ({time.time() - t0:.0f} s): {', '.join(made)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
