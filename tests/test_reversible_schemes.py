"""Hamiltonian, midpoint and leapfrog schemes: declared orders (fitted slopes) and exact inverses."""

import math

import numpy as np
import pytest
import torch

import sdenet as sn


@pytest.fixture(autouse=True)
def _float64():
    """float64 inside this module's tests only (restored afterwards: other modules expect float32)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _slope(hs, errs):
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def _run(scheme, field, x0, t1, steps):
    dt = t1 / steps
    x, state = x0, scheme.init(field, 0.0, x0, dt)
    for n in range(steps):
        x, state = scheme.step(field, n * dt, x, dt, state)
    return x, state


STEPS = (20, 40, 80, 160)


def test_flags_and_names():
    for cls in (sn.Hamiltonian, sn.Midpoint, sn.Leapfrog, sn.CoupledEuler):
        assert cls().invertible
    for s in (sn.Euler(), sn.Heun(), sn.LinearMultistep(), sn.WeakEuler()):
        assert not s.invertible
        with pytest.raises(ValueError, match="not invertible"):
            s.invert_step(None, 0.0, None, 1.0, None)
    assert type(sn.get_scheme("hamiltonian")) is sn.Hamiltonian
    assert sn.get_scheme("midpoint", start="rest").order == 1
    assert sn.get_scheme("leapfrog", velocity=0.5).velocity == 0.5
    for bad in (
        lambda: sn.Midpoint(start="x"),
        lambda: sn.Leapfrog(start="euler"),
        lambda: sn.Leapfrog(velocity=float("nan")),
    ):
        with pytest.raises(ValueError):
            bad()


def test_hamiltonian_order_collocated_1_and_staggered_2():
    # y' = z, z' = -y (+ nonlinear part):  f1(z) = z,  f2(y) = -sin(y)   (pendulum)
    field = sn.CoupledField(lambda t, z: z, lambda t, y: -torch.sin(y))
    y0, z0 = torch.tensor([1.0]), torch.tensor([0.3])
    T = 2.0
    # reference: the same system by Heun with a tiny step on the stacked state
    ref = sn.ODEField(lambda t, u: torch.stack([u[1], -torch.sin(u[0])]))
    u = sn.integrate(ref, sn.Heun(), torch.stack([y0[0], z0[0]]), t1=T, steps=20000)
    s = sn.Hamiltonian()
    e1, e2 = [], []
    for N in STEPS:
        (y, z), _ = _run(s, field, (y0, z0), T, N)
        e1.append(float(torch.hypot(y[0] - u[0], z[0] - u[1])))
        h = T / N
        zs = z0 + 0.5 * h * field.f2(0.0, y0)  # Z(t_{1/2})
        (y, z), _ = _run(s, field, (y0, zs), T, N)
        z = z - 0.5 * h * field.f2(T, y)  # Z(t_{N+1/2}) back to Z(T)
        e2.append(float(torch.hypot(y[0] - u[0], z[0] - u[1])))
    hs = [T / n for n in STEPS]
    assert abs(_slope(hs, e1) - s.order) < 0.15
    assert abs(_slope(hs, e2) - s.staggered_order) < 0.15


@pytest.mark.parametrize("start", ["euler", "rest"])
def test_midpoint_order(start):
    # u' = u^2, u(0) = 1: u(t) = 1/(1 - t); at T = 0.5, u = 2
    field = sn.ODEField(lambda t, x: x * x)
    s = sn.Midpoint(start=start)
    errs = [abs(float(_run(s, field, torch.tensor([1.0]), 0.5, N)[0][0]) - 2.0) for N in STEPS]
    assert abs(_slope([0.5 / n for n in STEPS], errs) - s.order) < 0.15


@pytest.mark.parametrize("start, v0", [("taylor", 0.0), ("taylor", 0.7), ("rest", 0.0)])
def test_leapfrog_order(start, v0):
    # u'' = -u, u(0) = 1, u'(0) = v0: u = cos t + v0 sin t
    field = sn.ODEField(lambda t, x: -x)
    s = sn.Leapfrog(start=start, velocity=v0)
    T = 2.0
    exact = math.cos(T) + v0 * math.sin(T)
    errs = [abs(float(_run(s, field, torch.tensor([1.0]), T, N)[0][0]) - exact) for N in STEPS]
    assert abs(_slope([T / n for n in STEPS], errs) - s.order) < 0.15


def _mlp(d, seed):
    g = torch.Generator().manual_seed(seed)
    W1, W2 = torch.randn(d, d, generator=g) / d**0.5, torch.randn(d, d, generator=g) / d**0.5
    b = torch.randn(d, generator=g)
    return lambda t, x: torch.tanh(x @ W1 + b) @ W2 * (1.0 + 0.1 * t)


_ONE_STEP = [sn.Hamiltonian(), sn.CoupledEuler()]
_TWO_STEP = [
    sn.Midpoint(),
    sn.Midpoint("rest"),
    sn.Leapfrog(),
    sn.Leapfrog("rest"),
    sn.Leapfrog(velocity=0.3),
]


# a history handed in (with_prev) exists only for the two-step schemes: the one-step (coupled) ones
# carry none, so that combination is not generated
@pytest.mark.parametrize(
    "scheme, with_prev", [(s, False) for s in _ONE_STEP + _TWO_STEP] + [(s, True) for s in _TWO_STEP]
)
def test_round_trip(scheme, with_prev):
    d, N, dt = 6, 50, 0.1
    coupled = scheme.coupled
    if coupled:
        field = sn.CoupledField(_mlp(d, 1), _mlp(d, 2))
        x0 = (
            torch.randn(4, d, generator=torch.Generator().manual_seed(3)),
            torch.randn(4, d, generator=torch.Generator().manual_seed(4)),
        )
    else:
        field = sn.ODEField(_mlp(d, 1))
        x0 = torch.randn(4, d, generator=torch.Generator().manual_seed(3))
    state = scheme.init(field, 0.0, x0, dt)
    if with_prev:
        state["prev"] = x0 + 0.01
    x, s = x0, state
    for n in range(N):
        x, s = scheme.step(field, n * dt, x, dt, s)
    for n in reversed(range(N)):
        x, s = scheme.invert_step(field, n * dt, x, dt, s)
    for a, b in zip(x if coupled else (x,), x0 if coupled else (x0,)):
        assert float((a - b).abs().max()) <= 1e-12
    if with_prev:
        assert float((s["prev"] - state["prev"]).abs().max()) <= 1e-12
    elif not coupled:
        assert s["prev"] is None and s["n"] == 0


def test_integrate_runs_new_schemes():
    f = sn.ODEField(lambda t, x: -x)
    out = sn.integrate(f, sn.Leapfrog(), torch.tensor([1.0]), t1=1.0, steps=100)
    assert abs(float(out[0]) - math.cos(1.0)) < 1e-3
    out = sn.integrate(f, sn.Midpoint(), torch.tensor([1.0]), t1=1.0, steps=100)
    assert abs(float(out[0]) - math.exp(-1.0)) < 1e-3
