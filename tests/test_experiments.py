"""The experiment runner (experiments/run.py), its configs, the GPU-throughput benchmark in
CPU smoke mode and ``sdenet quickstart``."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name, rel):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


runner = _load("experiments_run", "experiments/run.py")


def _real_train():
    from sdenet.train import train

    return train


def _registry():
    from sdenet import models

    return models


# ----------------------------------------------------------------------------- a fake loop


class FakeTrain:
    """Writes a run folder in the format (config.json, metrics.jsonl, metrics.json) with a
    test error that depends on the seed; records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, **kw):
        self.calls.append(kw)
        kw = dict(kw)
        out = Path(kw.get("out") or kw["resume"])  # a resume call carries the folder only
        kw.setdefault("model", "resumed")
        kw.setdefault("seed", 0)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(kw))
        epochs = int(kw.get("epochs") or 2)
        err = 0.5 - 0.01 * kw["seed"] - (0.05 if "lm_" in kw["model"] else 0.0)
        with open(out / "metrics.jsonl", "w") as f:
            for e in range(1, epochs + 1):
                f.write(
                    json.dumps(
                        dict(
                            epoch=e,
                            train_error=err + 0.1 / e,
                            test_error=err + 0.1 / e,
                            lm_coefficients={"s1": [-0.05, -0.02]} if "lm_" in kw["model"] else {},
                            weak=[],
                        )
                    )
                    + "\n"
                )
        final = dict(
            test_error=err + 0.1 / epochs,
            best_test_error=err,
            params=1234,
            epochs=epochs,
            wall_time=1.5,
            hardware="fake",
            model=kw["model"],
            dataset=kw.get("dataset"),
            dt=kw.get("dt", 1.0),
            seed=kw["seed"],
        )
        (out / "metrics.json").write_text(json.dumps(final))
        return final


def _tiny_set(tmp_path, models=("tiny_resnet", "tiny_lm_resnet")):
    spec = dict(
        name="tiny",
        description="two tiny models",
        runs=[
            dict(
                name=m,
                model=m,
                dataset="sample",
                preset="quick",
                paper_error=8.75 if i == 0 else None,
                paper_source="test",
            )
            for i, m in enumerate(models)
        ],
    )
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(spec))
    return path


def test_runner_trains_each_seed_then_skips_finished_runs(tmp_path):
    fake = FakeTrain()
    path = _tiny_set(tmp_path)
    res = runner.run_set(path, seeds=[0, 1, 2], epochs=2, out=tmp_path / "out", train_fn=fake, log=None)
    assert len(fake.calls) == 6 and len(res["trained"]) == 6
    assert {c["seed"] for c in fake.calls} == {0, 1, 2}
    assert all(c["epochs"] == 2 and c["quiet"] for c in fake.calls)
    # mean ± std over the seeds, as the fake wrote them
    row = res["rows"][0]
    errs = [100 * (0.5 - 0.01 * s + 0.05) for s in (0, 1, 2)]
    assert row["test_error_mean"] == pytest.approx(np.mean(errs))
    assert row["test_error_std"] == pytest.approx(np.std(errs, ddof=1))
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| tiny_resnet |" in md and "3/3" in md and "8.75" in md and "unknown" in md
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(doc["rows"]) == 2 and len(doc["rows"][1]["runs"]) == 3
    assert (tmp_path / "out" / "plots" / "errors.png").is_file()
    assert (tmp_path / "out" / "plots" / "lm_coefficients.png").is_file()
    # second pass: nothing to train
    again = FakeTrain()
    res2 = runner.run_set(path, seeds=[0, 1, 2], epochs=2, out=tmp_path / "out", train_fn=again, log=None)
    assert again.calls == [] and len(res2["skipped"]) == 6


def test_runner_resumes_a_folder_with_last_checkpoint(tmp_path):
    fake = FakeTrain()
    path = _tiny_set(tmp_path, models=("tiny_resnet",))
    folder = runner.run_folder(tmp_path / "out", {"name": "tiny_resnet"}, 0)
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"")
    runner.run_set(path, seeds=[0], out=tmp_path / "out", train_fn=fake, log=None, plots=False)
    assert fake.calls[0]["resume"] == str(folder) and "model" not in fake.calls[0]


def test_runner_overrides_and_results_folder(tmp_path):
    fake = FakeTrain()
    path = _tiny_set(tmp_path, models=("tiny_resnet",))
    runner.run_set(
        path,
        seeds=[3],
        out=tmp_path / "o",
        results=tmp_path / "r",
        dataset="x.npz",
        limit_train=64,
        limit_test=32,
        device="cpu",
        train_fn=fake,
        log=None,
        plots=False,
    )
    call = fake.calls[0]
    assert call["dataset"] == "x.npz" and call["limit_train"] == 64 and call["limit_test"] == 32
    assert call["device"] == "cpu" and call["out"].endswith("tiny_resnet-s3")
    assert "paper_error" not in call and "name" not in call
    assert (tmp_path / "r" / "results.md").is_file()


def test_runner_cli_errors(tmp_path, capsys):
    assert runner.main(["--set", "no-such-set"]) == 2
    assert "unknown set" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"runs": []}')
    assert runner.main(["--set", str(bad)]) == 2
    assert "non-empty list" in capsys.readouterr().err
    path = _tiny_set(tmp_path)
    assert runner.main(["--set", str(path), "--epochs", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert runner.main(["--set", str(path), "--only", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "no run named nope" in capsys.readouterr().err


def test_runner_dry_run_and_list(capsys):
    assert runner.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("table2-cifar10", "table2-cifar100", "table3-imagenet", "table4-stochastic-depth"):
        assert name in listed
    assert (
        runner.main(["--set", "table2-cifar10", "--dry-run", "--epochs", "1", "--out", "/nonexistent/x"]) == 0
    )
    assert "lm_resnet56" in capsys.readouterr().out


def test_every_config_loads_with_known_presets_and_honest_paper_numbers():
    from sdenet.train.presets import PRESET_NAMES

    for name in runner.available_sets():
        spec = runner.load_set(name)
        for run in spec["runs"]:
            assert run.get("preset") is None or run["preset"] in PRESET_NAMES, (name, run)
            err = run.get("paper_error")
            assert err is None or (0 < err < 100 and run.get("paper_source")), (name, run)


def test_config_models_exist_in_the_registry():
    models = _registry()
    known = set(models.names())
    missing = sorted(
        {r["model"] for n in runner.available_sets() for r in runner.load_set(n)["runs"]} - known
    )
    assert not missing, f"configs name models the registry lacks: {missing}"


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(64) % 10,
        x_test=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(32) % 10,
    )
    return path


def test_runner_with_the_real_training_loop(tmp_path, tiny_npz):
    path = _tiny_set(tmp_path)
    res = runner.run_set(
        path,
        seeds=[0],
        epochs=1,
        dataset=tiny_npz,
        out=tmp_path / "out",
        batch_size=16,
        device="cpu",
        log=None,
    )
    assert len(res["trained"]) == 2
    for row in res["rows"]:
        assert row["seeds_done"] == [0]
        assert 0 <= row["test_error_mean"] <= 100 and row["params"] > 0
    again = runner.run_set(
        path,
        seeds=[0],
        epochs=1,
        dataset=tiny_npz,
        out=tmp_path / "out",
        batch_size=16,
        device="cpu",
        log=None,
    )
    assert again["trained"] == [] and len(again["skipped"]) == 2


# ----------------------------------------------------------------------------- quickstart


def test_quickstart_with_tiny_overrides(tmp_path, capsys):
    from sdenet.cli import main

    out = tmp_path / "qs"
    argv = [
        "quickstart",
        "--models",
        "tiny_resnet",
        "tiny_lm_resnet",
        "--epochs",
        "1",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
        "--batch-size",
        "32",
        "--samples",
        "2000",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "tiny_lm_resnet - tiny_resnet" in text and "points of test error" in text
    assert "condition (5)" in text and "rademacher" in text
    for name in ("tiny_resnet", "tiny_lm_resnet"):
        final = json.loads((out / name / "metrics.json").read_text())
        assert f"{100 * final['test_error']:.2f}%" in text
    assert (out / "plots" / "errors.png").is_file() and (out / "plots" / "lm_coefficients.png").is_file()
    # the stochastic network trained as an SDE discretization, with condition (5) from training
    sto = json.loads((out / "tiny_lm_sd_resnet" / "metrics.json").read_text())
    assert sto["stochastic"] and sto["mc_samples"] == 8 and sto["weak"]
    assert f"{100 * sto['test_error_mc']:.2f}% averaging 8 noisy passes" in text
    assert "condition (5) of its increments, recorded in training" in text
    stages = {w["stage"] for w in sto["weak"]}
    for stage in stages:
        assert (out / "plots" / f"weak-tiny_lm_sd_resnet-{stage}.png").stat().st_size > 1000
    # the change of dt: refined to dt/2 with p fixed (condition (5) broken) and sqrt (kept)
    assert "Change of dt" in text
    assert "refined x2, p fixed" in text and "exceeds the bound" in text
    assert "refined x2, p sqrt" in text
    sqrt_rows = [ln for ln in text.splitlines() if ln.startswith("refined x2, p sqrt") and " 0.5 " in ln]
    assert sqrt_rows and all("within the bound" in ln for ln in sqrt_rows)
    assert (out / "tiny_lm_sd_resnet-dt-half-sqrt.pt").is_file()
    # threads that do not oversubscribe, and the total time at the end
    from sdenet.commands._args import default_threads

    assert f", {default_threads()} CPU thread" in text and "quickstart finished in" in text
    # a second call reuses the finished runs instead of failing on the occupied folders
    assert main(argv) == 0
    assert text.count("already trained") == 0 and capsys.readouterr().out.count("already trained") == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs: expected a positive integer"),
        (["--models", "resnet20", "resnet20"], "twice"),
        (["--samples", "0"], "--samples: expected a positive integer"),
        (["--stochastic", "resnet20"], "is deterministic"),
    ],
)
def test_quickstart_bad_arguments(argv, message, capsys):
    from sdenet.cli import main

    assert main(["quickstart", *argv]) == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- GPU benchmark


def _check_throughput_result(folder, models):
    res = json.loads((folder / "gpu_throughput-cpu.json").read_text())
    assert res["device"] == "cpu" and "torch" in res["hardware"]
    got = {(r["model"], r["pipeline"]) for r in res["rows"]}
    for m in (*models, "(loader only)"):
        assert (m, "device") in got and (m, "dataloader") in got
    for r in res["rows"]:
        assert r["images"] == 2 * 16 and r["images_per_s"] > 0 and math.isfinite(r["seconds"])
    md = (folder / "gpu_throughput-cpu.md").read_text()
    assert "CPU figures" in md and f"| {models[-1]} | dataloader |" in md


def test_gpu_throughput_cpu_smoke(tmp_path, capsys):
    bench = _load("gpu_throughput", "experiments/benchmarks/gpu_throughput.py")
    argv = [
        "--device",
        "cpu",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "16",
        "--workers",
        "0",
        "--models",
        "tiny_lm_resnet",
        "--out",
        str(tmp_path),
    ]
    assert bench.main(argv) == 0
    assert "images/s" in capsys.readouterr().out
    _check_throughput_result(tmp_path, ("tiny_lm_resnet",))


@pytest.mark.slow
def test_gpu_throughput_script_with_workers_and_the_paper_models(tmp_path):
    """The script as a user runs it: its own process, DataLoader workers, ResNet-56 and
    LM-ResNet-56."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments/benchmarks/gpu_throughput.py"),
            "--device",
            "cpu",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--batch-size",
            "16",
            "--workers",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    _check_throughput_result(tmp_path, ("resnet56", "lm_resnet56"))


def test_gpu_throughput_refuses_cuda_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():  # environmental: the refusal needs a machine without CUDA
        pytest.skip("a GPU is present: the refusal of --device cuda cannot happen here")
    bench = _load("gpu_throughput", "experiments/benchmarks/gpu_throughput.py")
    assert bench.main(["--device", "cuda", "--out", str(tmp_path)]) == 2


def test_plain_dataset_augments_like_the_device_pipeline():
    """Per-sample crop/flip of the DataLoader baseline keeps the shape, normalises to the
    stated mean/std, and at zero shift without flip returns the normalised image."""
    import torch

    bench = _load("gpu_throughput", "experiments/benchmarks/gpu_throughput.py")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    ds = bench.ArrayImages(x, np.arange(4), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment=False)
    img, label = ds[2]
    assert img.shape == (3, 32, 32) and label == 2
    want = (torch.from_numpy(x[2]).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    assert torch.allclose(img, want)
    torch.manual_seed(0)
    aug = bench.ArrayImages(x, np.arange(4), mean=(0.5,) * 3, std=(0.25,) * 3)
    assert aug[0][0].shape == (3, 32, 32)


def test_runner_records_a_diverged_run_and_goes_on(tmp_path):
    fake = FakeTrain()

    def flaky(**kw):
        if kw["seed"] == 1:
            raise RuntimeError("loss is NaN at epoch 1")
        return fake(**kw)

    path = _tiny_set(tmp_path, models=("tiny_resnet",))
    res = runner.run_set(path, seeds=[0, 1, 2], out=tmp_path / "o", train_fn=flaky, log=None, plots=False)
    assert len(res["trained"]) == 2 and len(res["failed"]) == 1
    assert res["rows"][0]["seeds_done"] == [0, 2]
    md = (tmp_path / "o" / "results.md").read_text()
    assert "2/3" in md and "loss is NaN" in md


def test_runner_resumes_an_interrupted_real_run(tmp_path, tiny_npz):
    train = _real_train()
    path = _tiny_set(tmp_path, models=("tiny_lm_resnet",))
    folder = runner.run_folder(tmp_path / "out", {"name": "tiny_lm_resnet"}, 0)

    def stop_after_first_epoch(info):
        if info["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            model="tiny_lm_resnet",
            dataset=str(tiny_npz),
            preset="quick",
            epochs=2,
            seed=0,
            out=str(folder),
            device="cpu",
            batch_size=16,
            quiet=True,
            callback=stop_after_first_epoch,
        )
    assert runner.run_state(folder) == "resume"
    res = runner.run_set(
        path,
        seeds=[0],
        epochs=2,
        dataset=tiny_npz,
        out=tmp_path / "out",
        batch_size=16,
        device="cpu",
        log=None,
        plots=False,
    )
    assert res["trained"] == [str(folder)] and not res["failed"]
    assert runner.run_state(folder) == "done"
    epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    # a folder whose checkpoint finished but lost metrics.json (killed before writing it) is
    # finished by the resume: only the final evaluation and metrics.json are left to do
    (folder / "metrics.json").unlink()
    res = runner.run_set(
        path,
        seeds=[0],
        epochs=2,
        dataset=tiny_npz,
        out=tmp_path / "out",
        batch_size=16,
        device="cpu",
        log=None,
        plots=False,
    )
    assert res["trained"] == [str(folder)] and not res["failed"]
    assert runner.run_state(folder) == "done"


@pytest.mark.slow
def test_memory_benchmark_quick_smoke(tmp_path):
    import subprocess

    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments/benchmarks/memory.py"),
            "--depths",
            "26",
            "50",
            "--rounds",
            "1",
            "--batch",
            "2",
            "--size",
            "16",
            "--families",
            "hamiltonian",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "memory.json").read_text())
    rows = res["rows"]
    assert [r["depth"] for r in rows] == [26, 50]
    assert (tmp_path / "memory.md").exists() and (tmp_path / "memory.png").exists()
    for r in rows:
        assert r["modes"]["reversible"]["saved_bytes"] < r["modes"]["store"]["saved_bytes"]
