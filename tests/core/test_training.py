"""Training loop, fine-tuning guards, cancellation and checkpoints (tiny CPU runs)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from napari_drunet.core.errors import DataError, InputError
from napari_drunet.core.models.checkpoint import read_meta
from napari_drunet.core.models.model import Model
from napari_drunet.core.progress import run_to_end
from napari_drunet.core.train.dataset import Case
from napari_drunet.core.train.loop import (
    TrainConfig,
    default_finetune_config,
    finetune,
    train,
    train_iter,
)
from napari_drunet.core.train.sampling import PatchSampler


def disks(seed: int, n: int = 64, classes: int = 1, dims: int = 2) -> Case:
    """Bright disks (balls) on noise; with ``classes=2`` the brighter ones are class 2."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[(slice(0, n),) * dims]
    lab = np.zeros((n,) * dims, np.int64)
    for _ in range(4 if dims == 2 else 2):
        centre = rng.integers(n // 6, n - n // 6, dims)
        r = rng.integers(n // 14 + 1, n // 7 + 1)
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= r * r
        lab[inside] = rng.integers(1, classes + 1)
    img = rng.normal(0, 0.5, (1,) + lab.shape) + 1.5 * lab
    return Case.from_arrays(f"case{seed}", img.astype(np.float32), lab)


def tiny(**kw) -> TrainConfig:
    base = dict(features=(8, 16), epochs=3, steps_per_epoch=10, patch_size=(32, 32),
                batch_size=4, device="cpu", val_fraction=0.0, dropout=0.0)
    return TrainConfig(**(base | kw))


def state(model_or_net) -> dict[str, torch.Tensor]:
    net = getattr(model_or_net, "network", model_or_net)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2D binary model trained on bright disks, validated on one held-out case."""
    out = tmp_path_factory.mktemp("train") / "best.safetensors"
    cases = [disks(i) for i in range(3)]
    records = []
    res = train(cases, tiny(epochs=6, val_fraction=0.34, lr=3e-3), out=out,
                callback=records.append)
    return res, out, records


def test_training_learns_disks_and_writes_checkpoint(trained):
    res, out, records = trained
    dices = [h["val_dice"] for h in res.history if "val_dice" in h]
    assert len(dices) == 6 and res.steps == 60 and res.stop_reason == "completed"
    assert res.best_val_dice == max(dices) > 0.8 and dices[-1] > dices[0]
    assert not res.stopped_early and isinstance(res.model, Model)
    steps = [r for r in records if "loss" in r.metrics]
    assert [r.step for r in steps] == list(range(1, 61))
    assert {"loss", "lr", "epoch", "eta_s"} <= steps[0].metrics.keys()
    assert any("val_dice" in r.metrics for r in records)
    meta = read_meta(out)
    assert meta["metrics"]["val_dice"] == pytest.approx(res.best_val_dice)
    assert meta["inference"]["tile_size"] == [32, 32] and meta["threshold"] == 0.5
    assert meta["label_names"] == {"0": "background", "1": "foreground"}
    assert meta["normalization"]["mode"] == "percentile_zscore"
    assert TrainConfig.from_dict(meta["training"]["config"]).features == (8, 16)
    assert len(meta["training"]["history"]) == 6
    assert meta["provenance"]["parent"] is None and len(meta["provenance"]["data"]) == 2
    assert meta["arch_kwargs"]["out_channels"] == 1
    loaded = Model.from_checkpoint(out, device="cpu")
    assert same(state(loaded), state(res.model))
    pred = loaded.predict(disks(7).image.array)
    truth = disks(7).label
    dice = 2 * np.sum((pred.mask > 0) & (truth > 0)) / (np.sum(pred.mask > 0) + np.sum(truth > 0))
    assert dice > 0.7


def test_config_roundtrip_and_validation():
    cfg = TrainConfig(features=[8, 16], patch_size=[16, 16], label_names={"0": "bg", "1": "x"})
    d = cfg.to_dict()
    json.dumps(d)
    assert TrainConfig.from_dict(d) == cfg and d["features"] == [8, 16]
    with pytest.raises(InputError):
        TrainConfig.from_dict({"bogus": 1})
    assert TrainConfig.from_dict({"bogus": 1, "lr": 0.5}, strict=False).lr == 0.5
    for bad in (dict(lr=0), dict(schedule="step"), dict(patch_size=(8, 8, 8)),
                dict(val_fraction=1.0), dict(replay_fraction=1.0)):
        with pytest.raises(InputError):
            TrainConfig(**bad).validate()
    ft = default_finetune_config(max_steps=3)
    assert ft.lr < TrainConfig().lr and ft.max_steps == 3 and ft.time_budget <= 240


def test_seed_determinism():
    cases = [disks(0), disks(1)]
    a = train(cases, tiny(epochs=1, dropout=0.1)).model
    b = train(cases, tiny(epochs=1, dropout=0.1)).model
    c = train(cases, tiny(epochs=1, dropout=0.1, seed=1)).model
    assert same(state(a), state(b)) and not same(state(a), state(c))


def test_cpu_training_autocasts_to_bf16_only_where_it_has_amx(monkeypatch):
    """With AMX (patched in either way) the steps run in bf16: the same seed gives the same
    model, the weights stay float32 and in their layout, the loss still falls; without AMX or
    with ``amp=False`` training is float32 (the weights differ from the bf16 run)."""
    from napari_drunet.core import device as dev
    from napari_drunet.core.train.step import build_optimiser

    cpu = torch.device("cpu")
    net = torch.nn.Conv2d(1, 1, 3)
    cases = [disks(0), disks(1)]
    runs = {}
    for amx in (True, False):
        monkeypatch.setattr(dev, "_cpu_has_amx", lambda amx=amx: amx)
        assert build_optimiser(net, tiny(), cpu, {"total": 1, "warmup": 0}).amp_dtype == (
            torch.bfloat16 if amx else None)
        assert build_optimiser(net, tiny(amp=False), cpu, {"total": 1, "warmup": 0}).amp_dtype is None
        runs[amx] = train(cases, tiny(epochs=2))
    monkeypatch.setattr(dev, "_cpu_has_amx", lambda: True)
    again = train(cases, tiny(epochs=2)).model
    bf16 = runs[True]
    assert same(state(bf16.model), state(again))
    assert not same(state(bf16.model), state(runs[False].model))
    weights = state(bf16.model).values()
    assert all(w.dtype in (torch.float32, torch.int64) and w.is_contiguous() for w in weights)
    losses = [h["loss"] for h in bf16.history if "loss" in h]
    assert losses[-1] < losses[0]


def test_3d_and_2d_on_volumes():
    cases = [disks(i, n=16, dims=3) for i in range(2)]
    res = train(cases, tiny(spatial_dims=3, patch_size=(16, 16, 16), epochs=1, steps_per_epoch=3,
                            batch_size=2, val_fraction=0.5))
    assert res.model.spatial_dims == 3 and res.steps == 3 and res.best_val_dice is not None
    assert res.model.meta["inference"]["mode"] == "3d"
    res2 = train(cases, tiny(patch_size=(16, 16), epochs=1, steps_per_epoch=3, batch_size=2,
                             val_fraction=0.5))
    assert res2.model.spatial_dims == 2 and res2.best_val_dice is not None
    with pytest.raises(InputError):  # a 3D model cannot train on 2D images
        train([disks(0)], tiny(spatial_dims=3, patch_size=(16, 16, 16), max_steps=1))


def test_multiclass():
    cases = [disks(i, classes=2) for i in range(3)]
    assert max(int(c.label.max()) for c in cases) == 2
    res = train(cases, tiny(epochs=1, val_fraction=0.34, label_names={"1": "dim"}))
    assert res.model.out_channels == 3
    assert res.model.meta["label_names"] == {"0": "background", "1": "dim", "2": "class 2"}
    assert len(res.history[-1]["val_dice_per_class"]) == 2
    assert res.model.predict(cases[0].image.array).probabilities.shape == (3, 64, 64)


def test_init_model_untouched_freeze_encoder_and_provenance(trained, tmp_path):
    _, out, _ = trained
    init = Model.from_checkpoint(out, device="cpu")
    before = state(init)
    res = finetune(init, [disks(5)], default_finetune_config(max_steps=8, device="cpu",
                                                             freeze_encoder=True))
    assert same(state(init), before) and not init.network.training
    assert res.model.network is not init.network and res.steps == 8
    new = res.model.network.state_dict()
    enc = {k for k in new if k.startswith("encoder.")}
    assert enc and all(torch.equal(new[k], before[k]) for k in enc)  # incl. BN statistics
    assert any(not torch.equal(new[k], before[k]) for k in new if k not in enc)
    assert all(p.requires_grad for p in res.model.network.parameters())
    prov = res.model.meta["provenance"]
    assert len(prov["parent"]) == 64 and prov["data"] == ["case5"]
    stored = res.model.meta["training"]["config"]
    assert stored["l2sp"] > 0 and stored["features"] == [8, 16] and stored["dropout"] == 0.0


def test_freeze_norm_keeps_the_statistics_and_trains_the_rest(trained):
    init = trained[0].model
    before = state(init)

    def run(freeze: bool) -> dict:
        cfg = default_finetune_config(max_steps=6, device="cpu", freeze_norm=freeze,
                                      time_budget=None)
        return finetune(init, [disks(7)], cfg).model.network.state_dict()

    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats
    frozen, free = run(True), run(False)
    assert all(torch.equal(frozen[k], before[k]) for k in stats)
    assert any(not torch.equal(free[k], before[k]) for k in stats)  # the option is what keeps them
    scales = [k for k in before if k.replace(".weight", ".running_mean") in stats]
    assert scales and any(not torch.equal(frozen[k], before[k]) for k in scales)  # BN affine trains


def test_l2sp_pulls_toward_start(trained):
    init = trained[0].model
    start = state(init)

    def distance(l2sp: float) -> float:
        cfg = default_finetune_config(max_steps=15, device="cpu", lr=3e-3, l2sp=l2sp,
                                      time_budget=None, augment=False)
        net = finetune(init, [disks(6, classes=1)], cfg).model.network
        return sum(float(((p - start[n]) ** 2).sum()) for n, p in net.named_parameters())

    assert distance(1.0) < 0.7 * distance(0.0)


def test_replay_mixes_cases(monkeypatch):
    seen: list[str] = []
    original = PatchSampler.sample

    def spy(self, n=None, biased=None):
        batch = original(self, n, biased)
        seen.extend(batch.names)
        return batch

    monkeypatch.setattr(PatchSampler, "sample", spy)
    new, old = [disks(0)], [disks(1), disks(2)]
    train(new, tiny(epochs=1, replay_fraction=0.5), replay_cases=old)
    share = np.mean([name != "case0" for name in seen])
    assert len(seen) == 40 and 0.35 < share < 0.65
    assert {"case1", "case2"} <= set(seen)
    seen.clear()
    train(new, tiny(epochs=1), replay_cases=old)  # replay_fraction 0: never replayed
    assert set(seen) == {"case0"}


def test_only_weighted_ignores_labels_outside_weight():
    def case(flip_outside: bool) -> Case:
        c = disks(3)
        weight = np.zeros(c.label.shape, np.float32)
        weight[16:48, 16:48] = 1
        label = c.label.copy()
        if flip_outside:
            label[weight == 0] = 1 - label[weight == 0]
        return Case.from_arrays("w", c.image.array, label, weight=weight)

    cfg = tiny(epochs=1, only_weighted=True)
    a = train([case(False)], cfg).model
    b = train([case(True)], cfg).model
    assert same(state(a), state(b))
    c = train([case(True)], tiny(epochs=1)).model  # without only_weighted the labels count
    assert not same(state(a), state(c))


def test_should_stop_and_close(tmp_path):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    res = train([disks(0), disks(1)], tiny(val_fraction=0.5), should_stop=stop)
    assert res.steps == 5 and res.stopped_early and res.stop_reason == "cancelled"
    assert isinstance(res.model, Model) and res.model.predict(disks(0).image.array).mask.shape
    # closing the generator (napari worker quit) also stops and still saves the checkpoint
    out = tmp_path / "closed.safetensors"
    gen = train_iter([disks(0)], tiny(), out=out)
    for _ in range(3):
        next(gen)
    value = gen.close()
    assert out.is_file() and read_meta(out)["arch"] == "drunet"
    if sys.version_info >= (3, 13):
        assert value.stop_reason == "cancelled"


def test_time_budget_and_early_stopping(trained):
    res = train([disks(0)], tiny(epochs=1000, time_budget=0.5))
    assert res.stop_reason == "time_budget" and res.stopped_early and res.seconds < 5
    # a destructive learning rate never beats the starting weights: they are kept
    init = trained[0].model
    cfg = default_finetune_config(lr=5.0, epochs=20, steps_per_epoch=3, max_steps=None,
                                  early_stop_patience=2, device="cpu", time_budget=None)
    res = finetune(init, [disks(0)], cfg, val_cases=[disks(1)])
    assert res.stop_reason == "early_stopping" and res.steps == 6
    assert res.history[0]["epoch"] == 0 and "val_dice" in res.history[0]
    assert same(state(res.model), state(init))


def test_validation_at_the_best_threshold(trained):
    """``val_threshold="best"`` scores a binary model at the best pooled threshold of the
    validation cases: not below its Dice at any fixed threshold (here a bad 0.97 and 0.5)."""
    init = trained[0].model.copy()

    def step0(threshold: float, how: str) -> float:
        init.meta["threshold"] = threshold
        cfg = default_finetune_config(lr=1e-9, max_steps=1, epochs=1, device="cpu",
                                      time_budget=None, val_threshold=how)
        return finetune(init, [disks(0)], cfg, val_cases=[disks(1)]).history[0]["val_dice"]

    bad, half, best = step0(0.97, "fixed"), step0(0.5, "fixed"), step0(0.97, "best")
    assert best >= half - 1e-9 and best > bad + 0.05
    with pytest.raises(InputError, match="val_threshold"):
        tiny(val_threshold="mean").validate()


def test_data_errors(trained):
    with pytest.raises(DataError):
        train([Case.from_arrays("x", np.zeros((1, 32, 32), np.float32))], tiny())
    rgb = Case.from_arrays("rgb", np.zeros((3, 32, 32), np.float32), np.zeros((32, 32), int))
    with pytest.raises(DataError):
        finetune(trained[0].model, [rgb], default_finetune_config(device="cpu"))
    with pytest.raises(DataError):
        run_to_end(train_iter([], tiny()))


def test_drive_with_field_of_view(drive_root):
    """Real fundus photographs (RGB, FOV mask): a few steps run and validate inside the FOV."""
    from napari_drunet.core.train.dataset import case_from_files

    tr = drive_root / "training"
    cases = [case_from_files(tr / "images" / f"{n}_training.tif", tr / "1st_manual" /
                             f"{n}_manual1.gif", mask=tr / "mask" / f"{n}_training_mask.gif")
             for n in (21, 22)]
    res = train(cases[:1], tiny(epochs=1, steps_per_epoch=4, patch_size=(64, 64)),
                val_cases=cases[1:])
    assert res.model.in_channels == 3 and res.steps == 4
    assert 0.0 <= res.best_val_dice <= 1.0


def test_hippocampus_3d_multiclass(hippocampus_root):
    """Real MRI volumes with labels 0/1/2: a 3D model and a 2D slice model both train."""
    from napari_drunet.core.train.dataset import case_from_files

    names = sorted(p.name for p in (hippocampus_root / "imagesTr").glob("hippocampus_*.nii.gz"))
    cases = [case_from_files(hippocampus_root / "imagesTr" / n, hippocampus_root / "labelsTr" / n)
             for n in names[:2]]
    res = train(cases, tiny(spatial_dims=3, patch_size=(16, 16, 16), epochs=1,
                            steps_per_epoch=2, batch_size=2, val_fraction=0.5))
    assert res.model.out_channels == 3 and res.model.spatial_dims == 3
    assert res.best_val_dice is not None
    res2 = train(cases, tiny(epochs=1, steps_per_epoch=2, val_fraction=0.5, slice_axis=1))
    assert res2.model.out_channels == 3 and res2.model.meta["inference"]["slice_axis"] == 1


def test_finetuning_an_rgb_model_on_gray_cases_fits_channels_like_predict():
    import numpy as np

    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model
    from napari_drunet.core.train.dataset import Case
    from napari_drunet.core.train.loop import TrainConfig, train
    from napari_drunet.core.train.setup import fit_channels

    rng = np.random.default_rng(0)
    model = Model(build_model("unet", in_channels=3, features=(4, 8)), {}, device="cpu")
    gray = [Case.from_arrays(f"g{i}", rng.normal(size=(1, 32, 32)).astype(np.float32),
                             (rng.random((32, 32)) > 0.7).astype(np.uint8)) for i in range(2)]
    fitted = fit_channels(gray, model)
    assert [c.image.array.shape[0] for c in fitted] == [3, 3]
    assert fitted[0].label is gray[0].label
    res = train(gray, TrainConfig(max_steps=2, patch_size=(32, 32), batch_size=2, device="cpu",
                                  val_fraction=0.0), init=model)
    assert res.model.in_channels == 3 and res.steps == 2
    odd = [Case.from_arrays("two", np.zeros((2, 32, 32), np.float32), np.zeros((32, 32), np.uint8))]
    from napari_drunet.core.errors import DataError

    with pytest.raises(DataError, match="channel"):
        fit_channels(odd, model)
