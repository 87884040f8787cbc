"""Trust in training: safe and validated checkpoints, run folders that survive crashes, a lock per
run folder, divergence, bad --out/--device/sizes/datasets, a user's own network, eval's
standard error.

Crash tests run ``python -m sdenet train`` in real processes (SIGKILL from the ``SDENET_FAULT``
hook, a second process against a held lock); the rest call ``sdenet.cli.main`` in-process on
tiny runs of 8x8 images.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import tiny_npz

from sdenet.cli import main
from sdenet.train import loop
from sdenet.train.checkpoint import load_checkpoint
from sdenet.train.monitor import model_weak_report
from sdenet.train.runfolder import RunLock

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch-size", "16", "--device", "cpu", "--quiet", "--preset", "cifar10_lm", "--lr", "0.05"]
SAMPLE = [
    "--dataset",
    "sample",
    "--limit-train",
    "64",
    "--limit-test",
    "32",
    "--batch-size",
    "32",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _no_fault(monkeypatch):
    monkeypatch.delenv("SDENET_FAULT", raising=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished 2-epoch run of each of two models (tiny_lm_resnet, tiny_resnet)."""
    base = tmp_path_factory.mktemp("runs")
    data = tiny_npz(base / "tiny.npz")
    out = {}
    for model in ("tiny_lm_resnet", "tiny_resnet"):
        r = base / model
        assert (
            main(["train", "--model", model, "--dataset", data, "--epochs", "2", "--out", str(r), *TINY]) == 0
        )
        out[model] = r
    out["data"] = data
    return out


def _err_line(capsys, code, expected=2):
    cap = capsys.readouterr()
    assert code == expected, cap
    lines = [s for s in cap.err.splitlines() if s.strip()]
    assert len(lines) == 1 and "Traceback" not in cap.err, cap.err
    return lines[0]


def _proc(args, env_extra=None, cwd=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "SDENET_FAULT"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "sdenet", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def _copy_run(src: Path, dst: Path, mutate) -> Path:
    """A copy of run folder ``src`` whose last.pt is ``mutate(checkpoint)`` (resumable: epoch 1)."""
    dst.mkdir()
    c = torch.load(src / "last.pt", weights_only=True)
    c["epoch"] = 1
    c["config"] = {**c["config"], "run_dir": str(dst)}
    mutate(c)
    torch.save(c, dst / "last.pt")
    (dst / "config.json").write_text((src / "config.json").read_text())
    return dst


# ---------------------------------------------------------------------------------------------
# Safe checkpoints
# ---------------------------------------------------------------------------------------------


class _Hostile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling this would create the marker file
        return (os.system, (f"touch {self.marker}",))


def test_hostile_checkpoint_is_refused_and_nothing_runs(runs, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = _copy_run(runs["tiny_lm_resnet"], tmp_path / "evil", lambda c: c.update(extra=_Hostile(marker)))
    for argv in (
        ["train", "--resume", str(evil), "--device", "cpu"],
        ["eval", str(evil / "last.pt"), "--device", "cpu"],
    ):
        line = _err_line(capsys, main(argv))
        assert "last.pt" in line and "refused" in line and "system" in line
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(evil / "last.pt")
    assert not marker.exists()
    # a real process too: the marker is never created
    p = _proc(["eval", str(evil), "--device", "cpu"])
    assert p.returncode == 2 and "Traceback" not in p.stderr and "refused" in p.stderr
    assert not marker.exists()


def test_a_checkpoint_written_the_old_way_still_loads(runs, tmp_path, capsys):
    """The previous release saved the same plain dict (format 1, no loss_ref) with torch.save."""
    src = runs["tiny_lm_resnet"]
    old = _copy_run(src, tmp_path / "old", lambda c: c.pop("loss_ref"))
    assert main(["eval", str(old), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 1
    assert main(["train", "--resume", str(old), "--device", "cpu", "--quiet"]) == 0
    assert load_checkpoint(old / "last.pt")["epoch"] == 2


def _other_model(runs):
    other = torch.load(runs["tiny_resnet"] / "last.pt", weights_only=True)["model"]
    return lambda c: c.update(model=other)


def _bad_momentum(c):
    c["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(3)


BAD = {
    "other model": (_other_model, "missing", True),
    "no epoch": (lambda runs: lambda c: c.pop("epoch"), "epoch", True),
    "no optimizer": (lambda runs: lambda c: c.pop("optimizer"), "optimizer", False),
    "bad rng": (
        lambda runs: lambda c: c["rng"].update(torch=torch.zeros(7, dtype=torch.uint8)),
        "RNG",
        False,
    ),
    "bad noise rng": (
        lambda runs: lambda c: c["rng"].update(noise_ranks=[torch.zeros(7, dtype=torch.uint8)]),
        "noise_ranks",
        False,
    ),
    "rng not a tensor": (lambda runs: lambda c: c["rng"].update(torch=[1, 2, 3]), "RNG", False),
    "momentum shape": (lambda runs: _bad_momentum, "momentum_buffer", False),
    "format": (lambda runs: lambda c: c.update(format=99), "format", True),
    "unknown model": (lambda runs: lambda c: c["config"].update(model="resnet9000"), "resnet9000", True),
    "weights not tensors": (lambda runs: lambda c: c.update(model={"a": 1}), "state dict", True),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoints_are_one_line_exit_2(runs, tmp_path, capsys, case):
    make, needle, for_eval = BAD[case]
    run = _copy_run(runs["tiny_lm_resnet"], tmp_path / "bad", make(runs))
    line = _err_line(capsys, main(["train", "--resume", str(run), "--device", "cpu", "--quiet"]))
    assert needle in line and "last.pt" in line
    code = main(["eval", str(run), "--device", "cpu", "--samples", "0"])
    if for_eval:
        assert needle in _err_line(capsys, code)
    else:  # eval needs neither the optimizer nor the RNG states
        assert code == 0, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Bad --out, device, sizes, datasets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where, needle",
    [
        ("FILE", "not a folder"),
        ("/dev/null", "not a folder"),
        ("FILE/sub", "is a file"),
        ("/proc/x", "/proc"),
        ("/sys/x", "/sys"),
    ],
)
def test_unusable_out_is_one_line_exit_2(runs, tmp_path, capsys, where, needle):
    f = tmp_path / "afile"
    f.write_text("x")
    out = where.replace("FILE", str(f))
    line = _err_line(
        capsys,
        main(
            [
                "train",
                "--model",
                "tiny_resnet",
                "--dataset",
                runs["data"],
                "--epochs",
                "1",
                "--out",
                out,
                *TINY,
            ]
        ),
    )
    assert needle in line and "--out" in line
    assert f.read_text() == "x"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_is_one_line(runs, tmp_path, capsys):
    for argv in (
        [
            "train",
            "--model",
            "tiny_resnet",
            "--dataset",
            runs["data"],
            "--out",
            str(tmp_path / "c"),
            "--device",
            "cuda",
        ],
        ["eval", str(runs["tiny_resnet"]), "--device", "cuda"],
    ):
        assert "CUDA is not available" in _err_line(capsys, main(argv))
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--model", "tiny_resnet", "--epochs", str(10**9)], "10,000 epochs"),
        (["train", "--model", "tiny_sd_resnet", "--mc-samples", str(10**9)], "10,000 Monte Carlo"),
        (["eval", "RUN", "--samples", str(10**9)], "10,000 Monte Carlo"),
    ],
)
def test_absurd_sizes_are_refused_before_any_work(runs, tmp_path, capsys, argv, needle):
    argv = [str(runs["tiny_resnet"]) if a == "RUN" else a for a in argv]
    if argv[0] == "train":
        argv += ["--dataset", runs["data"], "--out", str(tmp_path / "x"), "--device", "cpu"]
    assert needle in _err_line(capsys, main(argv))
    assert not (tmp_path / "x").exists()


def test_dataset_that_does_not_fit_the_model_is_refused_naming_both(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gray = tmp_path / "gray.npz"
    np.savez(
        gray,
        x_train=rng.integers(0, 255, (32, 8, 8, 1), dtype=np.uint8),
        y_train=rng.integers(0, 4, 32),
        x_test=rng.integers(0, 255, (16, 8, 8, 1), dtype=np.uint8),
        y_test=rng.integers(0, 4, 16),
    )
    line = _err_line(
        capsys,
        main(
            [
                "train",
                "--model",
                "tiny_resnet",
                "--dataset",
                str(gray),
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "g"),
                *TINY,
            ]
        ),
    )
    assert "gray.npz" in line and "1-channel" in line and "tiny_resnet" in line and "3-channel" in line
    assert not (tmp_path / "g").exists()  # the folder it created is removed again


# ---------------------------------------------------------------------------------------------
# Crashes, locks, divergence
# ---------------------------------------------------------------------------------------------


def test_kill_9_in_epoch_1_then_resume_completes(tmp_path, capsys):
    out = tmp_path / "k"
    args = ["train", "--model", "tiny_sd_resnet", *SAMPLE, "--epochs", "2", "--out", str(out)]
    p = _proc(args, {"SDENET_FAULT": "kill@1:1"})
    assert p.returncode == -9, p.stderr
    assert not (out / "last.pt").exists() and (out / "config.json").exists()
    (out / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # an interrupted write
    assert main(["train", "--resume", str(out), "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "starting the run over" in err and ".last.pt.x1y2.tmp" in err
    assert sorted(x.name for x in out.iterdir()) == [
        "best.pt",
        "config.json",
        "last.pt",
        "metrics.json",
        "metrics.jsonl",
    ]
    assert [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # the same as a run that was never killed
    loop.train(
        model="tiny_sd_resnet",
        dataset="sample",
        limit_train=64,
        limit_test=32,
        batch_size=32,
        device="cpu",
        quiet=True,
        epochs=2,
        out=str(tmp_path / "ref"),
    )
    a, b = (load_checkpoint(d / "last.pt")["model"] for d in (out, tmp_path / "ref"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_killed_before_metrics_json_is_finished_by_resume(runs, tmp_path, capsys):
    out = tmp_path / "f"
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_resnet",
                "--dataset",
                runs["data"],
                "--epochs",
                "1",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    first = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").unlink()  # as if killed after the last checkpoint
    assert main(["train", "--resume", str(out), "--device", "cpu", "--quiet"]) == 0
    assert "finishing it" in capsys.readouterr().err
    again = json.loads((out / "metrics.json").read_text())
    assert again["test_error"] == first["test_error"] and again["best_epoch"] == 1
    assert "already finished" in _err_line(capsys, main(["train", "--resume", str(out), "--device", "cpu"]))


def test_rerun_takes_over_a_folder_that_died_before_its_first_checkpoint(runs, tmp_path, capsys):
    out = tmp_path / "t"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text("")
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_resnet",
                "--dataset",
                runs["data"],
                "--epochs",
                "1",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    assert "takes the folder over" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["model"] == "tiny_resnet"


def test_kill_between_last_and_best_writes_keeps_best_and_its_epoch_in_agreement(tmp_path, capsys):
    out = tmp_path / "kb"
    args = [
        "train",
        "--model",
        "tiny_resnet",
        *SAMPLE,
        "--epochs",
        "3",
        "--preset",
        "cifar10_lm",
        "--lr",
        "0.05",
        "--out",
        str(out),
    ]
    p = _proc(args, {"SDENET_FAULT": "killsave@1"})  # epoch 1 always improves on nothing
    assert p.returncode == -9 and not (out / "best.pt").exists()
    assert load_checkpoint(out / "last.pt")["best_epoch"] == 1
    assert main(["train", "--resume", str(out), "--device", "cpu", "--quiet"]) == 0
    assert "did not hold epoch 1" in capsys.readouterr().err
    final = json.loads((out / "metrics.json").read_text())
    best = load_checkpoint(out / "best.pt")
    errors = [json.loads(s)["test_error"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert final["best_epoch"] == best["epoch"] == 1 + int(np.argmin(errors))
    assert final["best_test_error"] == best["metrics"]["test_error"] == min(errors)


def test_a_second_run_in_the_same_folder_is_refused_naming_the_pid(tmp_path, capsys):
    out = tmp_path / "two"
    args = [
        "train",
        "--model",
        "tiny_resnet",
        "--dataset",
        "sample",
        "--limit-train",
        "256",
        "--limit-test",
        "32",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--quiet",
        "--epochs",
        "2",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "sdenet", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "config.json").exists():
            time.sleep(0.05)
        assert (out / ".lock").read_text().strip() == str(first.pid)
        line = _err_line(capsys, main(args))
        assert f"pid {first.pid}" in line and "another sdenet run" in line
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # one run's lines only
    assert not (out / ".lock").exists()


def test_the_lock_of_a_dead_process_is_taken_over(runs, tmp_path, capsys):
    out = tmp_path / "dead"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(f"{dead.pid}\n")  # left by a process that is gone
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_resnet",
                "--dataset",
                runs["data"],
                "--epochs",
                "1",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    assert not (out / ".lock").exists()
    # a lock this (live) process holds refuses a run naming this pid
    held = tmp_path / "held"
    held.mkdir()
    with RunLock(held):
        line = _err_line(
            capsys,
            main(
                [
                    "train",
                    "--model",
                    "tiny_resnet",
                    "--dataset",
                    runs["data"],
                    "--epochs",
                    "1",
                    "--out",
                    str(held),
                    *TINY,
                ]
            ),
        )
        assert f"pid {os.getpid()}" in line
    assert not (held / "config.json").exists()


def test_huge_lr_stops_non_zero_naming_the_epoch(tmp_path, capsys):
    out = tmp_path / "lr"
    code = main(
        ["train", "--model", "tiny_resnet", *SAMPLE, "--epochs", "2", "--lr", "1e4", "--out", str(out)]
    )
    line = _err_line(capsys, code, expected=1)
    assert "diverged" in line and "epoch 1" in line and "no checkpoint" in line
    if (out / "best.pt").exists():
        assert math.isfinite(load_checkpoint(out / "best.pt")["metrics"]["test_loss"])
    assert (out / "config.json").exists()  # the folder can be resumed or taken over


def test_nan_test_loss_stops_the_run_and_best_pt_stays_finite(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tn"
    monkeypatch.setenv("SDENET_FAULT", "testnan@2")
    code = main(
        [
            "train",
            "--model",
            "tiny_resnet",
            "--dataset",
            runs["data"],
            "--epochs",
            "3",
            "--out",
            str(out),
            *TINY,
        ]
    )
    line = _err_line(capsys, code, expected=1)
    assert "test loss is nan in epoch 2" in line and f"{out / 'last.pt'} (epoch 1)" in line
    for name in ("last.pt", "best.pt"):
        c = load_checkpoint(out / name)
        assert c["epoch"] == 1 and math.isfinite(c["metrics"]["test_loss"])


def test_exploding_training_loss_is_divergence():
    t = loop._Trainer.__new__(loop._Trainer)
    t.run_dir, t.loss_ref = Path("r"), 2.0
    t._check_train_loss(3, 1.9e6)  # below 10^6 x 2: not yet
    with pytest.raises(
        loop.TrainingDiverged,
        match=r"loss 2\.1e\+06 exploded past 1e\+06 x its first value 2 in epoch 3; "
        r"the last good checkpoint is r/last\.pt \(epoch 2\)",
    ):
        t._check_train_loss(3, 2.1e6)
    with pytest.raises(loop.TrainingDiverged, match="training loss is inf in epoch 1; no checkpoint"):
        t._check_train_loss(1, float("inf"))


# ---------------------------------------------------------------------------------------------
# A user's own network
# ---------------------------------------------------------------------------------------------

USERNET = textwrap.dedent('''
    import torch
    from torch import nn
    import sdenet as sn
    import sdenet.nn as snn


    class Branch(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, t, x):
            return torch.tanh(self.conv(x))


    class NoisyField(sn.Field):
        """dX = f(X) dt + 0.1 X dW, Rademacher increments; declares its law and step."""
        noise = "sample"

        def __init__(self, c, dt):
            super().__init__()
            self.f = Branch(c)
            self.law = sn.Rademacher()
            self.dt = dt

        def drift(self, t, x):
            return self.f(t, x)

        def diffusion(self, t, x):
            return 0.1 * x


    class Net(nn.Module):
        def __init__(self, num_classes, dt):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            field = sn.SDEField(Branch(8), lambda t, x: 0.1 * x, noise="sample")
            self.stage = snn.Stage(field, sn.WeakEuler(sn.DropBernoulli(0.8)), dt=dt, steps=2,
                                   name="mine")
            self.noisy = NoisyField(8, dt)
            self.head = nn.Linear(8, num_classes)

        def forward(self, x):
            x = self.stage(self.stem(x))
            if self.training:
                x = sn.integrate(self.noisy, sn.WeakEuler(self.noisy.law), x, steps=2,
                                 dt=self.noisy.dt)
            return self.head(x.mean((2, 3)))


    def build(num_classes, dt=0.5):
        return Net(num_classes, dt)


    def not_a_module(num_classes):
        return 42
''')


@pytest.fixture
def usernet(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(USERNET)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg.nets"
    for name in ("userpkg.nets", "userpkg"):
        sys.modules.pop(name, None)


def test_train_and_eval_a_users_network_with_condition_5(runs, usernet, tmp_path, capsys, monkeypatch):
    out = tmp_path / "u"
    spec = f"{usernet}:build"
    monkeypatch.setenv("SDENET_FAULT", "interrupt@2")
    assert (
        main(
            [
                "train",
                "--model",
                spec,
                "--dataset",
                runs["data"],
                "--epochs",
                "2",
                "--dt",
                "0.25",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 130
    )
    monkeypatch.delenv("SDENET_FAULT")
    capsys.readouterr()
    # eval and resume need the module named again: a checkpoint does not choose what is imported
    line = _err_line(capsys, main(["train", "--resume", str(out), "--device", "cpu"]))
    assert f"--model {spec}" in line
    assert main(["train", "--resume", str(out), "--model", spec, "--device", "cpu"]) == 0
    cap = capsys.readouterr()
    assert "resuming after epoch 1" in cap.out and "condition (5)" in cap.out
    weak = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["weak"]
    rows = {(r["stage"], r["block"]): r for r in weak}
    assert set(rows) == {("mine", 0), ("mine", 1), ("noisy", None)}
    assert rows[("noisy", None)]["law"] == "rademacher" and rows[("noisy", None)]["C"] == 0.0
    drop = rows[("mine", 0)]
    assert drop["dt"] == 0.25 and drop["p"] == pytest.approx(0.8)
    from sdenet.laws import DropBernoulli

    assert drop["K"] == pytest.approx(DropBernoulli(0.8).condition(0.25) / 0.25**2)
    line = _err_line(capsys, main(["eval", str(out), "--device", "cpu"]))
    assert f"--model {spec}" in line
    assert (
        main(
            [
                "eval",
                str(out),
                "--device",
                "cpu",
                "--model",
                spec,
                "--samples",
                "4",
                "--json",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == spec and r["mc_samples"] == 4 and r["stochastic"]
    n = r["n_test"]
    for key in ("test_error", "test_error_mc"):
        assert r[f"{key}_se"] == pytest.approx(math.sqrt(r[key] * (1 - r[key]) / n))


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("MOD:not_a_module", "not a torch.nn.Module"),
        ("MOD:nothing", "no callable"),
        ("no_such_module_xyz:build", "cannot import module"),
        ("./nets.py:build", "not a file"),
        ("MOD", "unknown model"),
    ],
)
def test_bad_user_model_specs_are_one_line(runs, usernet, tmp_path, capsys, spec, needle):
    spec = spec.replace("MOD", usernet)
    line = _err_line(
        capsys,
        main(
            [
                "train",
                "--model",
                spec,
                "--dataset",
                runs["data"],
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "b"),
                *TINY,
            ]
        ),
    )
    assert needle in line


def test_monitor_sees_stages_and_fields_that_declare_their_law():
    import sdenet as sn
    import sdenet.nn as snn

    class Own(torch.nn.Module):  # a part that reports condition (5) itself
        def weak_report(self):
            return [{"law": "uniform", "dt": 0.5}]

    class Field(sn.Field):
        noise = "diagonal"

        def __init__(self):
            super().__init__()
            self.law, self.dt = sn.ThreePoint(), 0.1

    net = torch.nn.Sequential(
        snn.Stage(
            sn.SDEField(lambda t, x: x, lambda t, x: x, noise="sample"),
            sn.WeakEuler(sn.DropBernoulli(0.3)),
            dt=0.5,
            steps=1,
        ),
        Own(),
        Field(),
        torch.nn.Linear(2, 2),
    )
    rows = model_weak_report(net)
    assert [(r["stage"], r["law"]) for r in rows] == [
        ("0", "drop"),
        ("1", "uniform"),
        ("2", sn.ThreePoint().name),
    ]
    assert rows[0]["K"] == pytest.approx(sn.DropBernoulli(0.3).condition(0.5) / 0.25)
    assert rows[1]["C"] == 0.0 and rows[2]["K"] == pytest.approx(sn.ThreePoint().condition(0.1) / 0.01)
    assert model_weak_report(torch.nn.Linear(2, 2)) == []
