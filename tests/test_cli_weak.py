"""The ``sdenet weak check`` / ``sdenet weak order`` command line."""

import json
import math

import pytest
import torch

from sdenet import DropBernoulli
from sdenet.cli import main
from sdenet.weak import OU


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: small tensor ops on a shared 2-core machine run faster so."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run(capsys, *argv):
    code = main(["weak", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def drop_moments(p, dt):
    q = 1 - p
    return (0.0, dt, dt**1.5 * (1 - 2 * p) / math.sqrt(p * q), dt**2 * (1 - 3 * p + 3 * p * p) / (p * q))


def test_check_json_has_every_key_and_the_exact_formulas(capsys):
    code, out, err = run(
        capsys,
        "check",
        "--law",
        "drop",
        "--p",
        "0.8",
        "--dt",
        "0.5",
        "0.1",
        "--samples",
        "20000",
        "--seed",
        "3",
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["dt"] for r in rows] == [0.5, 0.1]
    for r in rows:
        dt = r["dt"]
        assert r["law"] == "drop" and r["p"] == 0.8
        m = drop_moments(0.8, dt)
        assert [r["exact"][k] for k in ("m1", "m2", "m3", "m4")] == pytest.approx(m, rel=1e-12, abs=1e-15)
        emp = r["empirical"]
        assert set(emp) == {"m1", "m2", "m3", "m4", "stderr", "samples"}
        assert set(emp["stderr"]) == {"m1", "m2", "m3", "m4"}
        assert emp["samples"] == 20000
        cond = r["condition"]
        assert {"exact", "empirical", "K"} <= set(cond)
        assert cond["exact"] == pytest.approx(abs(m[2]), rel=1e-12)  # m1 = 0, m2 = dt
        assert cond["K"] == pytest.approx(abs(m[2]) / dt**2, rel=1e-12)
        for k in ("m1", "m2", "m3"):
            assert abs(emp[k] - r["exact"][k]) <= 5 * emp["stderr"][k]


def test_check_without_law_shows_every_law_and_drop_at_two_p(capsys):
    code, out, _ = run(capsys, "check", "--dt", "0.25", "--samples", "1000", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["law"], r["p"]) for r in rows] == [
        ("gaussian", None),
        ("uniform", None),
        ("rademacher", None),
        ("threepoint", None),
        ("drop", 0.5),
        ("drop", 0.8),
    ]
    for r in rows:
        assert r["condition"]["exact"] == (0.0 if r["p"] != 0.8 else pytest.approx(0.25**1.5 * 1.5))


def test_check_table_is_one_row_per_law_and_dt(capsys):
    code, out, _ = run(capsys, "check", "--dt", "1", "0.1", "--samples", "2000")
    assert code == 0
    assert "E dW^2-dt" in out and "K=C/dt^2" in out
    rows = [
        line
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("gaussian", "uniform", "rademacher", "threepoint", "drop")
    ]
    assert len(rows) == 12
    drop08 = [line for line in rows if line.split()[:2] == ["drop", "0.8"]]
    assert len(drop08) == 2
    assert drop08[1].split()[-2] == f"{1.5 * 0.1**-0.5:.3g}"  # K exact = Δt^{-1/2} |1-2p|/√(p(1-p))


def test_check_degenerate_drop_reports_C_equal_dt(capsys):
    code, out, _ = run(
        capsys, "check", "--law", "drop", "--p", "1", "--dt", "0.3", "--samples", "10", "--json"
    )
    assert code == 0
    (row,) = json.loads(out)
    assert row["condition"]["exact"] == pytest.approx(0.3)
    assert row["empirical"]["m2"] == 0.0


def test_check_plot_writes_a_png(tmp_path, capsys):
    path = tmp_path / "sub" / "k.png"
    code, out, _ = run(capsys, "check", "--dt", "0.5", "0.05", "--samples", "1000", "--plot", str(path))
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(path) in out


def test_check_plot_with_json_keeps_stdout_parseable(tmp_path, capsys):
    path = tmp_path / "k.png"
    code, out, err = run(
        capsys, "check", "--law", "uniform", "--dt", "0.5", "--samples", "100", "--json", "--plot", str(path)
    )
    assert code == 0
    json.loads(out)
    assert str(path) in err and path.exists()


def test_order_json_keys_and_values(tmp_path, capsys):
    path = tmp_path / "order.png"
    code, out, err = run(
        capsys,
        "order",
        "--sde",
        "ou",
        "--law",
        "drop",
        "--p",
        "0.8",
        "--paths",
        "200000",
        "--seed",
        "1",
        "--json",
        "--plot",
        str(path),
    )
    assert code == 0, err
    res = json.loads(out)
    assert {
        "sde",
        "law",
        "scheme",
        "dts",
        "errors",
        "stderr",
        "slope",
        "slope_ci",
        "phi",
        "declared_weak_order",
        "T",
        "params",
    } <= set(res)
    assert res["sde"] == "ou" and res["law"] == "drop" and res["p"] == 0.8 and res["scheme"] == "weak_euler"
    assert res["declared_weak_order"] == 0.5 and res["phi"] == "x^3"
    sde = OU()
    assert res["dts"] == [sde.T / n for n in sde.default_steps]
    lo, hi = res["slope_ci"]
    assert lo < res["slope"] < hi
    assert res["slope"] == pytest.approx(0.5, abs=0.15)
    law = DropBernoulli(0.8)
    for dt, e, se in zip(res["dts"], res["errors"], res["stderr"]):
        assert abs(e - abs(sde.scheme_expectation(law, dt, 3) - sde.exact(3))) <= 5 * se
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_order_table(capsys):
    code, out, _ = run(
        capsys, "order", "--sde", "gbm", "--law", "rademacher", "--paths", "20000", "--dt", "0.5", "0.25"
    )
    assert code == 0
    assert "fitted slope" in out and "declared weak order 1" in out


def test_order_euler_maruyama(capsys):
    code, out, _ = run(
        capsys,
        "order",
        "--sde",
        "gbm",
        "--law",
        "gaussian",
        "--scheme",
        "euler_maruyama",
        "--paths",
        "1000",
        "--dt",
        "0.5",
        "0.25",
        "--phi",
        "2",
        "--json",
    )
    assert code == 0
    res = json.loads(out)
    assert res["scheme"] == "euler_maruyama" and res["phi"] == "x^2"


BAD = [
    ["check", "--law", "cauchy"],
    ["check", "--law", "drop", "--p", "1.5"],
    ["check", "--law", "drop", "--p", "0"],
    ["check", "--p", "-0.2"],
    ["check", "--law", "gaussian", "--p", "0.5"],
    ["check", "--dt", "0"],
    ["check", "--dt", "0.1", "-1"],
    ["check", "--dt", "abc"],
    ["check", "--samples", "1"],
    ["order", "--sde", "cir"],
    ["order", "--law", "cauchy"],
    ["order", "--scheme", "nope"],
    ["order", "--scheme", "euler"],
    ["order", "--scheme", "stochastic_lm", "--g", "inf"],
    ["order", "--law", "uniform", "--scheme", "euler_maruyama"],
    ["order", "--dt", "0.3", "0.1"],
    ["order", "--dt", "0"],
    ["order", "--paths", "1"],
    ["order", "--phi", "7"],
    ["order", "--law", "drop", "--p", "2"],
    ["check", "--threads", "0"],
]


@pytest.mark.parametrize("argv", BAD, ids=" ".join)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdenet"), err


def test_check_p_without_law_replaces_both_drop_rows(capsys):
    code, out, _ = run(
        capsys, "check", "--p", "0.3", "--dt", "0.1", "--samples", "100", "--json", "--device", "cpu"
    )
    assert code == 0
    rows = json.loads(out)
    assert [(r["law"], r["p"]) for r in rows][-1] == ("drop", 0.3)
    assert sum(r["law"] == "drop" for r in rows) == 1
