"""Bad inputs through the ``drunet`` command line: one ``error:`` line, exit status 2, no
traceback and no output file (not even a temporary one); odd-but-valid images succeed.

The full matrix runs ``cli.main`` in-process (an uncaught exception would fail the test with
its traceback, exactly what a subprocess would print); a representative subset also runs as
``python -m napari_drunet`` subprocesses to check the real exit status and stderr.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import (  # noqa: E402
    assert_user_error,
    make_dataset,
    plant_malicious,
    run_cli,
    visible_files,
)

from napari_drunet.cli import main  # noqa: E402

TINY_TRAIN = ["--max-steps", "2", "--patch-size", "16", "--batch-size", "1", "--device", "cpu",
              "--epochs", "1"]


def _run(capsys, argv) -> tuple[int, list[str], str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, [ln for ln in cap.err.splitlines() if ln.strip()], cap.out


def _expect_error(capsys, argv, out_dir: Path | None = None, must: str = "") -> str:
    code, err, _ = _run(capsys, argv)
    assert code == 2, (argv, code, err)
    assert len(err) == 1 and err[0].startswith("error: "), (argv, err)
    assert must.lower() in err[0].lower(), (argv, err[0], must)
    if out_dir is not None:
        assert visible_files(out_dir) == [], (argv, visible_files(out_dir))
    return err[0]


# --------------------------------------------------------------------------- predict
def test_predict_refuses_every_bad_image_file(capsys, tmp_path, bad_files, models):
    out = tmp_path / "out"
    messages = {}
    for name, path in bad_files.items():
        messages[name] = _expect_error(capsys, ["predict", "--model", models["m1"], "--input",
                                                path, "--output", out, "--device", "cpu"], out)
    # the message names the file, so a user of a folder run knows which one is bad
    assert all(name in msg for name, msg in messages.items()), messages
    assert len(messages) >= 30


def test_predict_single_file_output_is_not_left_behind(capsys, tmp_path, bad_files, models):
    out = tmp_path / "o"
    out.mkdir()
    for name in ("text.nii.gz", "truncated_half.png", "corrupt_ifd.tif", "five_d.nii.gz"):
        _expect_error(capsys, ["predict", "--model", models["m1"], "--input", bad_files[name],
                               "--output", out / "mask.tif", "--device", "cpu"], out)


@pytest.mark.parametrize("model_key, must", [
    ("truncated", "truncated"), ("truncated_header", "truncated"), ("one_byte", "safetensors"),
    ("other_arch", "do not match"), ("plain_safetensors", "not a napari-drunet model"),
    ("text", "not a safetensors"), ("empty", "safetensors"),
    ("m4", "expects 4 channel"), ("m3d", "3D"),
])
def test_predict_refuses_bad_or_incompatible_models(capsys, tmp_path, models, odd_files,
                                                    model_key, must):
    out = tmp_path / "out"
    _expect_error(capsys, ["predict", "--model", models[model_key], "--input",
                           odd_files["uint16.tif"], "--output", out, "--device", "cpu"], out, must)


def test_predict_missing_paths_and_unwritable_outputs(capsys, tmp_path, models, odd_files):
    img = odd_files["uint16.tif"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    m = ["--model", models["m1"], "--device", "cpu"]
    cases = [
        (["--input", tmp_path / "missing.tif", "--output", tmp_path / "o1"], "not found"),
        (["--input", tmp_path / "empty_dir", "--output", tmp_path / "o1"], "not found"),
        (["--model", tmp_path / "missing.ckpt", "--input", img, "--output", tmp_path / "o1"],
         "not found"),
        (["--model", "no-such-packaged-model", "--input", img, "--output", tmp_path / "o1"],
         "unknown model"),
        (["--input", img, "--output", a_file / "sub"], "is a file"),
        (["--input", img, "--output", a_file / "mask.tif"], "is a file"),
        (["--input", img, "--output", "/proc/drunet-out"], "cannot write"),
        (["--input", img, "--output", "/proc/drunet-out/mask.tif"], "cannot write"),
        (["--input", img, "--output", tmp_path / "o2", "--prob", a_file / "p"], "is a file"),
        (["--input", img, "--output", tmp_path / "o3", "--prob", tmp_path / "o3"], "--prob"),
        (["--input", img, "--output", tmp_path / "o4", "--device", "cuda:7"], "device"),
        (["--input", img, "--output", tmp_path / "o5", "--overlap", "1.5"], "overlap"),
        (["--input", img, "--output", tmp_path / "o6", "--mode", "3d"], "3d"),
        (["--input", img, "--output", tmp_path / "o7" / "mask.jpg"], "jpeg"),
    ]
    for extra, must in cases:
        argv = ["predict", *m, *extra]
        _expect_error(capsys, argv, None, must)
    (tmp_path / "empty_dir").mkdir()
    _expect_error(capsys, ["predict", *m, "--input", tmp_path / "empty_dir", "--output",
                           tmp_path / "o1"], None, "no supported images")
    assert a_file.read_text() == "x"
    for sub in ("o1", "o2", "o3", "o4", "o5", "o6", "o7"):
        assert visible_files(tmp_path / sub) == [], sub
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_predict_refuses_two_inputs_writing_the_same_mask(capsys, tmp_path, models):
    src = tmp_path / "in"
    src.mkdir()
    img = np.zeros((8, 8, 8), np.float32)
    import nibabel as nib

    nib.save(nib.Nifti1Image(img, np.eye(4)), src / "case.nii")
    nib.save(nib.Nifti1Image(img, np.eye(4)), src / "case.nii.gz")
    out = tmp_path / "out"
    _expect_error(capsys, ["predict", "--model", models["m1"], "--input", src, "--output", out,
                           "--device", "cpu"], out, "both be written")


# --------------------------------------------------------------------------- odd but valid
def test_predict_odd_but_valid_images_succeed(capsys, tmp_path, odd_files, models):
    """NaN/Inf (replaced, with a warning), constant, bool/int8/uint16/float64/int64, one pixel,
    RGBA (alpha dropped, luminance for a 1-channel model, used as RGB by a 3-channel one)."""
    out = tmp_path / "out"
    for name, path in odd_files.items():
        for key in ("m1", "m3"):
            code, err, stdout = _run(capsys, ["predict", "--model", models[key], "--input", path,
                                              "--output", out / key, "--device", "cpu"])
            assert code == 0, (name, key, err)
            assert all(ln.startswith("warning: ") for ln in err), (name, err)
            if "nan" in name:
                assert any("NaN/Inf" in ln for ln in err), (name, err)
            if name.startswith("rgba"):
                assert any("alpha" in ln for ln in err), (name, err)
            written = [ln.split(" -> ")[1] for ln in stdout.splitlines() if " -> " in ln]
            assert len(written) == 1 and Path(written[0]).is_file()
            from napari_drunet.core.image.io import read_image, read_label

            labels, _ = read_label(written[0])
            assert labels.shape == read_image(path).shape_spatial
    assert not [f for f in visible_files(out) if Path(f).name.startswith(".")]


# --------------------------------------------------------------------------- evaluate
def test_evaluate_refuses_bad_files_and_shape_mismatch(capsys, tmp_path, bad_files):
    lab = np.zeros((32, 32), np.uint8)
    lab[8:16, 8:16] = 1
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    tifffile.imwrite(tmp_path / "small.tif", lab[:16])
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([lab, lab * 2, lab * 3], -1),
                     photometric="rgb")
    results = tmp_path / "res" / "r.json"
    for name in ("text.png", "truncated_half.tif", "corrupt_ifd.tif", "five_d.nii.gz",
                 "complex.tif", "empty.png"):
        for pred, truth in ((bad_files[name], tmp_path / "lab.tif"),
                            (tmp_path / "lab.tif", bad_files[name])):
            _expect_error(capsys, ["evaluate", "--pred", pred, "--truth", truth, "--json",
                                   results], results.parent)
    lab_file = tmp_path / "lab.tif"
    for argv, must in [
        (["--pred", lab_file, "--truth", tmp_path / "small.tif"], "shape"),
        (["--pred", lab_file, "--truth", lab_file, "--mask", tmp_path / "small.tif"], "shape"),
        (["--pred", lab_file, "--truth", lab_file, "--prob", tmp_path / "small.tif"], "shape"),
        (["--pred", tmp_path / "rgb.tif", "--truth", lab_file], "channels"),
        (["--pred", tmp_path / "nothing", "--truth", lab_file], "not found"),
        (["--pred", lab_file, "--truth", tmp_path / "nothing"], "not found"),
        (["--pred", lab_file, "--truth", lab_file, "--json", lab_file / "r.json"], "is a file"),
    ]:
        _expect_error(capsys, ["evaluate", *argv], None, must)
    assert tifffile.imread(lab_file).shape == (32, 32)


# --------------------------------------------------------------------------- train / finetune
def test_train_and_finetune_refuse_bad_datasets(capsys, tmp_path, bad_files, models):
    root = tmp_path / "data"
    make_dataset(root, n=1)
    tifffile.imwrite(root / "lab_small.tif", np.zeros((16, 32), np.uint8))
    tifffile.imwrite(root / "lab3.tif", np.full((32, 32), 3, np.uint8))
    tifffile.imwrite(root / "lab_neg.tif", np.full((32, 32), -1, np.int8))
    tifffile.imwrite(root / "lab_frac.tif", np.full((32, 32), 0.5, np.float32))
    tifffile.imwrite(root / "rgb.tif", np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    for name in ("text.tif", "truncated_half.png", "five_d.nii.gz"):
        (root / name).write_bytes(bad_files[name].read_bytes())

    def ds(name: str, content) -> Path:
        p = root / name
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        return p

    entry = {"image": "img0.tif", "label": "lab0.tif"}
    datasets = {
        "not json": (ds("a.json", "{not json"), "not valid json"),
        "json list": (ds("b.json", [1, 2]), "json object"),
        "no cases": (ds("c.json", {"training": []}), "no 'training' cases"),
        "entry without image": (ds("d.json", {"training": [{"label": "lab0.tif"}]}), "image"),
        "image not a path": (ds("e.json", {"training": [{"image": 5}]}), "file path"),
        "missing image": (ds("f.json", {"training": [{"image": "nope.tif"}]}), "not found"),
        "text image": (ds("g.json", {"training": [{"image": "text.tif", "label": "lab0.tif"}]}),
                       "text.tif"),
        "truncated image": (ds("h.json", {"training": [{"image": "truncated_half.png",
                                                         "label": "lab0.tif"}]}), "truncated"),
        "5D image": (ds("i.json", {"training": [{"image": "five_d.nii.gz"}]}), "shape"),
        "image/label shape": (ds("j.json", {"training": [{**entry, "label": "lab_small.tif"}]}),
                              "does not match"),
        "negative labels": (ds("k.json", {"training": [{**entry, "label": "lab_neg.tif"}]}),
                            "negative"),
        "fractional labels": (ds("l.json", {"training": [{**entry, "label": "lab_frac.tif"}]}),
                              "non-integer"),
        "escaping path": (ds("m.json", {"training": [{"image": "../data/img0.tif",
                                                        "label": "lab0.tif"}]}), None),
        "outside path": (ds("n.json", {"training": [{"image": "../x/img0.tif"}]}), "outside"),
        "absolute path": (ds("o.json", {"training": [{"image": "/etc/hostname"}]}), "outside"),
        "bad labels key": (ds("p.json", {"labels": ["a"], "training": [entry]}), "labels"),
        "missing file": (root / "missing.json", "not found"),
    }
    out_dir = tmp_path / "ckpt"
    for what, (path, must) in datasets.items():
        for cmd, extra in (("train", ["--features", "4,8"]),
                           ("finetune", ["--model", models["m1"]])):
            argv = [cmd, "--data", path, "--out", out_dir / "m.ckpt", *extra, *TINY_TRAIN]
            if must is None:  # '../data/x' resolves inside the folder: allowed, must train
                code, err, _ = _run(capsys, argv)
                assert code == 0, (what, err)
                (out_dir / "m.ckpt").unlink()
                continue
            _expect_error(capsys, argv, out_dir, must)
    ok = ds("ok.json", {"labels": {"0": "bg", "1": "fg"}, "training": [entry]})
    cls3 = ds("cls3.json", {"training": [{**entry, "label": "lab3.tif"}]})
    rgb = ds("rgb.json", {"training": [{"image": "rgb.tif", "label": "lab0.tif"}]})
    for argv, must in [
        (["--data", cls3, "--model", models["m1"]], "labels go up to 3"),
        (["--data", cls3, "--model", models["mc3"]], "labels go up to 3"),
        (["--data", ok, "--model", models["m4"]], "channel"),
        (["--data", ok, "--model", models["m3d"]], "3D"),
        (["--data", ok, "--model", models["truncated"]], "truncated"),
        (["--data", ok, "--model", models["other_arch"]], "do not match"),
        (["--data", ok, "--model", tmp_path / "missing.ckpt"], "not found"),
        (["--data", ok, "--model", models["m1"], "--lr", "-1"], "lr"),
        (["--data", ok, "--model", models["m1"], "--patch-size", "16,16,16"], "patch_size"),
    ]:
        _expect_error(capsys, ["finetune", "--out", out_dir / "m.ckpt", *TINY_TRAIN, *argv],
                      out_dir, must)
    # channels are fitted as at prediction time: RGB -> luminance, gray -> repeated RGB
    for data, model in ((rgb, models["m1"]), (ok, models["m3"])):
        code, err, _ = _run(capsys, ["finetune", "--out", out_dir / "m.ckpt", *TINY_TRAIN,
                                     "--data", data, "--model", model])
        assert code == 0, err
        (out_dir / "m.ckpt").unlink()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out in (a_file / "m.ckpt", Path("/proc/drunet.ckpt"), tmp_path):
        _expect_error(capsys, ["finetune", "--data", ok, "--model", models["m1"], "--out", out,
                               *TINY_TRAIN], None, "cannot write")
        _expect_error(capsys, ["train", "--data", ok, "--out", out, "--features", "4,8",
                               *TINY_TRAIN], None, "cannot write")
    assert visible_files(out_dir) == []


# --------------------------------------------------------------------------- export
def test_export_refuses_bad_models_and_outputs(capsys, tmp_path, models):
    out = tmp_path / "exp"
    for key in ("truncated", "truncated_header", "other_arch", "plain_safetensors", "text",
                "empty"):
        for fmt in ("torchscript", "onnx"):
            _expect_error(capsys, ["export", "--model", models[key], "--format", fmt, "--out",
                                   out / "m.pt"], out)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for target in (a_file / "m.pt", Path("/proc/m.pt"), tmp_path):
        _expect_error(capsys, ["export", "--model", models["m1"], "--format", "torchscript",
                               "--out", target], None, "cannot write")


def test_malicious_pickles_are_refused_by_every_command(capsys, tmp_path):
    evil, marker = plant_malicious(tmp_path)
    ds = make_dataset(tmp_path / "data", n=1)
    img = tmp_path / "data" / "img0.tif"
    for label, path in evil.items():
        for argv in (["predict", "--model", path, "--input", img, "--output", tmp_path / "o"],
                     ["finetune", "--model", path, "--data", ds, "--out", tmp_path / "o" / "m",
                      *TINY_TRAIN],
                     ["export", "--model", path, "--format", "torchscript", "--out",
                      tmp_path / "o" / "m.pt"]):
            msg = _expect_error(capsys, argv, tmp_path / "o")
            assert "safetensors" in msg or "pickle" in msg, (label, msg)
    assert not marker.exists(), "a pickle payload was executed"


# --------------------------------------------------------------------------- real processes
@pytest.mark.slow
def test_real_processes_exit_2_with_one_line(tmp_path, bad_files, models, odd_files):
    """``python -m napari_drunet`` for each command: status 2, one stderr line, no traceback,
    nothing written; and a successful odd-image run prints only ``warning:`` lines."""
    ds = make_dataset(tmp_path / "data", n=1)
    (tmp_path / "evil_dir").mkdir()
    evil, marker = plant_malicious(tmp_path / "evil_dir")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = tmp_path / "out"
    m1 = models["m1"]
    jobs = {
        "predict text.nii.gz": ["predict", "--model", m1, "--input", bad_files["text.nii.gz"],
                                "--output", out, "--device", "cpu"],
        "predict bad_offset.tif (tifffile logs)": [
            "predict", "--model", m1, "--input", bad_files["bad_offset.tif"], "--output", out,
            "--device", "cpu"],
        "predict pickle": ["predict", "--model", evil["pickle.ckpt"], "--input",
                           odd_files["uint16.tif"], "--output", out],
        "predict unwritable": ["predict", "--model", m1, "--input", odd_files["uint16.tif"],
                               "--output", a_file / "o"],
        "evaluate corrupt": ["evaluate", "--pred", bad_files["corrupt_ifd.tif"], "--truth",
                             odd_files["uint16.tif"]],
        "train outside path": ["train", "--data", tmp_path / "escape.json", "--out",
                               out / "m.ckpt", *TINY_TRAIN],
        "finetune truncated ckpt": ["finetune", "--data", ds, "--model", models["truncated"],
                                    "--out", out / "m.ckpt", *TINY_TRAIN],
        "export other arch": ["export", "--model", models["other_arch"], "--format", "onnx",
                              "--out", out / "m.onnx"],
    }
    (tmp_path / "escape.json").write_text(json.dumps({"training": [{"image": "/etc/hostname"}]}))
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        procs = dict(zip(jobs, pool.map(lambda a: run_cli(*a, cwd=tmp_path), jobs.values()),
                         strict=True))
        ok = pool.submit(run_cli, "predict", "--model", m1, "--input",
                         odd_files["nan_inf.tif"], "--output", tmp_path / "ok", cwd=tmp_path)
    for what, proc in procs.items():
        assert_user_error(proc, what)
    assert visible_files(out) == []
    assert not marker.exists()
    good = ok.result()
    assert good.returncode == 0, good.stderr
    assert "Traceback" not in good.stderr
    lines = [ln for ln in good.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("warning: ") for ln in lines), lines
    assert (tmp_path / "ok" / "nan_inf.tif").is_file()
