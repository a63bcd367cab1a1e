"""Wall time of `drunet finetune` with its defaults on 3 images of ~1000x1000 (2 CPU cores goal:
within 5 minutes, loading and saving included).

    python -m benchmarks.finetune_time --model retina-vessels --out runs/finetune_time

The 3 images are DRIVE training images 21-23 and their manual labels resized to 1000x1000 (a
higher-resolution fundus camera), written to ``<out>`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .common import add_data_option, add_run_options


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="retina-vessels")
    add_data_option(ap, "--drive", "DRIVE")
    ap.add_argument("--size", type=int, default=1000)
    add_run_options(ap, seed=False)
    args = ap.parse_args()

    from skimage.transform import resize

    from napari_drunet.core.image.io import read_image, read_label, write_label
    from napari_drunet.core.train.dataset import write_dataset_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for cid in (21, 22, 23):
        img = read_image(Path(args.drive) / "training" / "images" / f"{cid}_training.tif")
        lab, _ = read_label(Path(args.drive) / "training" / "1st_manual" / f"{cid}_manual1.gif")
        shape = (args.size, args.size)
        big = np.stack([resize(c.astype(np.float32), shape, order=1, preserve_range=True)
                        for c in img.array]).clip(0, 255).astype(np.uint8)
        big_lab = resize(lab.astype(np.float32), shape, order=1) >= 0.5
        import imageio.v3 as iio

        iio.imwrite(out / f"{cid}.png", np.moveaxis(big, 0, -1))
        write_label(out / f"{cid}_label.png", big_lab.astype(np.uint8))
        entries.append({"image": f"{cid}.png", "label": f"{cid}_label.png"})
    write_dataset_json(out / "dataset.json", entries, {"0": "background", "1": "vessel"})
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "napari_drunet", "finetune", "--model", args.model,
                    "--data", str(out / "dataset.json"), "--out", str(out / "finetuned.ckpt"),
                    "--threads", str(args.threads)], check=True)
    seconds = time.time() - t0
    result = {"images": 3, "size": args.size, "wall_seconds": round(seconds, 1),
              "goal_seconds": 300, "met": seconds <= 300}
    (out / "finetune_time.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
