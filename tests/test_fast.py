"""The in-place fast path (sdenet.fast) gives the generic path's numbers and never runs
where a gradient is needed."""

import math

import pytest
import torch

import sdenet as sn
from sdenet import fast

LAWS = [
    sn.Gaussian(),
    sn.Uniform(),
    sn.Rademacher(),
    sn.ThreePoint(),
    sn.DropBernoulli(0.5),
    sn.DropBernoulli(0.8),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def both(field, scheme, x0, seed=0, **grid):
    """(fast, generic) results from generators with the same seed."""
    with torch.no_grad():
        a = sn.integrate(field, scheme, x0, generator=torch.Generator().manual_seed(seed), **grid)
        fast.ENABLED = False
        try:
            b = sn.integrate(field, scheme, x0, generator=torch.Generator().manual_seed(seed), **grid)
        finally:
            fast.ENABLED = True
    return a, b


@pytest.mark.parametrize("law", LAWS, ids=repr)
@pytest.mark.parametrize("noise", ["diagonal", "sample", "batch"])
@pytest.mark.parametrize(
    "coeffs",
    [(-0.7, 0.0, 0.0, 0.4), (0.3, 0.2, 0.5, 0.0), (-0.2, 0.1, 0.3, 0.6)],
    ids=["ou", "gbm+b", "affine"],
)
def test_fast_path_equals_the_generic_path_with_the_same_generator(law, noise, coeffs):
    field = sn.LinearSDEField(*coeffs, noise=noise)
    # 20000 elements: above Rademacher's small-draw threshold for diagonal noise (bit unpacking)
    x0 = torch.linspace(-1.0, 2.0, 20_000, dtype=torch.float64).reshape(5000, 2, 2)
    assert fast._applicable(field, sn.WeakEuler(law), x0)  # the fast path really runs
    a, b = both(field, sn.WeakEuler(law), x0, t1=1.0, steps=16)
    assert a.shape == x0.shape
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), (a - b).abs().max()


def test_fast_path_float32_and_save_all_and_x0_untouched():
    field = sn.LinearSDEField(a=-1.0, d=0.5)
    x0 = torch.ones(100_000, 1)
    keep = x0.clone()
    a, b = both(field, sn.WeakEuler(sn.Rademacher()), x0, dt=2**-7, steps=100)
    assert torch.equal(x0, keep)
    assert (a - b).abs().max() < 1e-5  # float32 rounding over 100 steps, same draws
    a, b = both(field, sn.EulerMaruyama(), x0[:10], dt=0.1, steps=5, save="all")
    assert a.shape == (6, 10, 1) and torch.equal(a[0], x0[:10])
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_linear_field_integrates_ou_to_its_exact_scheme_moments():
    theta, sigma, dt, n = 1.0, 0.5, 0.1, 10
    field = sn.LinearSDEField(a=-theta, d=sigma)
    paths = 400_000
    x = sn.integrate(
        field,
        sn.WeakEuler(sn.Rademacher()),
        torch.ones(paths, 1, dtype=torch.float64),
        dt=dt,
        steps=n,
        generator=torch.Generator().manual_seed(3),
    )
    a = 1 - theta * dt
    mean, var = a**n, sigma**2 * dt * (1 - a ** (2 * n)) / (1 - a * a)
    assert abs(x.mean().item() - mean) <= 5 * math.sqrt(var / paths)
    assert x.var().item() == pytest.approx(var, rel=0.02)


def test_gradients_take_the_generic_path():
    field = sn.LinearSDEField(a=-0.5, c=0.2, d=0.3)
    x0 = torch.full((8, 3), 1.5, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    xT = sn.integrate(field, sn.WeakEuler(sn.Uniform()), x0, t1=1.0, steps=10, generator=g)
    xT.sum().backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all()

    # the generic path's gradient equals a finite difference of the same (seeded) map
    def f(v):
        with torch.no_grad():
            return sn.integrate(
                field,
                sn.WeakEuler(sn.Uniform()),
                v,
                t1=1.0,
                steps=10,
                generator=torch.Generator().manual_seed(0),
            ).sum()

    h = 1e-6
    e = torch.zeros_like(x0)
    e[0, 0] = h
    fd = (f(x0.detach() + e) - f(x0.detach() - e)) / (2 * h)
    assert x0.grad[0, 0].item() == pytest.approx(fd.item(), rel=1e-6)
    # a trainable coefficient: generic path, gradient reaches it
    a = torch.nn.Parameter(torch.tensor(-0.5, dtype=torch.float64))
    field = sn.LinearSDEField(a=a, d=0.3)
    assert field.affine() is None and any(p is a for p in field.parameters())
    x = sn.integrate(
        field,
        sn.WeakEuler(),
        torch.ones(4, 1, dtype=torch.float64),
        t1=1.0,
        steps=4,
        generator=torch.Generator().manual_seed(0),
    )
    x.sum().backward()
    assert a.grad is not None


def test_fast_path_only_for_plain_weak_euler():
    field = sn.LinearSDEField(a=-0.5, d=0.3)
    x0 = torch.ones(10, 1, dtype=torch.float64)
    assert fast.fast_integrate(field, sn.StochasticLM(), x0, 0.0, 0.1, 3, None, "last") is None
    assert (
        fast.fast_integrate(
            sn.SDEField(lambda t, x: x, lambda t, x: x), sn.WeakEuler(), x0, 0.0, 0.1, 3, None, "last"
        )
        is None
    )
    assert fast.fast_integrate(field, sn.WeakEuler(), x0, 0.0, 0.1, 3, None, "last") is not None
    with pytest.raises(ValueError, match="finite"):
        sn.LinearSDEField(a=float("nan"))


def test_fast_enabled_is_the_loops_switch():
    from sdenet import loop

    field = sn.LinearSDEField(a=-0.5, d=0.3)
    x0 = torch.ones(10, 1, dtype=torch.float64)
    assert fast.ENABLED is loop.ENABLED is True
    fast.ENABLED = False
    try:
        assert loop.ENABLED is False and not loop.inplace_allowed(x0)
        assert fast.fast_integrate(field, sn.WeakEuler(), x0, 0.0, 0.1, 3, None, "last") is None
    finally:
        fast.ENABLED = True
    assert loop.ENABLED is True and "ENABLED" not in vars(fast)  # one switch, held by the loop
