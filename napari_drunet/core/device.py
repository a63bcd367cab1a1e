"""Choice of compute device: ``auto`` = cuda, then mps, then cpu."""

from __future__ import annotations

import torch

from .errors import InputError


def get_device(name: str | torch.device | None = "auto") -> torch.device:
    """Return a usable torch device.

    Parameters
    ----------
    name : str
        ``"auto"`` (default), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises
    ------
    InputError
        If the requested device does not exist on this machine.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device '{name}' requested but CUDA is not available on this machine")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device '{name}' does not exist ({torch.cuda.device_count()} GPU(s))")
        return dev
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("device 'mps' requested but Apple MPS is not available")
        return torch.device("mps")
    raise InputError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)")


def available_devices() -> list[str]:
    """Names a user can pick in the GUI."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The mixed-precision type inference runs in on ``device``, or None for float32.

    CUDA: bfloat16 where supported, else float16. CPU: bfloat16 only where the CPU has AMX
    tiles (Intel Sapphire Rapids and later), where oneDNN's bf16 convolutions run 2.3-4x
    faster than float32 (benchmarks/precision.py); elsewhere bf16 on the CPU is emulated and
    slower, so float32 stays. Probabilities move by at most ~0.03 (bf16 has 8 mantissa bits).
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_amx():
        return torch.bfloat16
    return None


def _cpu_has_amx() -> bool:
    # torch exposes the check under a private name only (torch.cpu, 2.1+); absent means no
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check()) if check is not None else False
