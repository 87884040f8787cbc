"""Tests of the theory items: symbolic derivations, stability boundary, observed orders, the report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

import sdenet
from sdenet.theory import dt_families, lm_stability, modified_equations, stochastic_lm, table1, weak_laws
from sdenet.theory.report import ITEMS, run_all

ORDER_TOL = 0.2


# ----------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("name", ["euler", "lm"])
def test_difference_form_is_the_papers_equation(name):
    lhs, rhs = modified_equations.difference_form(name)
    plhs, prhs = modified_equations.paper_equation(name)
    assert sp.simplify((lhs - rhs) - (plhs - prhs)) == 0


def test_difference_form_of_lm_is_not_eulers_unless_k_is_zero():
    _, _, _, k, _, _ = modified_equations.symbols()
    lhs, rhs = modified_equations.difference_form("lm")
    elhs, erhs = modified_equations.difference_form("euler")
    assert sp.simplify((lhs - rhs) - (elhs - erhs)) != 0
    assert sp.simplify((lhs - rhs).subs(k, 0) - (elhs - erhs)) == 0


def test_first_order_forms_match_backward_error_analysis():
    t, u, h, k, f, _ = modified_equations.symbols()
    F, F1, F2 = f(u), sp.diff(f(u), u), sp.diff(f(u), u, 2)
    a = modified_equations.first_order_form("euler")
    assert sp.simplify(a[0] - F) == 0
    assert sp.simplify(a[1] + F1 * F / 2) == 0
    assert sp.simplify(a[2] - (F2 * F**2 + 4 * F1**2 * F) / 12) == 0  # Hairer–Lubich–Wanner IX.1
    a = modified_equations.first_order_form("lm")
    assert sp.simplify(a[0] - F / (1 + k)) == 0
    assert sp.simplify(a[1] + (1 - k) * F1 * F / (2 * (1 + k) ** 3)) == 0
    a = modified_equations.first_order_form("heun")
    assert a[1] == 0
    assert sp.simplify(a[2] - (F2 * F**2 / 12 - F1**2 * F / 6)) == 0


def test_latex_is_printed():
    lhs, rhs = modified_equations.difference_form("euler")
    tex = modified_equations.latex_equation(lhs, rhs)
    assert "\\Delta t" in tex and "u''" in tex


@pytest.mark.parametrize("name,lead,mod", [("euler", 1, 2), ("heun", 2, 3), ("lm", 1, 2)])
def test_trajectories_follow_their_modified_equation_one_order_higher(name, lead, mod):
    r = modified_equations.follow_orders(name, steps=(20, 40, 80, 160))
    assert abs(r["order_leading"] - lead) <= ORDER_TOL
    assert abs(r["order_modified"] - mod) <= ORDER_TOL


def test_lm_with_an_euler_first_step_loses_the_extra_order():
    r = modified_equations.follow_orders("lm", steps=(40, 80, 160, 320), k=-0.3, lm_start="euler")
    assert r["order_modified"] < 1.3


def test_unknown_scheme_is_a_value_error():
    with pytest.raises(ValueError, match="unknown scheme"):
        modified_equations.difference_form("rk4")


# ----------------------------------------------------------------------------- item 2


def test_stability_boundary_at_minus_one_matches_closed_form():
    lo, hi = lm_stability.stable_interval(-1.0)
    assert lm_stability.closed_form_interval(-1.0) == (-1.0, 0.5)
    assert abs(lo + 1.0) < 1e-8 and abs(hi - 0.5) < 1e-8


@pytest.mark.parametrize("z", [-0.05, -0.7, -2.0, -3.5])
def test_stability_interval_matches_closed_form(z):
    num = lm_stability.stable_interval(z)
    cf = lm_stability.closed_form_interval(z)
    assert np.allclose(num, cf, atol=1e-8)


def test_roots_and_spectral_radius():
    roots = lm_stability.characteristic_roots(0.3, 0.0)  # roots 1 and −k at z = 0
    assert np.allclose(sorted(roots.real), [-0.3, 1.0])
    assert lm_stability.spectral_radius(0.0, -2.5) > 1  # Euler beyond |λΔt| = 2
    assert lm_stability.spectral_radius(-0.5, -2.5) < 1  # negative k enlarges the region
    assert lm_stability.spectral_radius(1.0, -0.01) > 1  # the paper's endpoint k = 1
    assert lm_stability.closed_form_interval(-4.5) is None
    assert lm_stability.stable_interval(-4.5) is None


def test_lm_gradient_flow_grows_exactly_outside_the_region():
    grow = lm_stability.lm_gradient_flow(0.6, 0.7, (0.1, 2.5), steps=80)  # k in [−1, 1] but k > 1 + λΔt/2
    decay = lm_stability.lm_gradient_flow(-0.5, 0.9, (0.1, 2.5), steps=80)
    assert grow[-1] > 1e3 and decay[-1] < 1e-2


# ----------------------------------------------------------------------------- item 3


def test_table1_observed_orders_match_declared():
    res = table1.observed_orders(steps=(8, 16, 32, 64), batch=4)
    assert res.pop("_blocks_vs_field") < 1e-12
    assert set(res) == set(table1.ARCHITECTURES)
    for arch, r in res.items():
        assert abs(r["order"] - r["declared"]) <= ORDER_TOL, (arch, r["order"])
    assert res["FractalNet"]["declared"] == 2


def test_table1_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture"):
        table1.build_stage("VGG", (None, None), 4)


# ----------------------------------------------------------------------------- item 4


def test_weak_orders_of_every_law_match_declared():
    gbm, ou = weak_laws.test_sdes()
    for sde in (gbm, ou):
        res = weak_laws.weak_orders(sde, steps=(16, 32, 64, 128, 256), mc_steps=(4, 8), paths=20_000)
        for lab, r in res.items():
            assert abs(r["order"] - r["declared"]) <= ORDER_TOL, (sde, lab, r["order"])
            assert max(abs(z) for z in r["z"]) < 4.5  # Monte Carlo agrees with the exact scheme expectation
        assert res["drop p=0.8"]["declared"] == 0.5


def test_condition_curves_exact_and_empirical():
    curves = weak_laws.condition_curves((0.5, 0.1, 0.02), samples=50_000)
    for lab in ("gaussian", "uniform", "rademacher", "threepoint", "drop p=0.5"):
        assert curves[lab]["K"] == [0.0, 0.0, 0.0]
    k = curves["drop p=0.8"]["K"]
    assert k[2] > k[1] > k[0]  # grows as Δt → 0 …
    assert math.isclose(k[2] / k[1], math.sqrt(5.0), rel_tol=1e-9)  # … like Δt^{−1/2}
    sched = [v for lab, v in curves.items() if lab.startswith("drop p(")][0]
    assert max(sched["K"]) < 2.0
    for c in curves.values():
        for ke, kx, se in zip(c["K_emp"], c["K"], c["K_se"]):
            assert abs(ke - kx) <= 4 * se + 1e-12


def test_drop_schedules_fixed_half_scheduled_one():
    _, ou = weak_laws.test_sdes()
    r = weak_laws.drop_schedules(ou, steps=(16, 32, 64, 128, 256, 512), mc_steps=(4,), paths=20_000)
    assert abs(r["fixed"]["order"][0] - 0.5) <= ORDER_TOL
    assert abs(r["scheduled"]["order"][0] - 1.0) <= ORDER_TOL
    assert max(abs(z) for key in ("fixed", "scheduled") for z in r[key]["z"]) < 4.5


def test_rademacher_converges_weakly_not_strongly():
    gbm, ou = weak_laws.test_sdes()
    r = weak_laws.strong_vs_weak(gbm, steps=(8, 16, 32, 64, 128), paths=3_000, chunk=3_000)
    assert abs(r["rad"]["strong_order"][0]) < 0.2  # flat: the pathwise distance does not shrink
    assert abs(r["em"]["strong_order"][0] - 0.5) <= ORDER_TOL
    assert abs(r["rad"]["weak_order"][0] - 1.0) <= ORDER_TOL
    assert min(r["rad"]["strong"]) > 5 * max(r["rad"]["strong_se"])
    with pytest.raises(ValueError, match="GBM"):
        weak_laws.strong_vs_weak(ou)


# ----------------------------------------------------------------------------- item 5


def test_dt_one_is_the_original_architecture():
    gaps = dt_families.original_architecture_gap()
    assert gaps["shake-shake"] < 1e-12 and gaps["stochastic depth"] < 1e-12


def test_dt_families_network_moment_matches_exact():
    for name, (builder, gbm) in dt_families.families().items():
        law = builder(1.0)[1]
        for dt in (1.0, 0.25):
            m, se = dt_families.network_moment(builder, dt, 2, paths=40_000, seed=3)
            assert abs(m - gbm.scheme_expectation(law, dt, 2)) < 4.5 * se, name


# ----------------------------------------------------------------------------- item 6


def test_stochastic_lm_at_dt_one_is_the_papers_recursion():
    assert stochastic_lm.paper_recursion_gap() < 1e-12


def test_stochastic_lm_weak_order():
    osc = stochastic_lm.Oscillator(p=0.5)
    law = sdenet.DropBernoulli(0.5)
    st = stochastic_lm.order_study(
        osc, law, ks=(1, 2), steps=(64, 128, 256, 512), mc_steps=(8,), paths=40_000
    )
    declared = sdenet.StochasticLM(osc.g, law).weak_order
    for k, r in st["k"].items():
        assert abs(r["order"][0] - declared) <= ORDER_TOL, k
        assert max(abs(z) for z in r["z"]) < 4.5


def test_stochastic_lm_third_moment_order_half_for_asymmetric_drop():
    osc = stochastic_lm.Oscillator(p=0.8)
    law = sdenet.DropBernoulli(0.8)
    st = stochastic_lm.order_study(
        osc, law, ks=(3,), steps=(64, 128, 256, 512, 1024), mc_steps=(8,), paths=20_000
    )
    assert abs(st["k"][3]["order"][0] - sdenet.StochasticLM(osc.g, law).weak_order) <= ORDER_TOL


def test_oscillator_exact_moments_are_consistent():
    osc = stochastic_lm.Oscillator(p=0.5)
    # the scheme's exact moments converge to the closed form (two independent computations)
    for k in (1, 2):
        assert abs(osc.scheme_expectation(sdenet.Rademacher(), osc.T / 2048, k) - osc.exact(k)) < 2e-3
    with pytest.raises(ValueError, match="damping"):
        stochastic_lm.Oscillator(g=0.1)


# ----------------------------------------------------------------------------- report and CLI


def test_report_quick_subset_builds(tmp_path):
    path = run_all(tmp_path, quick=True, items=["stability", "table1"])
    text = path.read_text()
    assert text.startswith("# Theory report")
    assert "## Summary" in text and "agrees with the paper?" in text
    assert "## 2. Stability of the LM scheme" in text and "## 3. Table 1" in text
    for name in ("lm_stability_region.png", "lm_stability_gradient_flow.png", "table1_orders.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 1000
        assert f"figures/{name}" in text


def test_report_rejects_unknown_items(tmp_path):
    with pytest.raises(ValueError, match="unknown theory item"):
        run_all(tmp_path, items=["nonsense"])


def test_cli_theory(tmp_path, capsys):
    from sdenet.cli import main

    assert main(["theory", "--quick", "--items", "stability", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "REPORT.md").exists()
    assert main(["theory", "--items", "bogus", "--out", str(tmp_path)]) == 2
    assert "unknown item" in capsys.readouterr().err


@pytest.mark.slow
def test_whole_report_builds_in_quick_mode(tmp_path):
    path = run_all(tmp_path, quick=True)
    text = path.read_text()
    assert "FAILED" not in text
    for n in range(1, len(ITEMS) + 1):
        assert f"\n## {n}. " in text
    figs = list((tmp_path / "figures").glob("*.png"))
    assert len(figs) >= 10


def test_cli_theory_without_the_theory_package(monkeypatch, capsys):
    import sys

    from sdenet.cli import main

    monkeypatch.setitem(sys.modules, "sdenet.theory", None)  # import sdenet.theory -> ImportError
    assert main(["theory", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "not importable" in err and "Traceback" not in err


def test_python_m_theory_rejects_unknown_items(capsys):
    from sdenet.theory.__main__ import main

    assert main(["--items", "stability,nope"]) == 2
    assert "unknown theory item" in capsys.readouterr().err


# ----------------------------------------------------------------------------- reversible (Chang et al.)


def test_reversible_step_eigenvalues_match_closed_forms():
    from sdenet.theory import reversible_stability as R

    rng = np.random.default_rng(1)
    K = rng.standard_normal((6, 6)) / 3
    s = float(np.linalg.svd(K, compute_uv=False).max())
    for scheme in R.SCHEMES:
        for h in (0.3 / s, 0.9 / s, 1.5 / s, 2.5 / s):
            assert abs(R.spectral_radius(scheme, K, h) - R.closed_form_radius(scheme, s, h)) < 1e-6
    # the Hamiltonian step is symplectic: det 1
    assert abs(np.linalg.det(R.step_matrix("hamiltonian", K, 0.7)) - 1) < 1e-10
    assert R.closed_form_radius("euler", s, 0.1) > 1


def test_reversible_layer_norms_match_a_direct_backward():
    from sdenet.theory import reversible_stability as R

    f, g = R.layer_norms("hamiltonian", layers=20, d=4, batch=2)
    assert f[0] == 1 and g[-1] == 1 and len(f) == 21 and np.isfinite(g).all()
