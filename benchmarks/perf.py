"""napari-drunet performance suite: one command, one table (and JSON).

    python -m benchmarks.perf --quick --json perf.json        # ~10 min on 2 CPU cores
    python -m benchmarks.perf --device cuda --json gpu.json   # on a GPU machine

Every scenario runs in its own subprocess (peak memory is per scenario); the figures inside one
scenario are timed round-robin in the same process, so the reported ratios compare like with
like on a shared, noisy machine. See ``docs/performance.md`` for the goals and the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import REPO

ALL = ("public2d", "public3d", "fastpaths", "click", "volume_slices", "volume_3d", "normalization",
       "finetune", "gui", "scaling2d", "scaling3d")


def plan(args: argparse.Namespace) -> dict[str, tuple[str, dict[str, Any]]]:
    """Scenario name -> (function, options)."""
    q = args.quick
    base = {"quick": q, "device": args.device, "model": args.model, "threads": args.threads,
            "repeats": args.repeats or (3 if q else 5), "compile": args.compile}
    vol = (300, 512, 512)
    return {
        "public2d": ("public2d", base),
        "public3d": ("public3d", base),
        "fastpaths": ("fastpaths", base),
        "click": ("click", {**base, "repeats": 5}),
        "volume_slices": ("volume", {**base, "mode": "slices", "shape": vol}),
        # quick: a tiny 3D net (memory is what is measured); full: a real one
        "volume_3d": ("volume", {**base, "mode": "3d", "shape": vol,
                                 "features": (4, 8) if q else (8, 16, 32, 64)}),
        "normalization": ("normalization", {**base, "shape": vol}),
        "finetune": ("finetune", base),
        "gui": ("gui", base),
        "scaling2d": ("scaling", {**base, "dims": 2, "sizes": [256, 512, 1024, 2048] if q else
                                  [256, 512, 1024, 2048, 4096]}),
        "scaling3d": ("scaling", {**base, "dims": 3, "sizes": [64, 128] if q else
                                  [64, 128, 256, [300, 512, 512]]}),
    }


# ----------------------------------------------------------------------------- subprocesses
def child(name: str, opts_json: str, out_path: str) -> None:
    """Entry point of a scenario subprocess: run it, write JSON to ``out_path``."""
    import torch

    from ._perf_common import machine, peak_rss_mb
    from ._perf_scenarios import run_scenario

    opts = json.loads(opts_json)
    torch.set_num_threads(int(opts["threads"]))
    t0 = time.perf_counter()
    result = run_scenario(name, opts)
    result["_wall_s"] = time.perf_counter() - t0
    result["_process_peak_rss_mb"] = peak_rss_mb()
    result["_machine"] = machine()
    Path(out_path).write_text(json.dumps(result, default=float))


def launch(key: str, func: str, opts: dict[str, Any], timeout: float) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.perf", "--child", func,
               "--child-opts", json.dumps(opts), "--child-out", str(out)]
        env = dict(os.environ, OMP_NUM_THREADS=str(opts["threads"]),
                   MKL_NUM_THREADS=str(opts["threads"]))
        if func == "gui":
            env.setdefault("NAPARI_DRUNET_SYNC", "0")
            if not env.get("DISPLAY") and shutil.which("xvfb-run"):
                cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"] + cmd
        t0 = time.perf_counter()
        print(f"[perf] {key} ...", file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                                  cwd=REPO)  # the checkout's benchmarks and napari_drunet
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        print(f"[perf] {key} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
        return json.loads(out.read_text())


# ------------------------------------------------------------------------------------ table
def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        v = f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return f"{v}{unit}"


def _goal(ok: bool | None) -> str:
    return "-" if ok is None else ("MET" if ok else "MISSED")


def table_rows(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, goal, status) rows."""
    rows: list[tuple[str, str, str, str]] = []

    def add(fig: str, val: str, goal: str = "", ok: bool | None = None) -> None:
        rows.append((fig, val, goal, _goal(ok)))

    for key, r in res.items():
        if "error" in r:
            add(key, "ERROR: " + r["error"][:90])
    r2, r3 = res.get("public2d", {}), res.get("public3d", {})
    if "conv_peak_gflops" in r2 or "conv_peak_gflops" in r3:
        add("conv peak (3x3 conv 64->64, 4x256², fp32)",
            _fmt(r2.get("conv_peak_gflops", r3.get("conv_peak_gflops")), " GFLOP/s"))
        bf16 = r2.get("conv_peak_bf16_gflops", r3.get("conv_peak_bf16_gflops"))
        if bf16:
            add("conv peak, bf16 channels-last (the precision inference autocasts to here)",
                _fmt(bf16, " GFLOP/s"))
    rows_2d = [(f"2D {k}", v, "MONAI roi 256²") for k, v in r2.get("images", {}).items()]
    rows_3d = [(f"3D {k}", v, f"MONAI roi {'x'.join(map(str, r3['monai_roi']))}")
               for k, v in r3.get("volumes", {}).items()]
    for name, im, roi in rows_2d + rows_3d:
        t = im["times"]
        label = f"{name} ({im['tiles']} tile(s) of {'x'.join(map(str, im['tile']))})"
        add(f"{label}: Model.predict / MONAI sliding window ({roi}, sw 4, overlap 0.25)",
            f"{_fmt(t['ours']['min'], ' s')} / {_fmt(t['monai']['min'], ' s')} = "
            f"{_fmt(im['ratio'], 'x')} (median {_fmt(im['ratio_median'], 'x')})",
            "<= 0.8x", im["ratio"] <= 0.8)
        if not im.get("rescaled"):  # a shrunk photograph: the network sees a DRIVE-sized one
            add(f"{label}: achieved conv throughput", _fmt(im["achieved_gflops"], " GFLOP/s") +
                f" = {im['pct_conv_peak']:.0f}% of the {im.get('precision', 'float32')} peak"
                f" ({im.get('pct_conv_peak_fp32', im['pct_conv_peak']):.0f}% of fp32's)",
                ">= 50%", im["pct_conv_peak"] >= 50)
        mem = im["peak_rss_over_start_mb"]
        add(f"{label}: peak RSS over start, ours / MONAI",
            f"{mem['ours']:.0f} MB / {mem['monai']:.0f} MB")
    if "f1_drive_test" in r2:
        f1 = r2["f1_drive_test"]
        add(f"DRIVE test F1 inside the FOV ({r2['f1_images']} images): ours / MONAI",
            f"{f1['ours']:.4f} / {f1['monai']:.4f}", ">= MONAI", f1["ours"] >= f1["monai"] - 1e-4)
    r = res.get("fastpaths", {})
    for group in ("configs", "grad_modes", "batching"):
        for k, v in r.get(group, {}).items():
            extra = f", max |diff| {v['max_abs_diff']:.1e}" if "max_abs_diff" in v else ""
            add(f"fast path {group}: {k}", f"{_fmt(v['min'], ' s')} (speed-up "
                f"{v['speedup']:.2f}x{extra})")
    r = res.get("click", {})
    if "min" in r:
        add("click-to-mask: Model.predict DRIVE, CPU, warm", _fmt(r["min"], " s") +
            f" (median {_fmt(r['median'], ' s')})", "<= 1 s", r["min"] <= 1.0)
    for key in ("volume_slices", "volume_3d"):
        r = res.get(key, {})
        if "peak_mb" in r:
            budget = 2.5 * r["volume_mb"] + r["model_mb"]
            add(f"3D {r['mode']} {'x'.join(map(str, r['shape']))} (net {r['features']}, "
                f"{r['tiles']} tiles): time", _fmt(r["seconds"], " s"))
            add(f"3D {r['mode']}: peak RSS over baseline",
                f"{r['peak_mb']:.0f} MB = {r['peak_over_volume']:.2f}x volume "
                f"(model+workspace {r['model_mb']:.0f} MB)",
                f"<= 2.5x vol + model = {budget:.0f} MB", r["peak_mb"] <= budget)
    r = res.get("normalization", {})
    if "peak_mb" in r:
        add("normalize() int16 CT volume -> float32: peak RSS",
            f"{r['peak_mb']:.0f} MB = {r['peak_over_volume']:.2f}x float32 volume, "
            f"{r['seconds']:.1f} s")
    r = res.get("finetune", {})
    if "steps" in r:
        s = r["seconds_to_improve"]
        add("fine-tune 5x512²: time until val Dice improves",
            _fmt(s, " s") + f" (Dice {_fmt(r['initial_val_dice'])} -> "
            f"{_fmt(r['history'][-1]['val_dice'] if r['history'] else None)})",
            "<= 60 s", None if s is None else s <= 60)
        add("fine-tune steps/s (2 x 256² patches)", _fmt(r["steps_per_s"]))
    r = res.get("gui", {})
    o = r.get("plugin_open")
    if o:
        add("GUI plugin open: widget creation; background warm-up (longest stall)",
            f"{_fmt(o['create_widget_ms'], ' ms')}; {_fmt(o['warmup_seconds'], ' s')} "
            f"({_fmt(o['longest_stall_during_warmup_ms'], ' ms')})")

    def stall_goal(label: str, phase: str, key: str) -> None:
        """Row for a stall goal: the first run of the session and later runs both count."""
        warm = r[phase][key]
        cold = r.get(f"{phase}_cold", {}).get(key, warm)
        add(f"GUI longest stall {label} (first run / later runs)",
            f"{_fmt(cold, ' ms')} / {_fmt(warm, ' ms')}", "<= 50 ms", max(cold, warm) <= 50)

    if "inference" in r:
        stall_goal("while inference computes", "inference", "longest_stall_while_running_ms")
        add("GUI showing the result: new labels layer (first) / data replaced (later)",
            f"{_fmt(r.get('inference_cold', {}).get('show_result_ms'), ' ms')} / "
            f"{_fmt(r['inference']['show_result_ms'], ' ms')}")
        add("GUI longest stall over the whole inference phase incl. showing (first / later)",
            f"{_fmt(r.get('inference_cold', {}).get('longest_stall_ms'), ' ms')} / "
            f"{_fmt(r['inference']['longest_stall_ms'], ' ms')}")
    if "finetune" in r:
        stall_goal("during fine-tuning", "finetune", "longest_stall_ms")
    w = r.get("widget_click_to_mask", {})
    if "warm_s" in w:
        add("click-to-mask via Segment widget (warm / first)",
            f"{w['warm_s']:.2f} s / {w['first_s']:.2f} s", "<= 1 s", w["warm_s"] <= 1.0)
    elif "error" in w:
        add("click-to-mask via Segment widget", "not measured: " + w["error"][:80])
    for key in ("scaling2d", "scaling3d"):
        rows_ = res.get(key, {}).get("rows", [])
        if rows_:
            ref = rows_[0]["us_per_pixel"]
            for row in rows_:
                # tiles overlap (0.25): time grows with the pixels the network actually sees
                seen = row["tiles"] * math.prod(row["tile"]) if row["tiles"] > 1 else row["pixels"]
                add(f"scaling {'x'.join(map(str, row['shape']))} ({row['tiles']} tiles)",
                    f"{row['seconds']:.3g} s, {row['us_per_pixel']:.3g} µs/px "
                    f"({row['us_per_pixel'] / ref:.2f}x of smallest; "
                    f"{row['seconds'] / seen * 1e6:.3g} µs per pixel processed), "
                    f"+{row['peak_mb']:.0f} MB ({row['peak_mb'] / max(row['input_mb'], 1e-9):.2f}x input)")
    return rows


def render(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("figure", "measured", "goal", "status")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep] + body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    p.add_argument("--json", help="write all results to this JSON file")
    p.add_argument("--device", default="cpu", help="cpu or cuda (GUI/click scenarios use cpu)")
    p.add_argument("--model", default=None,
                   help="packaged model name or file (default retina-vessels if packaged, "
                        "else a random-weight DRU-Net)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(ALL)}")
    p.add_argument("--skip", default="", help="comma-separated scenarios to skip")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (GPU)")
    p.add_argument("--timeout", type=float, default=1800.0, help="per scenario (s)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-opts", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.child_opts, args.child_out)
        return 0
    names = args.only.split(",") if args.only else list(ALL)
    names = [n for n in names if n not in set(args.skip.split(","))]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    scenarios = plan(args)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results = {n: launch(n, *scenarios[n], timeout=args.timeout) for n in names}
    rows = table_rows(results)
    from ._perf_common import machine

    meta = {"machine": machine(), "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg()), "wall_s": time.perf_counter() - t0,
            "argv": sys.argv[1:], "device": args.device}
    print(f"napari-drunet perf ({'quick' if args.quick else 'full'}) on {meta['machine']['cpu']}"
          f", {args.threads} threads, device {args.device}; load average before "
          f"{load_before[0]:.2f}, after {meta['loadavg_after'][0]:.2f}; "
          f"{meta['wall_s']:.0f} s in all")
    print(render(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results,
                                               "table": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
