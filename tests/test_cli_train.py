"""``sdenet train`` and ``sdenet eval``: a tiny run end to end, and every user error as one line
with exit status 2 (no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import clean, tiny_npz  # noqa: F401 (fixture)

from sdenet.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path):
    return tiny_npz(tmp_path / "tiny.npz")


def _one_line_error(capsys, code, expected=2):
    cap = capsys.readouterr()
    assert code == expected, cap
    lines = [s for s in cap.err.splitlines() if s.strip()]
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("sdenet") and "Traceback" not in cap.err
    return lines[0]


TINY = ["--batch-size", "16", "--device", "cpu", "--quiet", "--preset", "cifar10_lm", "--lr", "0.05"]


def test_train_then_eval(clean, data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--model",
            "tiny_sd_resnet",
            "--dataset",
            data,
            "--epochs",
            "2",
            "--out",
            str(out),
            "--p-L",
            "0.5",
            "--dt",
            "0.5",
            *TINY,
        ]
    )
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "epoch 2/2" in cap.out and "condition (5)" in cap.out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"].startswith("sdenet") and cfg["model_overrides"] == {"p_L": 0.5, "dt": 0.5}
    assert cfg["milestones"] == [1, 2]

    assert main(["eval", str(out / "best.pt"), "--json", "--samples", "2", "--device", "cpu"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["stochastic"] and r["mc_samples"] == 2 and 0 <= r["test_error_mc"] <= 1
    assert main(["eval", str(out), "--samples", "0", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "drift only" in text and "Monte Carlo" not in text


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--model", "nope", "--dataset", "DATA", "--epochs", "1"], "unknown model"),
        (["train", "--model", "tiny_resnet", "--dataset", "MISSING", "--epochs", "1"], "missing.npz"),
        (["train", "--model", "tiny_resnet", "--dataset", "DATA", "--epochs", "0"], "--epochs"),
        (["train", "--model", "tiny_resnet", "--dataset", "DATA", "--lr", "fast"], "--lr"),
        (["train", "--model", "tiny_resnet", "--dataset", "DATA", "--p-L", "1.5"], "--p-L"),
        (["train", "--model", "tiny_resnet", "--dataset", "DATA", "--device", "tpu"], "device"),
        (["train", "--model", "tiny_resnet", "--dataset", "DATA", "--preset", "fast"], "--preset"),
        (["train", "--dataset", "DATA"], "--model is required"),
        (["train", "--resume", "OUT", "--epochs", "3"], "--resume"),
        (["train", "--resume", "OUT"], "no such run folder"),
        (["eval", "OUT"], "checkpoint file is missing"),
        (["eval", "OUT", "--samples", "-1"], "--samples"),
    ],
)
def test_user_errors_are_one_line_with_status_2(clean, data, tmp_path, capsys, argv, needle):
    sub = {"DATA": data, "MISSING": str(tmp_path / "missing.npz"), "OUT": str(tmp_path / "none")}
    argv = [sub.get(a, a) for a in argv] + ["--device", "cpu"] * (
        argv[0] == "train" and "--device" not in argv
    )
    line = _one_line_error(capsys, main(argv))
    assert needle in line


def test_strict_weak_exits_2(clean, data, tmp_path, capsys):
    code = main(
        [
            "train",
            "--model",
            "tiny_sd_resnet",
            "--dataset",
            data,
            "--epochs",
            "1",
            "--p-L",
            "0.1",
            "--dt",
            "0.25",
            "--strict-weak",
            "--out",
            str(tmp_path / "s"),
            *TINY,
        ]
    )
    line = _one_line_error(capsys, code)
    assert "condition (5)" in line and "K = C/dt^2" in line


def test_strict_weak_accepts_the_sqrt_p_schedule(clean, data, tmp_path, capsys):
    code = main(
        [
            "train",
            "--model",
            "tiny_sd_resnet",
            "--dataset",
            data,
            "--epochs",
            "1",
            "--p-L",
            "0.1",
            "--dt",
            "0.25",
            "--p-schedule",
            "sqrt",
            "--strict-weak",
            "--out",
            str(tmp_path / "s"),
            *TINY,
        ]
    )
    assert code == 0 and "condition (5)" not in capsys.readouterr().err


def test_nan_exits_1_naming_the_checkpoint(clean, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SDENET_FAULT", "nan@2")
    out = tmp_path / "n"
    code = main(
        ["train", "--model", "tiny_resnet", "--dataset", data, "--epochs", "3", "--out", str(out), *TINY]
    )
    line = _one_line_error(capsys, code, expected=1)
    assert "epoch 2" in line and str(out / "last.pt") in line


def test_real_process_prints_no_traceback(data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SDENET_FAULT", None)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdenet",
            "train",
            "--model",
            "no_such_model",
            "--dataset",
            data,
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_ctrl_c_then_resume(clean, data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "c"
    argv = ["train", "--model", "tiny_resnet", "--dataset", data, "--epochs", "2", "--out", str(out), *TINY]
    monkeypatch.setenv("SDENET_FAULT", "interrupt@2")
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"last.pt holds epoch 1; continue with --resume {out}" in err
    monkeypatch.delenv("SDENET_FAULT")
    assert main(["train", "--resume", str(out), "--device", "cpu", "--quiet"]) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]


def test_threads_option_sets_torch_threads_and_rejects_zero(tmp_path, capsys):
    import torch

    from sdenet.cli import main

    before = torch.get_num_threads()
    try:
        assert main(["train", "--model", "nope", "--dataset", "sample", "--threads", "1"]) == 2
        assert torch.get_num_threads() == 1  # set before the model name is checked
    finally:
        torch.set_num_threads(before)
    assert main(["train", "--model", "tiny_resnet", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "threads" in err
