"""Noise laws: shapes, dtypes, devices, seeded determinism, supports and bad input.

Moments against samples are tested in tests/test_weak.py; here the laws are checked as
samplers: what they return, from which set, and that a seed fixes it.
"""

import math

import pytest
import torch

import sdenet as sn
from sdenet.laws import random_bits

LAWS = [
    sn.Gaussian(),
    sn.Uniform(),
    sn.Rademacher(),
    sn.ThreePoint(),
    sn.DropBernoulli(0.5),
    sn.DropBernoulli(0.8),
]
IDS = [repr(law) for law in LAWS]


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ shapes, dtypes, devices


@pytest.mark.parametrize("law", LAWS, ids=IDS)
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 1, 5, 3), (1,), (0, 3)])
def test_sample_shape(law, shape):
    out = law.sample(shape, 0.1, generator=gen(0))
    assert out.shape == torch.Size(shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("law", LAWS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_dtype(law, dtype):
    out = law.sample((50,), 0.25, generator=gen(1), dtype=dtype)
    assert out.dtype == dtype


@pytest.mark.parametrize("law", LAWS, ids=IDS)
def test_default_dtype_followed(law):
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        assert law.sample((4,), 0.5, generator=gen(2)).dtype == torch.float64
    finally:
        torch.set_default_dtype(old)
    assert law.sample((4,), 0.5, generator=gen(2)).dtype == old


@pytest.mark.parametrize("law", LAWS, ids=IDS)
def test_device_argument(law):
    out = law.sample((6,), 0.5, generator=gen(3), device="cpu")
    assert out.device.type == "cpu"
    # no device: the generator's device
    out = law.sample((6,), 0.5, generator=gen(3))
    assert out.device == torch.device("cpu")
    # no generator at all: the global one, still the right shape
    assert law.sample((6,), 0.5).shape == (6,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("law", LAWS, ids=IDS)
def test_cuda_generator(law):
    g = torch.Generator(device="cuda").manual_seed(0)
    a = law.sample((100,), 0.5, generator=g)
    assert a.device.type == "cuda"
    g.manual_seed(0)
    assert torch.equal(a, law.sample((100,), 0.5, generator=g))


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("law", LAWS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_seed_same_draws_other_seed_other_draws(law, dtype):
    a = law.sample((1000,), 0.3, generator=gen(11), dtype=dtype)
    b = law.sample((1000,), 0.3, generator=gen(11), dtype=dtype)
    c = law.sample((1000,), 0.3, generator=gen(12), dtype=dtype)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("law", LAWS, ids=IDS)
def test_generator_advances(law):
    g = gen(5)
    a = law.sample((500,), 0.3, generator=g)
    b = law.sample((500,), 0.3, generator=g)
    assert not torch.equal(a, b)


# ------------------------------------------------------------------ supports


@pytest.mark.parametrize("dt", [1.0, 0.1, 1e-3, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 4000, 3 * sn.Rademacher.small + 5], ids=["one", "small", "bits"])
def test_rademacher_values_are_exactly_plus_minus_sqrt_dt(dt, dtype, n):
    out = sn.Rademacher().sample((n,), dt, generator=gen(7), dtype=dtype)
    s = torch.tensor(math.sqrt(dt), dtype=dtype)
    assert ((out == s) | (out == -s)).all()
    if n > 1:
        assert (out == s).any() and (out == -s).any()
        # both signs equally likely: |#(+) − n/2| within 4.5 standard errors √n/2
        assert abs((out > 0).sum().item() - n / 2) < 4.5 * math.sqrt(n) / 2


@pytest.mark.parametrize("dt", [1.0, 0.1, 1e-3, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_threepoint_values_are_zero_or_plus_minus_sqrt_3dt(dt, dtype):
    out = sn.ThreePoint().sample((6000,), dt, generator=gen(8), dtype=dtype)
    a = torch.tensor(math.sqrt(3.0 * dt), dtype=dtype)
    assert ((out == a) | (out == -a) | (out == 0)).all()
    assert (out == a).any() and (out == -a).any() and (out == 0).any()


@pytest.mark.parametrize("dt", [1.0, 0.01])
def test_uniform_support(dt):
    out = sn.Uniform().sample((20000,), dt, generator=gen(9), dtype=torch.float64)
    a = math.sqrt(3.0 * dt)
    assert out.abs().max() <= a
    # with 20000 draws both ends are reached to within 1% (failure chance 2·0.995^20000)
    assert out.max() > 0.99 * a and out.min() < -0.99 * a


@pytest.mark.parametrize("p", [0.5, 0.8, 0.1])
@pytest.mark.parametrize("dt", [1.0, 0.05])
def test_drop_two_values_and_eta_reproduces_sample(p, dt):
    law = sn.DropBernoulli(p)
    out = law.sample((3000,), dt, generator=gen(10), dtype=torch.float64)
    eta = law.sample_eta((3000,), generator=gen(10), dtype=torch.float64)
    assert ((eta == 0) | (eta == 1)).all() and (eta == 0).any() and (eta == 1).any()
    scale = math.sqrt(dt / (p * (1 - p)))
    assert law.scale(dt) == pytest.approx(scale, rel=1e-15)
    torch.testing.assert_close(out, (eta - p) * scale, rtol=1e-15, atol=0)


def test_drop_p_one_is_identically_zero():
    law = sn.DropBernoulli(1)
    assert law.degenerate and law.p == 1.0
    for dt in (1.0, 0.1):
        assert law.moments(dt) == (0.0, 0.0, 0.0, 0.0)
        out = law.sample((100, 3), dt, generator=gen(0), dtype=torch.float64)
        assert torch.equal(out, torch.zeros(100, 3, dtype=torch.float64))
        assert law.scale(dt) == 0.0
    assert torch.equal(law.sample_eta((5,)), torch.ones(5))
    assert law.weak_order == 0.0


def test_drop_symmetric_only_at_half():
    assert sn.DropBernoulli(0.5).symmetric
    assert not sn.DropBernoulli(0.8).symmetric


# ------------------------------------------------------------------ random_bits


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000])
def test_random_bits_shape_and_values(n):
    bits = random_bits(n, gen(0))
    assert bits.shape == (n,) and bits.dtype == torch.uint8
    assert ((bits == 0) | (bits == 1)).all()


def test_random_bits_fair_and_seeded():
    n = 64 * 4000
    bits = random_bits(n, gen(3)).double()
    # every one of the 64 bit positions of a word is fair: |mean - ½| < 4.5 standard errors
    per_position = bits.view(-1, 64).mean(0)
    se = 0.5 / math.sqrt(n // 64)
    assert (per_position - 0.5).abs().max() < 4.5 * se
    assert torch.equal(random_bits(200, gen(4)), random_bits(200, gen(4)))
    assert not torch.equal(random_bits(200, gen(4)), random_bits(200, gen(5)))


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("p", [0, 0.0, -0.2, 1.5, float("nan"), float("inf")])
def test_drop_p_outside_unit_interval_raises_naming_it(p):
    with pytest.raises(ValueError) as err:
        sn.DropBernoulli(p)
    assert repr(p) in str(err.value) or str(p) in str(err.value)


def test_drop_p_not_a_number_raises():
    with pytest.raises(ValueError, match="'abc'"):
        sn.DropBernoulli("abc")
    with pytest.raises(ValueError, match="None"):
        sn.DropBernoulli(None)


@pytest.mark.parametrize("law", LAWS + [sn.DropBernoulli(1.0)], ids=IDS + ["DropBernoulli(p=1.0)"])
@pytest.mark.parametrize("dt", [0, 0.0, -0.1, float("nan"), float("inf"), "x", None])
def test_bad_dt_raises_naming_it(law, dt):
    for call in (
        lambda: law.sample((3,), dt),
        lambda: law.moments(dt),
        lambda: law.condition(dt),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert repr(dt) in str(err.value)


# ------------------------------------------------------------------ registry


@pytest.mark.parametrize(
    "name, cls",
    [
        ("gaussian", sn.Gaussian),
        ("normal", sn.Gaussian),
        ("Uniform", sn.Uniform),
        ("rademacher", sn.Rademacher),
        ("three-point", sn.ThreePoint),
        ("threepoint", sn.ThreePoint),
        ("drop", sn.DropBernoulli),
        ("bernoulli", sn.DropBernoulli),
    ],
)
def test_get_law_names(name, cls):
    assert type(sn.get_law(name)) is cls


def test_get_law_every_listed_name_builds():
    for name in sn.LAW_NAMES:
        assert sn.get_law(name).name == name


def test_get_law_drop_takes_p():
    assert sn.get_law("drop", p=0.7) == sn.DropBernoulli(0.7)
    assert sn.get_law("drop") == sn.DropBernoulli(0.5)
    with pytest.raises(ValueError, match="1.5"):
        sn.get_law("drop", p=1.5)


def test_get_law_unknown_and_misplaced_p():
    with pytest.raises(ValueError, match="cauchy"):
        sn.get_law("cauchy")
    with pytest.raises(ValueError, match="gaussian"):
        sn.get_law("gaussian", p=0.5)


@pytest.mark.parametrize("law", LAWS, ids=IDS)
def test_shape_int_and_size_accepted(law):
    assert law.sample(5, 0.1, generator=gen(0)).shape == (5,)
    assert law.sample(torch.Size([2, 3]), 0.1, generator=gen(0)).shape == (2, 3)
    assert law.sample([], 0.1, generator=gen(0)).shape == ()


@pytest.mark.parametrize("law", LAWS, ids=IDS)
@pytest.mark.parametrize("shape", [(-1, 3), "ab", (2.5,), None, -2])
def test_bad_shape_raises_naming_it(law, shape):
    with pytest.raises(ValueError, match="shape="):
        law.sample(shape, 0.1)


def test_sample_eta_shape_checked():
    assert sn.DropBernoulli(0.3).sample_eta(4, generator=gen(0)).shape == (4,)
    with pytest.raises(ValueError, match="shape="):
        sn.DropBernoulli(0.3).sample_eta((2, -1))


@pytest.mark.parametrize("law", LAWS, ids=IDS)
def test_generator_and_device_of_different_types_raise(law):
    # a CPU generator asked to sample on the meta device: a ValueError naming both, not a torch error
    with pytest.raises(ValueError, match="generator is on cpu but the sample was asked on meta"):
        law.sample((3,), 0.1, generator=gen(0), device="meta")
    assert law.sample((3,), 0.1, generator=gen(0), device=torch.device("cpu")).shape == (3,)


def test_sample_eta_generator_device_mismatch():
    with pytest.raises(ValueError, match="generator is on cpu"):
        sn.DropBernoulli(0.5).sample_eta((3,), generator=gen(0), device="meta")
