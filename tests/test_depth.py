"""One network at several step sizes: ``sdenet.nn.at_depth`` (shared weights) is the same function
as ``refine``/``coarsen`` (copies), depth-robust training (``random_depth``) trains and resumes
exactly, ``sdenet eval --depths`` reports what the explicitly refined/coarsened checkpoints score."""

from __future__ import annotations

import json

import pytest
import torch
from test_multilevel import SMALL_CLI
from test_train import clean  # noqa: F401 (fixture)

from sdenet import models
from sdenet.cli import main
from sdenet.nn import coarsen, refine
from sdenet.nn.depth import (
    _stages,
    at_depth,
    depth_compute,
    depth_steps,
    parse_depth_factor,
    parse_depth_factors,
)
from sdenet.train import checkpoint as ck
from sdenet.train import loop
from sdenet.train.depth import evaluate_depths, format_depths, plot_depths

SMALL = dict(dataset="sample", limit_train=64, limit_test=32, batch_size=32, device="cpu", quiet=True, seed=3)
FAMILIES = ["tiny_resnet", "tiny_lm_resnet", "tiny_sd_resnet", "tiny_hamiltonian", "tiny_lm_sd_resnet"]


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


def _net(name, seed=0):
    torch.manual_seed(seed)
    m = models.create(name, refine=2)
    with torch.no_grad():  # non-trivial batch-norm statistics and LM coefficients
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
        for p in m.parameters():
            if p.dim() <= 1 and p.numel() <= 8:
                p.uniform_(-0.3, 0.0)
    return m


@pytest.mark.parametrize("name", FAMILIES)
def test_at_depth_is_refine_and_coarsen_exactly(name):
    m = _net(name).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        y1 = m(x)
        for f, ref in ((2, refine(m, 2)), (4, refine(m, 4)), (0.5, coarsen(m, 2))):
            ref.eval()
            with at_depth(m, f) as same:
                assert same is m
                y = m(x)
            assert torch.equal(y, ref(x)), (name, f)
            assert not torch.equal(y, y1)  # a different depth is a different function
        assert torch.equal(m(x), y1)  # the network is back as it was
    after = m.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in after)
    # the views hold no parameters of their own: the network's are all there is
    assert sum(p.numel() for p in m.parameters()) == sum(
        v.numel() for k, v in before.items() if k in dict(m.named_parameters())
    )


@pytest.mark.parametrize("name", ["tiny_lm_resnet", "tiny_hamiltonian"])
def test_gradients_at_depth_are_the_sums_over_the_refined_copies(name):
    """Running block n over its two half steps with shared weights gives block n's parameters the
    sum of the gradients the two copies of refine(m, 2) receive (LM coefficients too)."""
    m = _net(name).train()
    ref = refine(m, 2).train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    with at_depth(m, 2):
        torch.nn.functional.cross_entropy(m(x), y).backward()
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    fine = dict(ref.named_parameters())
    stages = [path + "." for path, _ in _stages(m)]
    checked = 0
    for name_p, p in m.named_parameters():
        if not any(name_p.startswith(s) for s in stages):
            torch.testing.assert_close(p.grad, fine[name_p].grad, rtol=1e-4, atol=1e-6)  # stem, head
            checked += 1
            continue
        head, _, tail = name_p.partition(".blocks")
        if tail:  # "<stage>.field.blocks<k>.<n>.<rest>" -> copies 2n, 2n+1
            idx, _, rest = tail.partition(".")[2].partition(".")
            lst = tail.partition(".")[0]
            n = int(idx)
            g = sum(fine[f"{head}.blocks{lst}.{j}.{rest}"].grad for j in (2 * n, 2 * n + 1))
        else:
            assert name_p.endswith("coefficients")
            g = fine[name_p].grad.view(-1, 2, *p.shape[1:]).sum(1)
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
        checked += 1
    assert checked == len(list(m.parameters()))


def test_depth_factors_parse_and_refuse():
    assert parse_depth_factors("0.5,1,2") == [parse_depth_factor("1/2"), 1, 2]
    assert parse_depth_factor(0.25) == parse_depth_factor("1/4")
    for bad in ("0.3", "1.5", "0", "-2", "x", "", "2,2", "64", "1/64", True):
        with pytest.raises(ValueError):
            parse_depth_factors(bad) if isinstance(bad, str) else parse_depth_factor(bad)
    m = models.create("tiny_resnet")  # steps 2/1/1: only stage1 halves
    with pytest.raises(ValueError, match="stage2.*1 steps"):
        with at_depth(m, 0.5):
            pass
    with at_depth(m, 0.5, strict=False):
        assert depth_steps(m) == 3  # inside the block the stages are the views (1/1/1)
    assert depth_steps(m, 0.5) == 3 and depth_steps(m, 2) == 8
    assert depth_compute(m, 2) == pytest.approx((8 + 2) / (4 + 2))
    with pytest.raises(ValueError, match="Stage"):
        with at_depth(_stages(m)[0][1], 2):
            pass


def test_random_depth_trains_records_and_resumes_exactly(clean, tmp_path, monkeypatch):
    kw = dict(model="tiny_lm_resnet", epochs=3, overrides={"refine": 2}, random_depth="0.5,1,2", **SMALL)
    a = loop.train(out=str(tmp_path / "a"), **kw)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["random_depth"] == [0.5, 1, 2]
    draws = {loop._depth_of_step(cfg, s) for s in range(30)}
    assert draws == {0.5, 1, 2}
    loop.train(out=str(tmp_path / "p"), **{**kw, "random_depth": None})
    assert json.loads((tmp_path / "p" / "config.json").read_text())["random_depth"] is None
    wa, wp = (
        ck.load_checkpoint(tmp_path / "a" / "last.pt")["model"],
        ck.load_checkpoint(tmp_path / "p" / "last.pt")["model"],
    )
    assert wa.keys() == wp.keys() and any(not torch.equal(wa[k], wp[k]) for k in wa)  # the option acts
    assert a["test_error"] is not None

    monkeypatch.setenv("SDENET_FAULT", "interrupt@2:1")
    with pytest.raises(KeyboardInterrupt):
        loop.train(out=str(tmp_path / "b"), **kw)
    monkeypatch.delenv("SDENET_FAULT")
    loop.train(resume=str(tmp_path / "b"), device="cpu", quiet=True)
    wb = ck.load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_random_depth_errors(clean, tmp_path):
    with pytest.raises(ValueError, match="random_depth"):
        loop.train(model="tiny_resnet", random_depth="1.5", out=str(tmp_path / "x"), **SMALL)
    with pytest.raises(ValueError, match="other than 1"):
        loop.train(model="tiny_resnet", random_depth="1", out=str(tmp_path / "y"), **SMALL)
    with pytest.raises(ValueError, match="compile"):
        loop.train(model="tiny_resnet", random_depth="1,2", compile=True, out=str(tmp_path / "z"), **SMALL)
    with pytest.raises(ValueError, match="coarsens no stage"):
        loop.train(model="tiny_resnet", random_depth="1/3,1", out=str(tmp_path / "w"), **SMALL)


def test_eval_depths_equals_the_explicitly_refined_and_coarsened_checkpoints(clean, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_lm_resnet",
                "--refine",
                "2",
                "--epochs",
                "1",
                "--random-depth",
                "0.5,1,2",
                "--out",
                str(run),
                *SMALL_CLI,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["refine", str(run), "--factor", "2", "--out", str(tmp_path / "x2.pt"), "--no-eval"]) == 0
    assert (
        main(
            ["refine", str(run), "--coarsen", "--factor", "2", "--out", str(tmp_path / "c2.pt"), "--no-eval"]
        )
        == 0
    )
    capsys.readouterr()
    plot = tmp_path / "depths.png"
    assert (
        main(["eval", str(run), "--depths", "0.5,1,2", "--limit-test", "32", "--json", "--plot", str(plot)])
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    assert plot.stat().st_size > 0
    rows = {r["depth"]: r for r in got["depths"]}
    assert [r["steps"] for r in got["depths"]] == [4, 8, 16] and rows[1]["relative_compute"] == 1
    for f, path in ((2, tmp_path / "x2.pt"), (0.5, tmp_path / "c2.pt"), (1, run)):
        assert main(["eval", str(path), "--limit-test", "32", "--json"]) == 0
        ref = json.loads(capsys.readouterr().out)
        assert rows[f]["test_error"] == ref["test_error"] and rows[f]["test_loss"] == ref["test_loss"], f
    # the table
    assert main(["eval", str(run), "--depths", "1,2", "--limit-test", "32"]) == 0
    out = capsys.readouterr().out
    assert "factor | steps" in out and "1.80x" in out
    r = evaluate_depths(run, [1, 2], limit_test=32)
    assert "16" in format_depths(r) and plot_depths(r, tmp_path / "p.png").exists()


def test_cli_depth_errors(clean, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "tiny_resnet", "--epochs", "1", "--out", str(run), *SMALL_CLI]) == 0
    capsys.readouterr()
    for argv, words in (
        (["eval", str(run), "--depths", "0.3"], "integer"),
        (["eval", str(run), "--depths", "0.5,0.5"], "repeat"),
        (["eval", str(run), "--depths", ""], "comma"),
        (["eval", str(run), "--plot", str(tmp_path / "p.png")], "--depths"),
        (["eval", str(run), "--depths", "1,2", "--plot", str(tmp_path / "no" / "p.png")], "does not exist"),
        (["eval", str(run), "--depths", "0.5,1", "--limit-test", "8"], "stage2"),
        (["train", "--model", "tiny_resnet", "--random-depth", "3/2", *SMALL_CLI], "integer"),
        (
            [
                "train",
                "--model",
                "tiny_resnet",
                "--random-depth",
                "1",
                "--out",
                str(tmp_path / "o"),
                *SMALL_CLI,
            ],
            "other than 1",
        ),
        (["train", "--resume", str(run), "--random-depth", "0.5,1"], "--random-depth"),
    ):
        code = main(argv)
        assert words in _one_line_error(capsys, code), argv


@pytest.mark.slow
def test_experiment_scripts_run_quick_and_skip_finished_runs(tmp_path):
    """experiments/transfer_depth.py and multilevel_scale.py: one command each, results written,
    a second invocation reuses every finished run."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for script, extra, name in (
        ("transfer_depth.py", ["--families", "resnet", "--epochs", "1"], "transfer_depth-quick"),
        ("multilevel_scale.py", [], "multilevel_scale-quick"),
    ):
        argv = [
            sys.executable,
            str(root / "experiments" / script),
            "--quick",
            "--threads",
            "1",
            "--data",
            "sample",
            "--out",
            str(tmp_path / "out"),
            "--runs",
            str(tmp_path / script),
            *extra,
        ]
        first = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        assert first.returncode == 0, first.stderr[-2000:]
        result = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert result["provenance"]["threads"] == 1 and result["provenance"]["torch"]
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 0
        assert (tmp_path / "out" / f"{name}.md").read_text().startswith("# ")
        again = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0 and "reusing" in again.stdout, again.stdout[-2000:]
        redo = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        key = "accuracy" if script == "transfer_depth.py" else "final_accuracy"
        assert [r[key] for r in redo["runs"]] == [r[key] for r in result["runs"]]
        if script == "transfer_depth.py":  # the diagnostics read its run folders
            diag = subprocess.run(
                [sys.executable, str(root / "experiments" / "depth_diagnostics.py"), "--runs",
                 str(tmp_path / script), "--data", "sample", "--images", "32", "--recalibrate", "64",
                 "--out", str(tmp_path / "out")],
                capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            assert diag.returncode == 0, diag.stderr[-2000:]
            d = json.loads((tmp_path / "out" / "depth_diagnostics.json").read_text())
            assert {r["family"] for r in d["runs"]} == {"resnet"} and d["provenance"]["threads"] == 1
            assert all(0 < r["update_over_state_median"] <= r["update_over_state_max"] for r in d["runs"])
            assert all(r["ratio_recalibrated_bn"]["1"] == 1.0 for r in d["runs"])
        if script == "multilevel_scale.py":  # direct and both multilevel schedules, on the CPU clock
            assert [r["method"] for r in result["runs"]] == ["direct", "multilevel", "multilevel-continue"]
            assert result["settings"]["clock"] == "cpu" and set(result["summary"]["variants"]) == {
                "multilevel",
                "multilevel-continue",
            }


def test_recalibrate_batchnorm_gives_the_statistics_of_the_batches():
    """The running statistics become the average of the batches' statistics (equal batches:
    the mean over all images and the mean of the unbiased batch variances); modes, momenta
    and the noise of a stochastic stage are left as they were."""
    import torch.nn as nn

    from sdenet.nn.depth import recalibrate_batchnorm

    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=0.3)
    net = nn.Sequential(nn.Conv2d(3, 3, 1), bn)
    net.train()
    batches = [torch.randn(8, 3, 4, 4) * (1 + k) + k for k in range(3)]
    with torch.no_grad():
        feats = [net[0](x) for x in batches]
    assert recalibrate_batchnorm(net, batches) == 24
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-6) and torch.allclose(bn.running_var, var, atol=1e-5)
    assert bn.momentum == 0.3 and net.training and bn.training
    with pytest.raises(ValueError, match="no batch-norm"):
        recalibrate_batchnorm(nn.Linear(2, 2), [torch.randn(1, 2)])
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_batchnorm(net, [])


def test_eval_recalibrate_bn_at_each_depth(clean, tmp_path, capsys):
    """``sdenet eval --depths ... --recalibrate-bn N``: every depth is tested with statistics
    recomputed there (the result says how many images; the coarsened network's loss moves), the
    checkpoint is left alone; a bad N is one line."""
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_resnet",
                "--refine",
                "2",
                "--epochs",
                "1",
                "--out",
                str(run),
                *SMALL_CLI,
            ]
        )
        == 0
    )
    before = (run / "last.pt").read_bytes()
    capsys.readouterr()
    assert (
        main(
            ["eval", str(run), "--depths", "0.5,1", "--recalibrate-bn", "64", "--limit-test", "64", "--json"]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert [d["recalibrated_bn"] for d in r["depths"]] == [64, 64] and r["recalibrated_bn"] == 64
    plain = evaluate_depths(run, "0.5", limit_test=64, samples=0)["depths"][0]
    assert plain.get("recalibrated_bn") is None and plain["test_loss"] != r["depths"][0]["test_loss"]
    assert (run / "last.pt").read_bytes() == before
    code = main(["eval", str(run), "--recalibrate-bn", "0"])
    assert "positive integer" in _one_line_error(capsys, code)
