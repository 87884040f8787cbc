"""The training loop: run folder contents, exact resume, NaN handling, condition (5), presets.

Runs are tiny (a few thousand parameters, 64 training / 32 test images, batch 16) on the CPU.
Tests use the registry's tiny models when ``sdenet.models`` provides them and a stand-in
network with the same methods otherwise.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from sdenet.laws import DropBernoulli
from sdenet.train import loop
from sdenet.train.checkpoint import load_checkpoint, save_atomic
from sdenet.train.monitor import DEFAULT_WEAK_K, WeakConditionError, format_table
from sdenet.train.presets import PRESETS, get_preset, lr_factor, scale_milestones

# ---------------------------------------------------------------------------------------------
# A stand-in network with the model API (lm_coefficients, weak_report, reset_weak_stats,
# set_generator): a conv stem, one stage of residual blocks stepped as
#   x_{n+1} = x_n + p f(x_n) dt + sqrt(p(1-p)) f(x_n) dW_n,   dW_n ~ DropBernoulli(p) at dt,
# (one increment per sample), optionally with LM coefficients k_n, and a linear head.
# ---------------------------------------------------------------------------------------------


class StandIn(nn.Module):
    def __init__(self, num_classes=10, stochastic=False, p_L=0.5, dt=1.0, lm=False, blocks=2,
                 width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
            for _ in range(blocks))
        self.head = nn.Linear(width, num_classes)
        self.k = nn.Parameter(torch.full((blocks,), -0.05)) if lm else None
        self.stochastic = bool(stochastic)
        self.law = DropBernoulli(p_L)
        self.dt = float(dt)
        self.generator = None
        self.register_buffer("_sums", torch.zeros(4, dtype=torch.float64), persistent=False)

    def set_generator(self, g):
        self.generator = g

    def reset_weak_stats(self):
        self._sums.zero_()

    def forward(self, x):
        x = self.stem(x)
        prev = x
        p, dt = self.law.p, self.dt
        for n, block in enumerate(self.blocks):
            f = block(x)
            if self.stochastic and self.training:
                dw = self.law.sample((x.shape[0], 1, 1, 1), dt, generator=self.generator,
                                     device=x.device, dtype=torch.float32)
                d = dw.double().reshape(-1)
                self._sums += torch.stack([torch.tensor(float(d.numel()), dtype=torch.float64),
                                           d.sum(), (d * d).sum(), (d ** 3).sum()])
                step = f * (p * dt) + math.sqrt(p * (1 - p)) * f * dw.to(f.dtype)
            else:
                step = f * (p * dt if self.stochastic else dt)
            if self.k is not None and n > 0:
                x, prev = (1 - self.k[n]) * x + self.k[n] * prev + step, x
            else:
                x, prev = x + step, x
        return self.head(x.mean((2, 3)))

    def lm_coefficients(self):
        return {} if self.k is None else {"stage1": self.k.detach().tolist()}

    def weak_report(self):
        if not self.stochastic:
            return []
        n = int(self._sums[0].item())
        m = [(self._sums[i] / n).item() if n else None for i in (1, 2, 3)]
        c = self.law.condition(self.dt)
        return [{"stage": "stage1", "block": None, "law": "drop", "p": self.law.p, "dt": self.dt,
                 "C": c, "K": c / self.dt ** 2, "n": n, "m1": m[0], "m2": m[1], "m3": m[2]}]


STANDINS = {
    "standin": dict(),
    "standin_lm": dict(lm=True),
    "standin_sd": dict(stochastic=True),
}


def standin_create(name, num_classes, overrides):
    if name not in STANDINS:
        raise ValueError(f"unknown model {name!r}")
    return StandIn(num_classes=num_classes, **{**STANDINS[name], **overrides})


@pytest.fixture
def standin(monkeypatch):
    monkeypatch.setattr(loop, "_create_model", standin_create)
    monkeypatch.setattr(loop, "_known_models", lambda: list(STANDINS))
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


# ---------------------------------------------------------------------------------------------
# A full two-epoch run: every file, every key
# ---------------------------------------------------------------------------------------------

CONFIG_KEYS = {"model", "dataset", "preset", "epochs", "batch_size", "lr", "momentum",
               "weight_decay", "milestones", "gamma", "schedule", "dt", "seed", "device", "amp",
               "channels_last", "compile", "weak_K", "strict_weak", "world_size",
               "model_overrides", "sdenet_version", "git_commit", "command"}
EPOCH_KEYS = {"epoch", "train_loss", "train_error", "test_error", "test_loss", "lr", "epoch_time",
              "elapsed", "lm_coefficients", "weak"}
WEAK_KEYS = {"stage", "block", "law", "p", "dt", "C", "K", "n", "m1", "m2", "m3"}
FINAL_KEYS = {"test_error", "best_test_error", "params", "epochs", "wall_time", "hardware", "model",
              "dataset", "dt", "seed"}
CKPT_KEYS = {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "best_test_error",
             "config"}


def test_two_epoch_run_writes_every_output(standin, data, tmp_path, capsys):
    out = tmp_path / "run"
    final = loop.train(model="standin_lm", dataset=data, epochs=2, out=str(out), **BASE)
    assert sorted(p.name for p in out.iterdir()) == sorted(loop.RUN_FILES)

    cfg = json.loads((out / "config.json").read_text())
    assert CONFIG_KEYS <= set(cfg)
    assert cfg["epochs"] == 2 and cfg["milestones"] == [1, 2] and cfg["batch_size"] == 16
    assert cfg["lr"] == 0.05 and cfg["momentum"] == 0.9 and cfg["weight_decay"] == 1e-4
    assert cfg["device"] == "cpu" and cfg["amp"] is False and cfg["world_size"] == 1
    assert cfg["weak_K"] == DEFAULT_WEAK_K and cfg["dt"] == 1.0

    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        assert set(m) >= EPOCH_KEYS
        for k in ("train_error", "test_error"):
            assert 0.0 <= m[k] <= 1.0
        assert math.isfinite(m["train_loss"]) and math.isfinite(m["test_loss"])
        assert m["weak"] == []  # deterministic model
        assert list(m["lm_coefficients"]) == ["stage1"] and len(m["lm_coefficients"]["stage1"]) == 2
        assert m["epoch_time"] > 0 and m["elapsed"] >= m["epoch_time"]
    # lr: 0.05 in epoch 1, /10 from the (rescaled) milestone at epoch 1 on
    assert lines[0]["lr"] == pytest.approx(0.05) and lines[1]["lr"] == pytest.approx(0.005)
    assert lines[1]["elapsed"] > lines[0]["elapsed"]

    fin = json.loads((out / "metrics.json").read_text())
    assert FINAL_KEYS <= set(fin)
    assert fin["test_error"] == lines[-1]["test_error"]
    assert fin["best_test_error"] == min(m["test_error"] for m in lines)
    assert fin["params"] == sum(p.numel() for p in standin_create("standin_lm", 4, {}).parameters())
    assert fin["epochs"] == 2 and fin["seed"] == 3 and "torch" in fin["hardware"]
    assert final["test_error"] == fin["test_error"]

    last = load_checkpoint(out / "last.pt")
    best = load_checkpoint(out / "best.pt")
    assert CKPT_KEYS <= set(last) and last["epoch"] == 2
    assert {"torch", "noise", "loader"} <= set(last["rng"])
    assert best["epoch"] == 1 + [m["test_error"] for m in lines].index(fin["best_test_error"])
    err = capsys.readouterr()
    assert "epoch 1/2" in err.out and "epoch 2/2" in err.out  # one line per epoch even when quiet


def test_stochastic_run_reports_condition_5(standin, data, tmp_path, capsys):
    out = tmp_path / "sd"
    final = loop.train(model="standin_sd", dataset=data, epochs=1, out=str(out), p_L=0.5,
                       dt=0.25, mc_samples=2, **BASE)
    m = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    (w,) = m["weak"]
    assert set(w) >= WEAK_KEYS
    law = DropBernoulli(0.5)
    assert w["C"] == law.condition(0.25) and w["K"] == law.condition(0.25) / 0.25 ** 2
    # 64 images, batch 16 -> 4 steps x 16 samples x 2 blocks
    assert w["n"] == 64 * 2
    # empirical moments of +-sqrt(dt) increments: m2 = dt exactly, |m1| within 4 standard errors
    assert w["m2"] == pytest.approx(0.25)
    assert abs(w["m1"]) <= 4 * math.sqrt(0.25 / w["n"])
    fin = json.loads((out / "metrics.json").read_text())
    assert fin["mc_samples"] == 2 and 0 <= fin["test_error_mc"] <= 1
    assert "condition (5)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Exact resume and interruption
# ---------------------------------------------------------------------------------------------


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_is_exact_for_a_stochastic_model(standin, data, tmp_path, monkeypatch):
    kw = dict(model="standin_sd", dataset=data, epochs=4, p_L=0.7, **BASE)
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
    strip = lambda s: {k: v for k, v in json.loads(s).items() if k not in ("epoch_time", "elapsed")}
    assert [strip(s) for s in la] == [strip(s) for s in lb]
    assert final["test_error"] == json.loads(la[-1])["test_error"]


def test_resume_of_a_finished_run_or_a_used_folder_is_refused(standin, data, tmp_path):
    out = tmp_path / "r"
    loop.train(model="standin", dataset=data, epochs=1, out=str(out), **BASE)
    with pytest.raises(ValueError, match="already finished"):
        loop.train(resume=str(out), device="cpu", quiet=True)
    with pytest.raises(ValueError, match="already holds a run"):
        loop.train(model="standin", dataset=data, epochs=1, out=str(out), **BASE)
    with pytest.raises(ValueError, match="no such run folder"):
        loop.train(resume=str(tmp_path / "nothing"), device="cpu", quiet=True)


# ---------------------------------------------------------------------------------------------
# NaN
# ---------------------------------------------------------------------------------------------


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(standin, data, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "nan"
    monkeypatch.setenv("SDENET_FAULT", "nan@2")
    with pytest.raises(loop.TrainingDiverged, match=r"epoch 2.*last\.pt \(epoch 1\)"):
        loop.train(model="standin", dataset=data, epochs=3, out=str(out), **BASE)
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_absurd_learning_rate_diverges(standin, data, tmp_path):
    with pytest.raises(loop.TrainingDiverged, match="epoch 1.*no checkpoint"):
        loop.train(model="standin", dataset=data, epochs=2, out=str(tmp_path / "x"),
                   **{**BASE, "lr": 1e30})


# ---------------------------------------------------------------------------------------------
# Condition (5): warning and --strict-weak
# ---------------------------------------------------------------------------------------------


def test_weak_K_warning_and_strict_failure(standin, data, tmp_path, capsys):
    # drop law at p = 0.1, dt = 1: K = |1 - 2p| / sqrt(p(1-p)) = 0.8/0.3 > 1
    kw = dict(model="standin_sd", dataset=data, epochs=1, p_L=0.1, **BASE)
    loop.train(out=str(tmp_path / "w"), **kw)
    err = capsys.readouterr().err
    assert "warning: condition (5)" in err and "K = C/dt^2 = 2.667" in err
    with pytest.raises(WeakConditionError, match="strict"):
        loop.train(out=str(tmp_path / "s"), strict_weak=True, **kw)
    assert not (tmp_path / "s" / "last.pt").exists()
    # a higher bound silences it; p = 1/2 is symmetric (C = 0) and never warns
    loop.train(out=str(tmp_path / "k"), weak_K=3.0, strict_weak=True, **kw)
    loop.train(out=str(tmp_path / "h"), **{**kw, "p_L": 0.5}, strict_weak=True)
    assert "warning" not in capsys.readouterr().err


def test_format_table_lists_every_stage():
    rep = [{"stage": "s1", "block": 0, "law": "drop", "p": 0.5, "dt": 1.0, "C": 0.0, "K": 0.0,
            "n": 10, "m1": 0.0, "m2": 1.0, "m3": 0.0},
           {"stage": "s2", "block": None, "law": "uniform", "p": None, "dt": 0.5, "C": 0.0,
            "K": 0.0, "n": 0, "m1": None, "m2": None, "m3": None}]
    lines = format_table(rep).splitlines()
    assert len(lines) == 3 and "s1" in lines[1] and "uniform" in lines[2]


# ---------------------------------------------------------------------------------------------
# Bad settings, evaluation, atomic save
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, match", [
    (dict(epochs=0), "epochs"), (dict(lr=-1), "lr"), (dict(batch_size=2.5), "batch_size"),
    (dict(device="tpu"), "device"), (dict(mode="diag"), "mode"), (dict(p_L=1.5), "p_L"),
    (dict(preset="fast"), "preset"), (dict(model="nope"), "unknown model"),
    (dict(colour="red"), "unknown training option"),
])
def test_bad_settings_raise_value_error(standin, data, tmp_path, bad, match):
    kw = {**BASE, "model": "standin", "dataset": data, "epochs": 1, "out": str(tmp_path / "e"),
          **bad}
    with pytest.raises(ValueError, match=match):
        loop.train(**kw)


def test_missing_dataset_is_a_value_error_naming_the_file(standin, tmp_path):
    with pytest.raises(ValueError, match="nothere.npz"):
        loop.train(model="standin", dataset=str(tmp_path / "nothere.npz"), epochs=1,
                   out=str(tmp_path / "e"), **BASE)


def test_evaluate_a_checkpoint(standin, data, tmp_path, monkeypatch):
    out = tmp_path / "ev"
    loop.train(model="standin_sd", dataset=data, epochs=1, out=str(out), **BASE)
    monkeypatch.setattr(loop, "_mc_sums", lambda model, loader, dev, samples, g, d, amp: (1.0, 0.5))
    r = loop.evaluate(out / "best.pt", samples=3, device="cpu")
    m = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert r["test_error"] == pytest.approx(m["test_error"])
    assert r["n_test"] == 32 and r["stochastic"] is True
    assert r["mc_samples"] == 3 and r["test_error_mc"] == 0.5
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
