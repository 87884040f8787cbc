"""Depth as a step size: the LM start at general Δt, refine/coarsen at fixed T, p_schedule."""

import importlib.util
import math

import pytest
import torch

import sdenet as sn
import sdenet.models as M
import sdenet.nn as snn
from sdenet.laws import survival_at
from sdenet.nn import coarsen, refine
from sdenet.nn.stage import Stage, Transition
from sdenet.theory.refinement import old_rule_forward
from sdenet.weak import fit_slope

FAMILIES = [
    "tiny_resnet",
    "tiny_lm_resnet",
    "tiny_sd_resnet",
    "tiny_lm_sd_resnet",
    "tiny_shake_shake",
    "polynet",
    "fractalnet",
    "revnet",
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _x(seed=1, b=2, size=8):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _model(name, seed=0, **kw):
    torch.manual_seed(seed)
    return M.create(name, **kw).eval()


# the network with the pre-fix history rule X_{-1} = S(x) at every Δt (theory item 8 draws it)
_old_rule_forward = old_rule_forward


# ------------------------------------------------------------------ item 1: the LM start


@pytest.mark.parametrize("name", ["tiny_lm_resnet", "tiny_lm_sd_resnet", "lm_resnet20"])
@pytest.mark.parametrize("training", [False, True])
def test_lm_start_at_dt1_is_bit_for_bit_the_old_rule(name, training):
    net = _model(name)
    net.train(training)
    x = _x()
    with torch.no_grad():
        snn.set_generator(net, torch.Generator().manual_seed(5))
        new = net(x)
        snn.set_generator(net, torch.Generator().manual_seed(5))
        old = _old_rule_forward(net, x)
    assert torch.equal(new, old)


def test_start_history_rule():
    x0, s = torch.tensor([3.0]), torch.tensor([1.0])
    lm = sn.LinearMultistep(k=-0.5)
    assert sn.Euler().history == 0 and lm.history == 1 and sn.StochasticLM().history == 1
    assert sn.Euler().start(None, 0.0, x0, 0.25, before=s) is None
    assert lm.start(None, 0.0, x0, 1.0, before=s)["prev"] is s
    # X_{-1} = X_0 − Δt (X_0 − S): velocity (X_0 − X_{-1})/Δt = X_0 − S = 2 at every Δt
    for dt in (0.5, 0.125):
        prev = lm.start(None, 0.0, x0, dt, before=s)["prev"]
        assert float((x0 - prev) / dt) == pytest.approx(2.0)
    assert lm.start(None, 0.0, x0, 0.5)["prev"] is None  # from rest


def _successive(outputs):
    return [float((a - b).norm()) for a, b in zip(outputs, outputs[1:])]


def test_lm_sd_has_a_limit_after_a_transition_and_the_old_rule_has_none():
    net = _model("tiny_lm_sd_resnet")
    x = _x(b=1)
    with torch.no_grad():
        fine = [refine(net, 2**j) for j in range(5)]
        new = [m(x) for m in fine]
        old = [_old_rule_forward(m, x) for m in fine]
    d_new, d_old = _successive(new), _successive(old)
    dts = [2.0**-j for j in range(4)]
    order, _ = fit_slope(dts[1:], d_new[1:])
    assert 0.7 < order < 1.4, (order, d_new)
    assert max(float(o.abs().max()) for o in new) < 3 * float(new[0].abs().max()) + 1
    # the old rule's initial velocity r/Δt: differences stop shrinking and the output grows
    assert d_old[-1] > 0.5 * d_old[1]
    assert float(old[-1].abs().max()) > 3 * float(new[-1].abs().max())


# ------------------------------------------------------------------ item 2: refine / coarsen


def _order(name, levels):
    net = _model(name)
    x = _x(b=1)
    with torch.no_grad():
        outs = [refine(net, 2**j)(x) for j in range(levels + 1)]
    d = _successive(outs)  # |y_j − y_{j+1}| ~ C Δt_j^order
    order, _ = fit_slope([2.0**-j for j in range(levels - 2, levels)], d[-2:])
    return order, d


@pytest.mark.parametrize("name", FAMILIES[:4])
def test_refined_networks_converge_at_fixed_T(name):
    # constant prolongation: a piecewise-constant field in t, so order 1 for every scheme
    order, d = _order(name, 5)
    assert 0.7 < order < 1.4, (name, order, d)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_refined_networks_of_every_family_converge_with_order_one(name):
    order, d = _order(name, 6)
    assert 0.8 < order < 1.25, (name, order, d)


@pytest.mark.parametrize(
    "name,mode",
    [(n, m) for n in FAMILIES[:5] for m in ("constant", "linear")] + [(n, "constant") for n in FAMILIES[5:]],
)
def test_coarsen_of_refine_is_exact(name, mode):
    net = _model(name)
    back = coarsen(refine(net, 2, mode), 2)
    a, b = net.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = _x()
    with torch.no_grad():
        assert torch.equal(net(x), back(x))


@pytest.mark.parametrize("name", FAMILIES)
def test_refined_stages_integrate_the_same_T(name):
    net = _model(name)
    r = refine(net, 4)
    for (_, a), (_, b) in zip(_stages(net), _stages(r)):
        assert b.steps == 4 * a.steps and math.isclose(b.steps * b.dt, a.steps * a.dt)
        assert len(b.field) - b.steps == len(a.field) - a.steps  # Heun keeps its one look-ahead block
    # create(name, refine=F) builds the same architecture directly (fresh weights)
    c = M.create(name, refine=4)
    assert {k: v.shape for k, v in c.state_dict().items()} == {k: v.shape for k, v in r.state_dict().items()}
    for (_, a), (_, b) in zip(_stages(c), _stages(r)):
        assert getattr(a.field, "p", None) == pytest.approx(getattr(b.field, "p", None))
        assert [repr(s) for s in a.schemes] == [repr(s) for s in b.schemes]


def _stages(net):
    return [(p, m) for p, m in net.named_modules() if isinstance(m, Stage) and not isinstance(m, Transition)]


def test_refine_carries_batch_norm_and_maps_coefficients():
    net = _model("tiny_lm_resnet")
    stage = net.layers[0].stage
    bn = stage.field.blocks[0].bn1
    bn.running_mean.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stage.coefficients.copy_(torch.tensor([-0.3, -0.1]))
    c = refine(net, 2).layers[0].stage
    assert torch.equal(c.field.blocks[1].bn1.running_mean, bn.running_mean)
    assert c.coefficients.tolist() == pytest.approx([-0.3, -0.3, -0.1, -0.1])
    lin = refine(net, 2, "linear").layers[0].stage
    assert lin.coefficients.tolist() == pytest.approx([-0.3, -0.2, -0.1, -0.1])
    w0, w1 = (stage.field.blocks[i].conv1.weight for i in (0, 1))
    assert torch.allclose(lin.field.blocks[1].conv1.weight, 0.5 * (w0 + w1))
    # LM stochastic depth keeps g (a damping rate in continuous time), not the Δt = 1 step weights
    sd = _model("tiny_lm_sd_resnet").layers[1].stage
    assert refine(sd, 2).coefficients.tolist() == pytest.approx(sd.coefficients.repeat_interleave(2).tolist())


def test_refine_interpolates_survival_in_t_with_the_schedule():
    net = _model("tiny_sd_resnet", p_schedule="sqrt", blocks=(3, 3, 3))
    a, b = net.layers[2].stage.field.p_base
    r = refine(net, 2).layers[2].stage
    # Huang's linear decay is linear in t: interpolation (and extrapolation past the end) keeps it
    assert r.field.p_base == pytest.approx([a, (a + b) / 2, b, b + (b - a) / 2])
    assert r.field.p == pytest.approx([survival_at(p, 0.5, "sqrt") for p in r.field.p_base])
    assert [s.law.p for s in r.schemes] == pytest.approx(r.field.p)


def test_refine_works_on_a_single_stage_and_keeps_the_model():
    net = _model("tiny_resnet")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    st = refine(net.layers[0].stage, 3)
    assert st.steps == 6 and st.dt == pytest.approx(1 / 3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_refine_and_coarsen_errors():
    net = _model("tiny_resnet")
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="factor"):
            refine(net, bad)
    with pytest.raises(ValueError, match="mode"):
        refine(net, 2, mode="cubic")
    with pytest.raises(ValueError, match="mode"):
        coarsen(net, 2, mode="constant")
    with pytest.raises(ValueError, match="multiple"):
        coarsen(net, 4)  # stage 1 takes 2 steps
    with pytest.raises(ValueError, match="no sdenet Stage"):
        refine(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="refine"):
        M.create("tiny_resnet", refine=0)
    with pytest.raises(ValueError, match="whole number"):
        M.create("tiny_resnet", refine=0.25)


def test_coarsen_average_and_create_with_a_fraction():
    net = _model("preact_resnet20", blocks=(4, 3, 3))  # 4 steps, then transition + 2 steps
    half = M.create("preact_resnet20", blocks=(4, 3, 3), refine=0.5)
    assert [l.stage.steps for l in half.layers] == [2, 1, 1] and half.layers[0].stage.dt == 2.0
    avg = coarsen(net, 2, mode="average").layers[0].stage.field.blocks[0].conv1.weight
    ws = [b.conv1.weight for b in net.layers[0].stage.field.blocks]
    assert torch.allclose(avg, 0.5 * (ws[0] + ws[1]))


# torchvision is the [vision] extra, not [dev]: installing it can replace the torch build in place
@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="needs the [vision] extra: pip install 'sdenet[vision]'",
)
def test_torchvision_resnet_after_to_lm_refines():
    import torchvision as tv

    torch.manual_seed(0)
    m = snn.to_lm(tv.models.resnet18(num_classes=10)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        outs = [refine(m, 2**j)(x) for j in range(4)]
    back = coarsen(refine(m, 2), 2)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))
    d = _successive(outs)
    assert d[-1] < d[0]


# ------------------------------------------------------------------ item 4: p_schedule


def test_survival_at_rule_and_errors():
    assert survival_at(0.8, 1.0, "sqrt") == 0.8 and survival_at(0.8, 0.25, "fixed") == 0.8
    assert survival_at(0.8, 0.25, "sqrt") == pytest.approx(0.5 + 0.3 * 0.5)
    with pytest.raises(ValueError, match="p_schedule"):
        survival_at(0.8, 0.5, "log")
    with pytest.raises(ValueError, match="outside"):
        survival_at(0.9, 9.0, "sqrt")
    with pytest.raises(ValueError, match="p_schedule"):
        M.create("tiny_sd_resnet", p_schedule="cubic")


def _max_K(net):
    return max(r["K"] for r in snn.weak_report(net) if r["dt"] < 1)


def test_sqrt_schedule_keeps_K_bounded_as_dt_shrinks():
    # the networks report the law the schedule gives them
    for dt, sched in ((0.5, "fixed"), (0.25, "sqrt")):
        net = M.create("tiny_sd_resnet", refine=round(1 / dt), p_schedule=sched)
        for r in snn.weak_report(net):
            if r["dt"] < 1:
                law = sn.DropBernoulli(r["p"])
                assert r["K"] == pytest.approx(law.condition(dt) / dt**2)
    dts = [2.0**-j for j in range(1, 13)]
    p1 = 0.9
    fixed = [sn.DropBernoulli(survival_at(p1, dt, "fixed")).condition(dt) / dt**2 for dt in dts]
    sqrt = [sn.DropBernoulli(survival_at(p1, dt, "sqrt")).condition(dt) / dt**2 for dt in dts]
    slope_fixed, _ = fit_slope(dts, fixed)
    assert slope_fixed == pytest.approx(-0.5, abs=0.02)  # K ~ Δt^(−1/2): unbounded
    k1 = sn.DropBernoulli(p1).condition(1.0)  # the Δt = 1 network's K
    assert max(sqrt) <= k1 + 1e-12 and min(sqrt) >= 2 * abs(1 - 2 * p1) - 1e-9  # bounded, → 2|1 − 2p|
    assert fixed[-1] > 30 * k1


# ------------------------------------------------------------------ theory item 7


def test_theory_refinement_toy_tells_the_rules_apart():
    from sdenet.theory.refinement import toy_lm_sd

    r = toy_lm_sd(levels=6)
    assert r["old"][0] == pytest.approx(r["fixed"][0])  # the same network at Δt = 1
    d_fixed = [abs(a - b) for a, b in zip(r["fixed"], r["fixed"][1:])]
    assert d_fixed[-1] < 0.7 * d_fixed[-2]  # converges (order ~1)
    assert r["old"][-1] > 4 * r["old"][0]  # grows like 1/Δt


class _LinearBlock(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = torch.nn.Parameter(a)

    def forward(self, x):
        return x @ self.a.T


def test_monte_carlo_means_of_refined_stochastic_stages_converge_in_training_mode():
    # stochastic depth with linear blocks f_n(x) = A_n x: E X_{n+1} = (I + p_n Δt A_n) E X_n exactly
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.5 for _ in range(2)]
    field = snn.DropField([_LinearBlock(m) for m in a], [0.8, 0.6], 1.0)
    laws = [sn.DropBernoulli(p) for p in field.p]
    stage = Stage(field, [sn.WeakEuler(law) for law in laws]).train()
    x0 = torch.tensor([[1.0, -0.5, 0.25]], dtype=torch.float64)
    paths = 40_000
    exact, z = [], []
    for j in range(5):
        st = refine(stage, 2**j)
        snn.set_generator(st, torch.Generator().manual_seed(10 + j))
        with torch.no_grad():
            xs = st(x0.expand(paths, 3).clone())
        mean = x0[0]
        with torch.no_grad():  # the exact mean needs no gradient of the field's parameters
            for n in range(st.steps):
                mean = mean + st.dt * st.field.p[n] * (st.field.blocks[n].a @ mean)
        exact.append(mean)
        se = xs.std(0) / paths**0.5
        z.append(float(((xs.mean(0) - mean) / se).abs().max()))
    assert max(z) < 4.5, z  # the Monte Carlo mean is the scheme's exact mean, within 4.5 s.e.
    d = [float((u - v).norm()) for u, v in zip(exact, exact[1:])]
    order, _ = fit_slope([2.0**-j for j in range(4)], d)
    assert 0.85 < order < 1.15, (order, d)  # and the means converge at fixed T with order 1


# ------------------------------------------------------------------ the reversible families (issue 10)

REVERSIBLE = ["tiny_hamiltonian", "tiny_midpoint", "tiny_leapfrog"]


@pytest.mark.parametrize("name", REVERSIBLE)
def test_reversible_families_refine_converge_and_coarsen_back(name):
    """refine asks the stages, not the class: Chang et al.'s families refine at fixed T like the
    others (order about 1 under constant prolongation) and coarsen(refine(m)) gives m back."""
    order, d = _order(name, 5)
    assert 0.7 < order < 1.6, (name, order, d)
    net = _model(name)
    back = coarsen(refine(net, 2), 2)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), back.state_dict().values()))
    r = refine(net, 4)
    for (_, a), (_, b) in zip(_stages(net), _stages(r)):
        assert b.steps == 4 * a.steps and math.isclose(b.steps * b.dt, a.steps * a.dt)
    c = M.create(name, refine=4)
    assert {k: v.shape for k, v in c.state_dict().items()} == {k: v.shape for k, v in r.state_dict().items()}
