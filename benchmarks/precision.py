"""Mixed precision on this CPU: bf16 autocast against float32, for speed and for accuracy.

Speed: the packaged networks alone (no folding), float32 and bf16 autocast, contiguous and
channels-last, on the inputs inference and MONAI's windows give them (best of 2, round-robin after
a warm-up);
and one training step (forward, BCE, backward, AdamW) of the networks the ISIC and BraTS scripts
train, on their patches (best of 3, round-robin after a warm-up).
Accuracy: the public call ``Model.predict(image, amp=...)`` on the DRIVE test images (F1 and AUC
inside the FOV) and the hippocampus validation volumes (Dice per class). ``Model.predict`` uses
bf16 by default only where ``core.device.autocast_dtype`` says the CPU runs it fast (AMX).

    python -m benchmarks.precision --threads 1 --json precision.json
    python -m benchmarks.precision --speed-only      # no DRIVE / MSD data needed
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from ._perf_common import drive_test_photos, interleaved
from .common import MSD_HIPPOCAMPUS, add_data_option, split_msd

SHAPES = {"hippocampus": [(1, 1, 112, 120, 144), (4, 1, 40, 56, 40)],
          "retina-vessels": [(1, 3, 584, 576)]}
#: (features, batch shape) of the networks trained by isic_accuracy.py and brats_accuracy.py
TRAIN = [((8, 16, 32, 64, 128), (8, 3, 96, 128)), ((16, 32, 64, 128, 256), (8, 3, 96, 128)),
         ((16, 32, 64, 128), (2, 2, 48, 64, 64))]


def network_speed(name: str, shape: tuple[int, ...], repeats: int = 2) -> dict[str, float]:
    """Seconds per forward pass of the packaged ``name`` network, four variants."""
    from napari_drunet.core.models.model import load_model

    net = load_model(name, device="cpu").network.eval()
    layout = torch.channels_last_3d if len(shape) == 5 else torch.channels_last
    x = torch.randn(shape)
    variants = {}
    for last in (False, True):
        n = copy.deepcopy(net).to(memory_format=layout) if last else net
        xx = x.contiguous(memory_format=layout) if last else x
        for bf16 in (False, True):
            def forward(n=n, xx=xx, bf16=bf16) -> None:
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    n(xx)

            variants[f"{'bf16' if bf16 else 'fp32'}{'_channels_last' if last else ''}"] = forward
    return {k: v["min"] for k, v in interleaved(variants, repeats).items()}


def train_step_speed(features: tuple[int, ...], shape: tuple[int, ...], repeats: int = 3
                     ) -> dict[str, float]:
    """Seconds per training step in float32 and in bf16 autocast with channels-last input
    (what ``core.train.step`` does where the CPU has AMX)."""
    from napari_drunet.core.nets.networks import build_model

    dims = len(shape) - 2
    layout = torch.channels_last if dims == 2 else torch.channels_last_3d
    x = torch.randn(shape)
    y = (torch.rand(shape[0], 1, *shape[2:]) > 0.5).float()
    variants = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        net = build_model("drunet", spatial_dims=dims, in_channels=shape[1], out_channels=1,
                          features=features).train()
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        xx = x.contiguous(memory_format=layout) if bf16 else x

        def step(net=net, opt=opt, xx=xx, bf16=bf16) -> None:
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                logits = net(xx)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        variants["bf16_channels_last" if bf16 else "fp32"] = step
    return {k: v["min"] for k, v in interleaved(variants, repeats).items()}


def drive_accuracy(root: Path, amp: bool) -> dict[str, float]:
    from napari_drunet.core.evaluation.metrics import evaluate_case
    from napari_drunet.core.models.model import load_model

    model = load_model("retina-vessels", device="cpu")
    rows = []
    for photo, truth, fov in drive_test_photos(20, root):
        pred = model.predict(photo, amp=amp)
        r = evaluate_case(pred.mask, truth.astype(np.uint8), prob=pred.probabilities, mask=fov,
                          labels=[1], hd=False)["per_class"][1]
        rows.append((r["dice"], r["auc"]))
    f1, auc = np.mean(rows, axis=0)
    return {"f1": float(f1), "auc": float(auc), "images": len(rows)}


def hippocampus_accuracy(root: Path, work: Path, amp: bool) -> dict[str, float]:
    from napari_drunet.core.evaluation.metrics import evaluate_case
    from napari_drunet.core.image.io import read_image, read_label
    from napari_drunet.core.models.model import load_model

    model = load_model("hippocampus", device="cpu")
    _, val, _ = split_msd(root, work)
    rows = []
    for e in val:
        image = read_image(e["image"])
        r = evaluate_case(model.predict(image, amp=amp).mask, read_label(e["label"])[0],
                          spacing=image.spacing, labels=[1, 2], hd=False)["per_class"]
        rows.append((r[1]["dice"], r[2]["dice"]))
    d1, d2 = np.mean(rows, axis=0)
    return {"dice_anterior": float(d1), "dice_posterior": float(d2), "volumes": len(rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, "--drive", "DRIVE")
    add_data_option(ap, "--msd", MSD_HIPPOCAMPUS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="runs/precision", help="folder for the MSD split files")
    ap.add_argument("--json", help="write all figures here")
    ap.add_argument("--speed-only", action="store_true", help="skip the accuracy figures")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from napari_drunet.core.device import autocast_dtype

    res: dict = {"cpu_autocast": str(autocast_dtype(torch.device("cpu"))), "speed": {}}
    for name, shapes in SHAPES.items():
        for shape in shapes:
            key = f"{name} {'x'.join(map(str, shape))}"
            res["speed"][key] = t = network_speed(name, shape)
            print(f"{key}: " + ", ".join(f"{k} {v:.3f} s" for k, v in t.items()), flush=True)
    res["train_step"] = {}
    for features, shape in TRAIN:
        key = f"features {'-'.join(map(str, features))}, batch {'x'.join(map(str, shape))}"
        res["train_step"][key] = t = train_step_speed(features, shape)
        print(f"train step, {key}: " + ", ".join(f"{k} {v:.3f} s" for k, v in t.items()),
              flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for amp in () if args.speed_only else (False, True):
        tag = "bf16" if amp and res["cpu_autocast"] != "None" else "fp32"
        res[f"drive_test_amp_{amp}"] = drive_accuracy(Path(args.drive), amp)
        res[f"hippocampus_val_amp_{amp}"] = hippocampus_accuracy(Path(args.msd), work, amp)
        print(f"amp={amp} ({tag}): DRIVE {res[f'drive_test_amp_{amp}']}, hippocampus "
              f"{res[f'hippocampus_val_amp_{amp}']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
