"""Scenarios of ``benchmarks/perf.py``; each runs in its own subprocess and returns a dict.

Every scenario receives ``opts`` (``quick``, ``device``, ``model``, ``threads``, ``repeats``) and
returns plain JSON values. Peak memory is measured inside the subprocess with ``VmHWM`` (reset by
``/proc/self/clear_refs`` between phases), so scenarios never see each other's allocations.
"""

from __future__ import annotations

import copy
import math
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from napari_drunet.core.image.normalization import normalize
from napari_drunet.core.infer.predict import (
    InferenceConfig,
    predict,
    prepared_network,
    probabilities_to_labels,
)

from ._perf_common import (
    drive_cases,
    drive_image,
    interleaved,
    load_network,
    peak_rss_mb,
    reset_peak,
    rss_mb,
    time_call,
    vessel_image,
)
from ._perf_public import public2d, public3d


def _normalized_drive() -> tuple[np.ndarray, str]:
    rgb, source = drive_image()
    return normalize(np.moveaxis(rgb, -1, 0), None), source


# ----------------------------------------------------------------------------- 5. fast paths
def fastpaths(opts: dict[str, Any]) -> dict[str, Any]:
    """Each fast path on/off side by side, as ratios to the plain path, with output equality."""
    dev, reps = opts["device"], opts["repeats"]
    net, desc = load_network(opts["model"], dev)
    img, _ = _normalized_drive()
    plain = dict(device=dev, fold_bn=False, channels_last=False)
    configs = {"plain": plain, "fold_bn": {**plain, "fold_bn": True},
               "channels_last": {**plain, "channels_last": True},
               "fold_bn+channels_last (default)": {**plain, "fold_bn": True,
                                                   "channels_last": True}}
    if dev.startswith("cuda"):
        configs["default, no amp"] = {"device": dev, "amp": False}
        configs["default, no cudnn.benchmark"] = {"device": dev, "cudnn_benchmark": False}
        if opts.get("compile"):
            configs["default + torch.compile"] = {"device": dev, "compile": True}
    ref = predict(net, img, InferenceConfig(**plain))
    rows: dict[str, Any] = {}
    variants = {k: (lambda c=c: predict(net, img, InferenceConfig(**c))) for k, c in configs.items()}
    t = interleaved(variants, reps, dev)
    for k, c in configs.items():
        diff = float(np.abs(predict(net, img, InferenceConfig(**c)) - ref).max())
        rows[k] = {**t[k], "speedup": t["plain"]["min"] / t[k]["min"], "max_abs_diff": diff}
    # inference_mode vs no_grad vs autograd on the bare network (one forward, DRIVE size)
    x = torch.from_numpy(img)[None].to(dev)
    fast = prepared_network(net, fold_bn=True, channels_last=True)
    xc = x.contiguous(memory_format=torch.channels_last)

    def run(ctx: Any) -> Any:
        with ctx():
            return fast(xc)
    mt = interleaved({"autograd": lambda: run(torch.enable_grad),
                      "no_grad": lambda: run(torch.no_grad),
                      "inference_mode": lambda: run(torch.inference_mode)}, reps, dev)
    grad_modes = {k: {**v, "speedup": mt["autograd"]["min"] / v["min"]} for k, v in mt.items()}
    # batched tiles: 1024² image, 256² tiles
    big, _ = vessel_image((1024, 1024), seed=2)
    big = normalize(big, None)
    bt = interleaved({f"batch {b}": (lambda b=b: predict(net, big, InferenceConfig(
        device=dev, tile_size=256, batch_size=b))) for b in (1, 4, 8)}, reps, dev)
    batching = {k: {**v, "speedup": bt["batch 1"]["min"] / v["min"]} for k, v in bt.items()}
    return {"network": desc, "configs": rows, "grad_modes": grad_modes, "batching": batching}


# ------------------------------------------------------------------------------- 2. volume
def volume(opts: dict[str, Any]) -> dict[str, Any]:
    """Slice-wise (2D net) or 3D-patch (3D net) inference of a CT-sized float32 volume."""
    from napari_drunet.core.nets.networks import build_model

    dev, mode = opts["device"], opts["mode"]
    shape = tuple(opts.get("shape", (300, 512, 512)))
    rss0 = rss_mb()
    torch.manual_seed(0)
    if mode == "slices":
        features = (16, 32, 64, 128, 256)
        net = build_model("drunet", in_channels=1, features=features).to(dev).eval()
        warm = (1, 4) + shape[1:]
    else:
        features = tuple(opts.get("features", (8, 16, 32, 64)))
        net = build_model("drunet", spatial_dims=3, in_channels=1, features=features)
        net = net.to(dev).eval()
        warm = (1, 96, 96, 384)  # 5 tiles of 96³: one full batch of 4
    cfg = InferenceConfig(device=dev)
    probs = predict(net, np.zeros(warm, np.float32), cfg)  # weights + a full batch of tiles
    labels = probabilities_to_labels(probs)
    del probs, labels
    model_mb = peak_rss_mb() - rss0
    reset_peak()
    base = rss_mb()
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((1,) + shape, dtype=np.float32)
    info: dict[str, Any] = {}
    seconds, prob = time_call(lambda: predict(net, vol, cfg, info=info), dev)
    mask = probabilities_to_labels(prob, 0.5)
    peak = peak_rss_mb() - base
    vol_mb = vol.nbytes / 2 ** 20
    return {"mode": mode, "shape": list(shape), "features": list(features),
            "tile": info.get("tile_size"), "tiles": info.get("tiles"), "seconds": seconds,
            "volume_mb": vol_mb, "model_mb": model_mb, "peak_mb": peak,
            "peak_over_volume": peak / vol_mb,
            "peak_minus_model_over_volume": (peak - model_mb) / vol_mb,
            "mask_dtype": str(mask.dtype)}


def normalization_memory(opts: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of ``normalize`` on an int16 CT volume (Model.predict normalises first)."""
    shape = tuple(opts.get("shape", (300, 512, 512)))
    reset_peak()
    base = rss_mb()
    raw = np.random.default_rng(0).integers(-1000, 2000, (1,) + shape, dtype=np.int16)
    seconds, out = time_call(lambda: normalize(raw, None))
    f32 = out.nbytes / 2 ** 20
    return {"shape": list(shape), "seconds": seconds, "volume_float32_mb": f32,
            "peak_mb": peak_rss_mb() - base, "peak_over_volume": (peak_rss_mb() - base) / f32}


# ------------------------------------------------------------------------------ 3. fine-tune
def finetune(opts: dict[str, Any]) -> dict[str, Any]:
    """5 corrected 512² slices: seconds until validation Dice beats the starting model's."""
    from napari_drunet.core.models.model import list_models, load_model
    from napari_drunet.core.train.loop import (
        TrainConfig,
        default_finetune_config,
        finetune_iter,
        train,
    )

    threads = opts["threads"]
    cases, val, pre, source = drive_cases(5, 6 if opts["quick"] else 14)
    name = opts["model"] or "retina-vessels"
    out: dict[str, Any] = {"data": source}
    if name in list_models():
        start = load_model(name, device="cpu")
        out["start"] = f"packaged model {name}"
    else:  # a briefly trained model stands in for the packaged one
        budget = 40.0 if opts["quick"] else 120.0
        res = train(pre, TrainConfig(features=(16, 32, 64, 128, 256), patch_size=(256, 256),
                                     batch_size=2, epochs=100, steps_per_epoch=10,
                                     time_budget=budget, val_fraction=0.0, device="cpu",
                                     num_threads=threads, lr=2e-3))
        start = res.model
        out["start"] = (f"DRU-Net trained {res.steps} steps ({res.seconds:.0f} s) on "
                        f"{len(pre)} other images ('{name}' not packaged)")
    cfg = default_finetune_config(patch_size=(256, 256), batch_size=2, steps_per_epoch=5,
                                  epochs=60, max_steps=300, time_budget=120.0, device="cpu",
                                  num_threads=threads, val_every=1)
    gen = finetune_iter(start, cases, cfg, val_cases=val)
    t0 = time.perf_counter()
    initial = improved_at = None
    steps, train_s, last_step_t = 0, 0.0, t0
    first_train = None
    history = []
    try:
        for rec in gen:
            now = time.perf_counter()
            if "loss" in rec.metrics:
                steps = rec.step
                first_train = first_train or last_step_t
                train_s += now - last_step_t
            last_step_t = now
            if "val_dice" in rec.metrics:
                d = float(rec.metrics["val_dice"])
                history.append({"t": now - t0, "step": rec.step, "val_dice": d})
                if initial is None:
                    initial = d
                elif d > initial and improved_at is None:
                    improved_at = now - t0
                    break
    finally:
        gen.close()
    return {**out, "initial_val_dice": initial, "history": history,
            "seconds_to_improve": improved_at, "steps": steps,
            "steps_per_s": steps / train_s if train_s else None,
            "val_cases": [c.name for c in val], "train_cases": [c.name for c in cases]}


# ---------------------------------------------------------------------------- 6. scaling
def scaling(opts: dict[str, Any]) -> dict[str, Any]:
    """Time and peak memory vs image size (default inference options)."""
    from napari_drunet.core.nets.networks import build_model

    dev, dims = opts["device"], opts["dims"]
    torch.manual_seed(0)
    if dims == 2:
        net = build_model("drunet", in_channels=1, features=(16, 32, 64, 128, 256))
    else:
        net = build_model("drunet", spatial_dims=3, in_channels=1, features=(8, 16, 32, 64))
    net = net.to(dev).eval()
    rows = []
    for size in opts["sizes"]:
        shape = tuple(size) if isinstance(size, (list, tuple)) else (size,) * dims
        vol = np.random.default_rng(0).standard_normal((1,) + shape, dtype=np.float32)
        cfg = InferenceConfig(device=dev)
        predict(net, vol[(slice(None),) + tuple(slice(0, 64) for _ in shape)], cfg)
        reset_peak()
        base = rss_mb()
        info: dict[str, Any] = {}
        reps = 1 if math.prod(shape) >= 2048 ** 2 else 2
        seconds = min(time_call(partial(predict, net, vol, cfg, info=info), dev)[0]
                      for _ in range(reps))
        rows.append({"shape": list(shape), "pixels": math.prod(shape), "seconds": seconds,
                     "us_per_pixel": seconds / math.prod(shape) * 1e6,
                     "input_mb": vol.nbytes / 2 ** 20, "peak_mb": peak_rss_mb() - base,
                     "tiles": info["tiles"], "tile": info["tile_size"]})
    return {"dims": dims, "rows": rows}


# ------------------------------------------------------------------------- 4. click-to-mask
def click(opts: dict[str, Any]) -> dict[str, Any]:
    """``Model.predict`` on a DRIVE RGB image, model loaded and warm, on the CPU."""
    from napari_drunet.core.models.model import Model

    net, desc = load_network(opts["model"], "cpu")
    model = Model(net, {"threshold": 0.5}, device="cpu")
    rgb, source = drive_image()
    model.predict(rgb, is_rgb=True)
    t = interleaved({"predict": lambda: model.predict(rgb, is_rgb=True)}, opts["repeats"],
                    "cpu", warmup=False)["predict"]
    return {"network": desc, "image": source, **t}


SCENARIOS = {"public2d": public2d, "public3d": public3d, "fastpaths": fastpaths, "volume": volume,
             "normalization": normalization_memory, "finetune": finetune, "scaling": scaling,
             "click": click}


def run_scenario(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    if name == "gui":
        from ._perf_gui import gui

        return gui(opts)
    return SCENARIOS[name](copy.deepcopy(opts))
