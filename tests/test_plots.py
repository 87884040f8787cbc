"""Figures of run folders (sdenet/train/plots.py, ``sdenet plot``) on synthetic runs written
here in the run-folder format."""

from __future__ import annotations

import json
import math
import random

import pytest

from sdenet.cli import main
from sdenet.train import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _weak_entries(rng, epoch, stages=("stage1", "stage2"), blocks=3, p=0.8, dt=1.0):
    out = []
    for s in stages:
        for b in range(blocks):
            m3_exact = dt**1.5 * (1 - 2 * p) / math.sqrt(p * (1 - p))
            m1, m2, m3 = rng.gauss(0, 0.01), dt + rng.gauss(0, 0.01), m3_exact + rng.gauss(0, 0.01)
            c = abs(m1) + abs(m3) + abs(m2 - dt)
            out.append(
                dict(
                    stage=s,
                    block=b,
                    law="drop",
                    p=p,
                    dt=dt,
                    C=c,
                    K=c / dt**2,
                    n=1000 * epoch,
                    m1=m1,
                    m2=m2,
                    m3=m3,
                )
            )
    return out


def make_run(
    folder, *, model="tiny_resnet", epochs=4, lm=False, weak=False, seed=0, finished=True, partial_tail=False
):
    """A run folder following the format: config.json, metrics.jsonl, metrics.json."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps(dict(model=model, dataset="sample", seed=seed, epochs=epochs, dt=1.0))
    )
    lines = []
    for e in range(1, epochs + 1):
        rec = dict(
            epoch=e,
            train_loss=2.0 / e,
            train_error=0.9 / e + 0.05 * rng.random(),
            test_error=0.9 / e + 0.1,
            test_loss=2.1 / e,
            lr=0.1,
            epoch_time=1.0,
            elapsed=float(e),
            lm_coefficients={
                "stage1": [rng.uniform(-0.1, 0) for _ in range(3)],
                "stage2": [rng.uniform(-0.1, 0) for _ in range(3)],
            }
            if lm
            else {},
            weak=_weak_entries(rng, e) if weak else [],
        )
        lines.append(json.dumps(rec))
    text = "\n".join(lines) + "\n"
    if partial_tail:
        text += '{"epoch": 99, "train_'
    (folder / "metrics.jsonl").write_text(text)
    if finished:
        (folder / "metrics.json").write_text(
            json.dumps(
                dict(
                    test_error=0.3,
                    best_test_error=0.3,
                    params=1000,
                    epochs=epochs,
                    wall_time=4.0,
                    hardware="test",
                    model=model,
                    dataset="sample",
                    dt=1.0,
                    seed=seed,
                )
            )
        )
    return folder


def assert_png(path):
    import matplotlib.image as mpimg

    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # not a blank canvas
    assert float(img[..., :3].std()) > 0.01


def test_load_run_reads_records_in_epoch_order(tmp_path):
    run = plots.load_run(make_run(tmp_path / "r", epochs=5, partial_tail=True))
    assert run.epochs == [1, 2, 3, 4, 5]  # partial tail (a run being written) ignored
    assert run.final["params"] == 1000 and run.model == "tiny_resnet"


def test_resumed_run_keeps_last_record_of_an_epoch(tmp_path):
    folder = make_run(tmp_path / "r", epochs=3)
    with open(folder / "metrics.jsonl", "a") as f:
        f.write(json.dumps(dict(epoch=2, train_error=0.5, test_error=0.25)) + "\n")
    run = plots.load_run(folder)
    assert run.epochs == [1, 2, 3]
    assert run.metrics[1]["test_error"] == 0.25


def test_plot_all_figures_for_lm_and_stochastic_runs(tmp_path, capsys):
    a = make_run(tmp_path / "a", model="tiny_sd_resnet", weak=True, seed=1)
    b = make_run(tmp_path / "b", model="tiny_lm_sd_resnet", weak=True, lm=True, seed=2)
    c = make_run(tmp_path / "c", model="tiny_resnet", seed=3, finished=False)
    out = tmp_path / "figs"
    assert main(["plot", str(a), str(b), str(c), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert "errors.png" in names and "lm_coefficients.png" in names
    # two stochastic runs x two stages
    assert len([n for n in names if n.startswith("weak-")]) == 4
    for p in pngs:
        assert_png(p)
        assert str(p) in printed
    assert any("tiny_resnet" in line and "skipped" in line for line in printed)


def test_deterministic_run_skips_lm_and_weak_figures(tmp_path, capsys):
    a = make_run(tmp_path / "a")
    assert main(["plot", str(a)]) == 0  # default --out: the run folder
    out = capsys.readouterr().out
    assert (a / "errors.png").is_file()
    assert_png(a / "errors.png")
    assert not (a / "lm_coefficients.png").exists()
    assert not list(a.glob("weak-*.png"))
    assert "skipped the k_n figure" in out and "condition-(5)" in out


def test_labels_name_the_runs(tmp_path, capsys):
    a = make_run(tmp_path / "a", weak=True)
    b = make_run(tmp_path / "b", weak=True)
    out = tmp_path / "o"
    assert main(["plot", str(a), str(b), "--out", str(out), "--labels", "first", "second"]) == 0
    assert (out / "weak-first-stage1.png").is_file() and (out / "weak-second-stage2.png").is_file()


def test_same_model_runs_get_distinct_default_labels(tmp_path):
    runs = [plots.load_run(make_run(tmp_path / f"s{i}", seed=i)) for i in range(2)]
    labels = plots._default_labels(runs)
    assert len(set(labels)) == 2


def test_exact_moments_of_drop_law():
    m1, m2mdt, m3 = plots._exact_moments(dict(law="drop", p=0.8, dt=0.25))
    assert m1 == 0 and abs(m2mdt) < 1e-15
    assert m3 == pytest.approx(0.25**1.5 * (1 - 1.6) / math.sqrt(0.16))
    assert plots._exact_moments(dict(law="no-such-law", dt=1.0)) is None


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing", "no such run folder"),
        ("empty_dir", "no metrics.jsonl"),
        ("empty_file", "no epoch records"),
        ("bad_line", "line 1 is not valid JSON"),
        ("no_keys", "lacks"),
        ("file", "not a folder"),
    ],
)
def test_broken_run_folders_exit_2_with_one_line(tmp_path, capsys, setup, message):
    d = tmp_path / "run"
    if setup == "empty_dir":
        d.mkdir()
    elif setup == "empty_file":
        d.mkdir()
        (d / "metrics.jsonl").write_text("\n")
    elif setup == "bad_line":
        d.mkdir()
        (d / "metrics.jsonl").write_text(
            "{not json\n" + json.dumps(dict(epoch=1, train_error=0.1, test_error=0.1)) + "\n"
        )
    elif setup == "no_keys":
        d.mkdir()
        (d / "metrics.jsonl").write_text(json.dumps(dict(epoch=1)) + "\n")
    elif setup == "file":
        d.write_text("x")
    assert main(["plot", str(d), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("sdenet")


def test_label_count_mismatch_is_a_usage_error(tmp_path, capsys):
    a = make_run(tmp_path / "a")
    assert main(["plot", str(a), "--labels", "x", "y"]) == 2
    assert "labels" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tmp_path):
    a = make_run(tmp_path / "a")
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        plots.plot_runs([a], out_dir=tmp_path / "f", log=None)


def test_lm_coefficients_of_stochastic_runs_are_the_g_n(tmp_path):
    det = plots.load_run(make_run(tmp_path / "d", lm=True))
    sto = plots.load_run(make_run(tmp_path / "s", lm=True, weak=True))
    assert not plots._is_stochastic(det) and plots._is_stochastic(sto)
    epoch, coeffs = plots._lm_series(sto)
    assert epoch == 4 and set(coeffs) == {"stage1", "stage2"}


def test_empirical_K_is_condition_5_of_the_drawn_moments():
    entry = dict(dt=0.5, m1=0.01, m2=0.52, m3=-0.1, K=123.0)  # K: the exact one, not used
    assert plots._empirical_K(entry) == pytest.approx((0.01 + 0.02 + 0.1) / 0.25)
    assert math.isnan(plots._empirical_K(dict(dt=0, m1=0, m2=0, m3=0)))
