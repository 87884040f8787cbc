"""The CLI's error promise: every bad invocation ends with exactly one line
``sdenet <command>: error: ...`` on stderr and exit status 2, never a traceback.

``BAD`` is a table of invocations, one row per case, grouped by sub-command; the
placeholders in braces name files and folders the ``paths`` fixture makes (a regular file,
an empty file, a garbage file, a folder, a run folder with broken metrics, …). Most rows run
in-process through :func:`sdenet.cli.main`; ``REAL`` runs a few through ``python -m sdenet``
to prove the real entry point. The rest of the file checks the top-level handler itself:
``--debug``/``SDENET_DEBUG``, the hint for unforeseen exceptions, Ctrl-C, broken pipes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdenet import cli
from sdenet.cli import main

ROOT = Path(__file__).resolve().parents[1]
HUGE = "1000000000000"  # 10^12

# (sub-command words, argv after them); {placeholders} are filled by the ``paths`` fixture
BAD = {
    "": [
        [],
        ["nope"],
        ["--bogus"],
        ["--debug"],
    ],
    "weak": [
        [],
        ["nope"],
    ],
    "weak check": [
        ["--bogus"],
        ["--dt"],
        ["--dt", "abc"],
        ["--dt", "0"],
        ["--dt", "-1"],
        ["--dt", "nan"],
        ["--dt", "inf"],
        ["--dt", "1e-300"],
        ["--dt", "1e300"],
        ["--dt", "0.1", "1e-60"],
        ["--samples", "1"],
        ["--samples", "0"],
        ["--samples", "-5"],
        ["--samples", "1.5"],
        ["--samples", HUGE],
        ["--law", "cauchy"],
        ["--law", ""],
        ["--law", "drop", "--p", "0"],
        ["--law", "drop", "--p", "2"],
        ["--law", "drop", "--p", "-0.5"],
        ["--law", "drop", "--p", "nan"],
        ["--p", "abc"],
        ["--seed", "x"],
        ["--device", "cuda"],
        ["--device", "cuda:7"],
        ["--device", "tpu"],
        ["--device", "meta"],
        ["--threads", "0"],
        ["--threads", "-1"],
        ["--threads", "100000"],
        ["--threads", "x"],
        ["--plot", "{dir}"],
        ["--plot", "/proc/sdenet-test.png"],
        ["--plot", "{file}/x.png"],
        ["--json", "extra"],
    ],
    "weak order": [
        ["--sde", "cir"],
        ["--law", "cauchy"],
        ["--scheme", "nope"],
        ["--scheme", "euler"],
        ["--scheme", "stochastic_lm", "--g", "nan"],
        ["--sde", "gbm", "--theta", "1"],
        ["--sde", "no_such_module_xyz:Problem"],
        ["--law", "uniform", "--scheme", "euler_maruyama"],
        ["--dt", "0.3", "0.1"],
        ["--dt", "0"],
        ["--dt", "0.5"],
        ["--dt", "2", "0.5"],
        ["--dt", "1e-300", "0.5"],
        ["--dt", "1e300", "0.5"],
        ["--dt", "x"],
        ["--paths", "1"],
        ["--paths", HUGE],
        ["--paths", "x"],
        ["--phi", "7"],
        ["--phi", "0"],
        ["--phi", "x7"],
        ["--phi", "no_such_module_xyz:phi", "--exact", "1"],
        ["--sde", "gbm", "--phi", "cos"],
        ["--exact", "nan"],
        ["--law", "drop", "--p", "2"],
        ["--device", "cuda"],
        ["--threads", "0"],
        ["--seed", "1.5"],
        ["--plot", "{dir}"],
        ["--plot", "{file}/x.png"],
    ],
    "models": [
        ["--dataset", "mnist"],
        ["--bogus"],
        ["extra"],
    ],
    "train": [
        [],
        ["--model", "nope", "--dataset", "sample"],
        ["--model", "tiny_resnet", "--epochs", "0"],
        ["--model", "tiny_resnet", "--epochs", "x"],
        ["--model", "tiny_resnet", "--lr", "-1"],
        ["--model", "tiny_resnet", "--lr", "nan"],
        ["--model", "tiny_resnet", "--batch-size", "0"],
        ["--model", "tiny_resnet", "--p-L", "2"],
        ["--model", "tiny_resnet", "--mode", "x"],
        ["--model", "tiny_resnet", "--preset", "x"],
        ["--model", "tiny_resnet", "--threads", "0"],
        ["--model", "tiny_resnet", "--weak-K", "abc"],
        ["--model", "tiny_resnet", "--mc-samples", "-1"],
        ["--model", "tiny_resnet", "--dataset", "{missing}", "--out", "{tmp}/t1"],
        ["--model", "tiny_resnet", "--dataset", "{garbage}", "--out", "{tmp}/t2"],
        ["--model", "tiny_resnet", "--dataset", "{empty}", "--out", "{tmp}/t3"],
        ["--model", "tiny_resnet", "--device", "cuda", "--dataset", "sample", "--out", "{tmp}/t4"],
        ["--model", "tiny_resnet", "--dataset", "{dir}", "--out", "{tmp}/t5"],
        ["--model", "tiny_resnet", "--dataset", "sample", "--device", "cpu", "--out", "{file}"],
        ["--model", "tiny_resnet", "--dataset", "sample", "--device", "cpu", "--out", "/proc/sdenet-test"],
        ["--model", "tiny_resnet", "--dataset", "sample", "--device", "cpu", "--out", "{file}/sub"],
        ["--resume", "{missing}"],
        ["--resume", "{tmp}/x", "--epochs", "3"],
        ["--bogus"],
    ],
    "eval": [
        [],
        ["{missing}"],
        ["{garbage}"],
        ["{empty}"],
        ["{dir}"],
        ["{file}"],
        ["{tmp}/x", "--samples", "-1"],
        ["{tmp}/x", "--batch-size", "0"],
        ["{tmp}/x", "--bogus"],
    ],
    "plot": [
        [],
        ["{missing}"],
        ["{file}"],
        ["{dir}"],
        ["{run_garbage}"],
        ["{run_empty}"],
        ["{run_nofield}"],
        ["{run}", "--labels", "a", "b"],
        ["{run}", "--out", "{file}"],
        ["{run}", "--bogus"],
    ],
    "theory": [
        ["--items", "bogus"],
        ["--items", ","],
        ["--threads", "0"],
        ["--threads", "x"],
        ["--out", "{file}"],
        ["--out", "/proc/sdenet-test"],
        ["--out", "{file}/sub"],
        ["--quick", "--bogus"],
    ],
    "refine": [
        [],
        ["{missing}", "--out", "{tmp}/r1.pt"],
        ["{garbage}", "--out", "{tmp}/r2.pt"],
        ["{empty}", "--out", "{tmp}/r3.pt"],
        ["{dir}", "--out", "{tmp}/r4.pt"],
        ["{file}"],
        ["{file}", "--out", "{tmp}/r5.pt", "--factor", "0"],
        ["{file}", "--out", "{tmp}/r6.pt", "--factor", "x"],
        ["{file}", "--out", "{tmp}/r7.pt", "--factor", "-2"],
        ["{file}", "--out", "{tmp}/r8.pt", "--mode", "cubic"],
        ["{file}", "--out", "{tmp}/r9.pt", "--samples", "-1"],
        ["{file}", "--out", "{tmp}/r10.pt", "--device", "cuda"],
        ["{file}", "--out", "{tmp}/r11.pt", "--bogus"],
    ],
    "quickstart": [
        ["--epochs", "0"],
        ["--epochs", "x"],
        ["--models", "resnet20", "resnet20"],
        ["--models", "nope", "resnet20"],
        ["--models", "resnet20"],
        ["--stochastic", "nope"],
        ["--stochastic", "resnet20"],
        ["--stochastic", "lm_resnet20"],
        ["--samples", "0"],
        ["--samples", HUGE],
        ["--batch-size", "0"],
        ["--limit-train", "0"],
        ["--limit-test", "-3"],
        ["--seed", "x"],
        ["--device", "cuda"],
        ["--device", "x"],
        ["--threads", "0"],
        ["--out", "{file}"],
        ["--out", "/proc/sdenet-test"],
        ["--out", "{file}/sub"],
        ["--dataset", "{garbage}", "--out", "{tmp}/q1", "--models", "tiny_resnet", "tiny_lm_resnet"],
        ["--dataset", "{missing}", "--out", "{tmp}/q2", "--models", "tiny_resnet", "tiny_lm_resnet"],
    ],
}

CASES = [(cmd, argv) for cmd, rows in BAD.items() for argv in rows]

#: a few rows run as real processes (``python -m sdenet``)
REAL = [
    ("weak order", ["--dt", "1e-300", "0.5"]),
    ("theory", ["--out", "{file}"]),
    ("quickstart", ["--device", "cuda"]),
]


def test_the_table_has_at_least_100_invocations_over_every_command():
    assert len(CASES) >= 100
    assert {c.split(" ")[0] for c in BAD if c} >= set(cli.COMMANDS)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "file.txt").write_text("not what you think\n")
    (tmp / "empty.npz").write_bytes(b"")
    (tmp / "garbage.npz").write_bytes(os.urandom(512))
    (tmp / "dir").mkdir()

    def run_folder(name, metrics: str | None):
        d = tmp / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model": "tiny_resnet"}))
        if metrics is not None:
            (d / "metrics.jsonl").write_text(metrics)
        return d

    run_folder(
        "run", "".join(json.dumps({"epoch": e, "train_error": 0.5, "test_error": 0.6}) + "\n" for e in (1, 2))
    )
    run_folder("run_garbage", "{not json\n")
    run_folder("run_empty", "")
    run_folder("run_nofield", json.dumps({"epoch": 1}) + "\n")
    return {
        "tmp": str(tmp),
        "file": str(tmp / "file.txt"),
        "empty": str(tmp / "empty.npz"),
        "garbage": str(tmp / "garbage.npz"),
        "dir": str(tmp / "dir"),
        "missing": str(tmp / "no-such-file"),
        "run": str(tmp / "run"),
        "run_garbage": str(tmp / "run_garbage"),
        "run_empty": str(tmp / "run_empty"),
        "run_nofield": str(tmp / "run_nofield"),
    }


def _no_such_device(a: str) -> str:
    """``cuda`` is a bad device only without CUDA; with it, name an index past the last GPU."""
    import torch

    if a.startswith("cuda") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.device_count() + 9}"
    return a


def _argv(cmd, argv, paths):
    return [*cmd.split(), *(_no_such_device(a.format(**paths)) for a in argv)]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run in a scratch folder (default output folders land there), without SDENET_DEBUG,
    and put torch's thread count back afterwards."""
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SDENET_DEBUG", raising=False)
    monkeypatch.delenv("SDENET_FAULT", raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _assert_one_error_line(code, out, err, cmd):
    assert code == 2, f"exit {code}; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    head = f"sdenet {cmd}: error: " if cmd else "sdenet: error: "
    assert lines[0].startswith(head), lines[0]
    message = lines[0][len(head) :]
    assert message and not message.startswith(("sdenet", f"{cmd.split(' ')[-1]}: ")), lines[0]  # named once


@pytest.mark.parametrize("cmd, argv", CASES, ids=[" ".join([c, *a]) or "(none)" for c, a in CASES])
def test_bad_invocation_is_one_line_and_exit_2(cmd, argv, paths, isolated, capsys):
    code = main(_argv(cmd, argv, paths))
    out, err = capsys.readouterr()
    _assert_one_error_line(code, out, err, cmd)


@pytest.mark.parametrize("cmd, argv", REAL, ids=[" ".join([c, *a]) for c, a in REAL])
def test_real_process_is_one_line_and_exit_2(cmd, argv, paths, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SDENET_DEBUG", "SDENET_FAULT")}
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run(
        [sys.executable, "-m", "sdenet", *_argv(cmd, argv, paths)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    _assert_one_error_line(p.returncode, p.stdout, p.stderr, cmd)


# ----------------------------------------------------------------------------- the messages


@pytest.mark.parametrize(
    "argv, words",
    [
        (["weak", "check", "--dt", "1e-300"], ["1e-50 <= dt <= 1e+50"]),
        (
            ["weak", "order", "--dt", "1e-300", "0.5"],
            ["1e+300 steps", "path-steps", "years", "at most 1e+12"],
        ),
        (["weak", "check", "--samples", HUGE], ["draws", "days", "at most 1e+11", "memory"]),
        (["weak", "order", "--paths", HUGE], ["path-steps", "days", "at most 1e+12"]),
        (["weak", "check", "--device", "cuda"], ["CUDA is not available"]),
        (["weak", "check", "--plot", "{dir}"], ["--plot", "is a folder"]),
        (["theory", "--out", "{file}"], ["--out", "not a folder"]),
        (["quickstart", "--stochastic", "resnet20"], ["deterministic"]),
    ],
)
def test_messages_name_the_problem_and_the_bound(argv, words, paths, isolated, capsys):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert main(_argv("", argv, paths)) == 2
    line = capsys.readouterr().err.strip()
    for w in words:
        assert w in line, line


def test_refused_work_is_refused_before_any_of_it(isolated, monkeypatch, capsys):
    """weak order --dt 1e-300 would run 10^300 steps: it is refused without integrating once."""
    integ = sys.modules["sdenet.integrate"]  # the module (sdenet.integrate is also the function)

    def boom(*a, **k):
        raise AssertionError("integrate was called")

    monkeypatch.setattr(integ, "integrate", boom)
    assert main(["weak", "order", "--dt", "1e-300", "0.5"]) == 2
    assert main(["weak", "order", "--paths", HUGE]) == 2


def test_work_bounds_through_the_api():
    from sdenet import weak
    from sdenet.laws import Gaussian
    from sdenet.schemes import WeakEuler

    with pytest.raises(ValueError, match="outside the range"):
        weak.check([Gaussian()], [1e-300], samples=10)
    with pytest.raises(ValueError, match="draws"):
        weak.check([Gaussian()], [0.1], samples=weak.MAX_CHECK_DRAWS + 1)
    with pytest.raises(ValueError, match="path-steps"):
        weak.weak_order(weak.get_sde("ou"), WeakEuler(Gaussian()), dts=[1e-300, 0.5], paths=10)
    w = weak.order_work(weak.get_sde("ou"), [0.5, 0.25], paths=1000)
    assert w["steps"] == [2, 4] and w["path_steps"] == 6000 and w["cpu_seconds"] > 0


def test_the_edges_of_the_dt_range_still_compute(capsys):
    lo, hi = (f"{v:g}" for v in __import__("sdenet.weak", fromlist=["x"]).CHECK_DT_RANGE)
    assert main(["weak", "check", "--law", "gaussian", "--dt", lo, hi, "--samples", "100", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for r in rows:
        assert all(v == v and abs(v) != float("inf") for v in r["condition"].values())


# ----------------------------------------------------------------------------- the handler


def _raise_in_models(monkeypatch, exc):
    import sdenet.commands.models as models

    def run(args):
        raise exc

    monkeypatch.setattr(models, "_run", run)


def test_unforeseen_exception_is_one_line_with_the_hint_and_exit_1(isolated, monkeypatch, capsys):
    _raise_in_models(monkeypatch, RuntimeError("something\nbroke"))
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "sdenet models: error: unexpected RuntimeError: something broke "
        "(run with --debug or SDENET_DEBUG=1 for the traceback)"
    ]


@pytest.mark.parametrize("how", ["before", "after", "env"])
def test_debug_shows_the_traceback(how, isolated, monkeypatch, capsys):
    _raise_in_models(monkeypatch, RuntimeError("boom"))
    argv = {"before": ["--debug", "models"], "after": ["models", "--debug"], "env": ["models"]}[how]
    if how == "env":
        monkeypatch.setenv("SDENET_DEBUG", "1")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err
    assert err.strip().splitlines()[-1].startswith("sdenet models: error: unexpected RuntimeError")


def test_debug_also_shows_the_traceback_of_a_user_error(isolated, capsys):
    assert main(["weak", "check", "--debug", "--dt", "1e-300"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("sdenet weak check: error:")


def test_sdenet_debug_0_is_off(isolated, monkeypatch, capsys):
    monkeypatch.setenv("SDENET_DEBUG", "0")
    assert main(["weak", "check", "--dt", "1e-300"]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "exc, message",
    [
        (ValueError("models: bad thing"), "sdenet models: error: bad thing"),
        (ValueError("sdenet models: error: already formatted"), "sdenet models: error: already formatted"),
        (
            FileNotFoundError(2, "No such file or directory", "/x/y"),
            "sdenet models: error: No such file or directory: /x/y",
        ),
        (
            PermissionError(13, "Permission denied", "runs/locked/z"),
            "sdenet models: error: Permission denied: runs/locked/z",
        ),
        (IsADirectoryError(21, "Is a directory", "runs"), "sdenet models: error: Is a directory: runs"),
        (MemoryError(), "sdenet models: error: out of memory"),
    ],
)
def test_user_errors_exit_2_named_once(exc, message, isolated, monkeypatch, capsys):
    _raise_in_models(monkeypatch, exc)
    assert main(["models"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(message) and "\n" not in line


def test_ctrl_c_exits_130(isolated, monkeypatch, capsys):
    _raise_in_models(monkeypatch, KeyboardInterrupt())
    assert main(["models"]) == 130
    assert capsys.readouterr().err.strip() == "sdenet models: interrupted"


def test_a_diverged_run_keeps_its_own_exit_status(isolated, monkeypatch, capsys):
    from sdenet.train import TrainingDiverged

    _raise_in_models(monkeypatch, TrainingDiverged("training diverged in epoch 3"))
    assert main(["models"]) == 1
    assert capsys.readouterr().err.strip() == "sdenet models: error: training diverged in epoch 3"


def test_broken_pipe_is_not_an_error(tmp_path):
    """``sdenet weak check | head -1``: the reader leaves early; exit 0, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SDENET_DEBUG", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "sdenet", "weak", "check", "--samples", "100", "--dt", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    p.stdout.close()  # the reader is gone before anything is written
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err
