"""Correction projects: cases, corrections, versions, crash safety (no Qt)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_drunet.core import atomic
from napari_drunet.core.correction.feedback import auto_holdout
from napari_drunet.core.correction.project import MANIFEST, Project, label_dice
from napari_drunet.core.errors import DataError
from napari_drunet.core.image.io import ImageData
from napari_drunet.core.models.model import Model
from napari_drunet.core.nets.networks import build_model
from napari_drunet.core.train.dataset import Case


def _tiny_model(seed: int = 0) -> Model:
    import torch

    torch.manual_seed(seed)
    net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=1, features=(4, 8))
    return Model(net, {"normalization": {"mode": "zscore"}}, device="cpu", name="tiny")


def _case_arrays(seed: int = 0, shape=(16, 16)):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(1, *shape)).astype(np.float32)
    pred = (rng.random(shape) > 0.7).astype(np.uint8)
    return image, pred


@pytest.fixture
def project(tmp_path):
    return Project.create(tmp_path / "proj")


def test_create_refuses_non_empty_and_open_requires_manifest(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        Project.create(tmp_path / "full")
    with pytest.raises(DataError, match="no project"):
        Project.open(tmp_path / "full")
    Project.create(tmp_path / "p")
    with pytest.raises(DataError, match="already holds"):
        Project.create(tmp_path / "p")


def test_add_case_and_reopen_restores_everything(project):
    image, pred = _case_arrays()
    img = ImageData(image, spacing=(0.5, 2.0), path="/data/a.png", format="png")
    prob = np.random.default_rng(1).random((1, 16, 16)).astype(np.float32)
    project.add_case("a/b weird", img, pred, prob, model_version=None, meta={"k": 1})
    corr = pred.copy()
    corr[0:4, 0:4] = 1
    edited = np.zeros_like(pred, bool)
    edited[10, 10] = True  # painted with the label it already had
    stats = project.save_correction("a/b weird", corr, edited=edited)
    project.mark_reviewed("a/b weird", [3, 5])

    again = Project.open(project.folder)
    assert again.cases() == ["a/b weird"]
    rec = again.load_case("a/b weird")
    np.testing.assert_array_equal(rec.image.array, image)
    assert rec.image.spacing == (0.5, 2.0) and rec.image.path == "/data/a.png"
    np.testing.assert_array_equal(rec.prediction, pred)
    np.testing.assert_array_equal(rec.correction, corr)
    assert rec.edited[10, 10] and rec.edited[0:4, 0:4][pred[0:4, 0:4] == 0].all()
    assert rec.edited.sum() == (corr != pred).sum() + 1
    np.testing.assert_allclose(rec.probabilities, prob, atol=1e-3)
    assert rec.reviewed_slices == [3, 5] and not rec.reviewed_all
    assert rec.meta["meta"] == {"k": 1}
    assert stats["fix_dice"] == pytest.approx(label_dice(pred, corr))
    assert stats["changed_fraction"] == pytest.approx((corr != pred).mean())
    assert not (project.folder / "cases" / "a").exists()  # name sanitised, no path escape


def test_add_case_checks_shapes_and_names(project):
    image, pred = _case_arrays()
    with pytest.raises(DataError, match="does not match"):
        project.add_case("x", image[:, :8], pred)
    project.add_case("x", image[0], pred)  # (*spatial) image gets a channel axis
    with pytest.raises(DataError, match="already exists"):
        project.add_case("x", image, pred)
    assert project.unique_case_name("x") == "x-2"
    with pytest.raises(DataError, match="mask shape"):
        project.save_correction("x", pred[:8])
    with pytest.raises(DataError, match="outside"):
        project.mark_reviewed("x", [99])


def test_label_dice_values():
    a = np.array([[0, 1, 1, 0]])
    b = np.array([[0, 1, 0, 0]])
    assert label_dice(a, b) == pytest.approx(2 / 3)
    assert label_dice(np.zeros((2, 2), int), np.zeros((2, 2), int)) == 1.0
    assert label_dice(np.array([1, 2]), np.array([1, 1])) == pytest.approx((2 / 3 + 0) / 2)
    assert label_dice(a, b, weight=np.array([[1, 1, 0, 1]], bool)) == 1.0


def test_corrected_cases_weights_and_holdout(project):
    for i in range(4):
        image, pred = _case_arrays(i)
        project.add_case(f"c{i}", image, pred)
    assert project.feedback.corrected_cases() == []  # untouched predictions are not training data
    corr = project.load_case("c0").prediction.copy()
    corr[0, :] = 1
    project.save_correction("c0", corr)
    project.mark_reviewed("c1", [2])
    project.mark_reviewed("c2", "all")
    cases = project.feedback.corrected_cases(only_weighted=True)
    assert [c.name for c in cases] == ["c0", "c1", "c2"] and all(isinstance(c, Case) for c in cases)
    w0, w1, w2 = (c.weight for c in cases)
    np.testing.assert_array_equal(w0, (corr != project.load_case("c0").prediction).astype(float))
    assert w1[2].all() and w1.sum() == 16
    assert w2 is None  # fully reviewed: every pixel counts
    np.testing.assert_array_equal(cases[0].label, corr)
    assert project.feedback.corrected_cases(only_weighted=False)[1].weight is None

    train, hold = project.feedback.split_holdout(1)
    assert len(hold) == 1 and set(train) | set(hold) == {"c0", "c1", "c2"}
    assert Project.open(project.folder).feedback.holdout == hold  # persisted, stable across rounds
    assert project.feedback.split_holdout(1)[1] == hold
    assert project.feedback.split_holdout(5)[1][:1] == hold and len(project.feedback.holdout) == 2
    assert [c.name for c in project.feedback.replay_cases()] == ["c3"]


def test_fix_stats_rounds_and_update_prediction(project):
    image, pred = _case_arrays(3)
    project.add_case("a", image, pred, model_version="v001")
    project.add_case("b", image, pred, model_version="v001")
    corr = pred.copy()
    corr[:8] = 0
    project.save_correction("a", corr)
    stats = project.feedback.fix_stats()
    assert [r["model_version"] for r in stats["rounds"]] == ["v001"]
    assert stats["rounds"][0]["n_cases"] == 1  # the untouched case "b" is not counted
    assert stats["rounds"][0]["mean_fix_dice"] == pytest.approx(label_dice(pred, corr))
    with pytest.raises(DataError, match="has corrections"):
        project.update_prediction("a", pred)
    project.update_prediction("b", corr, model_version="v002")
    rec = project.load_case("b")
    np.testing.assert_array_equal(rec.prediction, corr)
    np.testing.assert_array_equal(rec.correction, corr)
    assert project.case_meta("b")["model_version"] == "v002"


def test_model_versions_never_overwrite_and_revert(project, tmp_path):
    base = _tiny_model(0)
    v1 = project.versions.add(base, source="tiny")
    assert v1 == "v001" and project.versions.active == v1
    (project.folder / "models" / "v002.safetensors").write_bytes(b"orphan of a crash")
    tuned = _tiny_model(1)
    v2 = project.versions.add(tuned, parent=v1, metrics={"val_dice": 0.5}, data=["a"])
    assert v2 == "v003"  # the orphan file is not overwritten
    assert (project.folder / "models" / "v002.safetensors").read_bytes() == b"orphan of a crash"
    assert project.versions.active == v1  # new versions need promotion
    project.versions.set_active(v2)
    again = Project.open(project.folder)
    assert again.versions.active == v2
    assert [v["id"] for v in again.versions.entries()] == [v1, v2]
    assert again.versions.get(v2)["parent"] == v1 and again.versions.get(v2)["data"] == ["a"]
    loaded = again.versions.load_active("cpu")
    import torch

    for k, t in tuned.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[k].cpu(), t.cpu())
    assert loaded.meta["provenance"]["parent_name"] == v1
    again.versions.set_active(again.versions.get(v2)["parent"])  # one-click revert
    assert Project.open(project.folder).versions.active == v1
    with pytest.raises(DataError):
        again.versions.set_active("v999")


def test_auto_holdout_grows_with_the_corrected_cases(project):
    """holdout=None (the round's default) holds back one corrected case in five, at least one,
    and keeps the cases held back before."""
    assert [auto_holdout(n) for n in (1, 4, 5, 9, 10, 25)] == [1, 1, 1, 1, 2, 5]
    for i in range(10):
        image, pred = _case_arrays(i)
        project.add_case(f"c{i}", image, pred)
        project.mark_reviewed(f"c{i}", "all")
        if i == 2:
            first = project.feedback.split_holdout(None)[1]
            assert len(first) == 1
    train, hold = project.feedback.split_holdout(None)
    assert len(hold) == 2 and hold[0] == first[0] and len(train) == 8


def test_plan_holdout_tells_the_split_without_persisting_it(project):
    """What the GUI announces before a round: cases held back earlier count, even when the
    round asks for fewer (the message said "up to 1 held back" while 3 were)."""
    for i in range(6):
        image, pred = _case_arrays(i)
        project.add_case(f"c{i}", image, pred)
        project.mark_reviewed(f"c{i}", "all")
    project.feedback.split_holdout(3)
    planned = project.feedback.plan_holdout(1)
    assert len(planned[1]) == 3 and planned == project.feedback.split_holdout(1)
    image, pred = _case_arrays(9)
    project.add_case("new", image, pred)
    project.mark_reviewed("new", "all")
    planned = project.feedback.plan_holdout(4)
    assert len(planned[1]) == 4 and len(project.feedback.holdout) == 3  # not persisted
    assert planned == project.feedback.split_holdout(4)


def test_compare_versions_on_holdout(project):
    image, _ = _case_arrays(5)
    base, other = _tiny_model(0), _tiny_model(7)
    pred = base.predict(ImageData(image)).mask
    project.add_case("h", image, pred)
    project.mark_reviewed("h", "all")
    v1 = project.versions.add(base)
    v2 = project.versions.add(other, parent=v1)
    res = project.versions.compare(v2, v1, ["h"], device="cpu")
    assert res["old"] == pytest.approx(1.0)  # the correction equals the old prediction
    expect_new = label_dice(other.predict(ImageData(image)).mask, pred)
    assert res["new"] == pytest.approx(expect_new)
    assert res["recommend"] == (expect_new >= 1.0 - 0.005)
    same = project.versions.compare(v1, v1, ["h"], device="cpu")
    assert same["recommend"] is True
    none = project.versions.compare(v2, v1, [], device="cpu")
    assert none["recommend"] is None and "no held-back" in none["reason"]


def test_crash_mid_write_keeps_previous_manifest(project, monkeypatch):
    image, pred = _case_arrays()
    project.add_case("a", image, pred)
    before = (project.folder / MANIFEST).read_text()

    def boom(*a, **k):
        raise OSError("disk died")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        project.save_correction("a", 1 - pred)
    monkeypatch.undo()
    assert (project.folder / MANIFEST).read_text() == before
    assert not [p for p in project.folder.rglob("*.tmp")]  # temp files cleaned up
    # a stray, corrupted temp file (e.g. from a power cut) is ignored on open
    (project.folder / f".{MANIFEST}.abc.tmp").write_text("{garbage")
    (project.folder / "cases" / "a" / ".correction.npz.x.tmp").write_bytes(b"\0\1")
    again = Project.open(project.folder)
    np.testing.assert_array_equal(again.load_case("a").correction, pred)


def test_damaged_correction_falls_back_and_bad_manifest_is_reported(project):
    image, pred = _case_arrays()
    project.add_case("a", image, pred)
    (project.folder / "cases" / "a" / "correction.npz").write_bytes(b"not a zip")
    np.testing.assert_array_equal(Project.open(project.folder).load_case("a").correction, pred)
    (project.folder / MANIFEST).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(DataError, match="schema version"):
        Project.open(project.folder)
    (project.folder / MANIFEST).write_text("{")
    with pytest.raises(DataError, match="unreadable"):
        Project.open(project.folder)
    assert os.path.isdir(project.folder)


def test_uncertainty_ranking_orders_unreviewed_cases_by_entropy(tmp_path):
    import numpy as np

    from napari_drunet.core.correction.project import Project, mean_entropy

    p = Project.create(tmp_path / "p")
    img = np.zeros((1, 8, 8), np.float32)
    pred = np.zeros((8, 8), np.uint8)
    p.add_case("sure", img, pred, probabilities=np.full((1, 8, 8), 0.02, np.float32))
    p.add_case("unsure", img, pred, probabilities=np.full((1, 8, 8), 0.45, np.float32))
    p.add_case("mid", img, pred, probabilities=np.full((1, 8, 8), 0.2, np.float32))
    p.add_case("noprob", img, pred)
    assert [n for n, _ in p.uncertainty_ranking()] == ["unsure", "mid", "sure"]
    p.mark_reviewed("unsure", "all")
    assert [n for n, _ in p.uncertainty_ranking()] == ["mid", "sure"]
    assert mean_entropy(np.full((1, 2, 2), 0.5, np.float32)) > 0.999
    three = np.full((3, 2, 2), 1 / 3, np.float32)
    assert abs(mean_entropy(three) - 1.0) < 1e-3


def test_one_store_shared_by_the_parts(project):
    """Cases, versions and feedback read one manifest: a change made through one part is seen
    by the others at once, and a failed edit leaves neither memory nor file changed."""
    image, pred = _case_arrays()
    project.add_case("a", image, pred)
    project.mark_reviewed("a", "all")
    assert project.feedback.uncorrected_cases() == []
    assert [c.name for c in project.feedback.corrected_cases()] == ["a"]
    before = (project.folder / MANIFEST).read_text()
    with pytest.raises(RuntimeError), project.store.edit() as m:
        m["settings"]["half"] = "done"
        raise RuntimeError("fails midway")
    assert "half" not in project.store.manifest["settings"]
    assert (project.folder / MANIFEST).read_text() == before
    with project.store.edit() as m, project.store.edit() as inner:
        inner["settings"]["nested"] = 1
        assert (project.folder / MANIFEST).read_text() == before  # written once, at the end
    assert json.loads((project.folder / MANIFEST).read_text())["settings"] == {"nested": 1}


def test_old_project_names_still_work_and_warn(project):
    image, pred = _case_arrays()
    project.add_case("a", image, pred)
    project.mark_reviewed("a", "all")
    with pytest.warns(DeprecationWarning, match="versions.add"):
        vid = project.add_model_version(_tiny_model(0))
    with pytest.warns(DeprecationWarning, match="versions.active"):
        assert project.active_version == vid == project.versions.active
    with pytest.warns(DeprecationWarning, match="versions.entries"):
        assert project.versions() == project.versions.entries()
    with pytest.warns(DeprecationWarning, match="feedback.split_holdout"):
        assert project.split_holdout(1) == project.feedback.split_holdout(1)
    with pytest.warns(DeprecationWarning, match="feedback.holdout"):
        assert project.holdout == project.feedback.holdout == []  # one corrected case: kept
    with pytest.warns(DeprecationWarning, match="versions.path"):
        assert project.version_path(vid) == project.versions.path(vid)
