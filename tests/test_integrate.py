"""``integrate`` and ``make_grid``: gradients, determinism, noise structures, saving, bad input."""

import math

import pytest
import torch
from torch import nn

import sdenet as sn

F64 = torch.float64


def gen(seed, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


class Drift(nn.Module):
    """A small trainable field ``f(t, x) = tanh(W x + b)(1 + t/2) − x/4``."""

    def __init__(self, d=3):
        super().__init__()
        self.lin = nn.Linear(d, d).double()

    def forward(self, t, x):
        return torch.tanh(self.lin(x)) * (1 + 0.5 * t) - 0.25 * x


class Run(nn.Module):
    """``x0 ↦ integrate(field, scheme, x0)`` as a module, so gradcheck can vary its parameters."""

    def __init__(self, field, make_scheme, make_generator=lambda: None, **grid):
        super().__init__()
        self.field = field
        self.make_scheme = make_scheme
        self.make_generator = make_generator
        self.grid = grid

    def forward(self, x0, extra=None):
        scheme = self.make_scheme(extra)
        return sn.integrate(self.field, scheme, x0, generator=self.make_generator(), **self.grid)


# ------------------------------------------------------------------ gradients


def _gradcheck_x0_and_weight(run, extra=None):
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    name = next(n for n, _ in run.named_parameters() if n.endswith("lin.weight"))
    weight = run.get_parameter(name).detach().clone().requires_grad_(True)
    inputs = (x0, weight) if extra is None else (x0, weight, extra)

    def fn(x0, weight, *rest):
        return torch.func.functional_call(run, {name: weight}, (x0, rest[0] if rest else None))

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize(
    "make_scheme",
    [lambda _: sn.Euler(), lambda _: sn.Heun(), lambda _: sn.NeumannEuler(terms=2)],
    ids=["euler", "heun", "neumann"],
)
def test_gradcheck_deterministic(make_scheme):
    run = Run(sn.ODEField(Drift()), make_scheme, t1=1.0, steps=4)
    _gradcheck_x0_and_weight(run)


def test_gradcheck_linear_multistep_with_trainable_k():
    run = Run(sn.ODEField(Drift()), lambda k: sn.LinearMultistep(k=k), t1=1.0, steps=5)
    k = torch.tensor([-0.05, 0.1, 0.3], dtype=F64, requires_grad=True)
    _gradcheck_x0_and_weight(run, k)


@pytest.mark.parametrize(
    "law", [sn.Gaussian(), sn.Uniform(), sn.Rademacher(), sn.DropBernoulli(0.7)], ids=repr
)
@pytest.mark.parametrize("noise", ["diagonal", "sample"])
def test_gradcheck_weak_euler_fixed_noise(law, noise):
    field = sn.SDEField(Drift(), lambda t, x: 0.3 * torch.sin(x) + 0.1, noise=noise)
    run = Run(field, lambda _: sn.WeakEuler(law), make_generator=lambda: gen(42), t1=1.0, steps=4)
    _gradcheck_x0_and_weight(run)


def test_gradcheck_stochastic_lm_fixed_noise():
    field = sn.SDEField(Drift(), lambda t, x: 0.2 * torch.cos(x), noise="sample")
    run = Run(
        field,
        lambda g: sn.StochasticLM(g=g, law=sn.DropBernoulli(0.8)),
        make_generator=lambda: gen(1),
        steps=4,
        dt=1.0,
    )
    g = torch.tensor([-0.2, 0.1, 0.0], dtype=F64, requires_grad=True)
    _gradcheck_x0_and_weight(run, g)


def test_gradients_reach_x0_parameters_and_k():
    drift = Drift()
    k = torch.tensor(0.2, dtype=F64, requires_grad=True)
    x0 = torch.randn(4, 3, dtype=F64, generator=gen(0), requires_grad=True)
    out = sn.integrate(sn.ODEField(drift), sn.LinearMultistep(k=k), x0, t1=1.0, steps=6)
    out.square().sum().backward()
    for grad in (x0.grad, k.grad, drift.lin.weight.grad, drift.lin.bias.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize(
    "scheme",
    [
        sn.WeakEuler(sn.Gaussian()),
        sn.WeakEuler(sn.Uniform()),
        sn.WeakEuler(sn.Rademacher()),
        sn.WeakEuler(sn.ThreePoint()),
        sn.WeakEuler(sn.DropBernoulli(0.6)),
        sn.EulerMaruyama(),
        sn.StochasticLM(g=-0.1, law=sn.Rademacher()),
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seeded_generator_gives_identical_paths(scheme, dtype):
    field = sn.SDEField(lambda t, x: -x, lambda t, x: 0.5 + 0.1 * x)
    x0 = torch.ones(64, 3, dtype=dtype)
    a = sn.integrate(field, scheme, x0, t1=1.0, steps=20, generator=gen(7), save="all")
    b = sn.integrate(field, scheme, x0, t1=1.0, steps=20, generator=gen(7), save="all")
    c = sn.integrate(field, scheme, x0, t1=1.0, steps=20, generator=gen(8), save="all")
    assert a.dtype == dtype and torch.equal(a, b) and not torch.equal(a, c)


def test_global_generator_used_when_none_given():
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones_like(x))
    x0 = torch.zeros(16, 2)
    torch.manual_seed(3)
    a = sn.integrate(field, sn.EulerMaruyama(), x0, t1=1.0, steps=5)
    torch.manual_seed(3)
    b = sn.integrate(field, sn.EulerMaruyama(), x0, t1=1.0, steps=5)
    assert torch.equal(a, b)


# ------------------------------------------------------------------ noise structures


def _pure_noise(noise):
    """drift 0, diffusion 1: ``X_T = X_0 + Σ ΔŴ_n``, so the path shows the noise structure."""
    return sn.SDEField(lambda t, x: torch.zeros_like(x), lambda t, x: torch.ones_like(x), noise=noise)


@pytest.mark.parametrize("law", [sn.Gaussian(), sn.Uniform(), sn.Rademacher(), sn.ThreePoint()], ids=repr)
def test_sample_noise_moves_each_sample_together(law):
    x0 = torch.zeros(40, 3, 5, dtype=F64)
    x = sn.integrate(_pure_noise("sample"), sn.WeakEuler(law), x0, t1=1.0, steps=10, generator=gen(1))
    per_sample = x.reshape(40, -1)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert per_sample[:, 0].unique().numel() > 3  # samples differ from each other


@pytest.mark.parametrize("law", [sn.Gaussian(), sn.Uniform(), sn.Rademacher()], ids=repr)
def test_batch_noise_moves_whole_batch_together(law):
    x0 = torch.zeros(40, 3, dtype=F64)
    x = sn.integrate(
        _pure_noise("batch"), sn.WeakEuler(law), x0, t1=1.0, steps=10, generator=gen(2), save="all"
    )
    flat = x.reshape(11, -1)
    assert torch.equal(flat, flat[:, :1].expand_as(flat))
    assert (flat[1:, 0] != flat[:-1, 0]).all()  # but moves at every step


def test_diagonal_noise_moves_each_element():
    x0 = torch.zeros(40, 3, dtype=F64)
    x = sn.integrate(
        _pure_noise("diagonal"), sn.WeakEuler(sn.Gaussian()), x0, t1=1.0, steps=10, generator=gen(3)
    )
    assert x.unique().numel() == x.numel()


def test_sample_noise_with_drop_keeps_or_drops_whole_samples():
    """Stochastic depth at Δt = 1: each sample either gets the whole block or none of it."""
    p = 0.6
    f = lambda x: torch.ones_like(x)  # noqa: E731
    field = sn.SDEField(lambda t, x: p * f(x), lambda t, x: math.sqrt(p * (1 - p)) * f(x), noise="sample")
    x = sn.integrate(
        field,
        sn.WeakEuler(sn.DropBernoulli(p)),
        torch.zeros(200, 4, dtype=F64),
        steps=1,
        dt=1.0,
        generator=gen(4),
    )
    assert torch.allclose(x, x[:, :1].expand_as(x))
    kept = x[:, 0]
    assert (
        torch.isclose(kept, torch.zeros_like(kept), atol=1e-12) | torch.isclose(kept, torch.ones_like(kept))
    ).all()


# ------------------------------------------------------------------ grid and saving


@pytest.mark.parametrize("scheme", [sn.Euler(), sn.Heun(), sn.LinearMultistep(0.2)], ids=repr)
def test_save_all_shape_and_ends(scheme):
    field = sn.ODEField(lambda t, x: torch.sin(x) + t)
    x0 = torch.randn(5, 2, 3, generator=gen(0))
    path = sn.integrate(field, scheme, x0, t0=0.5, t1=1.5, steps=8, save="all")
    assert path.shape == (9, 5, 2, 3)
    assert torch.equal(path[0], x0)
    assert torch.equal(path[-1], sn.integrate(field, scheme, x0, t0=0.5, t1=1.5, steps=8))


def test_save_all_stochastic_matches_last():
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones_like(x), noise="sample")
    x0 = torch.randn(6, 4, generator=gen(0))
    path = sn.integrate(field, sn.WeakEuler(sn.Uniform()), x0, t1=1.0, steps=7, generator=gen(5), save="all")
    last = sn.integrate(field, sn.WeakEuler(sn.Uniform()), x0, t1=1.0, steps=7, generator=gen(5))
    assert path.shape == (8, 6, 4) and torch.equal(path[-1], last)


def test_coupled_save_all():
    field = sn.CoupledField(lambda t, y: y, lambda t, x: -x)
    x0, y0 = torch.randn(3, 2, generator=gen(0)), torch.randn(3, 2, generator=gen(1))
    xs, ys = sn.integrate(field, sn.CoupledEuler(), (x0, y0), t1=1.0, steps=5, save="all")
    assert xs.shape == ys.shape == (6, 3, 2)
    assert torch.equal(xs[0], x0) and torch.equal(ys[0], y0)
    x1, y1 = sn.integrate(field, sn.CoupledEuler(), [x0, y0], t1=1.0, steps=5)
    assert torch.equal(xs[-1], x1) and torch.equal(ys[-1], y1)


def test_times_passed_to_the_field():
    seen = []

    def f(t, x):
        seen.append(t)
        return torch.full_like(x, t)

    x0 = torch.zeros(1, 1, dtype=F64)
    out = sn.integrate(sn.ODEField(f), sn.Heun(), x0, t0=0.25, t1=1.25, steps=4)
    assert seen == pytest.approx([0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0, 1.25])
    # Heun integrates u' = t exactly: u(1.25) − u(0.25) = (1.25² − 0.25²)/2
    assert out.item() == pytest.approx((1.25**2 - 0.25**2) / 2, rel=1e-14)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(t1=1.0, steps=10), (0.0, 0.1, 10)),
        (dict(t0=1.0, t1=3.0, dt=0.5), (1.0, 0.5, 4)),
        (dict(steps=5, dt=0.2), (0.0, 0.2, 5)),
        (dict(t1=1.0, steps=10, dt=0.1), (0.0, 0.1, 10)),
        (dict(t1=0.3, dt=0.1), (0.0, 0.1, 3)),  # 0.3/0.1 = 2.9999999999999996
        (dict(t1=1.0, steps=4.0), (0.0, 0.25, 4)),
    ],
)
def test_make_grid(kwargs, expected):
    t0, dt, steps = sn.make_grid(**kwargs)
    assert (t0, steps) == (expected[0], expected[2]) and isinstance(steps, int)
    assert dt == pytest.approx(expected[1], rel=1e-12)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "two of t1, steps and dt"),
        (dict(t1=1.0), "two of"),
        (dict(steps=3), "two of"),
        (dict(t1=1.0, steps=0), "steps=0"),
        (dict(t1=1.0, steps=-2), "steps=-2"),
        (dict(t1=1.0, steps=2.5), "steps=2.5"),
        (dict(t1=1.0, steps=True), "steps=True"),
        (dict(t1=1.0, steps="ten"), "steps='ten'"),
        (dict(t1=1.0, steps=float("inf")), "steps=inf"),
        (dict(t1=1.0, steps=float("nan")), "steps=nan"),
        (dict(t1=1.0, dt=0.0), "dt=0.0"),
        (dict(t1=1.0, dt=-0.1), "dt=-0.1"),
        (dict(steps=3, dt=float("nan")), "dt=nan"),
        (dict(steps=3, dt=float("inf")), "dt=inf"),
        (dict(t1=0.0, steps=3), "t1 must be greater than t0"),
        (dict(t0=1.0, t1=0.5, dt=0.1), "t1 must be greater than t0"),
        (dict(t1=float("nan"), steps=3), "t1"),
        (dict(t1=float("inf"), steps=3), "t1"),
        (dict(t0=float("nan"), steps=3, dt=0.1), "t0"),
        (dict(t0=float("-inf"), t1=1.0, steps=3), "t0"),
        (dict(t1=1.0, steps=10, dt=0.2), "disagrees"),
        (dict(t1=1.0, dt=0.3), "not a whole number of steps"),
        (dict(t1=1.0, dt=3.0), "not a whole number of steps"),
    ],
)
def test_make_grid_bad(kwargs, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        sn.make_grid(**kwargs)
    # integrate reports the same problem
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        sn.integrate(sn.ODEField(lambda t, x: -x), sn.Euler(), torch.ones(2, 1), **kwargs)


ODE = sn.ODEField(lambda t, x: -x)
SDE = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones_like(x))
COUPLED = sn.CoupledField(lambda t, y: y, lambda t, x: -x)
X0 = torch.ones(3, 2)


@pytest.mark.parametrize(
    "field, scheme, x0, match",
    [
        (SDE, sn.Euler(), X0, "deterministic"),
        (SDE, sn.Heun(), X0, "deterministic"),
        (SDE, sn.LinearMultistep(0.1), X0, "deterministic"),
        (ODE, sn.WeakEuler(), X0, "needs a stochastic field"),
        (ODE, sn.StochasticLM(), X0, "needs a stochastic field"),
        (COUPLED, sn.Euler(), X0, "CoupledField"),
        (ODE, sn.CoupledEuler(), X0, "CoupledField"),
        (lambda t, x: -x, sn.Euler(), X0, "Field"),
        (nn.Linear(2, 2), sn.WeakEuler(), X0, "Field"),
        (ODE, "euler", X0, "scheme must be an sdenet Scheme"),
        (ODE, sn.Euler, X0, "scheme must be an sdenet Scheme"),
        (ODE, sn.Euler(), [1.0, 2.0], "x0 must be a torch.Tensor"),
        (ODE, sn.Euler(), 1.0, "x0 must be a torch.Tensor"),
        (ODE, sn.Euler(), torch.ones(3, 2, dtype=torch.int64), "floating-point"),
        (ODE, sn.Euler(), torch.ones(3, dtype=torch.bool), "floating-point"),
        (ODE, sn.Euler(), torch.tensor(1.0), "scalar"),
        (COUPLED, sn.CoupledEuler(), X0, r"x0 = \(x, y\)"),
        (COUPLED, sn.CoupledEuler(), (X0,), r"x0 = \(x, y\)"),
        (COUPLED, sn.CoupledEuler(), (X0, X0, X0), r"x0 = \(x, y\)"),
        (COUPLED, sn.CoupledEuler(), (X0, 1.0), r"x0 = \(x, y\)"),
        (
            COUPLED,
            sn.CoupledEuler(),
            (X0, torch.ones(3, 2, dtype=torch.int32)),
            r"x0\[1\] \(y\) must be a floating",
        ),
        (COUPLED, sn.CoupledEuler(), (torch.tensor(1.0), X0), r"x0\[0\] \(x\) must have a batch dimension"),
    ],
)
def test_integrate_bad_input(field, scheme, x0, match):
    with pytest.raises(ValueError, match=match):
        sn.integrate(field, scheme, x0, t1=1.0, steps=2)


@pytest.mark.parametrize("save", ["first", None, "ALL", 1])
def test_integrate_bad_save(save):
    with pytest.raises(ValueError, match="save must be 'last' or 'all'"):
        sn.integrate(ODE, sn.Euler(), X0, t1=1.0, steps=2, save=save)


def test_generator_on_another_device_type():
    # a CPU generator with a state on the meta device: the device types differ
    x0 = torch.ones(3, 2, device="meta")
    with pytest.raises(ValueError, match="generator is on cpu but x0 is on meta"):
        sn.integrate(SDE, sn.WeakEuler(), x0, t1=1.0, steps=2, generator=gen(0))
    with pytest.raises(ValueError, match="generator is on cpu"):
        sn.integrate(COUPLED, sn.CoupledEuler(), (x0, x0), t1=1.0, steps=2, generator=gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_with_cpu_state_and_cuda_run():
    with pytest.raises(ValueError, match="generator is on cuda"):
        sn.integrate(SDE, sn.WeakEuler(), X0, t1=1.0, steps=2, generator=gen(0, "cuda"))
    x0 = X0.cuda()
    a = sn.integrate(SDE, sn.WeakEuler(sn.Rademacher()), x0, t1=1.0, steps=4, generator=gen(0, "cuda"))
    b = sn.integrate(SDE, sn.WeakEuler(sn.Rademacher()), x0, t1=1.0, steps=4, generator=gen(0, "cuda"))
    assert a.device.type == "cuda" and torch.equal(a, b)


# ------------------------------------------------------------------ the throughput benchmark still runs


def test_throughput_benchmark_smoke(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "sde_throughput.py"
    spec = importlib.util.spec_from_file_location("sde_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench"
    rc = bench.main(
        [
            "--paths",
            "1",
            "20000",
            "--steps",
            "3",
            "--repeats",
            "1",
            "--repeats-small",
            "1",
            "--no-torchsde",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert {(r["paths"], r["law"]) for r in res["rows"]} == {
        (p, law) for p in (1, 20000) for law in bench.LAWS
    }
    assert all(r["sdenet_s"] > 0 and r["plain_s"] > 0 for r in res["rows"])
    assert res["hardware"]["logical_cores"] >= 1 and len(res["load_average_before"]) == 3
    assert "| 20,000 | rademacher |" in out.with_suffix(".md").read_text()
    # every contender samples the same OU law: at 20000 paths the means agree with the exact mean
    # to within 5 standard errors plus the O(Δt²)-per-step bias of three Euler steps (~1e-4)
    exact = res["sanity"]["20000"]["exact"]
    for v in res["sanity"]["20000"]["empirical"].values():
        se = math.sqrt(exact["exact_var"] / 20000)
        assert abs(v["mean"] - exact["exact_mean"]) < 5 * se + 1e-3


def test_module_callables_are_registered_once():
    """A drift/diffusion that is an nn.Module trains and is saved exactly once."""
    lin_f, lin_g = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    field = sn.SDEField(lambda t, x: lin_f(x), lin_g)
    assert list(field.state_dict()) == ["_g.weight", "_g.bias"]
    field = sn.SDEField(lin_f, lin_g)
    assert sorted(field.state_dict()) == ["_f.bias", "_f.weight", "_g.bias", "_g.weight"]
    assert len(list(field.parameters())) == 4
    coupled = sn.CoupledField(lin_f, lambda t, x: x)
    assert sorted(coupled.state_dict()) == ["_f1.bias", "_f1.weight"]
