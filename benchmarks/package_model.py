"""Package a trained checkpoint as a named model shipped in ``napari_drunet/weights``.

    python -m benchmarks.package_model --ckpt runs/drive_drunet/model.ckpt --name retina-vessels \
        --summary runs/drive_drunet/summary.json --kind retina
    python -m benchmarks.package_model --ckpt runs/hippo3d/model.ckpt --name hippocampus \
        --summary runs/hippo3d/summary.json --kind hippocampus
    python -m benchmarks.package_model --ckpt runs/isic/model.ckpt --name skin-lesion \
        --summary runs/isic/summary.json --kind skin --shift runs/isic/size_shift.json
    python -m benchmarks.package_model --ckpt runs/site/ft2_drive/model.ckpt \
        --name retina-vessels --summary runs/ship/summary.json --kind retina \
        --shift runs/ship/shift.json --sites runs/loso/drive_stare/results.json \
        runs/loso/stare_drive/results.json

A summary whose parent runs are gone lists their card lines in ``"earlier_stages"``.
``--sites``: ``benchmarks/new_site.py`` results (leave-one-site-out) for the card's table.

Adds the scale recipe (``meta["preprocess"]``: the training images' median FOV diameter for
fundus models; for dermoscopy the photograph long side recorded by ``isic_accuracy.py``; for
volumes the training voxel spacing, the orientation of the training volumes'
axes read from their NIfTI headers, and ``axis_search`` for volumes without a header, see
``napari_drunet/core/infer/orientation.py``) and writes a model card
``<name>.md`` from the held-out results in ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .brats_data import brats_cases
from .common import (
    BRAIN_MRI,
    DERMOSCOPY,
    FUNDUS,
    MRI_CROP,
    MSD_HIPPOCAMPUS,
    REPO,
    add_data_option,
)
from .history import parent_run

WEIGHTS = REPO / "napari_drunet" / "weights"

CARDS = {
    "retina": {
        "title": "Retinal vessel segmentation in colour fundus photographs (2D DRU-Net)",
        "data": "DRIVE (Staal et al., IEEE TMI 2004): training images 21-36 for training, 37-40 "
                "for validation (checkpoint and threshold selection). DRIVE is distributed for "
                "research use by the Image Sciences Institute / grand-challenge; the images are "
                "not redistributed here, only weights learnt from them. Cite Staal et al. 2004.",
        "input": "RGB fundus photograph (any resolution: the field of view is detected and the "
                 "image rescaled to DRIVE's ~540 px FOV diameter; outside the FOV is background).",
        "eval": "DRIVE test set (20 images, 1st_manual, inside the FOV mask), evaluated once.",
        "limits": "Learnt from 16 DRIVE photographs (one screening programme and camera, few "
                  "lesions). The `fundus_local` input (each channel against its local mean and "
                  "contrast inside the FOV) carries it to other cameras far better than a global "
                  "z-score (STARE zero-shot F1 0.780 / AUC 0.976 on its 12 test photographs, "
                  "where the earlier z-scored weights gave 0.583 / 0.884), but it was tested at "
                  "one other site only (STARE). At a new clinic: adapt, correct 3-5 photographs, "
                  "fine-tune, and check the comparison (user guide). Not evaluated on CHASE_DB1, HRF, wide-field or smartphone fundus images.",
        "anchors": ["DRIVE: R2U-Net F1 0.8171, AUC 0.9784; U-Net 0.8142 / 0.9755; IterNet "
                    "0.8205 / 0.9816; SA-UNet 0.8263 / 0.9864 (V: Alom et al. 2018 as quoted in "
                    "Hindawi JHE 2022/5188362 Tab. 4, PwC)",
                    "Across sites: R2U-Net trained on all 20 CHASE_DB1 training images scores "
                    "F1 0.7928 there (V: PwC); bob.ip.binseg's cross-database tables show a clear "
                    "drop from DRIVE to STARE / CHASE_DB1 / HRF (V: idiap bob.ip.binseg)"],
    },
    "hippocampus": {
        "title": "Hippocampus head/body segmentation in T1 MRI crops (3D DRU-Net)",
        "data": "Medical Segmentation Decathlon Task04 Hippocampus (Simpson et al. 2019, "
                "Antonelli et al. 2022), CC-BY-SA 4.0: cases not divisible by 5, every 8th of "
                "them held out for validation (checkpoint selection).",
        "input": "3D T1-weighted MRI cropped around one hippocampus (as in MSD Task04), NIfTI; "
                 "volumes with another voxel spacing are resampled to 1 mm, and volumes stored "
                 "in another axis order are reoriented to the training volumes' RAS (by the "
                 "NIfTI header; without one, by trying the 6 axis orders).",
        "eval": "MSD Task04 cases whose number is divisible by 5 (59 volumes), evaluated once.",
    },
    "brain": {
        "title": "Brain-tumour segmentation in multi-modal MRI, FLAIR + T1c, 5 classes (3D DRU-Net)",
        "data": "BraTS 2015 training data, the 6 cases shipped with deepmedic "
                "(`../shared/data/BraTS2015_6`; Menze et al., IEEE TMI 2015; CC BY-NC-SA 3.0 CH: "
                "non-commercial use, share alike; cite Menze et al. 2015): pat0003-pat0006 "
                "(train + validation) for training, resampled to 2 mm; no checkpoint selection "
                "(the last weights are kept). The scans are not redistributed here.",
        "input": "One study as a 2-channel 3D image, channel 0 FLAIR, channel 1 T1c, "
                 "co-registered, skull-stripped and each z-scored inside the brain mask (the "
                 "BraTS2015_6 `*_subtrMeanDivStd` files); any voxel size (resampled to the 2 mm "
                 "it learnt at, labels returned on the study's grid); studies in another axis "
                 "orientation are reoriented by their NIfTI header.",
        "eval": "BraTS regions (whole tumour 1-4, tumour core 1, 3, 4, enhancing 4) on the 2 "
                "test studies pat0001 and pat0002, scored once at 1 mm; Dice per study.",
        "limits": "Learnt from 4 studies on one CPU core (Training above) and tested on 2: a "
                  "demonstration of the multi-modal, multi-class path, not a validated tumour "
                  "model. Tumour core and enhancing tumour can be much weaker than the whole "
                  "tumour (Held-out results). Raw scanner intensities are not normalised by the "
                  "model: give FLAIR and T1c z-scored inside the brain (as BraTS2015_6), "
                  "skull-stripped, FLAIR first. Not evaluated on other scanners, on other "
                  "BraTS years or on post-operative scans.",
        "anchors": ["BraTS 2015 methods reach whole-tumour Dice around 0.85-0.90 after GPU "
                    "training on 200+ studies (M: from memory, not verified)"],
    },
    "skin": {
        "title": "Skin-lesion segmentation in dermoscopy photographs (2D DRU-Net)",
        "data": "ISIC 2017 Challenge Part 1 (Codella et al., arXiv:1710.05006; ISIC Archive "
                "images, research use): the official 2000 training images for training, the "
                "150 validation images for checkpoint and threshold selection, as resized to "
                "256x192 by github.com/manideep2510/melanoma_segmentation. The images are not "
                "redistributed here, only weights learnt from them. Cite Codella et al. 2017 "
                "and the ISIC Archive.",
        "input": "RGB dermoscopy photograph of one lesion, any size (700-6000 px from a "
                 "clinic's dermoscope): the model resizes it, aspect kept, to the long side it "
                 "learnt at and returns the mask on the photograph's grid.",
        "eval": "ISIC 2017 Part 1 test set (600 images), per-image means (Jaccard = `iou`, "
                "HD95 in px of the 256x192 image), evaluated once; the ISIC 2018 thresholded "
                "Jaccard counts an image whose Jaccard is below 0.65 as 0.",
        "limits": "Trained on 2000 ISIC photographs (mostly fair skin, dermoscopes of the ISIC "
                  "archive's clinics) on one CPU core (Training above): below the published "
                  "GPU-trained models (see the anchors; {images_below_0.65} of the "
                  "{test_images} test images are under the 0.65 Jaccard floor); one "
                  "lesion per photograph, centred; hair, rulers, ink marks and vignetting "
                  "corners can be segmented as lesion; not evaluated on other skin types, "
                  "clinical (non-dermoscopic) photographs or other sites' data.",
        "anchors": ["ISIC 2017 winner (Yuan & Lo): Jaccard 0.765, Dice 0.849, Acc 0.934 (V: "
                    "PMC10407008 Tab. 5)",
                    "ISIC 2018 U-Net (SL-HarDNet paper): Dice 0.848, Jaccard 0.769 (V: "
                    "PMC9849244 Tab. 2)",
                    "ISIC 2018 Task 1 leaderboard top thresholded Jaccard ~0.802 (M)"],
    },
}


def drive_fov_diameter(drive: Path, ids: range) -> float:
    from napari_drunet.core.image.io import read_image
    from napari_drunet.core.image.normalization import default_spec, normalize
    from napari_drunet.core.image.rescale import fov_diameter, fov_mask

    values = []
    for cid in ids:
        img = read_image(drive / "training" / "images" / f"{cid}_training.tif")
        values.append(fov_diameter(fov_mask(normalize(img.array, default_spec()))))
    return float(np.median(values))


def volume_orientation(files: list[Path]) -> str:
    """The axis codes (nibabel order, e.g. ``"RAS"``) shared by the NIfTI ``files``."""
    import nibabel as nib

    codes = {"".join(nib.aff2axcodes(nib.load(str(f)).affine)) for f in files}
    if len(codes) != 1:
        raise SystemExit(f"the training volumes differ in orientation: {sorted(codes)}")
    return codes.pop()


def halve_weights(path: Path) -> None:
    """Rewrite the model file with float16 convolution weights (tensors of >= 2 dimensions);
    norm parameters and statistics stay float32. The recipe metadata is kept as it is."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: t.half() if t.is_floating_point() and t.dim() >= 2 else t
               for k, t in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)


def _recipe(meta: dict) -> str:
    train = meta.get("training", {})
    cfg, hist = train.get("config", {}), train.get("history") or [{}]
    extra = "".join(f", {k} {cfg[k]}" for k in ("rotate", "scale", "degrade") if cfg.get(k))
    val = meta.get("metrics", {}).get("val_dice")
    return (f"{hist[-1].get('step')} steps ({len(hist)} epochs), batch {cfg.get('batch_size')} x "
            f"{cfg.get('patch_size')} patches, AdamW lr {cfg.get('lr')} {cfg.get('schedule')}, "
            f"loss {cfg.get('loss')} (BCE+Dice / CE+Dice){extra}, "
            + (f"best checkpoint by validation Dice {val}" if val is not None else
               "last weights kept (no validation during the cycle)"))


def _stages(ckpt: str | Path, summary: dict) -> list[str]:
    """One line per training stage, oldest first (a run continued from ``--init`` follows its
    parent's stages, read from the parent run's checkpoint and ``summary.json``)."""
    from napari_drunet.core.models.checkpoint import read_meta

    this = f"{_recipe(read_meta(ckpt))}; {summary.get('train_seconds')} s wall time"
    parent = parent_run(summary)
    if parent is None or not parent[1]:  # from scratch, or the parent's summary is gone
        # a chain whose first runs are gone keeps their card lines in ``earlier_stages``
        return [*summary.get("earlier_stages", []), this]
    return _stages(*parent) + [this]


def _training(ckpt: str, summary: dict) -> str:
    """The training recipe; a run continued from another checkpoint lists every stage."""
    stages = _stages(ckpt, summary)
    where = f" on {summary.get('device', 'CPU (2 cores)')}"
    if len(stages) == 1:
        return stages[0] + where
    kind = ["from scratch"] + ["continued, a new cosine cycle"] * (len(stages) - 1)
    return "; ".join(f"stage {i + 1} ({k}): {t}"
                     for i, (k, t) in enumerate(zip(kind, stages, strict=True))) + where


def shift_section(path: str | Path | None) -> list[str]:
    """Card lines for a ``fundus_shift.py`` / ``mri_shift.py`` JSON (empty without one)."""
    if not path:
        return []
    data = json.loads(Path(path).read_text())
    rows, binary = data["results"], "f1" in data["results"][0]
    where = f"{data.get('images') or data.get('volumes')} {data['split']} cases"
    script = data.get("script") or f"{'fundus' if binary else 'mri'}_shift.py"
    what = data.get("what") or ("cameras" if binary else "scanners")
    lines = ["## Robustness to simulated camera / scanner shift", "",
             f"Held-out data changed as other {what} would (`benchmarks/{script}`, {where}); "
             "scored against the original labels. Expect lower accuracy on images like the "
             "weaker rows.", ""]
    n_site = data.get("adapt_images") or data.get("adapt_volumes")
    if n_site:
        lines[-1:-1] = ["", f"Rows marked *adapted*: the model after `drunet adapt` (batch-norm "
                        f"statistics re-estimated, no labels) on {n_site} of the site's own "
                        "images, shifted the same way (training images, never the scored ones). "
                        "Try it when your images look like a row where it helps."]
    if binary:
        lines += ["| shift | automatic rescaling | F1 | AUC |", "|---|---|---|---|"]
        lines += [f"| {r['shift']} | {'on' if r['rescale'] else 'off'}"
                  f"{', adapted' if r.get('adapted') else ''} | {r['f1']:.3f} | "
                  f"{r['auc']:.3f} |" for r in rows]
    else:
        lines += ["| shift | resampling to 1 mm / axis order | Dice anterior | Dice posterior |",
                  "|---|---|---|---|"]
        lines += [f"| {r['shift']} | {r.get('handling') or ('on' if r['resample'] else 'off')} "
                  f"| {r['dice_1']:.3f} | {r['dice_2']:.3f} |" for r in rows]
    return lines + [""]


def site_section(paths: list[str] | None) -> list[str]:
    """Card lines for ``new_site.py`` results: each direction's zero-shot, AdaBN and
    correction-round rows (empty without any)."""
    rows = [r for p in paths or [] for r in json.loads(Path(p).read_text())["rows"]]
    if not rows:
        return []
    lines = ["## At another site (leave-one-site-out)", "",
             "A model of this recipe trained on one public set and scored on the other, inside "
             "the field of view (`benchmarks/new_site.py`): as it comes (zero-shot), after "
             "`drunet adapt` on the site's unlabelled pool images, and after one correction "
             "round with the widget's defaults on the first k corrected photographs of the site "
             "(scored on the site's other images). Expect numbers like these on a camera the "
             "model has not seen; correct a few photographs and fine-tune to close part of the "
             "gap.", "",
             "| direction | stage | F1 | Se | Sp | AUC | time (s, 1 thread) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['direction']} | {r['stage']} | {r['dice']:.3f} | {r['sensitivity']:.3f} "
              f"| {r['specificity']:.3f} | {r['auc']:.3f} | {r.get('seconds', 0):.0f} |"
              for r in rows]
    return lines + [""]


CLEAN_UP = ("the largest object of each mask is kept and its holes filled (`largest_object`; "
            "`drunet predict --no-largest-object` or the Segment box turns it off for an image "
            "with several lesions)")


def _fill(text: str, summary: dict) -> str:
    """``text`` with ``{key}`` replaced by the summary's figures (keys may hold dots)."""
    for key, value in summary.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def card(name: str, kind: str, meta: dict, summary: dict, ckpt: str,
         shift: str | Path | None = None, sites: list[str] | None = None) -> str:
    from napari_drunet.core.models.fit import fit_summary

    c = CARDS[kind]
    test = summary.get("test", {})
    inference = meta.get("inference") or {}
    lines = [f"# `{name}` — {c['title']}", "",
             "**Intended use:** research and education; *not* a medical device and not for "
             "diagnosis. Predictions must be reviewed by a qualified person.", "",
             f"- Architecture: `{meta['arch']}` {json.dumps(meta['arch_kwargs'])}",
             f"- Labels: {json.dumps(meta.get('label_names'))}",
             f"- Input: {c['input']}",
             f"- Fits: {fit_summary(meta)}; images with other dimensions are refused "
             "before segmenting (`napari_drunet.core.models.fit`)",
             f"- Normalization: {json.dumps(meta.get('normalization'))}",
             (f"- Threshold: {meta.get('threshold')} (chosen on validation data)"
              if meta["arch_kwargs"].get("out_channels", 1) == 1 else
              "- Decision: argmax over the softmax classes (no threshold)"),
             f"- Training data and terms: {c['data']}",
             f"- Training: {_training(ckpt, summary)}",
             f"- Test-time augmentation for the numbers below: {bool(summary.get('tta'))}"
             + (" (the model's default)" if inference.get("tta") else ""),
             *([f"- Clean-up (the model's default, chosen on validation data): {CLEAN_UP}"]
               if inference.get("largest_object") else []),
             "", "## Held-out results", "", c["eval"], "", "```",
             json.dumps(test, indent=2), "```", "", *shift_section(shift), *site_section(sites),
             *(["## Limits", "", _fill(c["limits"], summary), ""] if c.get("limits") else []),
             *(["## Published anchors", "", *[f"- {a}" for a in c["anchors"]], ""]
               if c.get("anchors") else []),
             "Reproduce: see docs/results.md."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--summary", required=True)
    ap.add_argument("--kind", choices=sorted(CARDS), required=True)
    add_data_option(ap, "--drive", "DRIVE")
    add_data_option(ap, "--msd", MSD_HIPPOCAMPUS)
    add_data_option(ap, "--brats", "BraTS2015_6")
    ap.add_argument("--shift", help="fundus_shift.py / mri_shift.py JSON for the card")
    ap.add_argument("--sites", nargs="*", help="new_site.py results.json files for the card")
    ap.add_argument("--half", action="store_true",
                    help="store the convolution weights as float16 (half the size; they are "
                    "loaded back as float32)")
    ap.add_argument("--card-only", action="store_true",
                    help="rewrite only <name>.md from the packaged weights (no new weights)")
    args = ap.parse_args()

    from napari_drunet.core.models.model import load_model

    summary = json.loads(Path(args.summary).read_text())
    out = WEIGHTS / f"{args.name}.safetensors"
    if args.card_only:
        (WEIGHTS / f"{args.name}.md").write_text(card(
            args.name, args.kind, load_model(out, device="cpu").meta, summary, args.ckpt,
            args.shift, args.sites))
        print(f"wrote {args.name}.md")
        return 0
    model = load_model(args.ckpt, device="cpu")
    if args.kind == "retina":
        pre = {"fov_diameter": drive_fov_diameter(Path(args.drive), range(21, 37)),
               "mask_outside_fov": True}
    elif args.kind == "skin":  # recorded by isic_accuracy.py at the scale it trained at
        pre = dict(model.meta.get("preprocess") or {})
        if not pre.get("long_side"):
            raise SystemExit(f"{args.ckpt} records no long_side: run benchmarks.isic_accuracy on it")
    elif args.kind == "brain":  # the spacing brats_accuracy.py recorded, the headers' axes
        studies = [c["image"][0] for s in ("train", "validation")
                   for c in brats_cases(args.brats, s)]
        pre = {**(model.meta.get("preprocess") or {}),
               "orientation": volume_orientation([Path(f) for f in studies])}
    else:
        train = [f for f in sorted((Path(args.msd) / "imagesTr").glob("*.nii.gz"))
                 if int(f.name.split("_")[1].split(".")[0]) % 5]  # the training side only
        pre = {"spacing": [1.0, 1.0, 1.0], "orientation": volume_orientation(train),
               "axis_search": True}
    meta = dict(model.meta)
    meta["metrics"] = dict(meta.get("metrics") or {}, test=summary.get("test"))
    # what core.fit checks
    meta["card"] = {"retina": FUNDUS, "skin": DERMOSCOPY, "brain": BRAIN_MRI}.get(args.kind,
                                                                                 MRI_CROP)
    model.meta = meta
    model.save(out, preprocess=pre)
    if args.half:
        halve_weights(out)
    saved = load_model(out, device="cpu")
    (WEIGHTS / f"{args.name}.md").write_text(card(args.name, args.kind, saved.meta, summary,
                                                  args.ckpt, args.shift, args.sites))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {args.name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
