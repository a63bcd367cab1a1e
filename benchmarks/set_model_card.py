"""Write the card metadata (``meta["card"]``, see ``napari_drunet/core/models/fit.py``) into the
packaged model files, rewriting only the safetensors header: the tensor bytes stay identical.

    python benchmarks/set_model_card.py            # all packaged models listed in CARD_META
    python benchmarks/set_model_card.py --check    # exit 1 if a file lacks its card

The script checks that the bytes after the header are the same before and after (sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "napari_drunet" / "weights"
FUNDUS = {"modality": "colour fundus photograph", "dims": [2], "channels": "rgb",
          "example": "a DRIVE fundus photograph, 565 x 584 px RGB TIFF (any size: the field of "
                     "view is rescaled)"}
MRI_CROP = {"modality": "T1-weighted MRI crop around one hippocampus", "dims": [3],
            "channels": "grey",
            "example": "MSD Task04 hippocampus_150.nii.gz (the bundled sample), a 37 x 49 x 34 "
                       "voxel crop at 1 mm, one channel"}
DERMOSCOPY = {"modality": "dermoscopy photograph of a skin lesion", "dims": [2], "channels": "rgb",
              "example": "an ISIC 2017 dermoscopy photograph, 256 x 192 px RGB JPEG, one lesion "
                         "in the middle (any size: it is resized)"}
CARD_META = {"retina-vessels": FUNDUS, "hippocampus": MRI_CROP, "hippocampus-robust": MRI_CROP,
             "skin-lesion": DERMOSCOPY}


def split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def with_card(raw: bytes, card: dict) -> bytes:
    """The file ``raw`` with ``card`` in its recipe; the tensor bytes unchanged."""
    header, body = split(raw)
    meta = json.loads(header["__metadata__"]["napari_drunet"])
    meta["card"] = card
    header["__metadata__"]["napari_drunet"] = json.dumps(meta, sort_keys=True)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors keeps the data 8-byte aligned
    return struct.pack("<Q", len(text)) + text + body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    missing = 0
    for name, card in CARD_META.items():
        path = WEIGHTS / f"{name}.safetensors"
        raw = path.read_bytes()
        meta = json.loads(split(raw)[0]["__metadata__"]["napari_drunet"])
        if args.check:
            missing += meta.get("card") != card
            continue
        new = with_card(raw, card)
        before, after = (hashlib.sha256(split(b)[1]).hexdigest() for b in (raw, new))
        if before != after:
            raise SystemExit(f"{name}: tensor bytes would change; nothing written")
        path.write_bytes(new)
        print(f"{name}: card written, tensor bytes sha256 {after} unchanged")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
