"""``sdenet refine``, ``sdenet train --refine`` and multilevel training on the bundled sample."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import clean  # noqa: F401 (fixture)

import sdenet.models as M
from sdenet.cli import main
from sdenet.nn import refine
from sdenet.train import checkpoint as ck
from sdenet.train.multilevel import prolong_momentum, resume_multilevel, train_multilevel

SMALL = dict(dataset="sample", limit_train=32, limit_test=16, batch_size=32, device="cpu", quiet=True, seed=3)
SMALL_CLI = [
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
    "--threads",
    "1",
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _one_line_error(capsys, code):
    cap = capsys.readouterr()
    assert code == 2, cap
    lines = [s for s in cap.err.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith("sdenet") and "Traceback" not in cap.err, cap.err
    return lines[0]


KW = dict(model="tiny_lm_resnet", epochs=3, overrides={"refine": 2}, **SMALL)


def _stop_in_cycle_1(info):
    if info["cycle"] == 1 and info["epoch"] == 1:
        raise KeyboardInterrupt


def _interrupted_then_resumed(path):
    with pytest.raises(KeyboardInterrupt):
        train_multilevel(1, out=path, callback=_stop_in_cycle_1, **KW)
    assert not (path / "metrics.json").exists() and (path / "cycle1" / "last.pt").exists()
    return resume_multilevel(path)


def test_multilevel_two_cycles_writes_every_output_and_resumes(clean, tmp_path):
    d = tmp_path / "cut"
    resumed = _interrupted_then_resumed(d)
    for name in (
        "config.json",
        "metrics.jsonl",
        "last.pt",
        "best.pt",
        "metrics.json",
        "multilevel.json",
        "cycle0/last.pt",
        "cycle1/init.pt",
        "cycle1/last.pt",
    ):
        assert (d / name).is_file(), name
    lines = [json.loads(s) for s in (d / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3] and [m["cycle"] for m in lines] == [0, 1, 1]
    assert [m["steps"] for m in lines] == [[2, 1, 1], [4, 2, 2], [4, 2, 2]]
    assert [m["dt"][0] for m in lines] == [1.0, 0.5, 0.5]
    assert len(resumed["cycles"]) == 2 and resumed["epochs"] == 3
    assert json.loads((d / "config.json").read_text())["multilevel"]["levels"] == 1
    # the final network is the requested architecture: sdenet eval reads the top folder
    final = M.create("tiny_lm_resnet", num_classes=10, refine=2)
    final.load_state_dict(ck.load_checkpoint(d / "last.pt")["model"])
    assert main(["eval", str(d), "--samples", "0", "--limit-test", "16"]) == 0
    with pytest.raises(ValueError, match="nothing to resume"):
        resume_multilevel(d)


@pytest.mark.slow
def test_multilevel_resume_is_exact(clean, tmp_path):
    full = train_multilevel(1, out=tmp_path / "full", **KW)
    resumed = _interrupted_then_resumed(tmp_path / "cut")
    a = ck.load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = ck.load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_error"] == full["test_error"]


def test_multilevel_errors(clean, tmp_path, capsys):
    with pytest.raises(ValueError, match="impossible"):
        train_multilevel(1, model="tiny_resnet", epochs=2, out=tmp_path / "x", **SMALL)
    with pytest.raises(ValueError, match="at least 3 epochs"):
        train_multilevel(
            2, model="tiny_resnet", epochs=2, overrides={"refine": 4}, out=tmp_path / "y", **SMALL
        )
    with pytest.raises(ValueError, match="levels"):
        train_multilevel(0, model="tiny_resnet", epochs=2, **SMALL)
    code = main(["train", "--model", "tiny_resnet", "--multilevel", "0", *SMALL_CLI])
    assert "positive integer" in _one_line_error(capsys, code)


def test_multilevel_continue_runs_one_schedule_over_its_cycles(clean, tmp_path, capsys):
    """schedule="continue": the learning rates of the cycles, read back from metrics.jsonl, are
    those of one run of the preset's schedule over all epochs (and not a restart per cycle)."""
    from sdenet.train.presets import get_preset, lr_factor

    kw = dict(KW, epochs=4, preset="quick")
    out = tmp_path / "cont"
    code = main(
        ["train", "--model", "tiny_lm_resnet", "--refine", "2", "--multilevel", "1",
         "--multilevel-schedule", "continue", "--epochs", "4", "--preset", "quick",
         "--out", str(out), *SMALL_CLI]
    )  # fmt: skip
    assert code == 0
    restart = train_multilevel(1, out=tmp_path / "restart", **kw)
    assert json.loads((out / "multilevel.json").read_text())["schedule"] == "continue"
    lrs = [m["lr"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    p = get_preset("quick")
    # the learning rate logged for an epoch is the one of its first step (t = epoch - 1 + 1/2 step)
    spe = 2  # 64 images, batch 32
    want = [p.lr * lr_factor(e + 0.5 / spe, schedule=p.schedule, epochs=4, warmup=p.warmup) for e in range(4)]
    assert lrs == pytest.approx(want, rel=1e-9)
    lrs_restart = [
        m["lr"] for m in map(json.loads, (tmp_path / "restart" / "metrics.jsonl").read_text().splitlines())
    ]
    assert lrs_restart[2] == pytest.approx(lrs_restart[0]) and lrs_restart[2] != pytest.approx(lrs[2])
    assert restart["epochs"] == 4
    code = main(["train", "--model", "tiny_lm_resnet", "--multilevel-schedule", "continue", *SMALL_CLI])
    assert "needs --multilevel" in _one_line_error(capsys, code)
    with pytest.raises(ValueError, match="schedule must be one of"):
        train_multilevel(1, schedule="cosine", out=tmp_path / "z", **kw)


def test_schedule_window_is_checked(clean, tmp_path):
    from sdenet.train import train

    for bad in ([3, 4], [0], ["0", 4], [-1, 4]):
        with pytest.raises(ValueError, match="schedule_window"):
            train(model="tiny_resnet", epochs=2, schedule_window=bad, out=str(tmp_path / "w"), **SMALL)


def test_prolong_momentum_follows_the_weights():
    torch.manual_seed(0)
    net = M.create("tiny_resnet")
    mom = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    fine_mom = prolong_momentum(net, mom, 2)
    fine = refine(net, 2)
    assert set(fine_mom) == {n for n, _ in fine.named_parameters()}
    w = "layers.0.stage.field.blocks.0.conv1.weight"
    assert torch.allclose(fine_mom["layers.0.stage.field.blocks.1.conv1.weight"], mom[w] / 2)
    assert torch.equal(fine_mom["stem.weight"], mom["stem.weight"])  # outside the stages: unchanged


def test_cli_train_refine_then_refine_checkpoint_and_eval(clean, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_sd_resnet",
                "--refine",
                "2",
                "--p-schedule",
                "sqrt",
                "--epochs",
                "1",
                "--out",
                str(run),
                *SMALL_CLI,
            ]
        )
        == 0
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_overrides"] == {"refine": 2, "p_schedule": "sqrt"} and cfg["dt"] == 0.5
    capsys.readouterr()
    new = tmp_path / "x2.pt"
    assert main(["refine", str(run), "--factor", "2", "--out", str(new), "--limit-test", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["before"]["steps"] == [4, 2, 2] and info["after"]["steps"] == [8, 4, 4]
    assert info["eval_after"]["n_test"] == 32 and 0 <= info["eval_after"]["test_error"] <= 1
    c = ck.load_checkpoint(new)
    assert c["config"]["model_overrides"]["refine"] == 4 and c["config"]["dt"] == 0.25
    assert main(["eval", str(new), "--limit-test", "32", "--samples", "0"]) == 0
    # coarsen back: the weights of the trained network, exactly
    back = tmp_path / "back.pt"
    assert main(["refine", str(new), "--coarsen", "--factor", "2", "--out", str(back), "--no-eval"]) == 0
    a, b = ck.load_checkpoint(run / "last.pt")["model"], ck.load_checkpoint(back)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_refine_reports_condition_5_and_takes_p_schedule(clean, tmp_path, capsys):
    # a network trained at dt = 1 with the fixed schedule, refined x4 (dt = 1/4) at fixed T
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_sd_resnet",
                "--p-L",
                "0.5",
                "--epochs",
                "1",
                "--out",
                str(run),
                *SMALL_CLI,
            ]
        )
        == 0
    )
    capsys.readouterr()
    infos = {}
    for sched in ("fixed", "sqrt"):
        new = tmp_path / f"{sched}.pt"
        assert (
            main(
                [
                    "refine",
                    str(run),
                    "--factor",
                    "4",
                    "--p-schedule",
                    sched,
                    "--out",
                    str(new),
                    "--no-eval",
                    "--json",
                ]
            )
            == 0
        )
        infos[sched] = json.loads(capsys.readouterr().out)
        assert ck.load_checkpoint(new)["config"]["model_overrides"]["p_schedule"] == sched
    for sched, info in infos.items():
        assert len(info["weak_after"]) == len(info["weak_before"])
        # the stages (transitions stay at dt = 1, outside the ODE)
        stochastic = [s for s in info["weak_after"] if s.get("p") is not None and s["dt"] < 1]
        assert stochastic
        for s in stochastic:
            assert s["dt"] == pytest.approx(0.25)
            # fixed p: K = K(1)/sqrt(dt) = 2 K(1), above the bound; sqrt: K <= K(1)
            if sched == "fixed":
                assert s["K_max"] == pytest.approx(2 * s["bound"])
                assert s["exceeds"] == (s["blocks"] if s["bound"] > 0 else 0)  # p = 1/2: C = 0
            else:
                assert s["exceeds"] == 0 and s["K_max"] <= s["bound"] + 1e-12
    assert (
        main(
            [
                "refine",
                str(run),
                "--factor",
                "2",
                "--p-schedule",
                "sqrt",
                "--out",
                str(tmp_path / "t.pt"),
                "--no-eval",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "condition (5) before" in out and "condition (5) after" in out and "within the dt=1 bound" in out


def test_cli_refine_errors(clean, tmp_path, capsys):
    code = main(["refine", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o.pt")])
    assert "missing" in _one_line_error(capsys, code)
    code = main(["refine", str(tmp_path / "missing.pt"), "--factor", "0", "--out", str(tmp_path / "o.pt")])
    assert "positive integer" in _one_line_error(capsys, code)
    run = tmp_path / "run"
    assert main(["train", "--model", "tiny_resnet", "--epochs", "1", "--out", str(run), *SMALL_CLI]) == 0
    capsys.readouterr()
    code = main(["refine", str(run), "--mode", "inject", "--out", str(tmp_path / "o.pt")])
    assert "--coarsen" in _one_line_error(capsys, code)
    code = main(["refine", str(run), "--coarsen", "--factor", "2", "--out", str(tmp_path / "o.pt")])
    assert "multiple" in _one_line_error(capsys, code)
    code = main(["train", "--resume", str(run), "--refine", "2"])
    assert "--refine" in _one_line_error(capsys, code)
