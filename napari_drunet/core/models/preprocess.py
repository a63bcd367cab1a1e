"""The ``meta["preprocess"]`` entries of a checkpoint's input recipe and their validation.

Apart from :mod:`.recipe` so that reading a checkpoint (:mod:`.checkpoint`) can check them
without importing the recipe, which imports the model-fit rules, which read checkpoints.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError

#: channel handling: ``auto`` = RGB -> luminance for a 1-channel model, gray repeated for an
#: RGB model, any other mismatch refused
CHANNEL_MODES: tuple[str, ...] = ("auto",)
#: rescale modes and the ``meta["preprocess"]`` key holding each one's target
RESCALE_KEYS: dict[str, str] = {"fov": "fov_diameter", "size": "long_side", "spacing": "spacing"}
RESCALE_MODES: tuple[str, ...] = ("none", *RESCALE_KEYS)
KNOWN_KEYS = {"fov_diameter", "mask_outside_fov", "long_side", "spacing", "orientation",
          "axis_search", "channels"}


def check_preprocess(pre: Any) -> None:
    """Raise :class:`InputError` when a ``meta["preprocess"]`` entry has an unusable value
    (numbers in a plausible range, known channel mode); unknown keys are allowed (kept)."""
    if pre is None:
        return
    if not isinstance(pre, dict):
        raise InputError("'preprocess' must be a JSON object")

    def number(value: Any, what: str, low: float, high: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= float(value) <= high:
            raise InputError(f"preprocess {what} must be a number in [{low:g}, {high:g}], got "
                             f"{value!r}")

    if pre.get("fov_diameter") is not None:
        number(pre["fov_diameter"], "fov_diameter (pixels)", 8, 100_000)
    if pre.get("long_side") is not None:
        number(pre["long_side"], "long_side (pixels)", 8, 100_000)
    for flag in ("mask_outside_fov", "axis_search"):
        if flag in pre and not isinstance(pre[flag], bool):
            raise InputError(f"preprocess {flag} must be true or false")
    spacing = pre.get("spacing")
    if spacing is not None:
        if not isinstance(spacing, list) or len(spacing) not in (2, 3):
            raise InputError(f"preprocess spacing must be 2 or 3 numbers, got {spacing!r}")
        for v in spacing:
            number(v, "spacing (mm)", 1e-4, 1e3)
    if pre.get("channels", "auto") not in CHANNEL_MODES:
        raise InputError(f"preprocess channels must be one of {', '.join(CHANNEL_MODES)}; got "
                         f"{pre['channels']!r}")
    if pre.get("orientation") is not None and not isinstance(pre["orientation"], str):
        raise InputError("preprocess orientation must be axis codes such as 'RAS'")
