"""Numerical tests of sdenet.weak: condition (5), the test SDEs' closed forms, weak and
strong orders fitted as slopes, and interop with torchsde / torchdiffeq."""

import math

import pytest
import torch
import torchdiffeq
import torchsde

from sdenet import (
    DropBernoulli,
    Euler,
    EulerMaruyama,
    Gaussian,
    Heun,
    ODEField,
    Rademacher,
    StochasticLM,
    ThreePoint,
    Uniform,
    WeakEuler,
    get_law,
    integrate,
    weak,
)
from sdenet.weak import GBM, OU

ALL_LAWS = [
    Gaussian(),
    Uniform(),
    Rademacher(),
    ThreePoint(),
    DropBernoulli(0.5),
    DropBernoulli(0.8),
    DropBernoulli(1.0),
]
SYMMETRIC = [Gaussian(), Uniform(), Rademacher(), ThreePoint(), DropBernoulli(0.5)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these tests run many small tensor ops, and on a shared 2-core
    machine two OpenMP threads per op wait on each other far longer than they save."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- moments


@pytest.mark.parametrize("law", ALL_LAWS, ids=repr)
@pytest.mark.parametrize("dt", [1.0, 0.01])
def test_exact_moments_match_a_million_samples(law, dt):
    mom = weak.empirical_moments(law, dt, samples=1_000_000, generator=gen(11), chunk=300_000)
    assert mom["samples"] == 1_000_000
    exact = law.moments(dt)
    for k, (m, se, ex) in enumerate(zip(mom["m"], mom["stderr"], exact), start=1):
        # rounding floor for the laws whose power k is constant (Rademacher's ΔŴ², …)
        assert abs(m - ex) <= 5 * se + 1e-12 * dt ** (k / 2), (k, m, ex, se)


@pytest.mark.parametrize("law", [Gaussian(), Uniform(), ThreePoint(), DropBernoulli(0.8)], ids=repr)
def test_standard_errors_match_the_exact_spread(law):
    """se_k = sd(ΔŴ^k)/√n: for k = 1, 2 the exact sd follows from the moments up to 4."""
    n, dt = 400_000, 0.3
    mom = weak.empirical_moments(law, dt, samples=n, generator=gen(3))
    m1, m2, _, m4 = law.moments(dt)
    assert mom["stderr"][0] == pytest.approx(math.sqrt(m2 - m1**2) / math.sqrt(n), rel=0.02)
    assert mom["stderr"][1] == pytest.approx(math.sqrt(m4 - m2**2) / math.sqrt(n), rel=0.02)


def test_chunked_accumulator_equals_direct_mean_and_variance():
    x = torch.randn(3, 10_001, generator=gen(0), dtype=torch.float64) * 5 + 100
    acc = weak._Welford(3)
    for part in torch.split(x, 777, dim=1):
        acc.add(part)
    assert acc.n == 10_001
    torch.testing.assert_close(acc.mean, x.mean(dim=1), rtol=1e-13, atol=0)
    torch.testing.assert_close(acc.stderr(), (x.var(dim=1) / x.shape[1]).sqrt(), rtol=1e-10, atol=0)


def test_empirical_moments_rejects_bad_input():
    with pytest.raises(ValueError, match="samples"):
        weak.empirical_moments(Gaussian(), 0.1, samples=1)
    with pytest.raises(ValueError, match="dt"):
        weak.empirical_moments(Gaussian(), 0.0, samples=10)
    with pytest.raises(ValueError, match="NoiseLaw"):
        weak.empirical_moments("gaussian", 0.1, samples=10)


# --------------------------------------------------------------------------- condition (5)


@pytest.mark.parametrize("law", SYMMETRIC, ids=repr)
def test_condition_is_exactly_zero_for_symmetric_laws(law):
    for dt in (1.0, 0.3, 1e-2, 1e-5):
        assert weak.condition(law, dt) == 0.0
        assert weak.condition_K(law, dt) == 0.0


@pytest.mark.parametrize("p", [0.1, 0.3, 0.8, 0.95])
def test_condition_of_stochastic_depth_has_its_closed_form(p):
    law = DropBernoulli(p)
    for dt in (1.0, 0.25, 1e-3):
        expected = dt**1.5 * abs(1 - 2 * p) / math.sqrt(p * (1 - p))
        assert weak.condition(law, dt) == pytest.approx(expected, rel=1e-12)
    dts = [2.0**-j for j in range(1, 12)]
    slope, (lo, hi) = weak.fit_slope(dts, [weak.condition_K(law, dt) for dt in dts])
    assert slope == pytest.approx(-0.5, abs=1e-9)  # K = C/Δt² grows like Δt^{-1/2}: (5) fails
    assert lo == pytest.approx(-0.5, abs=1e-6) and hi == pytest.approx(-0.5, abs=1e-6)


def test_condition_of_degenerate_drop_is_dt():
    law = DropBernoulli(1.0)
    for dt in (1.0, 0.1, 1e-3):
        assert weak.condition(law, dt) == pytest.approx(dt, rel=1e-15)
        assert weak.condition_K(law, dt) == pytest.approx(1 / dt, rel=1e-12)


@pytest.mark.parametrize("law", [Gaussian(), ThreePoint(), DropBernoulli(0.8), DropBernoulli(0.3)], ids=repr)
def test_empirical_condition_within_its_error_bound(law):
    for seed, dt in enumerate((0.5, 0.05)):
        c, se = weak.empirical_condition(law, dt, samples=500_000, generator=gen(seed))
        assert se > 0
        assert abs(c - weak.condition(law, dt)) <= 5 * se


def test_check_rows_have_the_documented_keys_and_values():
    laws = [Uniform(), DropBernoulli(0.8)]
    rows = weak.check(laws, [0.5, 0.1], samples=20_000, seed=4)
    assert [(r["law"], r["p"], r["dt"]) for r in rows] == [
        ("uniform", None, 0.5),
        ("uniform", None, 0.1),
        ("drop", 0.8, 0.5),
        ("drop", 0.8, 0.1),
    ]
    for r, law in zip(rows, [laws[0]] * 2 + [laws[1]] * 2):
        dt = r["dt"]
        assert set(r) >= {"law", "p", "dt", "exact", "empirical", "condition"}
        assert list(r["exact"].values()) == list(law.moments(dt))
        assert set(r["empirical"]) == {"m1", "m2", "m3", "m4", "stderr", "samples"}
        assert set(r["empirical"]["stderr"]) == {"m1", "m2", "m3", "m4"}
        assert r["empirical"]["samples"] == 20_000
        c = r["condition"]
        assert c["exact"] == weak.condition(law, dt)
        assert c["K"] == pytest.approx(c["exact"] / dt**2, rel=1e-15)
        assert c["K_empirical"] == pytest.approx(c["empirical"] / dt**2, rel=1e-15)
        assert abs(c["empirical"] - c["exact"]) <= 5 * c["empirical_stderr"]


def test_check_rows_do_not_depend_on_the_other_rows():
    full = weak.check(None, [0.5, 0.1], samples=5_000, seed=9)
    assert len(full) == 12  # six default laws (drop at p = 0.5 and 0.8) times two dts
    one = weak.check([DropBernoulli(0.8)], [0.1], samples=5_000, seed=9)[0]
    assert one == [r for r in full if r["p"] == 0.8 and r["dt"] == 0.1][0]
    other_seed = weak.check([DropBernoulli(0.8)], [0.1], samples=5_000, seed=10)[0]
    assert other_seed["empirical"]["m3"] != one["empirical"]["m3"]


# --------------------------------------------------------------------------- fit_slope


def test_fit_slope_recovers_an_exact_power_law():
    dts = [0.5, 0.25, 0.125, 0.0625]
    slope, (lo, hi) = weak.fit_slope(dts, [3.0 * dt**0.7 for dt in dts])
    assert slope == pytest.approx(0.7, abs=1e-12)
    assert hi - lo == pytest.approx(0.0, abs=1e-9)


def test_fit_slope_interval_covers_the_truth_for_noisy_errors():
    """Errors e_i = dt^0.8 (1 + 0.05 z_i): the 95 % interval covers 0.8 in most draws."""
    g = gen(5)
    dts = [2.0**-j for j in range(1, 7)]
    covered = 0
    trials = 200
    for _ in range(trials):
        z = torch.randn(len(dts), generator=g, dtype=torch.float64).tolist()
        errors = [dt**0.8 * (1 + 0.05 * zi) for dt, zi in zip(dts, z)]
        _, (lo, hi) = weak.fit_slope(dts, errors, [0.05 * dt**0.8 for dt in dts])
        covered += lo <= 0.8 <= hi
    assert covered >= 0.93 * trials  # conservative interval: at least nominal coverage


def test_fit_slope_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        weak.fit_slope([0.1, 0.2], [0.0, 1.0])
    with pytest.raises(ValueError, match="two"):
        weak.fit_slope([0.1], [1.0])
    with pytest.raises(ValueError, match="equal"):
        weak.fit_slope([0.1, 0.1], [1.0, 2.0])


# --------------------------------------------------------------------------- test SDEs


def test_gbm_exact_moments_against_its_exact_solution():
    sde = GBM(mu=0.3, sigma=0.4, x0=1.5, T=0.8)
    w = torch.randn(1_000_000, generator=gen(1), dtype=torch.float64) * math.sqrt(sde.T)
    x = sde.solution(w)
    for k in (1, 2, 3, 4):
        xk = x**k
        se = xk.std().item() / math.sqrt(x.numel())
        assert abs(xk.mean().item() - sde.exact(k)) <= 5 * se


def test_ou_exact_moments_against_gaussian_samples():
    sde = OU(theta=0.7, sigma=0.9, x0=-1.2, T=1.5)
    x = sde.mean() + math.sqrt(sde.variance()) * torch.randn(1_000_000, generator=gen(2), dtype=torch.float64)
    for k in (1, 2, 3, 4):
        xk = x**k
        se = xk.std().item() / math.sqrt(x.numel())
        assert abs(xk.mean().item() - sde.exact(k)) <= 5 * se


def _mc_moment(sde, law, dt, k, paths, seed):
    x0 = torch.full((paths, 1), sde.x0, dtype=torch.float64)
    xN = integrate(sde.field(), WeakEuler(law), x0, t1=sde.T, dt=dt, generator=gen(seed)) ** k
    return xN.mean().item(), xN.std().item() / math.sqrt(paths)


@pytest.mark.parametrize(
    "sde", [GBM(mu=0.5, sigma=0.6, x0=1.0, T=1.0), OU(theta=1.5, sigma=0.8, x0=0.7, T=1.0)], ids=repr
)
@pytest.mark.parametrize("law", [Uniform(), ThreePoint(), DropBernoulli(0.8), DropBernoulli(0.3)], ids=repr)
def test_scheme_expectation_matches_monte_carlo(sde, law):
    """The closed-form E X_N^k of weak Euler against the simulator at a coarse Δt, where the
    law's third and fourth moments change the answer."""
    for k, seed in ((3, 1), (4, 2)):
        m, se = _mc_moment(sde, law, 0.25, k, 200_000, seed)
        assert abs(m - sde.scheme_expectation(law, 0.25, k)) <= 5 * se


def test_scheme_expectation_sees_the_third_moment_only_when_it_is_nonzero():
    for sde in (GBM(), OU()):
        sym = [sde.scheme_expectation(law, 0.25, 3) for law in SYMMETRIC]
        assert max(sym) - min(sym) <= 1e-12 * abs(sym[0])  # x³ sees moments 1..3 only
        assert abs(sde.scheme_expectation(DropBernoulli(0.8), 0.25, 3) - sym[0]) > 1e-3 * abs(sym[0])
        # x⁴ also sees E ΔŴ⁴, which differs between the symmetric laws
        quartic = {law.name: sde.scheme_expectation(law, 0.25, 4) for law in (Gaussian(), Uniform())}
        assert quartic["gaussian"] != quartic["uniform"]


@pytest.mark.parametrize("sde", [GBM(), OU()], ids=repr)
def test_scheme_expectation_converges_to_the_exact_moment(sde):
    """Bias of weak Euler with Gaussian increments is O(Δt) for every power k."""
    dts = [sde.T / n for n in (64, 128, 256, 512)]
    for k in (1, 2, 3, 4):
        bias = [abs(sde.scheme_expectation(Gaussian(), dt, k) - sde.exact(k)) for dt in dts]
        slope, _ = weak.fit_slope(dts, bias)
        assert slope == pytest.approx(1.0, abs=0.05)


def test_sde_constructors_reject_bad_parameters():
    with pytest.raises(ValueError, match="sigma"):
        GBM(sigma=0)
    with pytest.raises(ValueError, match="theta"):
        OU(theta=-1)
    with pytest.raises(ValueError, match="T"):
        OU(T=float("inf"))
    with pytest.raises(ValueError, match="phi"):
        GBM().exact(5)
    with pytest.raises(ValueError, match="whole number"):
        OU().scheme_expectation(Gaussian(), 0.3, 3)
    with pytest.raises(ValueError, match="unknown test SDE"):
        weak.get_sde("cir")


# --------------------------------------------------------------------------- weak order


def _check_order(res, target, sde):
    # the premise of the fit: every error is many standard errors away from 0
    assert all(v is not None and v > 5 for v in res["snr"]), res["snr"]
    # the Monte Carlo error estimates the exact scheme bias
    for e, b, se in zip(res["errors"], res["bias"], res["stderr"]):
        assert abs(e - abs(b)) <= 5 * se
    assert res["slope"] == pytest.approx(target, abs=0.15), res
    lo, hi = res["slope_ci"]
    assert lo < res["slope"] < hi


ORDER_ONE = [
    (sde, law) for sde in ("gbm", "ou") for law in ("gaussian", "uniform", "rademacher", "threepoint", "drop")
]
# ~15 standard errors of bias at the finest dt for OU, ~40 for GBM (see GBM/OU.default_steps)
PATHS = {"ou": 4_000_000, "gbm": 400_000}


@pytest.mark.parametrize("sde_name,law_name", ORDER_ONE)
def test_weak_euler_has_weak_order_one_for_laws_satisfying_condition_5(sde_name, law_name):
    sde = weak.get_sde(sde_name)
    law = get_law(law_name)  # drop at p = ½
    res = weak.weak_order(sde, WeakEuler(law), paths=PATHS[sde_name], seed=1)
    assert res["declared_weak_order"] == 1.0
    _check_order(res, 1.0, sde)


def test_stochastic_depth_at_p_08_has_weak_order_one_half():
    sde = OU()
    res = weak.weak_order(sde, WeakEuler(DropBernoulli(0.8)), paths=1_000_000, seed=2)
    assert res["declared_weak_order"] == 0.5
    _check_order(res, 0.5, sde)
    # and it is resolved: the interval excludes order 1
    assert res["slope_ci"][1] < 0.8


def test_euler_maruyama_weak_order_and_phi_option():
    res = weak.weak_order(GBM(), EulerMaruyama(), paths=300_000, phi=2, seed=3)
    assert res["scheme"] == "euler_maruyama" and res["phi"] == "x^2"
    _check_order(res, 1.0, GBM())


def test_weak_order_refuses_schemes_that_cannot_run_the_sde():
    with pytest.raises(ValueError, match="constant float g"):  # its limit needs one g
        weak.weak_order(OU(), StochasticLM(g=lambda n: 0.0, law=Gaussian()), paths=10)
    with pytest.raises(ValueError, match="deterministic"):
        weak.weak_order(OU(), Euler(), paths=10)
    with pytest.raises(ValueError, match="whole number"):
        weak.weak_order(OU(), WeakEuler(), dts=[0.3, 0.1], paths=10)
    with pytest.raises(ValueError, match="paths"):
        weak.weak_order(OU(), WeakEuler(), paths=1)
    with pytest.raises(ValueError, match="two dts"):
        weak.weak_order(OU(), WeakEuler(), dts=[0.1], paths=10)


def test_weak_order_is_reproducible_from_its_seed():
    a = weak.weak_order(OU(), WeakEuler(Rademacher()), dts=[0.5, 0.25], paths=1000, seed=7)
    b = weak.weak_order(OU(), WeakEuler(Rademacher()), dts=[0.5, 0.25], paths=1000, seed=7, chunk=300)
    c = weak.weak_order(OU(), WeakEuler(Rademacher()), dts=[0.5, 0.25], paths=1000, seed=8)
    assert a["estimates"] != c["estimates"]
    # chunking changes how draws are split, not the estimator: same law of the result
    assert abs(a["estimates"][0] - b["estimates"][0]) <= 5 * math.hypot(a["stderr"][0], b["stderr"][0])


def test_euler_maruyama_has_strong_order_one_half():
    res = weak.strong_error(GBM(mu=0.05, sigma=0.5), paths=20_000, seed=0)
    assert res["slope"] == pytest.approx(0.5, abs=0.15), res
    assert all(e > 10 * se for e, se in zip(res["errors"], res["stderr"]))


def test_strong_error_needs_nested_grids():
    with pytest.raises(ValueError, match="multiple"):
        weak.strong_error(GBM(), dts=[0.5, 0.2], paths=10)


# --------------------------------------------------------------------------- interop


def test_torchsde_sdeint_of_the_gbm_field_agrees_with_euler_maruyama():
    sde = GBM(mu=0.8, sigma=0.5, x0=1.0, T=1.0)
    field, dt, paths = sde.field(), 0.05, 20_000
    y0 = torch.full((paths, 1), sde.x0, dtype=torch.float64)
    ts = torch.tensor([0.0, sde.T], dtype=torch.float64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=sde.T, size=(paths, 1), dtype=torch.float64, entropy=123)
    with torch.no_grad():
        ys = torchsde.sdeint(field.to_torchsde(), y0, ts, bm=bm, method="euler", dt=dt)
        ours = integrate(field, EulerMaruyama(), y0, t1=sde.T, dt=dt, generator=gen(0))
    a, b = ys[-1], ours
    se = math.hypot(a.std().item(), b.std().item()) / math.sqrt(paths)
    assert abs(a.mean().item() - b.mean().item()) <= 5 * se
    # both estimate the exact E X_N = x0 (1 + μΔt)^N of Euler–Maruyama
    target = sde.scheme_expectation(Gaussian(), dt, 1)
    for x in (a, b):
        assert abs(x.mean().item() - target) <= 5 * x.std().item() / math.sqrt(paths)


def test_torchdiffeq_odeint_of_an_ode_field_agrees_with_heun():
    field = ODEField(lambda t, x: x * (1 - x) + 0.3 * torch.sin(3 * torch.as_tensor(t, dtype=x.dtype)) * x)
    x0 = torch.tensor([[0.2], [0.5], [1.7]], dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ref = torchdiffeq.odeint(field.to_torchdiffeq(), x0, ts, method="dopri5", rtol=1e-11, atol=1e-12)[-1]
    errors = []
    for steps in (250, 500, 1000):
        ours = integrate(field, Heun(), x0, t1=1.0, steps=steps)
        errors.append((ours - ref).abs().max().item())
    assert errors[-1] < 1e-6
    slope, _ = weak.fit_slope([1 / 250, 1 / 500, 1 / 1000], errors)
    assert slope == pytest.approx(2.0, abs=0.1)  # Heun is second order against the torchdiffeq solution


def test_default_ladders_sit_in_the_asymptotic_regime_of_the_exact_bias():
    """The premise of the defaults, from closed forms: over each SDE's default ladder the
    bias of x³ has slope ≈ 1 for laws meeting condition (5), and on OU ≈ ½ for p = 0.8."""
    for sde in (GBM(), OU()):
        dts = [sde.T / n for n in sde.default_steps]
        bias = [abs(sde.scheme_expectation(Uniform(), dt, 3) - sde.exact(3)) for dt in dts]
        assert weak.fit_slope(dts, bias)[0] == pytest.approx(1.0, abs=0.05)
    sde = OU()
    dts = [sde.T / n for n in sde.default_steps]
    bias = [abs(sde.scheme_expectation(DropBernoulli(0.8), dt, 3) - sde.exact(3)) for dt in dts]
    assert weak.fit_slope(dts, bias)[0] == pytest.approx(0.5, abs=0.05)
