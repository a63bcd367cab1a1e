"""Memory: what an out-of-memory error looks like, how much memory is free, and how much a
training step needs, so that a job too big for the machine is refused before it allocates
(the kernel's OOM killer gives no message and takes the whole session with it).

The training estimate was calibrated on CPU with the default DRU-Net (16..256 channels):
forward + backward keep about 24 float32 values per activation element (2D 256^2 batch 2:
347 MB measured, 3D 64^3: 507 MB), plus weights, gradients and two AdamW moments.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    import torch

#: Caps the free memory seen (bytes, or with a K/M/G suffix): tests and shared machines.
LIMIT_ENV = "NAPARI_DRUNET_MAX_MEMORY"
#: float32 values kept per activation element by forward + backward (calibrated, see above).
VALUES_PER_ACTIVATION = 24


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA and CPU out-of-memory errors (torch raises RuntimeError subclasses with
    "out of memory" on CUDA and "can't allocate memory" on CPU) and MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory"))


def _parse_size(text: str) -> int:
    text = text.strip().upper().rstrip("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def available_bytes(device: torch.device | str) -> int | None:
    """Free memory on ``device`` (RAM for the CPU), capped by ``$NAPARI_DRUNET_MAX_MEMORY``;
    None when it cannot be told (MPS)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    free: int | None = None
    if kind == "cpu":
        free = _free_ram()
    elif kind == "cuda":
        import torch

        try:
            free = int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            free = None
    cap = os.environ.get(LIMIT_ENV)
    if cap:
        try:
            limit = _parse_size(cap)
        except ValueError:
            raise InputError(f"${LIMIT_ENV}={cap!r} is not a size like 8G") from None
        free = limit if free is None else min(free, limit)
    return free


def _free_ram() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def training_bytes(features: Sequence[int], patch: Sequence[int], batch: int,
                   n_params: int) -> int:
    """Memory of one training step of a U-Net with ``features`` per level on ``batch``
    patches of ``patch`` (padded as the network pads them, to a multiple of 2**(levels-1))."""
    multiple = 2 ** (len(features) - 1)
    padded = [multiple * math.ceil(p / multiple) for p in patch]
    pixels = math.prod(padded)
    per_sample = sum(pixels / 2 ** (len(padded) * level) * width
                     for level, width in enumerate(features))
    return int(batch * per_sample * 4 * VALUES_PER_ACTIVATION + n_params * 4 * 4)


def check_fits(need: int, device: torch.device | str, what: str, advice: str) -> None:
    """Raise :class:`InputError` when ``need`` bytes exceed the free memory of ``device``."""
    free = available_bytes(device)
    if free is not None and need > free:
        raise InputError(f"{what} needs about {need / 2 ** 30:.1f} GiB but {free / 2 ** 30:.1f} "
                         f"GiB are free on {device}; {advice}")
