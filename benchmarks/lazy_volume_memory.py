"""Peak memory of segmenting a volume stored as zarr, tile by tile (core.lazy), vs loading it.

Writes a synthetic uint16 zarr volume (bright spheres on noise), segments it with a small
untrained 3D DRU-Net through ``Model.predict`` (which reads tiles from the zarr array) and
reports the peak of numpy allocations (tracemalloc), the process's peak RSS and the budget
"output + 2 tile batches" the lazy path must stay within. ``--eager`` loads the volume with
``np.asarray`` first (the path a numpy layer takes), for comparison.

    python -m benchmarks.lazy_volume_memory --shape 512,1024,1024 [--eager]

Run each mode in its own process: ru_maxrss is the process's lifetime maximum.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np


def write_volume(path: Path, shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> Any:
    """A uint16 zarr array of noise with a few bright spheres, written chunk-slab by slab."""
    import zarr

    arr = zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype="u2")
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, (6, 3)) * np.array(shape)
    radius = min(shape) / 8
    yy, xx = np.mgrid[:shape[1], :shape[2]]
    for z0 in range(0, shape[0], chunks[0]):
        z1 = min(shape[0], z0 + chunks[0])
        slab = rng.integers(90, 110, (z1 - z0, *shape[1:]), dtype=np.uint16)
        for z in range(z0, z1):
            for cz, cy, cx in centres:
                if abs(z - cz) < radius:
                    r2 = radius ** 2 - (z - cz) ** 2
                    slab[z - z0][(yy - cy) ** 2 + (xx - cx) ** 2 < r2] += 200
        arr[z0:z1] = slab
    return arr


def tiny_model(net: str = "drunet") -> Any:
    """A small untrained 3D DRU-Net, or (``net="conv"``) a network of one 3x3x3 convolution:
    memory of the tiling itself in minutes on a CPU (a DRU-Net over 512 M voxels takes an hour
    on two cores)."""
    import torch

    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model

    torch.manual_seed(0)
    model = build_model("drunet", spatial_dims=3, in_channels=1, out_channels=1,
                        features=(4, 8)).eval()
    if net == "conv":
        conv = torch.nn.Conv3d(1, 1, 3, padding=1)
        model.forward = conv.forward  # same config/recipe, one convolution of compute
        model.add_module("single_conv", conv)
    return Model(model, {"normalization": {"mode": "percentile_zscore", "lower": 0.5,
                                                "upper": 99.5}, "threshold": 0.5}, device="cpu")


def measure(volume: Any, tile: int = 96, batch: int = 4, eager: bool = False,
            net: str = "drunet") -> dict[str, Any]:
    """Segment ``volume`` (zarr/dask array, or loaded first when ``eager``); memory figures."""
    model = tiny_model(net)
    voxels = math.prod(volume.shape)
    out_bytes = voxels * 4 + voxels  # float32 probabilities (K = 1) + uint8 mask
    batch_bytes = batch * tile ** 3 * (1 + 1) * 4  # float32 input and probability tiles
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    data = np.asarray(volume) if eager else volume
    pred = model.predict(data, tile_size=tile, batch_size=batch, device="cpu")
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"shape": list(volume.shape), "chunks": list(getattr(volume, "chunks", [])),
            "net": net, "eager": eager, "tile": tile, "batch": batch,
            "seconds": round(seconds, 1), "tiles": pred.info.get("tiles"),
            "numpy_peak_mb": round(peak / 2 ** 20, 1),
            "output_mb": round(out_bytes / 2 ** 20, 1),
            "tile_batch_mb": round(batch_bytes / 2 ** 20, 1),
            "budget_mb": round((out_bytes + 2 * batch_bytes) / 2 ** 20, 1),
            "within_budget": peak <= out_bytes + 2 * batch_bytes,
            "max_rss_before_mb": round(rss_before, 1),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "foreground": float(pred.mask.mean())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="512,1024,1024", help="Z,Y,X")
    p.add_argument("--tile", type=int, default=96)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--eager", action="store_true", help="np.asarray the volume first")
    p.add_argument("--net", choices=("drunet", "conv"), default="drunet",
                   help="conv: one convolution (tiling memory in minutes on a CPU)")
    p.add_argument("--chunks", default="32,128,128", help="zarr chunks Z,Y,X (a tile read "
                   "decodes every chunk it touches: big chunks cost memory and time)")
    p.add_argument("--workdir", help="where the zarr goes (default: a temporary folder)")
    args = p.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lazy-volume-"))
    t0 = time.perf_counter()
    chunks = tuple(int(s) for s in args.chunks.split(","))
    volume = write_volume(work / "volume.zarr", shape, chunks)
    written = time.perf_counter() - t0
    result = {**measure(volume, args.tile, args.batch, args.eager, args.net),
              "write_seconds": round(written, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
