"""Progress of a long job on the terminal: a tqdm bar, or a line every 30 s in logs and pipes."""

from __future__ import annotations

import sys
import time


def progress_bar(total: int | None, desc: str):
    from tqdm import tqdm

    # bars only on a terminal: in logs and pipes their carriage returns are noise, and stderr
    # must stay one clean "error: ..." line when a command fails
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
                disable=not sys.stderr.isatty(), leave=False)


#: Without a terminal, a job running longer than this prints a progress line this often.
LOG_EVERY_S = 30.0


def log_progress(desc: str, rec, started: float, state: dict) -> None:
    """Progress lines for logs and pipes (no bar there): a long single image is not silent."""
    now = time.monotonic()
    if now - state.get("last", started) < LOG_EVERY_S:
        return
    state["last"] = now
    share = f" ({100 * rec.step / rec.total:.0f} %)" if rec.total else ""
    print(f"{desc}: {rec.step}/{rec.total or '?'}{share} after {now - started:.0f} s",
          file=sys.stderr, flush=True)


def drive(gen, desc: str, quiet: bool = False):
    """Run a progress generator with a tqdm bar (none if ``quiet``); return its result."""
    from ..core.progress import drive as run

    if quiet:
        return run(gen)
    bar = None
    last = 0
    started, state = time.monotonic(), {}

    def show(rec) -> None:
        nonlocal bar, last
        if not sys.stderr.isatty():
            log_progress(desc, rec, started, state)
        if bar is None:
            bar = progress_bar(rec.total, desc)
        if rec.total and bar.total != rec.total:
            bar.total = rec.total
        bar.update(max(0, rec.step - last))
        last = rec.step
        post = {k: f"{v:.4g}" for k, v in rec.metrics.items()
                if isinstance(v, (int, float)) and k in ("loss", "val_dice", "lr")}
        if post:
            bar.set_postfix(post, refresh=False)

    try:
        return run(gen, show)
    finally:
        if bar is not None:
            bar.close()
