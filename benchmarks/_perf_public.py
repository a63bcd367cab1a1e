"""The public prediction call against MONAI's ``sliding_window_inference`` (``perf.py``).

What a user runs: ``load_model(name).predict(photo)`` (channels, normalisation, FOV or spacing
rescale, tile plan, blending, threshold) against what a user would pick instead: MONAI's
``sliding_window_inference`` with its ordinary settings (2D roi 256², 3D roi = the model's
training patch, ``sw_batch_size=4``, ``overlap=0.25``, ``mode="constant"``) on the same network,
fed the same prepared input (MONAI's side is not charged for preparing it). Both are timed
round-robin in one process, so machine load hits them alike; the F1 of both on the DRIVE test
images (inside the FOV) shows that the speed is not bought with accuracy.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_drunet.core.evaluation.metrics import confusion_metrics
from napari_drunet.core.image.io import read_image
from napari_drunet.core.models.model import Model, load_model

from ._perf_common import (
    DRIVE,
    conv_flops,
    conv_peak,
    drive_test_photos,
    peak_rss_mb,
    reset_peak,
    time_call,
)

MONAI_2D_ROI = (256, 256)


def _monai(model: Model, x: np.ndarray, roi: tuple[int, ...]) -> np.ndarray:
    """Probabilities from MONAI's sliding window with its ordinary settings."""
    from monai.inferers import sliding_window_inference

    net = model.network.eval()
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x))[None].to(model.device)
        logits = sliding_window_inference(t, roi_size=roi, sw_batch_size=4, predictor=net,
                                          overlap=0.25, mode="constant")
        act = torch.sigmoid if logits.shape[1] == 1 else (lambda z: torch.softmax(z, 1))
        return act(logits.float())[0].cpu().numpy()


def _network_input(model: Model, image: Any) -> np.ndarray:
    """The array the public call feeds the network: the model's input recipe (channels,
    rescale, normalisation; the axis order is kept: photographs, and RAS volumes for a RAS
    model)."""
    return model.recipe.prepare(image).array


def _mosaic(photo: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A photograph of ``shape`` tiled from ``photo`` (a larger camera frame to time)."""
    reps = (math.ceil(shape[0] / photo.shape[0]), math.ceil(shape[1] / photo.shape[1]), 1)
    return np.ascontiguousarray(np.tile(photo, reps)[: shape[0], : shape[1]])


def _enlarged(photo: np.ndarray, factor: int) -> np.ndarray:
    """``photo`` ``(H, W, 3)`` uint8 ``factor`` times larger (linear): a higher-resolution camera."""
    from skimage.transform import rescale

    big = rescale(photo, factor, order=1, channel_axis=-1, preserve_range=True)
    return np.clip(big, 0, 255).astype(np.uint8)


def _timed(model: Model, image: Any, x: np.ndarray, roi: tuple[int, ...], repeats: int,
           flops_per_px: float, peaks: dict[str, Any], warmup: bool = True) -> dict[str, Any]:
    """Round-robin timing and peak memory (over the RSS before each call) of both paths; our
    share of the conv peak of the precision our path ran in (bf16 where it autocasts)."""
    calls = {"ours": lambda: model.predict(image), "monai": lambda: _monai(model, x, roi)}
    info = calls["ours"]().info if warmup else None
    if warmup:
        calls["monai"]()
    times: dict[str, list[float]] = {k: [] for k in calls}
    memory: dict[str, float] = {k: 0.0 for k in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            reset_peak()
            base = peak_rss_mb()
            seconds, result = time_call(fn, str(model.device))
            memory[name] = max(memory[name], peak_rss_mb() - base)
            times[name].append(seconds)
            if name == "ours":
                info = result.info
    t = {k: {"min": min(v), "median": statistics.median(v), "runs": len(v)}
         for k, v in times.items()}
    seen = info["tiles"] * math.prod(info["tile_size"]) if info["tiles"] > 1 else \
        math.prod(x.shape[1:])
    gflops = flops_per_px * seen / t["ours"]["min"] / 1e9
    precision = info["fast_paths"].get("amp") or "float32"
    peak = peaks.get("conv_peak_bf16_gflops") if precision == "bfloat16" else None
    peak = peak or peaks["conv_peak_gflops"]
    return {"shape": list(x.shape[1:]), "tiles": info["tiles"], "tile": info["tile_size"],
            "times": t, "ratio": t["ours"]["min"] / t["monai"]["min"],
            "ratio_median": t["ours"]["median"] / t["monai"]["median"],
            "achieved_gflops": gflops, "precision": precision,
            "pct_conv_peak": 100.0 * gflops / peak,
            "pct_conv_peak_fp32": 100.0 * gflops / peaks["conv_peak_gflops"],
            "peak_rss_over_start_mb": memory}


def _peak_figures(peaks: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in peaks.items() if k.startswith("conv_peak")}


def public2d(opts: dict[str, Any]) -> dict[str, Any]:
    """DRIVE 584x565, 1168x1130 and 2048² photographs; F1 of both paths on DRIVE test."""
    model = load_model(opts.get("model") or "retina-vessels", device=opts["device"])
    peaks = conv_peak(opts["device"], opts["repeats"], opts["quick"])
    photos = drive_test_photos(4 if opts["quick"] else 20)
    if not photos:
        return {"error": f"DRIVE test images not found under {DRIVE}"}
    per_px = conv_flops(model.network, (1, 3, 256, 256)) / 256 ** 2
    out: dict[str, Any] = {"model": model.name, **_peak_figures(peaks), "images": {}}
    for name, shape in (("drive", None), ("1168x1130", (1168, 1130)), ("2048", (2048, 2048))):
        photo = photos[0][0] if shape is None else _mosaic(photos[0][0], shape)
        x = _network_input(model, photo)
        reps = opts["repeats"] if shape is None else max(2, opts["repeats"] - 2)
        out["images"][name] = _timed(model, photo, x, MONAI_2D_ROI, reps, per_px, peaks)
    # a clinic's camera: one photograph 4x DRIVE's resolution, which the public call shrinks
    # to the model's FOV; MONAI is fed the shrunk input (its preparation not charged)
    photo = _enlarged(photos[0][0], 4)
    name = "photo x4 {}x{} (shrunk to the FOV)".format(*photo.shape[:2])
    out["images"][name] = {**_timed(model, photo, _network_input(model, photo), MONAI_2D_ROI,
                                    max(2, opts["repeats"] - 2), per_px, peaks), "rescaled": True}
    f1 = {"ours": [], "monai": []}
    for photo, label, fov in photos:
        ours = model.predict(photo).mask > 0
        monai = _monai(model, _network_input(model, photo), MONAI_2D_ROI)[0] >= model.threshold
        for key, mask in (("ours", ours), ("monai", monai)):
            f1[key].append(confusion_metrics(mask, label, fov)["dice"])
    out["f1_drive_test"] = {k: float(np.mean(v)) for k, v in f1.items()}
    out["f1_images"] = len(photos)
    return out


def _volume(shape: tuple[int, int, int], seed: int = 0):
    """A smooth random volume saved and read back as NIfTI (RAS, 1 mm): the header path."""
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    vol = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), np.eye(4)), path)
        return read_image(path)


def public3d(opts: dict[str, Any]) -> dict[str, Any]:
    """3D hippocampus model on 160³ and (full runs) a CT-sized 300x512x512 volume."""
    model = load_model(opts.get("model3d") or "hippocampus", device=opts["device"])
    peaks = conv_peak(opts["device"], opts["repeats"], opts["quick"])
    roi = tuple(int(s) for s in model.meta["training"]["config"]["patch_size"])
    per_px = conv_flops(model.network, (1, 1) + roi) / math.prod(roi)
    out: dict[str, Any] = {"model": model.name, "monai_roi": list(roi), "volumes": {},
                           **_peak_figures(peaks)}
    shapes = [(160, 160, 160)] + ([] if opts["quick"] else [(300, 512, 512)])
    for shape in shapes:
        image = _volume(shape)
        x = _network_input(model, image)
        small = math.prod(shape) <= 160 ** 3  # the CT-sized volume: one cold round
        out["volumes"]["x".join(map(str, shape))] = _timed(
            model, image, x, roi, opts["repeats"] if small else 1, per_px, peaks, warmup=small)
    return out
