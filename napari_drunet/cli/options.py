"""Argument types shared by the sub-commands (numbers checked as argparse parses them)."""

from __future__ import annotations

import argparse


def tuple_of_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected integers like 256 or 256,256: {text!r}") from err
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def features(text: str) -> tuple[int, ...]:
    from ..core.models.checkpoint import MAX_LEVELS, MAX_WIDTH

    values = tuple_of_ints(text)
    if len(values) > MAX_LEVELS or max(values) > MAX_WIDTH:
        raise argparse.ArgumentTypeError(f"at most {MAX_LEVELS} levels of at most {MAX_WIDTH} "
                                         f"channels: {text!r}")
    return values


def bounded(kind: type, low: float | None = None, high: float | None = None,
             what: str = "value"):
    """argparse type: a ``kind`` number (finite) in ``[low, high]``."""
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number: {text!r}") from None
        if not math.isfinite(value) or (low is not None and value < low) or \
                (high is not None and value > high):
            span = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            raise argparse.ArgumentTypeError(f"{what} must be in {span}: {text!r}")
        return value

    return parse


THREADS = bounded(int, 1, 1024, "thread count")
SEED = bounded(int, 0, 2 ** 32 - 1, "seed")
FRACTION = bounded(float, 0.0, 1.0, "fraction")


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)
