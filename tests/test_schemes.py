"""Schemes as numerics: orders fitted against closed forms, exact identities, metadata, bad input.

Deterministic orders are the slope of ``log error`` against ``log Δt`` on ODEs with closed
forms (linear, forced linear, logistic, harmonic oscillator), and must lie within ±0.15 of
the declared ``scheme.order``. Strong and weak orders of the stochastic schemes are fitted in
tests/test_weak.py; here the weak-order *metadata* is checked against the docstrings.
"""

import math

import numpy as np
import pytest
import torch

import sdenet as sn
from sdenet.schemes import register_scheme
from sdenet.schemes.registry import registered

F64 = torch.float64
STEPS = (16, 32, 64, 128, 256)
FINE = (64, 128, 256, 512, 1024)  # for problems whose error constant changes sign or decays late


def slope(dts, errs):
    errs = np.asarray(errs, dtype=float)
    assert (errs > 0).all(), errs
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


# ------------------------------------------------------------------ ODEs with closed forms

LAM = torch.tensor([-0.8, 0.5], dtype=F64)


def _linear():
    x0 = torch.tensor([[1.0, 1.0], [-0.5, 2.0]], dtype=F64)
    return (lambda t, x: LAM * x), x0, 0.0, 1.0, (lambda t0, t1, x0: x0 * torch.exp(LAM * (t1 - t0)))


def _forced():
    # u' = −u + sin t: u(t) = (sin t − cos t)/2 + (u0 − u_p(t0)) e^{−(t − t0)}
    def u_p(t):
        return (math.sin(t) - math.cos(t)) / 2

    x0 = torch.tensor([[0.3], [-1.0], [2.0]], dtype=F64)
    exact = lambda t0, t1, x0: u_p(t1) + (x0 - u_p(t0)) * math.exp(-(t1 - t0))  # noqa: E731
    return (lambda t, x: -x + math.sin(t)), x0, 0.3, 1.8, exact


def _logistic(rate=1.0):
    # u' = r u(1 − u): u(t) = u0 e^{r t}/(1 − u0 + u0 e^{r t})
    def exact(t0, t1, x0):
        e = torch.exp(rate * torch.as_tensor(t1 - t0, dtype=F64))
        return x0 * e / (1 - x0 + x0 * e)

    x0 = torch.tensor([[0.1], [0.5], [0.9]], dtype=F64)
    return (lambda t, x: x * (1 - x)), x0, 0.0, 2.0, exact


PROBLEMS = {"linear": _linear, "forced": _forced, "logistic": _logistic}


def errors(scheme, f, x0, t0, t1, exact, steps=STEPS):
    field = sn.ODEField(f)
    errs, dts = [], []
    for n in steps:
        x = sn.integrate(field, scheme, x0, t0=t0, t1=t1, steps=n)
        errs.append((x - exact(t0, t1, x0)).abs().max().item())
        dts.append((t1 - t0) / n)
    return dts, errs


ORDER_SCHEMES = [
    sn.Euler(),
    sn.Heun(),
    sn.NeumannEuler(terms=1),
    sn.NeumannEuler(terms=2),
    sn.NeumannEuler(terms=3),
    sn.LinearMultistep(k=0.0),
]


@pytest.mark.parametrize("scheme", ORDER_SCHEMES, ids=repr)
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_deterministic_order(scheme, problem):
    f, x0, t0, t1, exact = PROBLEMS[problem]()
    dts, errs = errors(scheme, f, x0, t0, t1, exact)
    assert abs(slope(dts, errs) - scheme.order) <= 0.15, (dts, errs)


def test_declared_orders():
    assert sn.Euler().order == 1
    assert sn.Heun().order == 2
    assert all(sn.NeumannEuler(terms=m).order == 1 for m in (1, 2, 3))
    assert sn.LinearMultistep(0.3).order == 1
    assert sn.CoupledEuler().order == 1
    assert sn.StochasticLM().order == 1


def test_neumann_step_is_truncated_series_on_linear_field():
    """On ``F(u) = λu`` one step is ``u Σ_{j≤m} (Δtλ)^j``, the cut geometric series of backward Euler."""
    field = sn.ODEField(lambda t, x: LAM * x)
    x = torch.tensor([[1.0, -2.0]], dtype=F64)
    dt = 0.3
    for m in (1, 2, 3, 5):
        out, _ = sn.NeumannEuler(terms=m).step(field, 0.0, x, dt, None)
        series = sum((dt * LAM) ** j for j in range(m + 1))
        torch.testing.assert_close(out, x * series, rtol=1e-15, atol=1e-15)
    # and the series converges to backward Euler (I − Δt λ)^{-1} u as m grows
    out, _ = sn.NeumannEuler(terms=60).step(field, 0.0, x, dt, None)
    torch.testing.assert_close(out, x / (1 - dt * LAM), rtol=1e-14, atol=1e-14)


def test_neumann_terms_one_is_euler():
    f, x0, t0, t1, _ = _logistic()
    field = sn.ODEField(f)
    a = sn.integrate(field, sn.NeumannEuler(terms=1), x0, t0=t0, t1=t1, steps=20)
    b = sn.integrate(field, sn.Euler(), x0, t0=t0, t1=t1, steps=20)
    assert torch.equal(a, b)


# ------------------------------------------------------------------ LinearMultistep


def _nonlinear_field(dtype=F64):
    w = torch.tensor([[0.5, -1.0, 0.2], [0.3, 0.1, -0.7], [1.1, 0.4, 0.0]], dtype=dtype)
    return sn.ODEField(lambda t, x: torch.tanh(x @ w) * math.cos(t) - 0.1 * x**3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lm_with_k_zero_is_euler_bit_for_bit(dtype):
    field = _nonlinear_field(dtype)
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    for k in (0.0, 0, torch.zeros(3, dtype=dtype)):
        lm = sn.integrate(field, sn.LinearMultistep(k=k), x0, t1=1.5, steps=37, save="all")
        eu = sn.integrate(field, sn.Euler(), x0, t1=1.5, steps=37, save="all")
        assert torch.equal(lm, eu)


def _logistic_rate_k(k):
    """Logistic ``u' = u(1−u)`` and the exact solution of ``u' = u(1−u)/(1+k)`` (per component)."""
    k = torch.as_tensor(k, dtype=F64)
    rate = 1.0 / (1.0 + k)
    x0 = torch.tensor([[0.1, 0.4, 0.7], [0.6, 0.2, 0.9]], dtype=F64)

    def exact(rate):
        return lambda t0, t1, x0: (
            x0 * torch.exp(rate * (t1 - t0)) / (1 - x0 + x0 * torch.exp(rate * (t1 - t0)))
        )

    return (lambda t, x: x * (1 - x)), x0, 0.0, 3.0, exact(rate), exact(torch.ones_like(rate))


@pytest.mark.parametrize(
    "k",
    [-0.05, 0.3, -0.5, torch.tensor([-0.05, 0.3, 0.1], dtype=F64)],
    ids=["-0.05", "0.3", "-0.5", "tensor"],
)
def test_lm_is_consistent_with_f_over_one_plus_k(k):
    """``u_{n+1} = (1−k)u_n + k u_{n−1} + Δt f`` converges (order 1) to ``u' = f/(1+k)``, not to ``u' = f``."""
    f, x0, t0, t1, exact_k, exact_f = _logistic_rate_k(k)
    scheme = sn.LinearMultistep(k=k)
    dts, errs = errors(scheme, f, x0, t0, t1, exact_k, steps=FINE)
    assert abs(slope(dts, errs) - 1.0) <= 0.15, errs
    _, errs_f = errors(scheme, f, x0, t0, t1, exact_f, steps=FINE)
    gap = (exact_k(t0, t1, x0) - exact_f(t0, t1, x0)).abs().max().item()
    # against u' = f the error stalls at the gap between the two solutions
    assert errs_f[-1] > 0.9 * gap and errs_f[-1] > 0.8 * errs_f[0], errs_f
    assert errs[-1] < 0.05 * errs_f[-1]


def test_lm_linear_field_against_exponential_of_lambda_over_one_plus_k():
    k = 0.3
    f, x0, t0, t1, _ = _linear()
    exact = lambda t0, t1, x0: x0 * torch.exp(LAM / (1 + k) * (t1 - t0))  # noqa: E731
    dts, errs = errors(sn.LinearMultistep(k=k), f, x0, t0, t1, exact)
    assert abs(slope(dts, errs) - 1.0) <= 0.15, errs


def test_lm_recursion_and_callable_k():
    """The step is ``(1−k_n) u_n + k_n u_{n−1} + Δt f(t_n, u_n)`` with the first step Euler."""
    field = _nonlinear_field()
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    ks = [None, 0.2, -0.1, 0.05, 0.4]
    dt = 0.25
    path = sn.integrate(field, sn.LinearMultistep(k=lambda n: ks[n]), x0, steps=5, dt=dt, save="all")
    u = [x0, x0 + dt * field.drift(0.0, x0)]
    for n in range(1, 5):
        u.append((1 - ks[n]) * u[n] + ks[n] * u[n - 1] + dt * field.drift(n * dt, u[n]))
    torch.testing.assert_close(path, torch.stack(u), rtol=1e-13, atol=1e-13)


def test_lm_state_travels_in_state_not_on_object():
    scheme = sn.LinearMultistep(k=0.3)
    field = _nonlinear_field()
    x0 = torch.randn(2, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    a = sn.integrate(field, scheme, x0, t1=1.0, steps=10)
    sn.integrate(field, scheme, x0 * 3, t1=1.0, steps=7)  # another run in between
    b = sn.integrate(field, scheme, x0, t1=1.0, steps=10)
    assert torch.equal(a, b)
    assert scheme.init(field, 0.0, x0, 0.1) == {"prev": None, "n": 0}


# ------------------------------------------------------------------ CoupledEuler


def _oscillator():
    return sn.CoupledField(lambda t, y: y, lambda t, x: -x)


def test_coupled_euler_order_one_on_harmonic_oscillator():
    field = _oscillator()
    x0 = torch.tensor([[1.0], [0.0], [0.5]], dtype=F64)
    y0 = torch.tensor([[0.0], [1.0], [-2.0]], dtype=F64)
    T = 2.0
    xe = x0 * math.cos(T) + y0 * math.sin(T)
    ye = -x0 * math.sin(T) + y0 * math.cos(T)
    errs, dts = [], []
    for n in STEPS:
        x, y = sn.integrate(field, sn.CoupledEuler(), (x0, y0), t1=T, steps=n)
        errs.append(max((x - xe).abs().max().item(), (y - ye).abs().max().item()))
        dts.append(T / n)
    assert abs(slope(dts, errs) - sn.CoupledEuler.order) <= 0.15, errs


def test_coupled_euler_inverse_recovers_previous_state():
    g = torch.Generator().manual_seed(3)
    w1 = torch.randn(4, 4, generator=g, dtype=F64)
    w2 = torch.randn(4, 4, generator=g, dtype=F64)
    field = sn.CoupledField(lambda t, y: torch.tanh(y @ w1) * (1 + t), lambda t, x: torch.sin(x @ w2))
    x = torch.randn(6, 4, generator=g, dtype=F64)
    y = torch.randn(6, 4, generator=g, dtype=F64)
    t, dt = 0.7, 0.5
    (x1, y1), _ = sn.CoupledEuler().step(field, t, (x, y), dt, None)
    assert (x1 - x).abs().max() > 1e-2 and (y1 - y).abs().max() > 1e-2
    xb, yb = sn.CoupledEuler.inverse(field, t, (x1, y1), dt)
    torch.testing.assert_close(xb, x, rtol=0, atol=1e-14)
    torch.testing.assert_close(yb, y, rtol=0, atol=1e-14)
    # many steps forward then back
    state = (x, y)
    for n in range(20):
        state, _ = sn.CoupledEuler().step(field, n * 0.1, state, 0.1, None)
    for n in reversed(range(20)):
        state = sn.CoupledEuler.inverse(field, n * 0.1, state, 0.1)
    torch.testing.assert_close(state[0], x, rtol=0, atol=1e-12)
    torch.testing.assert_close(state[1], y, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ StochasticLM


def _block():
    w = torch.tensor(
        [[0.9, -0.4, 0.3, 0.0], [0.2, 0.5, -1.0, 0.6], [0.0, 0.8, 0.1, -0.3], [-0.7, 0.2, 0.4, 0.5]],
        dtype=F64,
    )
    return lambda x: torch.tanh(x @ w) + 0.1


@pytest.mark.parametrize("p", [0.5, 0.8])
@pytest.mark.parametrize(
    "g",
    [0.0, -0.3, torch.tensor([-0.2, 0.1, 0.0, -0.5], dtype=F64), "callable"],
    ids=["0", "-0.3", "tensor", "callable"],
)
def test_stochastic_lm_at_dt_one_is_the_papers_recursion(p, g):
    """At Δt = 1 with DropBernoulli(p): ``X_{n+1} = (2+g_n) X_n − (1+g_n) X_{n−1} + η_n f(X_n)``, ``X_{−1} = X_0``."""
    f = _block()
    field = sn.SDEField(lambda t, x: p * f(x), lambda t, x: math.sqrt(p * (1 - p)) * f(x), noise="sample")
    law = sn.DropBernoulli(p)
    gs = [0.1 * ((-1) ** n) - 0.2 for n in range(12)]
    g_arg = (lambda n: gs[n]) if g == "callable" else g
    g_of = (lambda n: gs[n]) if g == "callable" else (lambda n: g)
    x0 = torch.randn(16, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    steps, seed = 12, 123
    path = sn.integrate(
        field,
        sn.StochasticLM(g=g_arg, law=law),
        x0,
        steps=steps,
        dt=1.0,
        generator=torch.Generator().manual_seed(seed),
        save="all",
    )
    # recompute the η's: one law.sample per step of shape (B, 1) in x's dtype, from the same seed
    gen = torch.Generator().manual_seed(seed)
    etas = [law.sample_eta((16, 1), generator=gen, dtype=F64) for _ in range(steps)]
    flat = torch.cat(etas)
    assert (flat == 0).any() and (flat == 1).any()
    xs = [x0]
    prev = x0
    for n in range(steps):
        x = xs[-1]
        xs.append((2 + g_of(n)) * x - (1 + g_of(n)) * prev + etas[n] * f(x))
        prev = x
    torch.testing.assert_close(path, torch.stack(xs), rtol=1e-12, atol=1e-12)


def test_stochastic_lm_first_step_is_stochastic_depth():
    f = _block()
    p = 0.7
    field = sn.SDEField(lambda t, x: p * f(x), lambda t, x: math.sqrt(p * (1 - p)) * f(x), noise="sample")
    x0 = torch.randn(8, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    a = sn.integrate(
        field,
        sn.StochasticLM(g=-0.4, law=sn.DropBernoulli(p)),
        x0,
        steps=1,
        dt=1.0,
        generator=torch.Generator().manual_seed(6),
    )
    b = sn.integrate(
        field,
        sn.WeakEuler(sn.DropBernoulli(p)),
        x0,
        steps=1,
        dt=1.0,
        generator=torch.Generator().manual_seed(6),
    )
    torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


def _zero_noise_oscillator():
    return sn.SDEField(lambda t, x: -x, lambda t, x: torch.zeros_like(x))


@pytest.mark.parametrize("law", [sn.Gaussian(), sn.Rademacher()], ids=repr)
def test_stochastic_lm_without_noise_is_order_one_for_second_order_ode(law):
    """g = 0, zero diffusion: consistent with ``X'' = f`` = −X from rest, ``X = x0 cos t``."""
    field = _zero_noise_oscillator()
    x0 = torch.tensor([[1.0], [-0.5]], dtype=F64)
    T = 2.0
    errs, dts = [], []
    for n in STEPS:
        x = sn.integrate(
            field,
            sn.StochasticLM(g=0.0, law=law),
            x0,
            t1=T,
            steps=n,
            generator=torch.Generator().manual_seed(n),
        )
        errs.append((x - x0 * math.cos(T)).abs().max().item())
        dts.append(T / n)
    assert abs(slope(dts, errs) - sn.StochasticLM.order) <= 0.15, errs


def test_stochastic_lm_friction_sign():
    """With g ≠ 0 the limit is ``X'' = f + g X'``: g = −½ damps ``X'' = −X``."""
    field = _zero_noise_oscillator()
    g = -0.5
    x0 = torch.tensor([[1.0]], dtype=F64)
    T = 3.0
    w = math.sqrt(1 - g * g / 4)
    exact = x0 * math.exp(g / 2 * T) * (math.cos(w * T) - g / 2 / w * math.sin(w * T))
    errs, dts = [], []
    for n in FINE:
        x = sn.integrate(
            field, sn.StochasticLM(g=g), x0, t1=T, steps=n, generator=torch.Generator().manual_seed(0)
        )
        errs.append((x - exact).abs().max().item())
        dts.append(T / n)
    assert abs(slope(dts, errs) - 1.0) <= 0.15, errs


# ------------------------------------------------------------------ weak-order metadata


@pytest.mark.parametrize(
    "scheme, weak",
    [
        (sn.WeakEuler(), 1.0),
        (sn.WeakEuler(sn.Gaussian()), 1.0),
        (sn.WeakEuler(sn.Uniform()), 1.0),
        (sn.WeakEuler(sn.Rademacher()), 1.0),
        (sn.WeakEuler(sn.ThreePoint()), 1.0),
        (sn.WeakEuler(sn.DropBernoulli(0.5)), 1.0),
        (sn.WeakEuler(sn.DropBernoulli(0.8)), 0.5),
        (sn.WeakEuler(sn.DropBernoulli(0.2)), 0.5),
        (sn.EulerMaruyama(), 1.0),
        (sn.StochasticLM(law=sn.DropBernoulli(0.8)), 0.5),
        (sn.StochasticLM(law=sn.DropBernoulli(0.5)), 1.0),
        (sn.StochasticLM(law=sn.Uniform()), 1.0),
    ],
    ids=repr,
)
def test_weak_order_metadata(scheme, weak):
    assert scheme.weak_order == weak


def test_law_weak_orders_and_strong_order_metadata():
    assert sn.Gaussian().weak_order == 2.0
    assert sn.ThreePoint().weak_order == 2.0
    assert sn.Uniform().weak_order == 1.0 and sn.Rademacher().weak_order == 1.0
    assert sn.DropBernoulli(0.5).weak_order == 1.0 and sn.DropBernoulli(0.9).weak_order == 0.5
    assert sn.EulerMaruyama().strong_order == 0.5
    assert sn.WeakEuler(sn.Rademacher()).strong_order is None
    for s in (sn.Euler(), sn.Heun(), sn.NeumannEuler(), sn.LinearMultistep(), sn.CoupledEuler()):
        assert s.weak_order is None and s.strong_order is None and not s.stochastic
    assert sn.CoupledEuler().coupled and not sn.Euler().coupled
    assert sn.WeakEuler().stochastic and sn.StochasticLM().stochastic


def test_weak_euler_default_law_is_gaussian():
    assert sn.WeakEuler().law == sn.Gaussian()
    assert sn.EulerMaruyama().law == sn.Gaussian()


# ------------------------------------------------------------------ check() and constructors


ODE = sn.ODEField(lambda t, x: -x)
SDE = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones_like(x))
COUPLED = sn.CoupledField(lambda t, y: y, lambda t, x: -x)


@pytest.mark.parametrize(
    "scheme", [sn.Euler(), sn.Heun(), sn.NeumannEuler(), sn.LinearMultistep(0.1)], ids=repr
)
def test_deterministic_scheme_refuses_sde_and_coupled(scheme):
    scheme.check(ODE)
    with pytest.raises(ValueError, match="deterministic"):
        scheme.check(SDE)
    with pytest.raises(ValueError, match="CoupledField"):
        scheme.check(COUPLED)


@pytest.mark.parametrize(
    "scheme", [sn.WeakEuler(sn.Uniform()), sn.EulerMaruyama(), sn.StochasticLM()], ids=repr
)
def test_stochastic_scheme_refuses_ode_and_coupled(scheme):
    scheme.check(SDE)
    with pytest.raises(ValueError, match="stochastic field"):
        scheme.check(ODE)
    with pytest.raises(ValueError, match="CoupledField"):
        scheme.check(COUPLED)


def test_coupled_euler_refuses_single_states():
    sn.CoupledEuler().check(COUPLED)
    for field in (ODE, SDE):
        with pytest.raises(ValueError, match="CoupledField"):
            sn.CoupledEuler().check(field)


@pytest.mark.parametrize("scheme", [sn.Euler(), sn.WeakEuler(), sn.CoupledEuler()], ids=repr)
@pytest.mark.parametrize(
    "thing", [lambda t, x: -x, torch.nn.Linear(2, 2), None, "euler"], ids=["lambda", "module", "None", "str"]
)
def test_check_refuses_non_fields(scheme, thing):
    with pytest.raises(ValueError, match="Field"):
        scheme.check(thing)


@pytest.mark.parametrize("terms", [0, -1, 1.5, True, "2", None])
def test_neumann_bad_terms(terms):
    with pytest.raises(ValueError, match=repr(terms).replace("(", r"\(").replace(".", r"\.")):
        sn.NeumannEuler(terms=terms)


@pytest.mark.parametrize("k", ["abc", float("inf"), float("nan"), None, [0.1, 0.2]])
def test_lm_bad_k(k):
    with pytest.raises(ValueError, match="k must"):
        sn.LinearMultistep(k=k)


def test_stochastic_lm_bad_g_and_bad_law():
    with pytest.raises(ValueError, match="g must"):
        sn.StochasticLM(g="abc")
    with pytest.raises(ValueError, match="NoiseLaw"):
        sn.WeakEuler("gaussian")
    with pytest.raises(ValueError, match="NoiseLaw"):
        sn.StochasticLM(law=torch.randn)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("euler", sn.Euler),
        ("forward-euler", sn.Euler),
        ("heun", sn.Heun),
        ("neumann", sn.NeumannEuler),
        ("lm", sn.LinearMultistep),
        ("coupled", sn.CoupledEuler),
        ("revnet", sn.CoupledEuler),
        ("euler_maruyama", sn.EulerMaruyama),
        ("em", sn.EulerMaruyama),
        ("weak_euler", sn.WeakEuler),
        ("weak-euler", sn.WeakEuler),
        ("stochastic_lm", sn.StochasticLM),
        ("LM_SD", sn.StochasticLM),
    ],
)
def test_get_scheme_names(name, cls):
    assert type(sn.get_scheme(name)) is cls


def test_get_scheme_every_listed_name_builds_and_passes_options():
    for name in sn.SCHEME_NAMES:
        assert isinstance(sn.get_scheme(name), sn.Scheme)
    assert sn.get_scheme("weak_euler", law=sn.Uniform()).law == sn.Uniform()
    assert sn.get_scheme("stochastic_lm", law=sn.DropBernoulli(0.8), g=-0.1).g == -0.1
    assert sn.get_scheme("lm", k=0.25).k == 0.25
    assert sn.get_scheme("neumann", terms=3).terms == 3


def test_get_scheme_unknown_and_wrong_law():
    with pytest.raises(ValueError, match="rk4"):
        sn.get_scheme("rk4")
    with pytest.raises(ValueError, match="Gaussian"):
        sn.get_scheme("euler_maruyama", law=sn.Uniform())


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("euler", dict(k=0.3), "takes no options; got k"),
        ("heun", dict(terms=2), "takes no options"),
        ("neumann", dict(k=0.1), "takes only terms; got k"),
        ("lm", dict(terms=2, g=1), "takes only k; got g, terms"),
        ("stochastic_lm", dict(k=0.1), "takes only g; got k"),
        ("weak_euler", dict(g=0.1), "takes no options"),
        ("neumann", dict(terms=0), "terms must be"),
    ],
)
def test_get_scheme_bad_options(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sn.get_scheme(name, **kwargs)


# ---------------------------------------------------------------- generated from the registry

REGISTERED = sorted(registered().items())


@pytest.mark.parametrize("name, entry", REGISTERED, ids=[n for n, _ in REGISTERED])
def test_every_registered_name_builds_with_and_without_a_law(name, entry):
    assert type(sn.get_scheme(name)) is entry.cls
    assert type(sn.get_scheme(name.upper().replace("_", "-"))) is entry.cls
    assert type(sn.get_scheme(name, law=sn.Gaussian())) is entry.cls
    other = sn.Uniform()
    if entry.takes_law:
        s = sn.get_scheme(name, law=other)
        assert type(s) is entry.cls and s.law == other
    elif entry.refuse(name, other) is not None:  # only Gaussian increments: the scheme says so
        with pytest.raises(ValueError, match="uses Gaussian increments"):
            sn.get_scheme(name, law=other)
    else:  # takes no law: a given one is not passed on
        assert type(sn.get_scheme(name, law=other)) is entry.cls


@pytest.mark.parametrize("name, entry", REGISTERED, ids=[n for n, _ in REGISTERED])
def test_every_registered_name_refuses_an_unknown_option_by_name(name, entry):
    with pytest.raises(ValueError, match=f"scheme '{name}' takes .*; got not_an_option$"):
        sn.get_scheme(name, not_an_option=1)


def test_the_registry_lists_one_name_per_scheme():
    table = registered()
    listed = [table[n].cls for n in sn.SCHEME_NAMES]
    assert len(set(listed)) == len(listed) == len({e.cls for e in table.values()})
    assert all(n == table[n].cls.aliases[0] for n in sn.SCHEME_NAMES)  # each class's first alias
    assert sn.SCHEME_NAMES == tuple(sn.SCHEME_NAMES) and "srk" in sn.SCHEME_NAMES


def test_register_scheme_refuses_a_taken_name_and_inherited_aliases():
    class Mine(sn.Scheme):
        aliases = ("euler",)

    with pytest.raises(ValueError, match="already Euler's"):
        register_scheme(Mine)

    class Sub(sn.Euler):
        pass

    with pytest.raises(ValueError, match="no aliases of its own"):
        register_scheme(Sub)
    assert type(sn.get_scheme("euler")) is sn.Euler
