"""Stages, network fields and the model-wide reports of sdenet.nn."""

import importlib.util
import math

import pytest
import torch
from torch import nn

import sdenet as sn
import sdenet.models as M
import sdenet.nn as snn


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions: one thread is faster than two fighting over a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _block(c=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.Tanh())


def _blocks(n, c=4, seed=0):
    return [_block(c, seed + i) for i in range(n)]


def _x(b=8, c=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, 6, 6, generator=g)


# ---------------------------------------------------------------------- deterministic stages


def test_euler_stage_is_forward_euler_over_the_blocks():
    blocks = _blocks(3)
    x = _x()
    for dt in (1.0, 0.3):
        stage = snn.Stage(blocks, sn.Euler(), dt=dt)
        ref = x
        for b in blocks:
            ref = ref + b(ref) * dt
        if dt == 1.0:  # the original ResNet, bit for bit
            assert torch.equal(stage(x), ref)
        else:  # the core fuses x + Δt·f into one kernel: one rounding instead of two
            torch.testing.assert_close(stage(x), ref, rtol=1e-6, atol=1e-6)


def test_heun_stage_uses_next_block_and_needs_one_more():
    blocks = _blocks(3)
    x = _x()
    stage = snn.Stage(blocks, sn.Heun(), dt=0.5)
    assert stage.steps == 2
    ref = x
    for n in range(2):
        k1 = blocks[n](ref)
        k2 = blocks[n + 1](ref + 0.5 * k1)
        ref = ref + (k1 + k2) * 0.25
    torch.testing.assert_close(stage(x), ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="blocks"):
        snn.Stage(blocks, sn.Heun(), steps=3)


def test_neumann_stage_is_I_plus_F_plus_F2():
    blocks = _blocks(2)
    x = _x()
    stage = snn.Stage(blocks, sn.NeumannEuler(2))
    ref = x
    for b in blocks:
        ref = ref + b(ref) + b(b(ref))
    torch.testing.assert_close(stage(x), ref, rtol=0, atol=1e-6)


def test_stage_on_continuous_field_matches_integrate():
    torch.manual_seed(3)
    lin = nn.Linear(5, 5)
    field = sn.ODEField(lambda t, x: torch.tanh(lin(x)) * (1 + t))
    x = torch.randn(7, 5)
    for scheme in (sn.Euler(), sn.Heun(), sn.LinearMultistep(k=-0.05)):
        stage = snn.Stage(field, scheme, dt=0.1, steps=10)
        ref = sn.integrate(field, scheme, x, t1=1.0, steps=10)
        torch.testing.assert_close(stage(x), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="steps"):
        snn.Stage(field, sn.Euler())


def test_coupled_stage_is_revnet_update_and_invertible():
    f1, f2 = _blocks(2, c=2, seed=5), _blocks(2, c=2, seed=9)
    field = snn.CoupledBlockField(f1, f2)
    stage = snn.Stage(field, sn.CoupledEuler())
    x = _x(c=4)
    out = stage(x)
    a, b = x.chunk(2, dim=1)
    for n in range(2):
        a = a + f1[n](b)
        b = b + f2[n](a)
    assert torch.equal(out, torch.cat((a, b), 1))
    # step back through the blocks
    y = tuple(out.chunk(2, dim=1))
    for n in reversed(range(2)):
        y = sn.CoupledEuler.inverse(field, float(n), y, 1.0)
    torch.testing.assert_close(torch.cat(y, 1), x, rtol=0, atol=1e-5)


def test_post_relu_is_applied_after_each_step():
    blocks = _blocks(2)
    x = _x()
    stage = snn.Stage(blocks, sn.Euler(), post="relu")
    ref = x
    for b in blocks:
        ref = torch.relu(ref + b(ref))
    assert torch.equal(stage(x), ref)


def test_lm_stage_with_zero_k_equals_euler_bit_for_bit_and_lm_formula():
    blocks = _blocks(3)
    x = _x()
    prev = x * 0.5
    lm = snn.lm_stage(blocks, k_init=(0.0, 0.0))
    eu = snn.Stage(blocks, sn.Euler())
    assert torch.equal(lm(x, prev), eu(x))
    with torch.no_grad():
        lm.coefficients.copy_(torch.tensor([-0.05, -0.02, -0.08]))
    u_prev, u = prev, x
    for n, b in enumerate(blocks):
        k = lm.coefficients[n]
        u_prev, u = u, (1 - k) * u + k * u_prev + b(u)
    torch.testing.assert_close(lm(x, prev), u, rtol=0, atol=1e-6)
    assert snn.lm_coefficients(lm)["stage"] == pytest.approx([-0.05, -0.02, -0.08])


def test_lm_stage_init_range_and_per_channel():
    g = torch.Generator().manual_seed(0)
    lm = snn.lm_stage(_blocks(50), generator=g)
    k = lm.coefficients.detach()
    assert k.shape == (50,) and k.min() >= -0.1 and k.max() <= 0.0 and k.std() > 0.01
    pc = snn.lm_stage(_blocks(2), per_channel=True, channels=4)
    assert pc.coefficients.shape == (2, 4)
    pc(_x()).sum().backward()
    assert pc.coefficients.grad is not None
    with pytest.raises(ValueError, match="channels"):
        snn.lm_stage(_blocks(2), per_channel=True)
    with pytest.raises(ValueError, match="k_init"):
        snn.lm_stage(_blocks(2), k_init=(0.0, -0.1))


def test_stage_errors():
    with pytest.raises(ValueError, match="deterministic"):
        snn.Stage(snn.DropField(_blocks(2), 0.5), sn.Euler())
    with pytest.raises(ValueError, match="stochastic field"):
        snn.Stage(_blocks(2), sn.WeakEuler(sn.Uniform()))
    with pytest.raises(ValueError, match="post"):
        snn.Stage(_blocks(2), sn.Euler(), post="gelu")
    with pytest.raises(ValueError, match="dt"):
        snn.Stage(_blocks(2), sn.Euler(), dt=0.0)
    with pytest.raises(ValueError, match="nn.Module"):
        snn.Stage([1, 2], sn.Euler())
    with pytest.raises(ValueError, match="survival"):
        snn.DropField(_blocks(2), 1.5)
    with pytest.raises(ValueError, match="maps to block"):
        snn.BlockField(_blocks(2)).drift(5.0, _x())
    with pytest.raises(ValueError, match="noise"):
        snn.ShakeField(_blocks(1), _blocks(1), noise="pixel")


# ---------------------------------------------------------------------- stochastic depth


def _drop_stage(p, dt=1.0, noise="sample", n=1):
    blocks = _blocks(n)
    field = snn.DropField(blocks, p, dt, noise=noise)
    ps = field.p
    return snn.Stage(field, [sn.WeakEuler(sn.DropBernoulli(q)) for q in ps]), blocks


@pytest.mark.parametrize("noise", ["sample", "batch"])
def test_stochastic_depth_at_dt1_is_x_plus_eta_f(noise):
    stage, (block,) = _drop_stage(0.6, noise=noise)
    stage.train()
    x = _x(b=16)
    g = torch.Generator().manual_seed(11)
    stage.__class__  # noqa: B018
    snn.set_generator(stage, g)
    out = stage(x)
    shape = (16, 1, 1, 1) if noise == "sample" else (1, 1, 1, 1)
    eta = sn.DropBernoulli(0.6).sample_eta(shape, generator=torch.Generator().manual_seed(11))
    ref = x + eta * block(x)
    assert torch.allclose(out, ref, rtol=0, atol=1e-6)
    if noise == "sample":
        assert 0 < eta.sum() < 16  # both outcomes happened: the test sees drops and keeps


def test_batch_mode_skips_dropped_blocks():
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(1)
            return torch.tanh(x)

    field = snn.DropField([Counting() for _ in range(4)], [0.5] * 4, noise="batch")
    stage = snn.Stage(field, [sn.WeakEuler(sn.DropBernoulli(0.5))] * 4).train()
    snn.set_generator(stage, torch.Generator().manual_seed(2))
    kept = 0
    x = _x()
    for _ in range(20):
        stage(x)
    eta = sn.DropBernoulli(0.5).sample_eta((80,), generator=torch.Generator().manual_seed(2))
    kept = int(eta.sum())
    assert len(calls) == kept < 80


def test_stochastic_depth_p1_equals_plain_network():
    kw = dict(blocks=(2, 2, 2), widths=(8, 16, 32), stem_width=8)
    torch.manual_seed(0)
    plain = M.create("preact_resnet56", **kw).train()
    sd = M.create("sd_resnet56", p_L=1.0, **kw).train()
    sd.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(sd(x), plain(x))


@pytest.mark.parametrize("dt", [1.0, 0.25])
def test_training_draws_average_to_eval_drift(dt):
    """E[X + f·(pΔt + σΔW)] = X + p f Δt (eval mode); Var = p(1−p) f² Δt.

    One increment per image: a batch of n copies of one input is n independent draws.
    """
    p = 0.7
    stage, (block,) = _drop_stage(p, dt=dt)
    x = _x(b=1)
    snn.set_generator(stage, torch.Generator().manual_seed(5))
    stage.eval()
    mean_ref = stage(x)[0]
    with torch.no_grad():
        f = block(x)[0]
    torch.testing.assert_close(mean_ref, x[0] + p * dt * f, rtol=0, atol=1e-6)
    stage.train()
    n = 4000
    with torch.no_grad():
        draws = stage(x.expand(n, -1, -1, -1))
    mean, std = draws.mean(0), draws.std(0)
    stderr = std / math.sqrt(n)
    assert ((mean - mean_ref).abs() <= 5 * stderr + 1e-6).all()
    var_ref = p * (1 - p) * dt * f * f
    big = var_ref > 1e-3
    rel = (std[big] ** 2 / var_ref[big] - 1).abs()
    assert rel.max() < 0.15


def test_weak_report_moments_match_the_law():
    model = M.create("tiny_sd_resnet").train()
    model.set_generator(torch.Generator().manual_seed(0))
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        for _ in range(8):
            model(x)
    rows = model.weak_report()
    assert len(rows) == 6 and {r["stage"] for r in rows} >= {"stage1", "stage2.transition"}
    ps = [r["p"] for r in rows]
    assert ps == sorted(ps, reverse=True) and ps[-1] == pytest.approx(0.5)  # linear decay to p_L
    for r in rows:
        law = sn.DropBernoulli(r["p"])
        assert r["n"] == 512
        assert r["C"] == pytest.approx(law.condition(r["dt"])) and r["K"] == pytest.approx(
            r["C"] / r["dt"] ** 2
        )
        m1, m2, m3, m4 = law.moments(r["dt"])
        # ΔŴ = scale(η − p): the empirical mean has stderr √(Var ΔŴ / n)
        assert abs(r["m1"] - m1) <= 5 * math.sqrt(m2 / r["n"])
        assert abs(r["m2"] - m2) <= 5 * math.sqrt((m4 - m2 * m2) / r["n"])
    model.reset_weak_stats()
    assert all(r["n"] == 0 for r in model.weak_report())
    model.eval()
    model(x)
    assert all(r["n"] == 0 for r in model.weak_report())  # eval forwards draw nothing


def test_non_stochastic_models_report_empty():
    m = M.create("tiny_resnet")
    assert m.weak_report() == [] and m.lm_coefficients() == {}


# ---------------------------------------------------------------------- LM stochastic depth


def test_lm_stochastic_depth_at_dt1_is_paper_form():
    blocks = _blocks(2)
    field = snn.DropField(blocks, [0.8, 0.6])
    laws = [sn.DropBernoulli(0.8), sn.DropBernoulli(0.6)]
    stage = snn.lm_stage(field, stochastic_laws=laws, k_init=(-0.1, -0.1)).train()
    g_vals = stage.coefficients.detach()
    assert torch.allclose(g_vals, torch.full((2,), -0.9))
    x, prev = _x(b=16), _x(b=16, seed=4)
    snn.set_generator(stage, torch.Generator().manual_seed(3))
    out = stage(x, prev)
    gen = torch.Generator().manual_seed(3)
    u_prev, u = prev, x
    for n, b in enumerate(blocks):
        eta = laws[n].sample_eta((16, 1, 1, 1), generator=gen)
        g = g_vals[n]
        u_prev, u = u, (2 + g) * u - (1 + g) * u_prev + eta * b(u)
    assert torch.allclose(out, u, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- shake-shake


def _shake(backward="keep", dt=1.0, c=4):
    torch.manual_seed(0)
    a1 = nn.Conv2d(c, c, 1, bias=False)
    a2 = nn.Conv2d(c, c, 1, bias=False)
    field = snn.ShakeField([a1], [a2], dt, backward=backward)
    return snn.Stage(field, sn.WeakEuler(sn.Uniform())), a1, a2


def test_shake_at_dt1_is_gastaldi_forward():
    stage, a1, a2 = _shake()
    stage.train()
    x = _x(b=16)
    snn.set_generator(stage, torch.Generator().manual_seed(8))
    out = stage(x)
    dw = sn.Uniform().sample((16, 1, 1, 1), 1.0, generator=torch.Generator().manual_seed(8))
    alpha = 0.5 + dw / math.sqrt(12)
    assert alpha.min() >= 0 and alpha.max() <= 1
    ref = x + alpha * a1(x) + (1 - alpha) * a2(x)
    assert torch.allclose(out, ref, rtol=0, atol=1e-6)
    stage.eval()
    torch.testing.assert_close(stage(x), x + 0.5 * (a1(x) + a2(x)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backward", ["keep", "even", "shake"])
def test_shake_backward_modes(backward):
    stage, a1, a2 = _shake(backward)
    stage.train()
    x = _x(b=16)
    snn.set_generator(stage, torch.Generator().manual_seed(8))
    stage(x).sum().backward()
    dw = sn.Uniform().sample((16, 1, 1, 1), 1.0, generator=torch.Generator().manual_seed(8))
    alpha = 0.5 + dw / math.sqrt(12)
    # d(sum α a x)/d a_{ij} = Σ α x_j: the coefficient the backward pass used, per image
    xs = x.sum(dim=(2, 3))  # (B, C)
    g_keep = (alpha.view(-1, 1) * xs).sum(0)
    g_even = 0.5 * xs.sum(0)
    got = a1.weight.grad[0, :, 0, 0]
    total = a1.weight.grad[0, :, 0, 0] + a2.weight.grad[0, :, 0, 0]
    torch.testing.assert_close(total, xs.sum(0), rtol=1e-5, atol=1e-5)  # β + (1 − β) = 1 always
    if backward == "keep":
        torch.testing.assert_close(got, g_keep, rtol=1e-5, atol=1e-5)
    elif backward == "even":
        torch.testing.assert_close(got, g_even, rtol=1e-5, atol=1e-5)
    else:
        assert not torch.allclose(got, g_keep, atol=1e-3) and not torch.allclose(got, g_even, atol=1e-3)


def test_shake_mean_over_draws_is_eval_and_variance_is_sde():
    dt = 0.5
    stage, a1, a2 = _shake(dt=dt)
    x = _x(b=1)
    with torch.no_grad():
        f1, f2 = a1(x)[0], a2(x)[0]
    stage.eval()
    mean_ref = stage(x)[0]
    torch.testing.assert_close(mean_ref, x[0] + dt * 0.5 * (f1 + f2), rtol=0, atol=1e-6)
    stage.train()
    snn.set_generator(stage, torch.Generator().manual_seed(1))
    n = 4000
    with torch.no_grad():
        draws = stage(x.expand(n, -1, -1, -1))
    mean, std = draws.mean(0), draws.std(0)
    assert ((mean - mean_ref).abs() <= 5 * std / math.sqrt(n) + 1e-6).all()
    var_ref = (f1 - f2) ** 2 / 12 * dt
    big = var_ref > 1e-3
    assert ((std[big] ** 2 / var_ref[big] - 1).abs() < 0.15).all()


# ---------------------------------------------------------------------- Monte Carlo, generators


def test_mc_predict_and_noise_on():
    model = M.create("tiny_sd_resnet", p_L=0.3)
    x = torch.randn(4, 3, 16, 16)
    model.train()
    model(x)  # move BN running stats off their init
    model.reset_weak_stats()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: the drift, deterministic
        with snn.noise_on(model):
            assert not torch.equal(model(x), model(x))
    assert not model.training and not any(s._noise_on for s in model.modules() if isinstance(s, snn.Stage))
    p1 = snn.mc_predict(model, x, samples=8, generator=torch.Generator().manual_seed(4))
    p2 = snn.mc_predict(model, x, samples=8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(p1, p2)
    torch.testing.assert_close(p1.sum(1), torch.ones(4))
    assert all(r["n"] == 0 for r in model.weak_report())  # MC draws are not training statistics
    det = M.create("tiny_resnet").eval()
    torch.testing.assert_close(snn.mc_predict(det, x, samples=3), torch.softmax(det(x), 1))
    with pytest.raises(ValueError, match="samples"):
        snn.mc_predict(model, x, samples=0)


def test_set_generator_reproduces_training_forward():
    model = M.create("tiny_shake_shake").train()
    x = torch.randn(4, 3, 16, 16)
    model.set_generator(torch.Generator().manual_seed(0))
    a = model(x)
    model.set_generator(torch.Generator().manual_seed(0))
    b = model(x)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="Generator"):
        model.set_generator(3)


# ---------------------------------------------------------------------- to_lm


def test_to_lm_on_registry_model_zero_k_is_identical():
    torch.manual_seed(0)
    base = M.create("preact_resnet20").train()
    lm = snn.to_lm(base, k_init=(0.0, 0.0))
    assert set(lm.lm_coefficients()) == {"stage1", "stage2", "stage3"}
    assert base.lm_coefficients() == {}  # the original is untouched
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(lm(x), base(x))
    lm2 = snn.to_lm(base)
    assert any(v != 0 for ks in lm2.lm_coefficients().values() for v in ks)
    assert not torch.equal(lm2(x), base(x))
    n_base = sum(p.numel() for p in base.parameters())
    assert sum(p.numel() for p in lm2.parameters()) == n_base + 3 + 2 + 2
    sd = snn.to_lm(M.create("tiny_sd_resnet"))
    assert set(sd.lm_coefficients()) == {"stage1", "stage2", "stage3"}
    assert len(sd.weak_report()) == 6
    with pytest.raises(ValueError, match="no residual stage"):
        snn.to_lm(nn.Linear(2, 2))


def test_lm_model_with_zero_k_equals_preact_model():
    torch.manual_seed(0)
    base = M.create("preact_resnet20").train()
    lm = M.create("lm_resnet20").train()
    missing, unexpected = lm.load_state_dict(base.state_dict(), strict=False)
    assert unexpected == [] and all(k.endswith("coefficients") for k in missing)
    with torch.no_grad():
        for _name, s in lm.named_modules():
            if hasattr(s, "coefficients") and isinstance(s, snn.Stage):
                s.coefficients.zero_()
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(lm(x), base(x))


class _TVBasic(nn.Module):
    """The shape of torchvision's BasicBlock, to test to_lm without torchvision."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class _TVResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1)
        self.layer1 = nn.Sequential(_TVBasic(8, 8, 1), _TVBasic(8, 8, 1))
        self.layer2 = nn.Sequential(_TVBasic(8, 16, 2), _TVBasic(16, 16, 1), _TVBasic(16, 16, 1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.layer2(self.layer1(self.conv1(x)))
        return self.fc(x.mean((2, 3)))


def test_to_lm_on_torchvision_style_resnet():
    torch.manual_seed(0)
    net = _TVResNet().train()
    x = torch.randn(2, 3, 8, 8)
    lm0 = snn.to_lm(net, k_init=(0.0, 0.0))
    assert torch.equal(lm0(x), net(x))
    assert isinstance(lm0.layer2, snn.Layer) and lm0.layer2.transition is not None
    lm = snn.to_lm(net)
    k = snn.lm_coefficients(lm)
    assert len(k["layer1"]) == 2 and len(k["layer2"]) == 2
    lm(x).sum().backward()
    assert lm.layer2.stage.coefficients.grad.abs().sum() > 0


# torchvision is the [vision] extra, not [dev]: installing it can replace the torch build in place
@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="needs the [vision] extra: pip install 'sdenet[vision]'",
)
def test_to_lm_on_torchvision_resnet18():
    import torchvision as tv

    torch.manual_seed(0)
    net = tv.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    lm0 = snn.to_lm(net, k_init=(0.0, 0.0))
    assert torch.equal(lm0(x), net(x))
    assert set(snn.lm_coefficients(snn.to_lm(net))) == {"layer1", "layer2", "layer3", "layer4"}


def test_lm_stage_on_continuous_field_refines_dt():
    torch.manual_seed(3)
    lin = nn.Linear(5, 5)
    field = sn.ODEField(lambda t, x: torch.tanh(lin(x)))
    x = torch.randn(7, 5)
    for steps in (10, 20):
        lm = snn.lm_stage(field, dt=1.0 / steps, steps=steps, k_init=(0.0, 0.0))
        torch.testing.assert_close(
            lm(x), sn.integrate(field, sn.Euler(), x, t1=1.0, steps=steps), rtol=0, atol=0
        )
    with pytest.raises(ValueError, match="steps"):
        snn.lm_stage(field, dt=0.1)


def test_to_lm_selected_layers():
    base = M.create("tiny_resnet")
    lm = snn.to_lm(base, layers=["stage2"])
    assert set(lm.lm_coefficients()) == {"stage2"}
    tv = snn.to_lm(_TVResNet(), layers=["layer2"])
    assert set(snn.lm_coefficients(tv)) == {"layer2"} and isinstance(tv.layer1, nn.Sequential)
    with pytest.raises(ValueError, match="stage7"):
        snn.to_lm(base, layers=["stage2", "stage7"])
    with pytest.raises(ValueError, match="list of names"):
        snn.to_lm(base, layers="stage2")
