"""The scheme protocol and the one stepping loop (issue 17, items 1 and 2).

* every built-in scheme declares what the library asks (law, increments, look-ahead, history,
  noise structures, eval reduction, orders), and the stochastic ones' deterministic ``order``
  is checked by a fitted slope;
* a law answers for itself (survival, rescheduling, condition-(5) constant, support);
* nothing in ``sdenet/`` tests a scheme's, law's or field's class outside its own module;
* the loop's in-place path gives the generic path's numbers on a user's field, never runs
  where a gradient is needed, and leaves ``x0`` alone;
* the worked example of ``docs/protocol.md`` (a new scheme in ~20 lines) runs in ``integrate``
  and in a ``Stage`` with no other change.
"""

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import sdenet as sn
from sdenet import fast
from sdenet.laws import survival_at
from sdenet.schemes import SCHEME_NAMES, get_scheme

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def slope(dts, errs):
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


# ------------------------------------------------------------------ declarations


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_every_builtin_scheme_declares_the_protocol(name):
    s = get_scheme(name)
    assert isinstance(s.order, int) and s.order >= 1
    for attr in ("weak_order", "strong_order"):
        v = getattr(s, attr)
        assert v is None or v > 0
    assert (s.law is None) == (not s.stochastic)
    assert s.increments == (1 if s.stochastic else 0)
    assert s.accepts_dw == s.stochastic
    assert isinstance(s.evaluations, tuple) and s.evaluations
    assert s.lookahead == int(max(s.evaluations)) and s.lookahead in (0, 1)
    assert s.history in (0, 1)
    assert set(s.noise_types) <= set(sn.NOISE_TYPES)
    mean = s.mean_scheme()
    assert sn.schemes.is_scheme(mean) and mean.lookahead <= max(s.lookahead, 1)
    if not s.stochastic:
        assert mean is s
    assert isinstance(s.euler_step, bool) and (s.euler_law is None or s.euler_law is s.law)
    assert s.limit in ("sde", "second_order")
    assert isinstance(s.invertible, bool) and isinstance(s.exact_arithmetic, bool)


def test_declared_values_that_the_library_asks():
    assert sn.Heun().lookahead == 1 and sn.Heun().evaluations == (0.0, 1.0)
    assert sn.Platen().lookahead == 1
    assert sn.LinearMultistep().history == 1 and sn.StochasticLM().history == 1
    assert sn.StochasticLM().limit == "second_order" and sn.WeakEuler().limit == "sde"
    assert sn.Euler().euler_step and sn.WeakEuler().euler_step and sn.EulerMaruyama().euler_step
    assert not sn.StochasticLM().euler_step and not sn.Heun().euler_step
    assert repr(sn.WeakEuler(sn.Uniform()).mean_scheme()) == "Euler()"
    assert repr(sn.Platen().mean_scheme()) == "Heun()"
    m = sn.StochasticLM(g=-0.2, law=sn.DropBernoulli(0.7)).mean_scheme()
    assert m.g == -0.2 and m.law == sn.DropBernoulli(1.0)
    assert sn.WeakTaylor2().noise_types == ("sample", "batch", "diagonal")

    class MyEuler(sn.WeakEuler):  # a subclass with its own step is not weak Euler any more
        def step(self, field, t, x, dt, state, generator=None, *, dw=None):
            return super().step(field, t, x, dt, state, generator, dw=dw)

    assert not MyEuler().euler_step and MyEuler().euler_law is None
    assert MyEuler().inplace(sn.SDEField(lambda t, x: x, lambda t, x: x), torch.ones(2, 1), 0.1) is None


def test_deterministic_schemes_refuse_increments():
    field = sn.ODEField(lambda t, x: -x)
    x = torch.ones(3, 1, dtype=F64)
    for s in (sn.Euler(), sn.Heun(), sn.NeumannEuler(), sn.LinearMultistep()):
        with pytest.raises(ValueError, match="takes no increments"):
            s.step(field, 0.0, x, 0.1, s.init(field, 0.0, x, 0.1), dw=torch.zeros_like(x))


def test_noise_structures_a_scheme_does_not_declare_are_refused_when_built():
    class DiagonalOnly(sn.WeakEuler):
        noise_types = ("diagonal",)

    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones_like(x), noise="sample")
    with pytest.raises(ValueError, match="supports diagonal noise; this field has noise='sample'"):
        sn.integrate(field, DiagonalOnly(), torch.ones(4, 2), t1=1.0, steps=2)
    with pytest.raises(ValueError, match="supports diagonal noise"):
        sn.nn.Stage(field, DiagonalOnly(), dt=0.1, steps=3)
    general = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones(*x.shape, 2), noise="general", m=2)
    with pytest.raises(ValueError, match="WeakTaylor2 supports sample, batch and diagonal noise"):
        sn.integrate(general, sn.WeakTaylor2(), torch.ones(4, 3), t1=1.0, steps=2)


def _logistic_error(scheme, n, noise="sample"):
    """``u' = u(1 − u)`` as an SDE with zero diffusion: the stochastic scheme's deterministic part."""
    field = sn.SDEField(lambda t, x: x * (1 - x), lambda t, x: torch.zeros_like(x), noise=noise)
    x0 = torch.tensor([[0.1], [0.5], [0.9]], dtype=F64)
    x = sn.integrate(field, scheme, x0, t1=2.0, steps=n, generator=gen(0))
    e = math.exp(2.0)
    return (x - x0 * e / (1 - x0 + x0 * e)).abs().max().item()


@pytest.mark.parametrize("name", ["euler_maruyama", "weak_euler", "platen", "weak_taylor2", "milstein"])
def test_stochastic_schemes_deterministic_order_by_fitted_slope(name):
    s = get_scheme(name)
    steps = (16, 32, 64, 128)
    errs = [_logistic_error(s, n) for n in steps]
    assert abs(slope([2.0 / n for n in steps], errs) - s.order) <= 0.15, errs


# ------------------------------------------------------------------ laws


def test_laws_answer_for_themselves():
    d = sn.DropBernoulli(0.8)
    assert d.drops and d.survival == 0.8 and d.with_survival(0.6) == sn.DropBernoulli(0.6)
    assert d.with_survival(None) is d
    for dt in (1.0, 0.25, 1 / 16):
        assert d.rescheduled(dt, "sqrt") == sn.DropBernoulli(survival_at(0.8, dt, "sqrt"))
        assert d.rescheduled(dt) == d
    for law in (sn.Gaussian(), sn.Uniform(), sn.Rademacher(), sn.ThreePoint()):
        assert not law.drops and law.survival is None
        assert law.with_survival(0.3) is law and law.rescheduled(0.5, "sqrt") is law
    with pytest.raises(ValueError, match="p_schedule"):
        sn.Gaussian().rescheduled(0.5, "cubic")
    for law in (sn.Gaussian(), sn.Rademacher(), d):
        for dt in (0.5, 0.1):
            assert law.condition_constant(dt) == pytest.approx(law.condition(dt) / dt**2, rel=1e-15)
    # a discrete law's support reproduces its moments
    for law in (sn.Rademacher(), sn.ThreePoint(), d, sn.DropBernoulli(0.3)):
        values, probs = law.support(0.2)
        assert sum(probs) == pytest.approx(1.0, abs=1e-15)
        for k, m in enumerate(law.moments(0.2), 1):
            assert sum(p * v**k for v, p in zip(values, probs)) == pytest.approx(m, rel=1e-12, abs=1e-15)
    assert sn.Gaussian().support(0.2) is None and sn.DropBernoulli(1.0).support(0.2) is None


@pytest.mark.parametrize(
    "law", [sn.Gaussian(), sn.Uniform(), sn.Rademacher(), sn.ThreePoint(), sn.DropBernoulli(0.7)], ids=repr
)
@pytest.mark.parametrize("n", [7, 20_000])
def test_buffered_draws_are_the_laws_samples(law, n):
    x = torch.zeros(n, dtype=F64)
    drawer = law.draws((n,), 0.3, gen(5), x)
    g = gen(5)
    for _ in range(3):
        expect = law.sample((n,), 0.3, generator=g, dtype=F64)
        u, scale, shift = drawer.draw()
        torch.testing.assert_close(u.to(F64) * scale + shift, expect, rtol=1e-15, atol=1e-15)


# ------------------------------------------------------------------ no class tests outside a class's module

KINDS = {"laws.py": "law", "fields.py": "field", "fast.py": "field", "nn/fields.py": "field"}
# the schemes package: each class's home is the one submodule that defines it
KINDS.update(
    {
        p.relative_to(ROOT / "sdenet").as_posix(): "scheme"
        for p in sorted((ROOT / "sdenet" / "schemes").glob("*.py"))
    }
)


def _defined_classes():
    out = {}
    for rel in KINDS:
        tree = ast.parse((ROOT / "sdenet" / rel).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                out.setdefault(node.name, set()).add(rel)
    return out


def _class_tests(tree):
    """Names of classes tested by isinstance/issubclass or ``type(x) is/in/==``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
        ):
            if len(node.args) == 2:
                arg = node.args[1]
                for n in arg.elts if isinstance(arg, ast.Tuple) else [arg]:
                    if isinstance(n, (ast.Name, ast.Attribute)):
                        yield (n.id if isinstance(n, ast.Name) else n.attr), node.lineno
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Call)
            and getattr(node.left.func, "id", None) == "type"
        ):
            for comp in node.comparators:
                for n in comp.elts if isinstance(comp, (ast.Tuple, ast.List)) else [comp]:
                    if isinstance(n, (ast.Name, ast.Attribute)):
                        yield (n.id if isinstance(n, ast.Name) else n.attr), node.lineno


def test_nothing_in_sdenet_tests_a_scheme_law_or_field_class_outside_its_module():
    defined = _defined_classes()
    bad = []
    for path in sorted((ROOT / "sdenet").rglob("*.py")):
        rel = path.relative_to(ROOT / "sdenet").as_posix()
        for name, line in _class_tests(ast.parse(path.read_text())):
            homes = defined.get(name)
            if homes and rel not in homes:
                bad.append(f"sdenet/{rel}:{line} tests {name}")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------ the one loop


def _user_field(noise="diagonal"):
    sig = torch.tensor(0.4, dtype=F64)
    return sn.SDEField(
        lambda t, x: -0.7 * x + torch.sin(t) * 0.1, lambda t, x: sig + 0.2 * torch.cos(x), noise=noise
    )


def _both(field, scheme, x0, **kw):
    """(in place, generic) with the same seed."""
    with torch.no_grad():
        a = sn.integrate(field, scheme, x0, generator=gen(1), **kw)
    fast.ENABLED = False
    try:
        with torch.no_grad():
            b = sn.integrate(field, scheme, x0, generator=gen(1), **kw)
    finally:
        fast.ENABLED = True
    return a, b


@pytest.mark.parametrize(
    "law", [sn.Gaussian(), sn.Uniform(), sn.Rademacher(), sn.ThreePoint(), sn.DropBernoulli(0.8)], ids=repr
)
@pytest.mark.parametrize("noise", ["diagonal", "sample", "batch"])
def test_inplace_loop_on_a_user_field_equals_the_generic_loop(law, noise):
    x0 = torch.linspace(-1, 2, 20_000, dtype=F64).reshape(5000, 4)
    keep = x0.clone()
    a, b = _both(_user_field(noise), sn.WeakEuler(law), x0, t1=1.0, steps=12)
    assert torch.equal(x0, keep)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    a, b = _both(_user_field(noise), sn.WeakEuler(law), x0[:50], t1=1.0, steps=5, save="all")
    assert a.shape == (6, 50, 4) and torch.equal(a[0], x0[:50])
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_inplace_loop_for_euler_is_bit_for_bit_and_with_given_dw():
    field = sn.ODEField(lambda t, x: torch.tanh(x) * torch.cos(t))
    x0 = torch.randn(64, 3, generator=gen(0), dtype=F64)
    a, b = _both(field, sn.Euler(), x0, t1=1.0, steps=17)
    assert torch.equal(a, b)
    dw = torch.randn(10, 64, 3, generator=gen(2), dtype=F64) * math.sqrt(0.1)
    for law in (sn.Gaussian(), sn.Rademacher()):
        a, b = _both(_user_field(), sn.WeakEuler(law), x0, t1=1.0, steps=10, dw=dw)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_loop_never_works_in_place_where_a_gradient_is_needed():
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)  # captured by a lambda, not a parameter
    field = sn.SDEField(lambda t, x: -theta * x, lambda t, x: torch.full_like(x, 0.3))
    x = sn.integrate(
        field, sn.WeakEuler(sn.Rademacher()), torch.ones(100, 1, dtype=F64), t1=1.0, steps=8, generator=gen(0)
    )
    x.mean().backward()
    assert theta.grad is not None

    # the gradient equals a central difference of the same seeded map (run in place, grad off)
    def mean_at(v):
        with torch.no_grad():
            f = sn.SDEField(lambda t, x: -v * x, lambda t, x: torch.full_like(x, 0.3))
            return (
                sn.integrate(
                    f,
                    sn.WeakEuler(sn.Rademacher()),
                    torch.ones(100, 1, dtype=F64),
                    t1=1.0,
                    steps=8,
                    generator=gen(0),
                )
                .mean()
                .item()
            )

    h = 1e-6
    fd = (mean_at(0.7 + h) - mean_at(0.7 - h)) / (2 * h)
    assert theta.grad.item() == pytest.approx(fd, rel=1e-7)
    # x0 that needs a gradient: the generic path, gradient reaches it
    x0 = torch.ones(5, 1, dtype=F64, requires_grad=True)
    sn.integrate(sn.ODEField(lambda t, x: -x), sn.Euler(), x0, t1=1.0, steps=4).sum().backward()
    torch.testing.assert_close(x0.grad, torch.full_like(x0, 0.75**4))


def test_stage_runs_the_one_loop_in_place_in_inference():
    blocks = [torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()) for _ in range(5)]
    stage = sn.nn.Stage(blocks, sn.Euler(), dt=0.2).double()
    x = torch.randn(8, 4, generator=gen(0), dtype=F64)
    train = stage(x)  # autograd records: the generic loop
    with torch.no_grad():
        infer = stage(x)
    assert train.requires_grad and torch.equal(train.detach(), infer)


# ------------------------------------------------------------------ the worked example of docs/protocol.md


def _docs_example():
    text = (ROOT / "docs" / "protocol.md").read_text()
    code = re.search(r"<!-- example -->\s*```python\n(.*?)```", text, re.S).group(1)
    ns = {}
    exec(compile(code, "docs/protocol.md", "exec"), ns)
    return ns["PredictorCorrector"]


def test_docs_example_scheme_runs_in_integrate_and_in_a_stage_with_its_declared_order():
    PredictorCorrector = _docs_example()
    s = PredictorCorrector(sn.Rademacher())
    # deterministic order 2 (it reduces to Heun without noise), by a fitted slope
    steps = (16, 32, 64, 128)
    errs = [_logistic_error(s, n) for n in steps]
    assert abs(slope([2.0 / n for n in steps], errs) - s.order) <= 0.15, errs
    # the mean of OU: E X_{n+1} = (1 − θΔt + θ²Δt²/2) E X_n exactly, within Monte Carlo error
    theta, dt, n, paths = 1.0, 0.1, 10, 200_000
    field = sn.SDEField(lambda t, x: -theta * x, lambda t, x: torch.full_like(x, 0.5))
    x = sn.integrate(field, s, torch.ones(paths, 1, dtype=F64), dt=dt, steps=n, generator=gen(3))
    expect = (1 - theta * dt + (theta * dt) ** 2 / 2) ** n
    assert abs(x.mean().item() - expect) <= 5 * x.std().item() / math.sqrt(paths)
    # given Brownian increments: the Gaussian law takes them as they are
    dw = torch.randn(n, 3, 1, generator=gen(4), dtype=F64) * math.sqrt(dt)
    a = sn.integrate(field, PredictorCorrector(), torch.ones(3, 1, dtype=F64), dt=dt, steps=n, dw=dw)
    b = torch.ones(3, 1, dtype=F64)
    for k in range(n):
        bar = b - theta * b * dt + 0.5 * dw[k]
        b = b + (-theta * b - theta * bar) * (0.5 * dt) + 0.5 * dw[k]
    torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    # in a Stage: noise in training, the declared mean scheme (Heun) in eval mode
    stage = sn.nn.Stage(field, s, dt=dt, steps=n)
    stage.train()
    x0 = torch.ones(4, 1, dtype=F64)
    assert not torch.equal(stage(x0), stage(x0))
    stage.eval()
    torch.testing.assert_close(
        stage(x0),
        sn.integrate(sn.ODEField(lambda t, x: -theta * x), sn.Heun(), x0, dt=dt, steps=n),
        rtol=1e-14,
        atol=1e-14,
    )
