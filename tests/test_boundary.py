"""The API boundary: what fields return is checked on the first step, bad generators,
sample dtypes and non-finite scheme coefficients are refused, and fields receive ``t`` as
a 0-dim tensor on the state's device and dtype (torchsde's convention)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import sdenet as sn
import sdenet.models as models
import sdenet.nn as snn
from sdenet.fields import FieldCheck, time_points

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------ drift outputs


ODE_SCHEMES = [sn.Euler(), sn.Heun(), sn.NeumannEuler(2), sn.LinearMultistep(k=-0.05)]
SDE_SCHEMES = [sn.WeakEuler(sn.Rademacher()), sn.EulerMaruyama(), sn.StochasticLM(g=-0.9, law=sn.Uniform())]


@pytest.mark.parametrize("scheme", ODE_SCHEMES, ids=repr)
def test_drift_of_wrong_shape_is_refused_naming_field_and_shapes(scheme):
    field = sn.ODEField(lambda t, x: x.repeat(1, 5))  # (B, 5) for a (B, 1) state
    with pytest.raises(ValueError) as e:
        sn.integrate(field, scheme, torch.ones(8, 1), t1=1.0, steps=4)
    msg = str(e.value)
    assert "integrate" in msg and "drift of ODEField" in msg and "(8, 5)" in msg and "(8, 1)" in msg


@pytest.mark.parametrize("scheme", SDE_SCHEMES, ids=repr)
def test_sde_drift_of_wrong_shape_is_refused(scheme):
    field = sn.SDEField(lambda t, x: x.repeat(1, 5), lambda t, x: torch.ones_like(x))
    with pytest.raises(ValueError, match=r"drift of SDEField returned shape \(8, 5\).*\(8, 1\)"):
        sn.integrate(field, scheme, torch.ones(8, 1), t1=1.0, steps=4, generator=gen())


@pytest.mark.parametrize("scheme", ODE_SCHEMES[:2] + SDE_SCHEMES[:1], ids=repr)
def test_drift_of_other_dtype_is_refused(scheme):
    drift = lambda t, x: (-x).double()  # noqa: E731  would silently make the state float64
    field = sn.ODEField(drift) if not scheme.stochastic else sn.SDEField(drift, lambda t, x: x)
    with pytest.raises(ValueError, match=r"dtype torch\.float64 for a state of dtype torch\.float32"):
        sn.integrate(field, scheme, torch.ones(4, 2), t1=1.0, steps=3, generator=gen())


def test_drift_on_other_device_integer_or_not_a_tensor_is_refused():
    x0 = torch.ones(4, 2)
    cases = [
        (lambda t, x: torch.empty(x.shape, device="meta"), r"on meta for a state on cpu"),
        (lambda t, x: x.long(), r"dtype torch\.int64; it must be floating point"),
        (lambda t, x: 0.5, r"returned float; it must return a tensor"),
        (lambda t, x: None, r"returned NoneType"),
    ]
    for drift, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            sn.integrate(sn.ODEField(drift), sn.Euler(), x0, t1=1.0, steps=2)


def test_drift_that_broadcasts_to_the_state_is_accepted():
    # a constant drift of shape () or (1,) broadcasts to the state without changing its shape
    for const in (torch.tensor(2.0), torch.tensor([2.0])):
        out = sn.integrate(
            sn.ODEField(lambda t, x, c=const: c), sn.Euler(), torch.zeros(3, 2), t1=1.0, steps=4
        )
        assert out.shape == (3, 2) and torch.allclose(out, torch.full((3, 2), 2.0))


# ------------------------------------------------------------------------ diffusion outputs


@pytest.mark.parametrize(
    "noise,bad", [("diagonal", (3,)), ("diagonal", (8, 2)), ("sample", (8, 4)), ("batch", (2, 1))]
)
def test_diffusion_that_does_not_broadcast_against_the_noise_is_refused(noise, bad):
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones(bad), noise=noise)
    with pytest.raises(ValueError) as e:
        sn.integrate(field, sn.WeakEuler(sn.Rademacher()), torch.ones(8, 1), t1=1.0, steps=2, generator=gen())
    msg = str(e.value)
    assert "diffusion of SDEField" in msg and str(tuple(bad)).replace(",)", ",)") in msg and "(8, 1)" in msg


@pytest.mark.parametrize(
    "noise,shape",
    [
        ("diagonal", (8, 3)),
        ("diagonal", ()),
        ("diagonal", (3,)),
        ("sample", (8, 3)),
        ("sample", (8, 1)),
        ("batch", ()),
    ],
)
def test_diffusion_that_broadcasts_is_accepted(noise, shape):
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.full(shape, 0.3), noise=noise)
    out = sn.integrate(field, sn.WeakEuler(sn.Uniform()), torch.ones(8, 3), t1=1.0, steps=3, generator=gen())
    assert out.shape == (8, 3)


def test_diffusion_of_other_dtype_is_refused():
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones(x.shape, dtype=F64))
    with pytest.raises(ValueError, match=r"diffusion of SDEField returned dtype torch\.float64"):
        sn.integrate(field, sn.EulerMaruyama(), torch.ones(4, 1), t1=1.0, steps=2, generator=gen())


def test_coupled_field_outputs_are_checked():
    good = lambda t, v: torch.tanh(v)  # noqa: E731
    x0 = (torch.ones(4, 2), torch.ones(4, 2))
    with pytest.raises(
        ValueError, match=r"f1 of CoupledField returned shape \(4, 3\) for a state of shape \(4, 2\)"
    ):
        sn.integrate(
            sn.CoupledField(lambda t, y: y.repeat(1, 2)[:, :3], good), sn.CoupledEuler(), x0, t1=1, steps=2
        )
    with pytest.raises(ValueError, match=r"f2 of CoupledField returned dtype torch\.float64"):
        sn.integrate(sn.CoupledField(good, lambda t, x: x.double()), sn.CoupledEuler(), x0, t1=1, steps=2)
    out = sn.integrate(sn.CoupledField(good, good), sn.CoupledEuler(), x0, t1=1, steps=2)
    assert out[0].shape == (4, 2) and out[1].shape == (4, 2)


def test_a_field_that_overrides_increment_is_checked_on_its_increment():
    class Bad(sn.Field):
        noise = "diagonal"

        def increment(self, t, x, dt, dw):
            return torch.cat([x, x], dim=1)

    with pytest.raises(ValueError, match=r"increment of Bad returned shape \(2, 4\)"):
        sn.integrate(Bad(), sn.WeakEuler(), torch.ones(2, 2), t1=1.0, steps=2, generator=gen())


def test_the_checked_step_is_the_plain_step_bit_for_bit():
    field = sn.SDEField(
        lambda t, x: torch.sin(x) * (1 + t), lambda t, x: 0.3 * torch.cos(x), noise="diagonal"
    )
    x0 = torch.randn(64, 3, generator=gen(1))
    for scheme in (sn.WeakEuler(sn.ThreePoint()), sn.StochasticLM(g=-0.95, law=sn.Gaussian())):
        t = torch.tensor(0.25)
        plain, _ = scheme.step(field, t, x0, 0.25, scheme.init(field, 0.0, x0, 0.25), gen(5))
        checked, _ = scheme.step(
            FieldCheck(field, x0, "test"), t, x0, 0.25, scheme.init(field, 0.0, x0, 0.25), gen(5)
        )
        assert torch.equal(plain, checked)


def test_outputs_under_autocast_may_have_another_dtype():
    lin = nn.Linear(3, 3)
    field = sn.ODEField(lambda t, x: lin(x))  # bf16 under CPU autocast, for a float32 state
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sn.integrate(field, sn.Euler(), torch.ones(4, 3), t1=1.0, steps=2)
    assert out.shape == (4, 3)
    with pytest.raises(ValueError, match="dtype"):
        sn.integrate(
            sn.ODEField(lambda t, x: lin(x).to(torch.bfloat16)), sn.Euler(), torch.ones(4, 3), t1=1, steps=2
        )


# ------------------------------------------------------------------------ network stages


class Widen(nn.Module):
    """A 'residual branch' that doubles the channels: wrong inside a stage."""

    def forward(self, x):
        return torch.cat([x, x], dim=1)


def test_stage_refuses_a_block_of_wrong_shape_naming_stage_and_block():
    blocks = [snn.PreActBasic(4, 4), Widen()]
    stage = snn.Stage([Widen()] + blocks, sn.Euler(), name="stage2")
    with pytest.raises(ValueError) as e:
        stage(torch.randn(2, 4, 6, 6, generator=gen()))
    msg = str(e.value)
    assert "Stage 'stage2'" in msg and "BlockField (block 0, Widen)" in msg
    assert "(2, 8, 6, 6)" in msg and "(2, 4, 6, 6)" in msg


def test_stage_with_a_user_sde_field_is_checked():
    field = sn.SDEField(lambda t, x: x, lambda t, x: torch.ones(3, 3), noise="sample")
    stage = snn.Stage(field, sn.WeakEuler(sn.Uniform()), dt=0.5, steps=4)
    with pytest.raises(ValueError, match=r"Stage: the diffusion of SDEField returned shape \(3, 3\)"):
        stage(torch.ones(5, 2))


def test_transition_refuses_a_branch_that_does_not_fit_its_shortcut():
    branch = nn.Conv2d(4, 8, 3, padding=1)  # keeps the resolution, the shortcut halves it
    tr = snn.Transition(snn.PadShortcut(4, 8, stride=2), branch, sn.Euler(), name="t2")
    with pytest.raises(
        ValueError, match=r"Transition 't2': the drift of BlockField.*\(2, 8, 6, 6\).*\(2, 8, 3, 3\)"
    ):
        tr(torch.randn(2, 4, 6, 6))


@pytest.mark.parametrize(
    "name,kw",
    [
        ("tiny_resnet", {}),
        ("tiny_lm_resnet", {}),
        ("tiny_sd_resnet", {}),
        ("tiny_sd_resnet", {"mode": "batch"}),
        ("tiny_lm_sd_resnet", {}),
        ("tiny_shake_shake", {}),
        ("revnet", {}),
        ("polynet", {}),
        ("fractalnet", {}),
    ],
)
def test_network_forward_is_bit_for_bit_the_unchecked_one(name, kw):
    """The first (checked) call and a later (unchecked) call give the same bits, noise included."""
    torch.manual_seed(0)
    net = models.create(name, num_classes=10, **kw)
    x = torch.randn(4, 3, 32, 32, generator=gen(3))
    stages = [m for m in net.modules() if isinstance(m, snn.Stage)]
    assert stages and not any(s._boundary_checked for s in stages)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        snn.set_generator(net, gen(9))
        first = net(x)
        assert all(s._boundary_checked for s in stages)
        snn.set_generator(net, gen(9))
        again = net(x)
        assert torch.equal(first, again)
        for s in stages:
            s._boundary_checked = False


def test_network_runs_under_cpu_autocast_and_channels_last():
    net = models.create("tiny_lm_sd_resnet", num_classes=10).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.shape == (4, 10) and torch.isfinite(out.float()).all()


# ------------------------------------------------------------------------ generators and dtypes


@pytest.mark.parametrize("bad", [0, "cpu", object(), torch.device("cpu")], ids=repr)
def test_generator_must_be_a_torch_generator(bad):
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones_like(x))
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        sn.integrate(field, sn.EulerMaruyama(), torch.ones(2, 1), t1=1.0, steps=2, generator=bad)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        sn.Gaussian().sample((3,), 0.1, generator=bad)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        sn.DropBernoulli(0.5).sample_eta((3,), generator=bad)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        snn.lm_stage([nn.Identity()], generator=bad)
    with pytest.raises(ValueError, match="expected a torch.Generator"):
        snn.set_generator(models.create("tiny_sd_resnet"), bad)
    with pytest.raises(ValueError, match="expected a torch.Generator"):
        snn.mc_predict(models.create("tiny_sd_resnet"), torch.randn(2, 3, 32, 32), samples=2, generator=bad)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, torch.uint8, "float32", float])
@pytest.mark.parametrize(
    "law", [sn.Gaussian(), sn.Uniform(), sn.Rademacher(), sn.ThreePoint(), sn.DropBernoulli(0.7)], ids=repr
)
def test_sample_dtype_must_be_floating(law, dtype):
    with pytest.raises(ValueError, match="dtype must be a floating torch dtype"):
        law.sample((5,), 0.25, generator=gen(), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_floating_sample_dtypes_still_work(dtype):
    for law in (sn.Gaussian(), sn.Rademacher(), sn.DropBernoulli(0.7)):
        out = law.sample((1000,), 0.25, generator=gen(), dtype=dtype)
        assert out.dtype == dtype
        # the sample variance is Δt within a few standard errors (E ΔŴ⁴ ≤ 9Δt² for these laws)
        assert abs(out.double().pow(2).mean().item() - 0.25) < 5 * math.sqrt(9 * 0.25**2 / 1000) + 1e-2


# ------------------------------------------------------------------------ coefficients


@pytest.mark.parametrize(
    "build",
    [
        lambda v: sn.StochasticLM(g=v),
        lambda v: sn.LinearMultistep(k=v),
        lambda v: sn.get_scheme("stochastic_lm", law=sn.Uniform(), g=v),
        lambda v: sn.get_scheme("lm", k=v),
    ],
    ids=["StochasticLM", "LinearMultistep", "get_scheme(stochastic_lm)", "get_scheme(lm)"],
)
@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        "nan",
        torch.tensor([0.1, float("nan")]),
        torch.tensor(float("inf")),
        torch.tensor([1, 2]),
        None,
        True,
    ],
    ids=repr,
)
def test_non_finite_or_non_numeric_coefficients_are_refused(build, value):
    with pytest.raises(ValueError, match=r"must be (finite|a float|floating)"):
        build(value)


def test_finite_coefficients_still_work():
    k = torch.full((1, 3), -0.05, requires_grad=True)
    assert sn.LinearMultistep(k=k).k is k
    assert sn.StochasticLM(g=torch.tensor(-0.9)).g.item() == pytest.approx(-0.9)
    assert sn.StochasticLM(g=lambda n: -0.9).coefficient(3) == -0.9
    assert sn.LinearMultistep(k=1).k == 1.0


# ------------------------------------------------------------------------ time as a tensor


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fields_receive_t_as_a_0dim_tensor_on_the_state_dtype_and_device(dtype):
    seen = []

    def drift(t, x):
        seen.append(t)
        return torch.sqrt(1 + t) * torch.ones_like(x)  # written like a torchsde drift

    field = sn.SDEField(drift, lambda t, x: torch.exp(-t) * torch.ones_like(x), noise="diagonal")
    out = sn.integrate(
        field,
        sn.WeakEuler(sn.Rademacher()),
        torch.zeros(3, 1, dtype=dtype),
        t0=0.5,
        t1=1.5,
        steps=8,
        generator=gen(),
    )
    assert out.dtype == dtype and len(seen) == 8
    for n, t in enumerate(seen):
        assert isinstance(t, torch.Tensor) and t.dim() == 0 and t.dtype == dtype and t.device == out.device
        assert t.item() == torch.tensor(0.5 + n * 0.125, dtype=dtype).item()


def test_tensor_time_agrees_with_float_time_exactly_in_double():
    class Timed(sn.Field):
        def __init__(self, tensor_time):
            super().__init__()
            self.tensor_time = tensor_time

        def drift(self, t, x):
            return x * torch.as_tensor(t, dtype=x.dtype).cos()

    x0 = torch.linspace(-1, 1, 5, dtype=F64)[:, None]
    for scheme in (sn.Euler(), sn.Heun(), sn.LinearMultistep(k=-0.1)):
        a = sn.integrate(Timed(True), scheme, x0, t0=0.3, dt=0.01, steps=300)
        b = sn.integrate(Timed(False), scheme, x0, t0=0.3, dt=0.01, steps=300)
        assert torch.equal(a, b)


def test_time_dependent_ode_converges_to_its_closed_form():
    # u' = cos(t) u, u(0) = 1: u(t) = exp(sin t); Heun is second order with tensor t
    field = sn.ODEField(lambda t, x: torch.cos(t) * x)
    errs = []
    for steps in (20, 40, 80):
        out = sn.integrate(field, sn.Heun(), torch.ones(1, 1, dtype=F64), t1=2.0, steps=steps)
        errs.append(abs(out.item() - math.exp(math.sin(2.0))))
    slope = math.log(errs[0] / errs[2]) / math.log(4)
    assert 1.8 < slope < 2.2


def test_direct_calls_with_a_float_still_give_the_callable_a_tensor():
    field = sn.SDEField(lambda t, x: torch.sqrt(1 + t) * x, lambda t, x: t * x)
    x = torch.ones(2, 1, dtype=F64)
    assert torch.equal(field.drift(3.0, x), torch.full((2, 1), 2.0, dtype=F64))
    assert field.diffusion(0.5, x).dtype == F64
    assert sn.ODEField(lambda t, x: torch.sin(t) * x).drift(0.0, x).abs().sum() == 0
    cf = sn.CoupledField(lambda t, y: t * y, lambda t, x: torch.sqrt(t) * x)
    assert cf.drift(4.0, (x, x))[1].sum().item() == 4.0


def test_network_fields_receive_t_as_a_float():
    seen = []

    class Spy(sn.nn.BlockField):
        def drift(self, t, x):
            seen.append(t)
            return super().drift(t, x)

    stage = snn.Stage(Spy([nn.Identity(), nn.Identity()], dt=0.5), sn.Euler())
    stage(torch.ones(2, 3))
    stage(torch.ones(2, 3))
    assert seen == [0.0, 0.5, 0.0, 0.5] and all(type(t) is float for t in seen)


def test_stage_with_a_user_field_gets_tensor_time():
    seen = []

    def drift(t, x):
        seen.append(t)
        return torch.sqrt(1 + t) * x

    stage = snn.Stage(sn.ODEField(drift), sn.Euler(), dt=0.25, steps=3)
    out = stage(torch.ones(2, 1, dtype=F64))
    stage(torch.ones(2, 1, dtype=F64))
    assert [t.item() for t in seen] == [0.0, 0.25, 0.5] * 2 and all(t.dtype == F64 for t in seen)
    assert out[0].item() == pytest.approx(
        (1 + 0.25) * (1 + 0.25 * math.sqrt(1.25)) * (1 + 0.25 * math.sqrt(1.5))
    )


def test_time_points_chunks_and_start():
    like = torch.zeros(1, dtype=F64)
    ts = list(time_points(0.1, 0.3, 10, like, chunk=3, first=2))
    assert [t.item() for t in ts] == [0.1 + n * 0.3 for n in range(2, 10)]
    assert list(time_points(0.1, 0.3, 3, like, tensor=False)) == [0.1, 0.1 + 0.3, 0.1 + 2 * 0.3]
