"""``drunet predict`` (and the writers under it) never replace an input image with a mask.

Each case runs before any work: exit status 2, one ``error:`` line, the inputs unchanged
byte for byte.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import assert_user_error, run_cli  # noqa: E402

from napari_drunet.cli import main  # noqa: E402
from napari_drunet.core.errors import InputError  # noqa: E402
from napari_drunet.core.image.io import read_image, read_label, write_label, write_probability  # noqa: E402


@pytest.fixture()
def inputs(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(d / "a.tif", (rng.random((32, 32)) * 255).astype(np.uint8))
    nib.save(nib.Nifti1Image(rng.random((8, 8, 8)).astype(np.float32), np.eye(4)),
             d / "b.nii.gz")
    return d


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _refused(capsys, argv, folder: Path, must: str) -> None:
    before = _snapshot(folder)
    code = main([str(a) for a in argv])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2, (argv, err)
    assert len(err) == 1 and must in err[0], err
    assert _snapshot(folder) == before  # nothing replaced, nothing added


@pytest.mark.parametrize("case", ["output=input folder", "prob=input folder",
                                  "output=input file", "output=input via ..",
                                  "output=symlink to input", "output=hard link to input"])
def test_predict_refuses_outputs_over_inputs(capsys, tmp_path, inputs, models, case):
    m = models["m1"]
    a = inputs / "a.tif"
    base = ["predict", "--model", m, "--device", "cpu"]
    if case == "output=input folder":
        argv, must = [*base, "--input", inputs, "--output", inputs], "is the --input folder"
    elif case == "prob=input folder":
        argv = [*base, "--input", inputs, "--output", tmp_path / "o", "--prob", inputs]
        must = "is the --input folder"
    elif case == "output=input file":
        argv, must = [*base, "--input", a, "--output", a], "is the input image"
    elif case == "output=input via ..":
        argv = [*base, "--input", a, "--output", inputs / ".." / "in" / "a.tif"]
        must = "is the input image"
    elif case == "output=symlink to input":
        (tmp_path / "link.tif").symlink_to(a)
        argv, must = [*base, "--input", a, "--output", tmp_path / "link.tif"], "is the input"
    else:
        os.link(a, tmp_path / "hard.tif")
        argv, must = [*base, "--input", a, "--output", tmp_path / "hard.tif"], "is the input"
    _refused(capsys, argv, inputs, must)


def test_predict_refuses_output_folder_holding_the_inputs_by_name(capsys, tmp_path, inputs,
                                                                 models):
    # --output is another spelling of the input folder through a symbolic link
    (tmp_path / "alias").symlink_to(inputs, target_is_directory=True)
    _refused(capsys, ["predict", "--model", models["m1"], "--device", "cpu", "--input", inputs,
                      "--output", tmp_path / "alias"], inputs, "--input folder")


def test_predict_refuses_prob_map_over_input_file(capsys, tmp_path, inputs, models):
    # a single TIFF input; --prob is its folder: the map would be written as in/a.tif
    _refused(capsys, ["predict", "--model", models["m1"], "--device", "cpu", "--input",
                      inputs / "a.tif", "--output", tmp_path / "mask.tif", "--prob", inputs],
             inputs, "is the input image")


def test_predict_subprocess_input_equals_output(tmp_path, inputs, models):
    before = _snapshot(inputs)
    proc = run_cli("predict", "--model", models["m1"], "--device", "cpu",
                   "--input", inputs, "--output", inputs)
    assert_user_error(proc)
    assert _snapshot(inputs) == before


def test_writers_refuse_the_source_image(tmp_path, inputs):
    img = read_image(inputs / "a.tif")
    before = (inputs / "a.tif").read_bytes()
    with pytest.raises(InputError, match="is the input image"):
        write_label(inputs / "a.tif", np.zeros((32, 32), np.uint8), like=img)
    with pytest.raises(InputError, match="is the input image"):
        write_probability(inputs / "a.tif", np.zeros((32, 32), np.float32), like=img)
    assert (inputs / "a.tif").read_bytes() == before


def test_an_edited_mask_can_be_saved_over_itself(tmp_path):
    path = tmp_path / "case_mask.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    lab, like = read_label(path)
    lab[2:5, 2:5] = 1
    write_label(path, lab, like=like)
    assert read_label(path)[0].sum() == 9


def test_napari_writer_refuses_the_source_image(tmp_path, inputs):
    from napari_drunet._writer import write_labels

    img = read_image(inputs / "a.tif")
    meta = {"metadata": {"source": img.to_source()}}
    with pytest.raises(InputError, match="is the input image"):
        write_labels(str(inputs / "a.tif"), np.zeros((32, 32), np.uint8), meta)
    assert write_labels(str(tmp_path / "m.tif"), np.zeros((32, 32), np.uint8), meta)


def test_predict_still_writes_beside_inputs_in_another_folder(capsys, tmp_path, inputs, models):
    code = main(["predict", "--model", str(models["m1"]), "--device", "cpu", "--input",
                 str(inputs / "a.tif"), "--output", str(tmp_path / "o"), "--prob",
                 str(tmp_path / "p")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "a.tif").exists() and (tmp_path / "p" / "a.tif").exists()
