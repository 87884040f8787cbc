"""Weak order 2 (Platen, weak Taylor 2), Milstein, Talay–Tubaro extrapolation, given increments
and general noise. Orders are fitted slopes of exact scheme expectations (no Monte Carlo
error) on GBM, OU and the nonlinear arctan SDE; Monte Carlo tests check that the sampled
schemes have those expectations, within standard errors."""

import math

import numpy as np
import pytest
import torch
import torchsde

import sdenet as sn
from sdenet import linear, weak

F64 = torch.float64
GBM = weak.GBM(mu=-0.5, sigma=1.0)
OU = weak.OU(theta=1.0, sigma=0.5)


def slope(ns, errors):
    """Least-squares slope of log|error| on log Δt, Δt = 1/n."""
    return float(np.polyfit(np.log([1.0 / n for n in ns]), np.log(np.abs(errors)), 1)[0])


def ou_cos_exact(ou=OU):
    return math.cos(ou.mean()) * math.exp(-ou.variance() / 2)


# ---------------------------------------------------------------- laws: moments, coupling


@pytest.mark.parametrize(
    "law",
    [
        sn.Gaussian(),
        sn.Uniform(),
        sn.Rademacher(),
        sn.ThreePoint(),
        sn.DropBernoulli(0.5),
        sn.DropBernoulli(0.8),
    ],
)
def test_moment_and_characteristic_agree_with_moments_and_samples(law):
    dt = 0.3
    assert [law.moment(k, dt) for k in range(1, 5)] == pytest.approx(
        list(law.moments(dt)), rel=1e-12, abs=1e-15
    )
    g = torch.Generator().manual_seed(0)
    w = law.sample((400_000,), dt, generator=g, dtype=F64)
    for s in (0.7, 2.0):
        z = torch.exp(1j * s * w.to(torch.complex128))
        est, se = z.mean(), z.real.std() / math.sqrt(w.numel())
        phi = law.characteristic(s, dt)
        assert abs(est.real - phi.real) < 5 * se + 1e-12
        assert abs(est.imag - phi.imag) < 5 * z.imag.std() / math.sqrt(w.numel()) + 1e-12


@pytest.mark.parametrize(
    "law", [sn.Gaussian(), sn.Uniform(), sn.Rademacher(), sn.ThreePoint(), sn.DropBernoulli(0.8)]
)
def test_from_gaussian_has_the_law(law):
    dt = 0.25
    g = torch.Generator().manual_seed(1)
    dw = torch.randn(500_000, generator=g, dtype=F64) * math.sqrt(dt)
    w = law.from_gaussian(dw, dt)
    for k in range(1, 7):
        v = w**k
        assert abs(v.mean().item() - law.moment(k, dt)) < 5 * v.std().item() / math.sqrt(v.numel()) + 1e-12
    # a nondecreasing function of the Brownian increment
    order = torch.argsort(dw)
    assert bool((w[order].diff() >= -1e-12).all())


def test_from_gaussian_exact_maps():
    dt = 0.25
    dw = torch.tensor([-2.0, -0.49, -0.48, 0.0, 0.48, 0.49, 2.0], dtype=F64)  # q_{5/6}·√Δt = 0.4837
    assert sn.Rademacher().from_gaussian(dw, dt).tolist() == [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5]
    a = math.sqrt(0.75)
    assert sn.ThreePoint().from_gaussian(dw, dt).tolist() == [-a, -a, 0.0, 0.0, 0.0, a, a]
    assert sn.Gaussian().from_gaussian(dw, dt) is dw
    with pytest.raises(ValueError, match="non-negative integer"):
        sn.Gaussian().moment(-1, dt)


# ---------------------------------------------------------------- declared orders


def test_declared_orders():
    assert sn.Platen().weak_order == 2 and sn.Platen(sn.Gaussian()).weak_order == 2
    assert sn.Platen(sn.Rademacher()).weak_order == 1 and sn.Platen(sn.Uniform()).weak_order == 1
    assert sn.Platen(sn.DropBernoulli(0.8)).weak_order == 0.5
    assert sn.WeakTaylor2(sn.ThreePoint()).weak_order == 2
    assert sn.Milstein().strong_order == 1 and sn.Milstein().weak_order == 1
    assert sn.Platen().order == 2 and sn.Platen().lookahead == 1 and sn.Heun.lookahead == 1
    assert isinstance(sn.Platen().mean_scheme(), sn.Heun) and isinstance(
        sn.Milstein().mean_scheme(), sn.Euler
    )
    assert not isinstance(sn.Platen(), sn.WeakEuler)  # weak Euler's closed forms do not apply to it
    assert type(sn.get_scheme("platen", law=sn.Gaussian())) is sn.Platen
    assert type(sn.get_scheme("milstein", derivative="difference")) is sn.Milstein
    with pytest.raises(ValueError, match="Gaussian"):
        sn.get_scheme("milstein", law=sn.Rademacher())
    with pytest.raises(ValueError, match="derivative"):
        sn.Milstein("numeric")


# ---------------------------------------------------------------- exact weak orders, linear SDEs

LADDER = (16, 32, 64, 128)


@pytest.mark.parametrize("law", [sn.Gaussian(), sn.ThreePoint()])
@pytest.mark.parametrize("cls", [sn.Platen, sn.WeakTaylor2])
def test_weak_order_two_exact_gbm_and_ou(cls, law):
    scheme = cls(law)
    # GBM, φ = x² (feels E ΔŴ⁴) and x³
    for k in (2, 3):
        errs = [linear.scheme_moment(GBM.field(), scheme, 1.0, 1.0, 1 / n, k) - GBM.exact(k) for n in LADDER]
        assert slope(LADDER, errs) == pytest.approx(2.0, abs=0.08)
    # OU, φ = cos through the characteristic function
    errs = [linear.scheme_cos(OU.field(), scheme, 1.0, 1.0, 1 / n) - ou_cos_exact() for n in LADDER]
    assert slope(LADDER, errs) == pytest.approx(2.0, abs=0.08)


@pytest.mark.parametrize("law", [sn.Rademacher(), sn.Uniform()])
def test_platen_with_a_law_that_only_meets_condition_5_is_order_one(law):
    ladder = (256, 512, 1024, 2048)
    errs = [
        linear.scheme_moment(GBM.field(), sn.Platen(law), 1.0, 1.0, 1 / n, 2) - GBM.exact(2) for n in ladder
    ]
    assert slope(ladder, errs) == pytest.approx(1.0, abs=0.05) == sn.Platen(law).weak_order
    errs = [linear.scheme_cos(OU.field(), sn.Platen(law), 1.0, 1.0, 1 / n) - ou_cos_exact() for n in ladder]
    assert slope(ladder, errs) == pytest.approx(1.0, abs=0.05)


def test_cos_separates_the_laws_under_weak_euler():
    """φ = x³ on OU sees only moments ≤ 3 (shared by every symmetric law); cos sees them all."""
    dt = 0.25
    laws = [sn.Gaussian(), sn.Uniform(), sn.Rademacher(), sn.ThreePoint()]
    cubes = [linear.scheme_moment(OU.field(), sn.WeakEuler(law), 1.0, 1.0, dt, 3) for law in laws]
    assert max(cubes) - min(cubes) < 1e-12
    coses = [linear.scheme_cos(OU.field(), sn.WeakEuler(law), 1.0, 1.0, dt) for law in laws]
    # Gaussian, uniform and Rademacher differ (E ΔŴ⁴ = 3, 9/5, 1 Δt²); three-point matches the
    # Gaussian up to the fifth moment, so under weak Euler they differ only at O(Δt³) per step
    assert min(abs(a - b) for i, a in enumerate(coses[:3]) for b in coses[i + 1 : 3]) > 1e-4
    assert 0 < abs(coses[0] - coses[3]) < 1e-5
    ladder = (64, 128, 256, 512)
    for law in laws:
        errs = [
            linear.scheme_cos(OU.field(), sn.WeakEuler(law), 1.0, 1.0, 1 / n) - ou_cos_exact() for n in ladder
        ]
        assert slope(ladder, errs) == pytest.approx(1.0, abs=0.03)


def test_step_polynomials_match_weak_euler_closed_form():
    for law in (sn.Gaussian(), sn.Rademacher(), sn.DropBernoulli(0.8)):
        assert linear.scheme_moment(GBM.field(), sn.WeakEuler(law), 1.0, 1.0, 0.25, 3) == pytest.approx(
            GBM.scheme_expectation(law, 0.25, 3), rel=1e-12
        )
        assert linear.scheme_moment(OU.field(), sn.WeakEuler(law), 1.0, 1.0, 0.25, 3) == pytest.approx(
            OU.scheme_expectation(law, 0.25, 3), rel=1e-12
        )
    nonlinear = linear.Arctan().field()
    with pytest.raises(ValueError, match="not X"):
        linear.step_polynomials(nonlinear, sn.Platen(), 0.25)


@pytest.mark.parametrize("law", [sn.ThreePoint(), sn.Rademacher()])
def test_monte_carlo_platen_has_its_exact_expectation(law):
    """The sampled scheme (law sampling included) against the exact scheme expectation; the
    two laws' expectations differ by many standard errors, so the test tells them apart."""
    scheme = sn.Platen(law)
    dt, paths = 0.5, 400_000
    g = torch.Generator().manual_seed(3)
    field = weak.GBM(mu=-0.5, sigma=0.6).field()
    mean, se = sn.weak.monte_carlo(
        field, scheme, torch.ones(1, 1, dtype=F64), 1.0, dt, lambda x: x**2, paths, g
    )
    exact = linear.scheme_moment(field, scheme, 1.0, 1.0, dt, 2)
    other = linear.scheme_moment(
        field, sn.Platen(sn.Rademacher() if law == sn.ThreePoint() else sn.ThreePoint()), 1.0, 1.0, dt, 2
    )
    assert abs(mean - exact) < 4 * se
    assert abs(other - exact) > 10 * se


# ---------------------------------------------------------------- nonlinear SDE, exact by enumeration


def test_arctan_closed_forms():
    pr = linear.Arctan(a=0.7, x0=0.4, T=1.3)
    assert pr.exact(np.tan) == pytest.approx(math.tan(0.4), abs=1e-12)
    assert pr.exact(lambda x: np.tan(x) ** 2) == pytest.approx(math.tan(0.4) ** 2 + 0.49 * 1.3, abs=1e-10)


def test_nonlinear_weak_orders_by_enumeration():
    """Arctan SDE: Platen and weak Taylor 2 (three-point increments, all 3^N sequences) have
    slope 2 for φ = sin; weak Euler with Rademacher increments (all 2^N) slope 1 for sin and
    cos. (For cos the leading Δt² coefficients of the order-2 schemes nearly cancel at these
    parameters, so cos is not used for them.)"""
    pr = linear.Arctan(a=0.5, x0=0.5, T=1.0)
    x0 = torch.tensor([[0.5]], dtype=F64)
    exact = pr.exact(np.sin)
    ns = (4, 6, 8, 10)
    for scheme in (sn.Platen(), sn.WeakTaylor2(sn.ThreePoint())):
        errs = [linear.enumerate_expectation(pr.field(), scheme, x0, 1.0, n, torch.sin) - exact for n in ns]
        assert slope(ns, errs) == pytest.approx(2.0, abs=0.15)
    for phi_np, phi in ((np.sin, torch.sin), (np.cos, torch.cos)):
        ns = (8, 12, 16)
        errs = [
            linear.enumerate_expectation(pr.field(), sn.WeakEuler(sn.Rademacher()), x0, 1.0, n, phi)
            - pr.exact(phi_np)
            for n in ns
        ]
        assert slope(ns, errs) == pytest.approx(1.0, abs=0.1)


# ---------------------------------------------------------------- Talay–Tubaro


def test_extrapolation_gives_order_two_from_weak_euler():
    ladder = (32, 64, 128, 256)
    for law in (sn.Rademacher(), sn.Gaussian(), sn.Uniform()):
        errs = [
            sn.extrapolate(
                lambda dt: linear.scheme_moment(GBM.field(), sn.WeakEuler(law), 1.0, 1.0, dt, 3),  # noqa: B023
                1 / n,
            )
            - GBM.exact(3)
            for n in ladder
        ]
        assert slope(ladder, errs) == pytest.approx(2.0, abs=0.08)
        errs = [
            sn.extrapolate(lambda dt: linear.scheme_cos(OU.field(), sn.WeakEuler(law), 1.0, 1.0, dt), 1 / n)  # noqa: B023
            - ou_cos_exact()
            for n in ladder
        ]
        assert slope(ladder, errs) == pytest.approx(2.0, abs=0.08)
    # stochastic depth at p = 0.8 has weak order ½: extrapolating as if it were 1 does not help
    law = sn.DropBernoulli(0.8)
    errs = [
        sn.extrapolate(lambda dt: linear.scheme_moment(OU.field(), sn.WeakEuler(law), 1.0, 1.0, dt, 3), 1 / n)
        - OU.exact(3)
        for n in ladder
    ]
    assert slope(ladder, errs) < 0.7


def test_extrapolate_pairs_and_errors():
    mean, se = sn.extrapolate(lambda dt: (1.0 + dt, 0.1), 0.5)
    assert mean == pytest.approx(1.0) and se == pytest.approx(math.sqrt(0.05))
    assert sn.extrapolate(lambda dt: 1.0 + dt * dt, 0.5, order=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="callable"):
        sn.extrapolate(3.0, 0.1)
    with pytest.raises(ValueError, match="positive"):
        sn.extrapolate(lambda dt: dt, -1)
    assert weak.extrapolate is sn.extrapolate


# ---------------------------------------------------------------- Milstein (strong order 1)


@pytest.mark.parametrize("derivative", ["autograd", "difference"])
def test_milstein_strong_order_one_on_gbm(derivative):
    sde = weak.GBM(mu=0.05, sigma=0.5)
    g = torch.Generator().manual_seed(5)
    paths, fine = 4000, 256
    dwf = torch.randn(fine, paths, 1, generator=g, dtype=F64) / math.sqrt(fine)
    xT = sde.solution(dwf.sum(0))
    ns = (16, 32, 64, 128)
    errs, ses, errs_em = [], [], []
    for n in ns:
        dw = dwf.view(n, fine // n, paths, 1).sum(1)
        x0 = torch.ones(paths, 1, dtype=F64)
        e = (sn.integrate(sde.field(), sn.Milstein(derivative), x0, t1=1.0, steps=n, dw=dw) - xT).abs()
        errs.append(e.mean().item())
        ses.append(e.std().item() / math.sqrt(paths))
        errs_em.append(
            (sn.integrate(sde.field(), sn.EulerMaruyama(), x0, t1=1.0, steps=n, dw=dw) - xT)
            .abs()
            .mean()
            .item()
        )
    assert slope(ns, errs) == pytest.approx(1.0, abs=0.1)
    assert errs[-1] > 10 * ses[-1]  # the finest error is resolved
    assert slope(ns, errs_em) == pytest.approx(0.5, abs=0.12)


def test_milstein_autograd_derivative_is_exact_for_sample_noise():
    """Vector state, one Brownian motion per sample: L¹b = (∇b) b by forward-mode autograd."""
    w = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=F64)
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.tanh(x @ w), noise="sample")
    x = torch.tensor([[0.5, -1.0]], dtype=F64)
    dw = torch.tensor([[0.3]], dtype=F64)
    out, _ = sn.Milstein().step(field, 0.0, x, 0.1, None, dw=dw)
    b = torch.tanh(x @ w)
    jac = torch.autograd.functional.jacobian(lambda y: torch.tanh(y @ w), x).reshape(2, 2)
    expect = x - x * 0.1 + b * 0.3 + 0.5 * (jac @ b.view(2)).view(1, 2) * (0.09 - 0.1)
    assert torch.allclose(out, expect, atol=1e-14)


# ---------------------------------------------------------------- given increments, torchsde


def test_integrate_dw_tensor_callable_and_errors():
    field = GBM.field()
    x0 = torch.ones(5, 1, dtype=F64)
    dw = torch.randn(4, 5, 1, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.5
    a = sn.integrate(field, sn.EulerMaruyama(), x0, t1=1.0, steps=4, dw=dw)
    b = sn.integrate(field, sn.EulerMaruyama(), x0, t1=1.0, steps=4, dw=lambda n, t, dt: dw[n])
    by_hand = x0
    for n in range(4):
        by_hand = by_hand + GBM.mu * by_hand * 0.25 + GBM.sigma * by_hand * dw[n]
    assert torch.equal(a, b) and torch.allclose(a, by_hand, atol=1e-15)
    # one Brownian path drives every law
    r = sn.integrate(field, sn.WeakEuler(sn.Rademacher()), x0, t1=1.0, steps=4, dw=dw)
    signs = torch.where(dw >= 0, 0.5, -0.5)
    assert torch.equal(r, sn.integrate(field, sn.WeakEuler(sn.Gaussian()), x0, t1=1.0, steps=4, dw=signs))
    with pytest.raises(ValueError, match=r"expected \(steps, \*noise_shape\)"):
        sn.integrate(field, sn.EulerMaruyama(), x0, t1=1.0, steps=3, dw=dw)
    with pytest.raises(ValueError, match="noise shape"):
        sn.integrate(field, sn.EulerMaruyama(), x0, t1=1.0, steps=4, dw=lambda n, t, dt: dw[n, :2])
    with pytest.raises(ValueError, match="draws none"):
        sn.integrate(sn.ODEField(lambda t, x: -x), sn.Euler(), x0, t1=1.0, steps=4, dw=dw)
    with pytest.raises(ValueError, match="tensor"):
        sn.integrate(field, sn.EulerMaruyama(), x0, t1=1.0, steps=4, dw=[1, 2])


@pytest.mark.parametrize("noise", ["diagonal", "sample", "general"])
def test_euler_maruyama_equals_torchsde_on_one_brownian_path(noise):
    B, D = 6, 3
    w = torch.tensor([[0.2, -0.1, 0.3], [0.0, 0.4, -0.2], [0.1, 0.1, 0.1]], dtype=F64)
    m = 2 if noise == "general" else 1
    if noise == "general":
        field = sn.SDEField(
            lambda t, x: torch.sin(x @ w) - 0.3 * x,
            lambda t, x: torch.stack([torch.cos(x) * 0.4, 0.2 * x + 0.1 * t], dim=-1),
            noise="general",
            m=2,
        )
        size = (B, m)
    else:
        field = sn.SDEField(
            lambda t, x: torch.sin(x @ w) - 0.3 * x, lambda t, x: 0.3 * torch.cos(x) + 0.1 * t, noise=noise
        )
        size = (B, D) if noise == "diagonal" else (B, 1)
    x0 = torch.randn(B, D, generator=torch.Generator().manual_seed(0), dtype=F64)
    steps, dt = 16, 1.0 / 16
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=size, dtype=F64, entropy=7)
    ts = torch.tensor([0.0, 1.0], dtype=F64)
    ref = torchsde.sdeint(field.to_torchsde(), x0, ts, bm=bm, method="euler", dt=dt)[-1]
    ours = sn.integrate(
        field, sn.EulerMaruyama(), x0, t1=1.0, steps=steps, dw=lambda n, t, dt_: bm(t, t + dt_)
    )
    assert (ours - ref).abs().max().item() < 1e-12


# ---------------------------------------------------------------- general noise


def _general_linear(b1, b2, a):
    a, b1, b2 = (torch.tensor(v, dtype=F64) for v in (a, b1, b2))
    return (
        sn.SDEField(
            lambda t, x: x @ a.T, lambda t, x: torch.stack([x @ b1.T, x @ b2.T], dim=-1), noise="general", m=2
        ),
        a,
        b1,
        b2,
    )


def test_general_noise_shapes_and_increment():
    field, a, b1, b2 = _general_linear(
        [[0.0, 0.3], [0.0, 0.0]], [[0.0, 0.0], [0.3, 0.0]], [[-1.0, 0.2], [0.0, -0.5]]
    )
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=F64)
    assert field.noise_shape(x) == (2, 2)
    dw = torch.tensor([[0.1, -0.2], [0.3, 0.4]], dtype=F64)
    inc = field.increment(0.0, x, 0.1, dw)
    expect = 0.1 * x @ a.T + (x @ b1.T) * dw[:, :1] + (x @ b2.T) * dw[:, 1:]
    assert torch.allclose(inc, expect, atol=1e-15)
    with pytest.raises(ValueError, match="needs m"):
        sn.SDEField(lambda t, x: x, lambda t, x: x, noise="general")
    with pytest.raises(ValueError, match="general"):
        sn.SDEField(lambda t, x: x, lambda t, x: x, m=3)
    with pytest.raises(ValueError, match="commutative"):
        sn.integrate(field, sn.Milstein(), x, t1=1.0, steps=2)
    with pytest.raises(ValueError, match="Platen"):
        sn.integrate(field, sn.WeakTaylor2(), x, t1=1.0, steps=2)
    assert field.to_torchsde().noise_type == "general"


def _second_moment_exact(a, bs, m0, T):
    """vec(E X Xᵀ) at T for dX = A X dt + Σ_j B_j X dW_j: d/dt M = AM + MAᵀ + Σ B_j M B_jᵀ."""
    eye = torch.eye(a.shape[0], dtype=F64)
    op = torch.kron(a, eye) + torch.kron(eye, a) + sum(torch.kron(b, b) for b in bs)
    return torch.matrix_exp(op * T) @ m0.reshape(-1)


def _platen_second_moment(field, scheme, m0, T, n):
    """Exact vec(E X_N X_Nᵀ) of Platen with three-point increments and two-point V, by
    enumerating one step's 3·3·2 increment combinations on the basis states."""
    dt = T / n
    vals, probs = [-math.sqrt(3 * dt), 0.0, math.sqrt(3 * dt)], [1 / 6, 2 / 3, 1 / 6]
    op = torch.zeros(4, 4, dtype=F64)
    eye = torch.eye(2, dtype=F64)
    for i, j, v in [(i, j, v) for i in range(3) for j in range(3) for v in (-dt, dt)]:
        dw = torch.tensor([[vals[i], vals[j]]] * 2, dtype=F64)

        class Fixed(sn.Platen):
            def _two_point(self, shape, dt_, generator, like):
                return torch.full(shape, v, dtype=F64)  # noqa: B023

        step = Fixed(sn.Gaussian())  # the increments are used as they are
        cols, _ = step.step(field, 0.0, eye, dt, None, dw=dw)  # rows: images of e_1, e_2
        p = cols.T  # X ↦ P X
        op += probs[i] * probs[j] * 0.5 * torch.kron(p, p)
    return torch.linalg.matrix_power(op, n) @ m0.reshape(-1)


def test_platen_general_noise_is_weak_order_two_with_noncommutative_noise():
    field, a, b1, b2 = _general_linear(
        [[0.0, 0.6], [0.0, 0.0]], [[0.0, 0.0], [0.6, 0.0]], [[-1.0, 0.2], [0.0, -0.5]]
    )
    assert not torch.allclose(b1 @ b2, b2 @ b1)  # non-commutative: the V terms matter
    m0 = torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=F64)
    exact = _second_moment_exact(a, [b1, b2], m0, 1.0)
    ns = (8, 16, 32, 64)
    errs = [(_platen_second_moment(field, sn.Platen(), m0, 1.0, n) - exact).abs().max().item() for n in ns]
    assert slope(ns, errs) == pytest.approx(2.0, abs=0.15)
    # weak Euler on the same system is order 1 (its second moment: E[P⊗P] = (I + AΔ)⊗(I + AΔ) + Δ Σ B⊗B)
    eye = torch.eye(2, dtype=F64)
    errs = []
    ns = (64, 128, 256, 512)
    for n in ns:
        dt = 1.0 / n
        op = torch.kron(eye + a * dt, eye + a * dt) + dt * (torch.kron(b1, b1) + torch.kron(b2, b2))
        errs.append((torch.linalg.matrix_power(op, n) @ m0.reshape(-1) - exact).abs().max().item())
    assert slope(ns, errs) == pytest.approx(1.0, abs=0.1)


def test_platen_general_monte_carlo_matches_enumeration():
    field, a, b1, b2 = _general_linear(
        [[0.0, 0.6], [0.0, 0.0]], [[0.0, 0.0], [0.6, 0.0]], [[-1.0, 0.2], [0.0, -0.5]]
    )
    n, paths = 4, 200_000
    x0 = torch.tensor([[1.0, 0.0]], dtype=F64).expand(paths, 2).clone()
    g = torch.Generator().manual_seed(11)
    x = sn.integrate(field, sn.Platen(), x0, t1=1.0, steps=n, generator=g)
    v = x[:, 0] * x[:, 1]
    m0 = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=F64)
    exact = _platen_second_moment(field, sn.Platen(), m0, 1.0, n)[1].item()
    assert abs(v.mean().item() - exact) < 4 * v.std().item() / math.sqrt(paths)


def test_milstein_general_commutative_noise_strong_order_one():
    """Commuting B_1, B_2 (both diagonal): X(T) = exp((A − ½ΣB_j²)T + Σ B_j W_j(T)) x0 for diagonal A."""
    a = torch.diag(torch.tensor([-0.5, 0.2], dtype=F64))
    b1 = torch.diag(torch.tensor([0.4, 0.3], dtype=F64))
    b2 = torch.diag(torch.tensor([0.2, -0.5], dtype=F64))
    field = sn.SDEField(
        lambda t, x: x @ a.T,
        lambda t, x: torch.stack([x @ b1.T, x @ b2.T], dim=-1),
        noise="general",
        m=2,
        commutative=True,
    )
    paths, fine = 4000, 128
    g = torch.Generator().manual_seed(2)
    dwf = torch.randn(fine, paths, 2, generator=g, dtype=F64) / math.sqrt(fine)
    w = dwf.sum(0)
    x0 = torch.ones(paths, 2, dtype=F64)
    expo = (
        (torch.diag(a) - 0.5 * (torch.diag(b1) ** 2 + torch.diag(b2) ** 2))
        + w[:, :1] * torch.diag(b1)
        + w[:, 1:] * torch.diag(b2)
    )
    xT = torch.exp(expo)
    ns = (8, 16, 32, 64)
    errs, errs_em = [], []
    for n in ns:
        dw = dwf.view(n, fine // n, paths, 2).sum(1)
        errs.append((sn.integrate(field, sn.Milstein(), x0, t1=1.0, steps=n, dw=dw) - xT).abs().mean().item())
        errs_em.append(
            (sn.integrate(field, sn.EulerMaruyama(), x0, t1=1.0, steps=n, dw=dw) - xT).abs().mean().item()
        )
    assert slope(ns, errs) == pytest.approx(1.0, abs=0.12)
    assert slope(ns, errs_em) == pytest.approx(0.5, abs=0.12)


# ---------------------------------------------------------------- network stages with Platen


def test_platen_network_stage_drop_and_shake():
    from sdenet.nn import DropField, ShakeField, Stage

    torch.manual_seed(0)
    blocks = [torch.nn.Linear(4, 4) for _ in range(5)]
    field = DropField(blocks, p=0.5, dt=0.25)
    stage = Stage(field, sn.Platen())
    assert stage.steps == 4  # one block more than steps, as Heun
    x = torch.randn(3, 4)
    stage.train()
    y = stage(x)
    y.sum().backward()
    assert all(b.weight.grad is not None for b in blocks)
    stage.eval()
    assert isinstance(stage._eval_schemes[0], sn.Heun)
    # eval: Heun on the drift p f
    ref = x
    for n in range(4):
        k1 = 0.5 * blocks[n](ref)
        k2 = 0.5 * blocks[n + 1](ref + 0.25 * k1)
        ref = ref + 0.125 * (k1 + k2)
    assert torch.allclose(stage(x), ref, atol=1e-6)
    shake = ShakeField(
        [torch.nn.Linear(4, 4) for _ in range(3)], [torch.nn.Linear(4, 4) for _ in range(3)], dt=0.5
    )
    s2 = Stage(shake, sn.Platen(sn.Gaussian()))
    assert s2.steps == 2 and s2(x).shape == x.shape
    with pytest.raises(ValueError, match="evaluate 5 blocks"):
        Stage(DropField(blocks[:4], p=0.5, dt=0.25), sn.Platen(), steps=4)


# ---------------------------------------------------------------- theory items


def test_theory_cos_orders_separate_the_laws():
    from sdenet.theory.weak_laws import cos_orders

    ou = weak.OU(theta=1.0, sigma=1.0, x0=1.0)
    res = cos_orders(
        ou, laws=[sn.Gaussian(), sn.Uniform(), sn.Rademacher()], steps=(64, 128, 256), paths=50_000
    )
    ats = [r["bias_at"] for r in res.values()]
    assert ats[0] == pytest.approx(-1.68e-2, abs=5e-5) and ats[1] == pytest.approx(-2.03e-2, abs=5e-5)
    assert ats[2] == pytest.approx(-2.27e-2, abs=5e-5)
    for r in res.values():
        assert r["order"] == pytest.approx(1.0, abs=0.05) and abs(r["z"]) < 4


def test_theory_network_stage_is_the_scheme():
    from sdenet.theory.weak_order2 import network_checks

    for name, same, z, eval_diff in network_checks(
        torch.tensor([[0.8, -0.5, 0.3]], dtype=F64), n=3, paths=20_000
    ):
        assert same and abs(z) < 4 and eval_diff < 1e-12, name


@pytest.mark.slow
def test_theory_network_weak_order_two():
    from sdenet.theory.weak_order2 import network_orders

    net, _ = network_orders(quick=True)
    for r in net.values():
        assert r["platen"]["order"] == pytest.approx(2.0, abs=0.35)
        assert r["euler"]["order"] == pytest.approx(1.0, abs=0.2)


def test_weak_taylor2_time_dependent_step_by_hand():
    """dX = t X dt + σ dW: L⁰a = ∂_t a + a a' = X + t² X, L¹a = σ t, L⁰b = L¹b = 0."""
    sigma, t, dt = 0.7, 0.3, 0.1
    field = sn.SDEField(lambda t_, x: t_ * x, lambda t_, x: torch.full_like(x, sigma))
    x = torch.tensor([[1.5], [-0.4]], dtype=F64)
    dw = torch.tensor([[0.2], [-0.1]], dtype=F64)
    out, _ = sn.WeakTaylor2(sn.Gaussian(), time_dependent=True).step(field, t, x, dt, None, dw=dw)
    expect = x + t * x * dt + sigma * dw + 0.5 * sigma * t * dw * dt + 0.5 * (x + t * t * x) * dt * dt
    assert torch.allclose(out, expect, atol=1e-14)
    autonomous, _ = sn.WeakTaylor2(sn.Gaussian()).step(field, t, x, dt, None, dw=dw)
    assert torch.allclose(autonomous, expect - 0.5 * x * dt * dt, atol=1e-14)
