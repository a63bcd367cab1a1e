"""Helpers of ``benchmarks/perf.py``: memory probes, timing, FLOP counting, test images."""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_drunet.core.device import autocast_dtype

from .common import DATA

DRIVE = DATA / "DRIVE"
DEFAULT_FEATURES = (16, 32, 64, 128, 256)


# ------------------------------------------------------------------------------------ memory
def _status(key: str) -> float:
    """A ``/proc/self/status`` entry in MB (0 when unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def rss_mb() -> float:
    """Current resident set size (MB)."""
    return _status("VmRSS")


def peak_rss_mb() -> float:
    """High-water mark of the resident set (MB) since start or the last :func:`reset_peak`."""
    value = _status("VmHWM")
    if value:
        return value
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs``); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------ timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], device: str = "cpu") -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, device: str = "cpu",
                warmup: bool = True) -> dict[str, dict[str, float]]:
    """Time every variant ``repeats`` times round-robin (so load changes hit all alike).

    Returns ``{name: {"min": s, "median": s, "runs": n}}``; ratios use ``min`` (least disturbed
    by other processes on a shared machine).
    """
    if warmup:
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(time_call(fn, device)[0])
    return {k: {"min": min(v), "median": statistics.median(v), "runs": len(v)}
            for k, v in times.items()}


# ------------------------------------------------------------------------------- FLOP counts
def conv_flops(network: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs (2 per multiply-add) of all (transposed) convolutions of one forward pass on an
    input of ``shape`` (counted on the meta device: nothing is computed)."""
    net = copy.deepcopy(network).to("meta").eval()
    total = [0.0]

    def hook(mod: torch.nn.Module, inp: tuple, out: torch.Tensor) -> None:
        k = float(np.prod(mod.kernel_size))
        if isinstance(mod, torch.nn.modules.conv._ConvTransposeNd):
            x = inp[0]
            total[0] += 2.0 * mod.in_channels * mod.out_channels / mod.groups * k \
                * x.shape[0] * float(np.prod(x.shape[2:]))
        else:
            total[0] += 2.0 * mod.in_channels / mod.groups * mod.out_channels * k \
                * out.shape[0] * float(np.prod(out.shape[2:]))

    for m in net.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.empty(shape, device="meta"))
    return total[0]


def conv_peak(device: str = "cpu", repeats: int = 3, quick: bool = True) -> dict[str, Any]:
    """Achievable convolution throughput: a dense 3x3 conv 64->64 on a 256x256 batch of 4,
    contiguous and channels-last (best of both); where inference autocasts to bf16 (CUDA, CPUs
    with AMX) also the bf16 conv, and on CUDA a bf16 matmul."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(device).eval()
    x = torch.randn(4, 64, 256, 256, device=device)
    flops = 2.0 * 64 * 64 * 9 * 4 * 256 * 256
    out: dict[str, Any] = {"conv_flops": flops}
    variants: dict[str, Callable[[], Any]] = {}
    with torch.inference_mode():
        variants["fp32"] = lambda: conv(x)
        conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        variants["fp32_channels_last"] = lambda: conv_cl(x_cl)
        if autocast_dtype(torch.device(device)) == torch.bfloat16:
            conv_bf = copy.deepcopy(conv_cl).to(torch.bfloat16)
            x_bf = x_cl.to(torch.bfloat16)
            variants["bf16_channels_last"] = lambda: conv_bf(x_bf)
        timings = interleaved(variants, repeats, device)
        out["conv"] = {k: flops / v["min"] / 1e9 for k, v in timings.items()}
        fp32 = {k: v for k, v in out["conv"].items() if not k.startswith("bf16")}
        out["conv_peak_gflops"] = max(fp32.values())
        if device.startswith("cuda"):
            n = 8192 if not quick else 4096
            a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
            b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
            mm = interleaved({"mm": lambda: a @ b}, repeats, device)["mm"]["min"]
            out["bf16_matmul_tflops"] = 2.0 * n ** 3 / mm / 1e12
        if "bf16_channels_last" in out["conv"]:
            out["conv_peak_bf16_gflops"] = out["conv"]["bf16_channels_last"]
    return out


# ------------------------------------------------------------------------------------ models
def load_network(model: str | None, device: str = "cpu", in_channels: int = 3,
                 ) -> tuple[torch.nn.Module, str]:
    """The packaged / given model's network, else a random-weight DRU-Net (timings do not depend
    on the weights)."""
    from napari_drunet.core.models.model import list_models, load_model
    from napari_drunet.core.nets.networks import build_model

    name = model or "retina-vessels"
    if Path(name).is_file() or name in list_models():
        m = load_model(name, device=device)
        return m.network.eval(), f"{name} (packaged/file)"
    torch.manual_seed(0)
    net = build_model("drunet", in_channels=in_channels, features=DEFAULT_FEATURES).to(device)
    return net.eval(), (f"drunet {list(DEFAULT_FEATURES)} in={in_channels}, random weights "
                        f"('{name}' not packaged)")


# ------------------------------------------------------------------------------------ images
def vessel_image(shape: tuple[int, int], seed: int = 0, channels: int = 3,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic fundus-like image ``(C, H, W)`` float32 in [0, 1] with thin dark curved
    'vessels' on a noisy vignetted background, and their binary label ``(H, W)``."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = shape
    label = np.zeros(shape, bool)
    n_curves = max(6, int(30 * h * w / 584 / 565))
    for _ in range(n_curves):
        pos = rng.uniform([0, 0], [h, w])
        angle = rng.uniform(0, 2 * np.pi)
        steps = int(rng.integers(80, 400))
        turns = np.cumsum(rng.normal(0, 0.08, steps))
        ys = pos[0] + np.cumsum(np.sin(angle + turns))
        xs = pos[1] + np.cumsum(np.cos(angle + turns))
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        label[ys[ok].astype(int), xs[ok].astype(int)] = True
    label = ndimage.binary_dilation(label, iterations=1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1.0 - 0.5 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2)
    base = 0.55 * vignette - 0.25 * ndimage.gaussian_filter(label.astype(np.float32), 1.0)
    img = np.stack([base * s for s in (1.0, 0.6, 0.3)[:channels]])
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), label.astype(np.uint8)


def drive_image() -> tuple[np.ndarray, str]:
    """A DRIVE test image ``(H, W, 3)`` uint8 (or a synthetic 584x565 one when absent)."""
    path = DRIVE / "test" / "images" / "01_test.tif"
    if path.is_file():
        from napari_drunet.core.image.io import read_image

        return np.moveaxis(read_image(path).array, 0, -1), str(path)
    img, _ = vessel_image((584, 565))
    return (np.moveaxis(img, 0, -1) * 255).astype(np.uint8), "synthetic 584x565 RGB"


def drive_test_photos(n: int, root: Path = DRIVE) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Up to ``n`` DRIVE test photographs ``(H, W, 3)`` uint8 with label and FOV mask."""
    from napari_drunet.core.image.io import read_image

    out = []
    for path in sorted((root / "test" / "images").glob("*_test.tif"))[:n]:
        stem = path.name.split("_")[0]
        photo = np.moveaxis(read_image(path).array, 0, -1)
        label = read_image(root / "test" / "1st_manual" / f"{stem}_manual1.gif").array[0] > 0
        fov = read_image(root / "test" / "mask" / f"{stem}_test_mask.gif").array[0] > 0
        out.append((photo, label, fov))
    return out


def drive_cases(n_train: int, n_pretrain: int, crop: int = 512, seed: int = 0
                ) -> tuple[list, list, list, str]:
    """``(finetune_cases, val_cases, pretrain_cases, source)`` as ``dataset.Case`` objects:
    DRIVE training images cropped to ``crop``² (labels: 1st_manual; mask: FOV), else synthetic."""
    from napari_drunet.core.image.io import ImageData
    from napari_drunet.core.train.dataset import Case

    total = n_train + 1 + n_pretrain
    items = []
    folder = DRIVE / "training"
    if (folder / "images").is_dir():
        import imageio.v3 as iio

        from napari_drunet.core.image.io import read_image

        ids = list(range(21, 41))[:total]
        for i in ids:
            img = np.moveaxis(read_image(folder / "images" / f"{i}_training.tif").array, 0, -1)
            lab = np.asarray(iio.imread(folder / "1st_manual" / f"{i}_manual1.gif"))
            fov = np.asarray(iio.imread(folder / "mask" / f"{i}_training_mask.gif"))
            lab, fov = lab.reshape(lab.shape[-2:]) if lab.ndim > 2 else lab, \
                fov.reshape(fov.shape[-2:]) if fov.ndim > 2 else fov
            y0, x0 = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
            win = (slice(y0, y0 + crop), slice(x0, x0 + crop))
            items.append((f"drive{i}", np.moveaxis(img[win], -1, 0), (lab[win] > 0),
                          fov[win] > 0))
        source = f"DRIVE training images cropped to {crop}²"
    while len(items) < total:
        k = len(items)
        img, lab = vessel_image((crop, crop), seed=seed + k)
        items.append((f"synthetic{k}", (img * 255).astype(np.uint8), lab > 0, None))
        source = f"synthetic vessel images {crop}²"
    cases = [Case(name, ImageData(img, is_rgb=True), lab.astype(np.uint8), mask)
             for name, img, lab, mask in items]
    return cases[:n_train], cases[n_train:n_train + 1], cases[n_train + 1:], source


def machine() -> dict[str, Any]:
    """CPU model, core count, threads, torch version, load average."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "loadavg": list(os.getloadavg())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
