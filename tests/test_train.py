"""The training loop: run folder contents, exact resume, NaN handling, condition (5), presets.

Runs are tiny on the CPU: the registry's tiny models (widths 8/16/32, about 44k parameters) on
64 training / 32 test images of 8x8 pixels written by the test, batch 16.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sdenet.laws import DropBernoulli
from sdenet.models import count_params
from sdenet.train import evaluation, loop
from sdenet.train.checkpoint import load_checkpoint, save_atomic
from sdenet.train.monitor import DEFAULT_WEAK_K, WeakConditionError, format_table
from sdenet.train.presets import PRESETS, get_preset, lr_factor, scale_milestones


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.delenv("SDENET_FAULT", raising=False)


def tiny_npz(path, n_train=64, n_test=32, seed=0):
    """Random 8x8 images whose class is visible in the mean brightness (so training helps)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 100, (n, 8, 8, 3)) + (y * 40)[:, None, None, None]
    x = x.astype(np.uint8)
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return str(path)


@pytest.fixture
def data(tmp_path):
    return tiny_npz(tmp_path / "tiny.npz")


BASE = dict(batch_size=16, lr=0.05, seed=3, device="cpu", quiet=True, preset="cifar10_lm")


# ---------------------------------------------------------------------------------------------
# Presets and schedules
# ---------------------------------------------------------------------------------------------


def test_presets_match_the_paper():
    p = get_preset("cifar10_lm")
    assert (p.lr, p.epochs, p.batch_size, p.momentum, p.weight_decay) == (0.1, 160, 128, 0.9, 1e-4)
    assert p.milestones == (80, 120) and p.gamma == 0.1
    assert get_preset("cifar100-lm").milestones == (150, 225) and PRESETS["cifar100_lm"].epochs == 300
    assert get_preset("lm_resnext").weight_decay == 5e-4
    assert get_preset("stochastic_depth").milestones == (250, 375)
    assert get_preset("quick").schedule == "onecycle" and get_preset("quick").label_smoothing == 0
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")


def test_milestones_rescale_with_epochs():
    assert scale_milestones((80, 120), 160, 160) == [80, 120]
    assert scale_milestones((80, 120), 160, 16) == [8, 12]
    assert scale_milestones((250, 375), 500, 4) == [2, 3]
    assert all(m >= 1 for m in scale_milestones((80, 120), 160, 1))


def test_lr_factor_step_and_onecycle():
    kw = dict(schedule="step", epochs=160, milestones=[80, 120], gamma=0.1)
    assert lr_factor(79.99, **kw) == 1.0
    assert lr_factor(80.0, **kw) == pytest.approx(0.1)
    assert lr_factor(130.0, **kw) == pytest.approx(0.01)
    oc = dict(schedule="onecycle", epochs=10, warmup=0.2)
    assert lr_factor(1.0, **oc) == pytest.approx(0.5)
    assert lr_factor(2.0, **oc) == pytest.approx(1.0)
    assert lr_factor(6.0, **oc) == pytest.approx(0.5)
    assert lr_factor(10.0, **oc) == pytest.approx(0.0)


def test_quick_preset_is_one_cycle(clean, data, tmp_path):
    out = tmp_path / "q"
    loop.train(
        model="tiny_resnet", dataset=data, epochs=3, out=str(out), **{**BASE, "preset": "quick", "lr": 0.2}
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["schedule"] == "onecycle" and cfg["milestones"] == [] and cfg["label_smoothing"] == 0
    lrs = [json.loads(s)["lr"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    # 4 steps per epoch, 12 in all, warm-up over the first 20 %: the rate at the start of each
    # epoch is 0.2 * factor((4e + 0.5)/4 epochs)
    expect = [0.2 * lr_factor((4 * e + 0.5) / 4, schedule="onecycle", epochs=3, warmup=0.2) for e in range(3)]
    assert lrs == pytest.approx(expect)
    assert lrs[0] < lrs[1] and lrs[2] < lrs[1]


# ---------------------------------------------------------------------------------------------
# A full two-epoch run: every file, every key
# ---------------------------------------------------------------------------------------------

CONFIG_KEYS = {
    "model",
    "dataset",
    "preset",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "milestones",
    "gamma",
    "schedule",
    "dt",
    "seed",
    "device",
    "amp",
    "channels_last",
    "compile",
    "weak_K",
    "strict_weak",
    "world_size",
    "model_overrides",
    "sdenet_version",
    "git_commit",
    "command",
}
EPOCH_KEYS = {
    "epoch",
    "train_loss",
    "train_error",
    "test_error",
    "test_loss",
    "lr",
    "epoch_time",
    "epoch_cpu_time",
    "elapsed",
    "lm_coefficients",
    "weak",
}
WEAK_KEYS = {"stage", "block", "law", "p", "dt", "C", "K", "n", "m1", "m2", "m3"}
FINAL_KEYS = {
    "test_error",
    "best_test_error",
    "params",
    "epochs",
    "wall_time",
    "hardware",
    "model",
    "dataset",
    "dt",
    "seed",
}
CKPT_KEYS = {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "best_test_error", "config"}


def test_two_epoch_run_writes_every_output(clean, data, tmp_path, capsys):
    out = tmp_path / "run"
    final = loop.train(model="tiny_lm_resnet", dataset=data, epochs=2, out=str(out), **BASE)
    assert sorted(p.name for p in out.iterdir()) == sorted(loop.RUN_FILES)

    cfg = json.loads((out / "config.json").read_text())
    assert CONFIG_KEYS <= set(cfg)
    assert cfg["epochs"] == 2 and cfg["milestones"] == [1, 2] and cfg["batch_size"] == 16
    assert cfg["lr"] == 0.05 and cfg["momentum"] == 0.9 and cfg["weight_decay"] == 1e-4
    assert cfg["device"] == "cpu" and cfg["amp"] is False and cfg["world_size"] == 1
    assert cfg["weak_K"] == DEFAULT_WEAK_K == "law" and cfg["dt"] == 1.0

    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        assert set(m) >= EPOCH_KEYS
        for k in ("train_error", "test_error"):
            assert 0.0 <= m[k] <= 1.0
        assert math.isfinite(m["train_loss"]) and math.isfinite(m["test_loss"])
        assert m["weak"] == []  # deterministic model
        assert m["lm_coefficients"] and all(
            len(ks) >= 1 and all(math.isfinite(k) for k in ks) for ks in m["lm_coefficients"].values()
        )
        assert m["epoch_time"] > 0 and m["elapsed"] >= m["epoch_time"]
    # lr: 0.05 in epoch 1, /10 from the (rescaled) milestone at epoch 1 on
    assert lines[0]["lr"] == pytest.approx(0.05) and lines[1]["lr"] == pytest.approx(0.005)
    assert lines[1]["elapsed"] > lines[0]["elapsed"]

    fin = json.loads((out / "metrics.json").read_text())
    assert FINAL_KEYS <= set(fin)
    assert fin["test_error"] == lines[-1]["test_error"]
    assert fin["best_test_error"] == min(m["test_error"] for m in lines)
    assert fin["params"] == count_params("tiny_lm_resnet", num_classes=4)
    assert fin["epochs"] == 2 and fin["seed"] == 3 and "torch" in fin["hardware"]
    assert final["test_error"] == fin["test_error"]

    last = load_checkpoint(out / "last.pt")
    best = load_checkpoint(out / "best.pt")
    assert CKPT_KEYS <= set(last) and last["epoch"] == 2
    assert {"torch", "noise", "loader"} <= set(last["rng"])
    assert best["epoch"] == 1 + [m["test_error"] for m in lines].index(fin["best_test_error"])
    err = capsys.readouterr()
    assert "epoch 1/2" in err.out and "epoch 2/2" in err.out  # one line per epoch even when quiet


def test_stochastic_run_reports_condition_5(clean, data, tmp_path, capsys):
    out = tmp_path / "sd"
    loop.train(
        model="tiny_sd_resnet", dataset=data, epochs=1, out=str(out), p_L=0.5, dt=0.25, mc_samples=2, **BASE
    )
    m = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert len(m["weak"]) >= 3
    for w in m["weak"]:
        assert set(w) >= WEAK_KEYS
        # the exact condition of the block's own law at its step
        c = DropBernoulli(w["p"]).condition(w["dt"])
        assert w["C"] == c and w["K"] == pytest.approx(c / w["dt"] ** 2, rel=1e-12)
        assert w["n"] == 64  # one increment per training image per epoch
        # empirical mean of the drawn increments: within 5 standard errors sqrt(dt/n) of 0
        assert abs(w["m1"]) <= 5 * math.sqrt(w["dt"] / w["n"])
    assert {w["dt"] for w in m["weak"]} >= {0.25}
    half = [w for w in m["weak"] if w["p"] == 0.5]  # +-sqrt(dt) increments: m2 = dt exactly
    assert half and all(w["m2"] == pytest.approx(w["dt"], rel=1e-5) for w in half)
    fin = json.loads((out / "metrics.json").read_text())
    assert fin["mc_samples"] == 2 and 0 <= fin["test_error_mc"] <= 1 and fin["dt"] == 0.25
    assert "condition (5) per stochastic stage" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Exact resume and interruption
# ---------------------------------------------------------------------------------------------


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_is_exact_for_a_stochastic_model(clean, data, tmp_path, monkeypatch):
    kw = dict(model="tiny_lm_sd_resnet", dataset=data, epochs=4, p_L=0.7, dt=0.5, **BASE)
    loop.train(out=str(tmp_path / "a"), **kw)

    monkeypatch.setenv("SDENET_FAULT", "interrupt@3:2")  # Ctrl-C in the middle of epoch 3
    with pytest.raises(KeyboardInterrupt):
        loop.train(out=str(tmp_path / "b"), **kw)
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ck["epoch"] == 2  # the last finished epoch
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 2
    monkeypatch.delenv("SDENET_FAULT")
    final = loop.train(resume=str(tmp_path / "b"), device="cpu", quiet=True)

    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()

    def strip(s):
        return {
            k: v for k, v in json.loads(s).items() if k not in ("epoch_time", "epoch_cpu_time", "elapsed")
        }

    assert [strip(s) for s in la] == [strip(s) for s in lb]
    assert final["test_error"] == json.loads(la[-1])["test_error"]


def test_resume_of_a_finished_run_or_a_used_folder_is_refused(clean, data, tmp_path):
    out = tmp_path / "r"
    loop.train(model="tiny_resnet", dataset=data, epochs=1, out=str(out), **BASE)
    with pytest.raises(ValueError, match="already finished"):
        loop.train(resume=str(out), device="cpu", quiet=True)
    with pytest.raises(ValueError, match="already holds a run"):
        loop.train(model="tiny_resnet", dataset=data, epochs=1, out=str(out), **BASE)
    with pytest.raises(ValueError, match="no such run folder"):
        loop.train(resume=str(tmp_path / "nothing"), device="cpu", quiet=True)


# ---------------------------------------------------------------------------------------------
# NaN
# ---------------------------------------------------------------------------------------------


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(clean, data, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    monkeypatch.setenv("SDENET_FAULT", "nan@2")
    with pytest.raises(loop.TrainingDiverged, match=r"epoch 2.*last\.pt \(epoch 1\)"):
        loop.train(model="tiny_resnet", dataset=data, epochs=3, out=str(out), **BASE)
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_absurd_learning_rate_diverges(clean, data, tmp_path):
    with pytest.raises(loop.TrainingDiverged, match="epoch 1.*no checkpoint"):
        loop.train(
            model="tiny_resnet", dataset=data, epochs=2, out=str(tmp_path / "x"), **{**BASE, "lr": 1e30}
        )


# ---------------------------------------------------------------------------------------------
# Condition (5): warning and --strict-weak
# ---------------------------------------------------------------------------------------------


def test_weak_K_warning_and_strict_failure(clean, data, tmp_path, capsys):
    # survival probabilities decay linearly from 1 to p_L = 0.1 over the six blocks: the last
    # block's law has K = |1 - 2p| / sqrt(p(1-p)) / sqrt(dt) = (0.8/0.3) * 2 at dt = 1/4
    kw = dict(model="tiny_sd_resnet", dataset=data, epochs=1, p_L=0.1, limit_train=16, limit_test=16, **BASE)
    k_last = DropBernoulli(0.1).condition(0.25) / 0.25**2
    assert k_last == pytest.approx(16 / 3)
    loop.train(out=str(tmp_path / "w"), dt=0.25, **kw)
    err = capsys.readouterr().err
    assert "warning: condition (5)" in err and f"K = C/dt^2 = {k_last:.4g}" in err
    with pytest.raises(WeakConditionError, match="strict"):
        loop.train(out=str(tmp_path / "s"), dt=0.25, strict_weak=True, **kw)
    assert not (tmp_path / "s" / "last.pt").exists()
    # at dt = 1 each law sits at its own reference K: no warning by default, but a fixed bound
    # below K(1) = 8/3 of the p = 0.1 block fails, and one above it passes
    loop.train(out=str(tmp_path / "one"), dt=1.0, strict_weak=True, **kw)
    with pytest.raises(WeakConditionError, match="weak_K = 2"):
        loop.train(out=str(tmp_path / "two"), dt=1.0, weak_K=2.0, strict_weak=True, **kw)
    loop.train(out=str(tmp_path / "k"), dt=0.25, weak_K=6.0, strict_weak=True, **kw)
    # symmetric laws have C = 0 for every dt: shake-shake's uniform increments never warn
    loop.train(
        out=str(tmp_path / "u"), **{**kw, "model": "tiny_shake_shake", "p_L": None}, dt=0.25, strict_weak=True
    )
    assert "warning" not in capsys.readouterr().err


def test_sqrt_p_schedule_is_judged_against_the_dt1_law(clean, data, tmp_path, capsys):
    # issue 18: K is judged against the law of the original (dt = 1) network, p1, not against
    # the law at the rescheduled p. sqrt: 1 - 2p(dt) = (1 - 2p1) sqrt(dt), K(dt) <= K(1) -> accepted
    # under strict_weak; fixed: K(dt) = K(1)/sqrt(dt) -> rightly refused.
    kw = dict(
        model="tiny_sd_resnet",
        dataset=data,
        epochs=1,
        p_L=0.1,
        limit_train=16,
        limit_test=16,
        dt=0.25,
        strict_weak=True,
        **BASE,
    )
    fin = loop.train(out=str(tmp_path / "sqrt"), overrides={"p_schedule": "sqrt"}, **kw)
    rows = [r for r in fin["weak"] if r["p1"] is not None and r["p1"] < 1 and r["dt"] < 1]
    assert rows and all(r["p"] != r["p1"] for r in rows)
    for r in rows:
        k1 = DropBernoulli(r["p1"]).condition(1.0)
        assert r["K"] <= k1 + 1e-12 and r["K"] == pytest.approx(
            DropBernoulli(r["p"]).condition(0.25) / 0.25**2
        )
    assert "warning" not in capsys.readouterr().err
    with pytest.raises(WeakConditionError, match="strict"):
        loop.train(out=str(tmp_path / "fixed"), overrides={"p_schedule": "fixed"}, **kw)


def test_format_table_lists_every_stage():
    rep = [
        {
            "stage": "s1",
            "block": 0,
            "law": "drop",
            "p": 0.5,
            "dt": 1.0,
            "C": 0.0,
            "K": 0.0,
            "n": 10,
            "m1": 0.0,
            "m2": 1.0,
            "m3": 0.0,
        },
        {
            "stage": "s2",
            "block": None,
            "law": "uniform",
            "p": None,
            "dt": 0.5,
            "C": 0.0,
            "K": 0.0,
            "n": 0,
            "m1": None,
            "m2": None,
            "m3": None,
        },
    ]
    lines = format_table(rep).splitlines()
    assert len(lines) == 3 and "s1" in lines[1] and "uniform" in lines[2]


# ---------------------------------------------------------------------------------------------
# Bad settings, evaluation, atomic save
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(epochs=0), "epochs"),
        (dict(lr=-1), "lr"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(device="tpu"), "device"),
        (dict(mode="diag"), "mode"),
        (dict(p_L=1.5), "p_L"),
        (dict(preset="fast"), "preset"),
        (dict(model="nope"), "unknown model"),
        (dict(colour="red"), "unknown training option"),
    ],
)
def test_bad_settings_raise_value_error(clean, data, tmp_path, bad, match):
    kw = {**BASE, "model": "tiny_resnet", "dataset": data, "epochs": 1, "out": str(tmp_path / "e"), **bad}
    with pytest.raises(ValueError, match=match):
        loop.train(**kw)


def test_missing_dataset_is_a_value_error_naming_the_file(clean, tmp_path):
    with pytest.raises(ValueError, match="nothere.npz"):
        loop.train(
            model="tiny_resnet",
            dataset=str(tmp_path / "nothere.npz"),
            epochs=1,
            out=str(tmp_path / "e"),
            **BASE,
        )


def test_evaluate_a_checkpoint(clean, data, tmp_path, monkeypatch):
    out = tmp_path / "ev"
    loop.train(model="tiny_sd_resnet", dataset=data, epochs=1, out=str(out), **BASE)
    r = loop.evaluate(out / "best.pt", samples=3, device="cpu")
    m = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert r["test_error"] == pytest.approx(m["test_error"])
    assert r["test_loss"] == pytest.approx(m["test_loss"], rel=1e-5)
    assert r["n_test"] == 32 and r["stochastic"] is True
    assert r["mc_samples"] == 3 and 0 <= r["test_error_mc"] <= 1
    # the Monte Carlo answer is sdenet.nn.mc_predict's: one big draw of 3 samples per image
    seen = []
    monkeypatch.setattr(
        evaluation,
        "_mc_predict_fn",
        lambda: (
            lambda model, x, samples, generator: seen.append(samples) or torch.full((x.shape[0], 4), 0.25)
        ),
    )
    r = loop.evaluate(out / "best.pt", samples=3, device="cpu")
    assert seen == [3] * 1 and r["test_loss_mc"] == pytest.approx(math.log(4))
    r0 = loop.evaluate(out / "last.pt", samples=0, device="cpu", limit_test=16)
    assert "test_error_mc" not in r0 and r0["n_test"] == 16


def test_save_atomic_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"model": {}, "config": {}, "epoch": 1}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"model": {}, "config": {}, "epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_progress_bar_on_a_terminal_and_hardware_line(clean, data, tmp_path, monkeypatch, capsys):
    import io
    import sys

    from sdenet.train.hardware import describe, info

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    loop.train(
        model="tiny_resnet", dataset=data, epochs=1, out=str(tmp_path / "p"), **{**BASE, "quiet": False}
    )
    assert "epoch 1/1" in term.getvalue() and "4/4" in term.getvalue()  # tqdm's bar
    assert "epoch 1/1" in capsys.readouterr().out  # and the summary line
    line = describe("cpu")
    assert f"torch {torch.__version__}" in line and f"({info('cpu')['cpu_cores']} cores)" in line


@pytest.mark.slow
def test_training_learns_on_the_bundled_sample(clean, tmp_path):
    # 1500 real CIFAR-10 images, 4 one-cycle epochs: chance is 90 % error; 80 % is more than
    # 7 binomial standard errors (sqrt(0.09/500) = 1.3 %) below it
    final = loop.train(
        model="tiny_lm_resnet",
        dataset="sample",
        epochs=4,
        preset="quick",
        batch_size=64,
        device="cpu",
        seed=0,
        quiet=True,
        out=str(tmp_path / "l"),
    )
    assert final["test_error"] < 0.80
    assert final["best_test_error"] <= final["test_error"]


def test_monitor_fills_the_exact_condition_and_flags_against_the_law_at_dt_1():
    from sdenet.laws import Uniform
    from sdenet.train.monitor import normalize_report, violations

    rows = [
        {
            "stage": "s",
            "block": 0,
            "law": "drop",
            "p": 0.2,
            "dt": dt,
            "n": torch.tensor(5),
            "m1": torch.tensor(0.1),
            "m2": 0.2,
            "m3": 0.0,
        }
        for dt in (0.25, 1.0)
    ]
    rows.append(
        {
            "stage": "u",
            "block": 1,
            "law": "uniform",
            "p": None,
            "dt": 0.01,
            "n": 3,
            "m1": 0.0,
            "m2": 0.01,
            "m3": 0.0,
        }
    )
    rows.append(
        {
            "stage": "d",
            "block": 2,
            "law": "drop",
            "p": 1.0,
            "dt": 0.01,
            "n": 3,
            "m1": 0.0,
            "m2": 0.0,
            "m3": 0.0,
        }
    )
    rep = normalize_report(rows)
    law = DropBernoulli(0.2)
    for r, dt in zip(rep[:2], (0.25, 1.0)):
        assert r["C"] == law.condition(dt) and r["K"] == law.condition(dt) / dt**2
        assert r["n"] == 5 and isinstance(r["m1"], float)
    assert rep[2]["C"] == Uniform().condition(0.01) == 0.0
    # K(dt) = K(1)/sqrt(dt): only the drop block at dt < 1 is flagged; p = 1 (deterministic) never
    (bad,) = violations(rep)
    assert bad["dt"] == 0.25 and bad["bound"] == pytest.approx(law.condition(1.0))
    assert bad["K"] == pytest.approx(bad["bound"] / math.sqrt(0.25))
    assert [b["dt"] for b in violations(rep, 1.0)] == [0.25, 1.0]
    assert violations(rep, float("inf")) == []


# ---------------------------------------------------------------------------------------------
# ImageNet-style folders (the paper's Table 3)
# ---------------------------------------------------------------------------------------------


def _torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def tiny_image_folder(root, classes=2, per_class=4, size=40, seed=0):
    """``root/{train,val}/<class>/<i>.png``: a real ImageFolder layout of small PNGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 80, (size, size, 3)) + 80 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_image_folder_root_is_recognised(tmp_path):
    root = tiny_image_folder(tmp_path / "imagenet", per_class=1, size=8)
    assert loop.is_image_folder(root) and loop.is_image_folder(str(root))
    assert not loop.is_image_folder(root / "train") and not loop.is_image_folder(tmp_path / "nope")
    assert get_preset("imagenet").milestones == (30, 60) and get_preset("imagenet").epochs == 90


@pytest.mark.skipif(_torchvision_imports(), reason="checks the message given without torchvision")
def test_image_folder_without_torchvision_names_the_missing_package(clean, tmp_path):
    root = tiny_image_folder(tmp_path / "imagenet", per_class=1, size=8)
    with pytest.raises(ValueError, match="torchvision"):
        loop.train(model="tiny_resnet", dataset=str(root), epochs=1, out=str(tmp_path / "run"), **BASE)


def test_image_folder_rejects_array_limits(clean, tmp_path):
    root = tiny_image_folder(tmp_path / "imagenet", per_class=1, size=8)
    with pytest.raises(ValueError, match="limit"):
        loop.train(
            model="tiny_resnet", dataset=str(root), epochs=1, limit_train=4, out=str(tmp_path / "run"), **BASE
        )


@pytest.mark.skipif(not _torchvision_imports(), reason="torchvision does not import here")
def test_image_folder_trains_and_evaluates(clean, tmp_path):
    root = tiny_image_folder(tmp_path / "imagenet")
    out = tmp_path / "run"
    final = loop.train(
        model="tiny_resnet", dataset=str(root), epochs=1, out=str(out), **dict(BASE, batch_size=4)
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_classes"] == 2 and cfg["n_train"] == 8 and cfg["n_test"] == 8
    assert 0.0 <= final["test_error"] <= 1.0
    res = loop.evaluate(out / "last.pt", device="cpu")
    assert res["test_error"] == pytest.approx(final["test_error"])
