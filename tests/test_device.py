"""The code CUDA takes, run on whatever device the tests are given.

``SDENET_TEST_DEVICE`` picks the device (default ``cpu``; ``cuda`` or ``cuda:N`` on a GPU
machine — ``experiments/benchmarks/gpu_check.sh`` sets it). On the CPU these tests run the
same code paths a GPU run takes: channels-last tensors, bf16 autocast (CPU autocast),
``torch.compile`` of a training step, generators and time tensors on the state's device.
Tests marked ``cuda_only`` check what only a GPU can show and are skipped without one. Asking
for CUDA where there is none stops the session with that message instead of skipping.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

import sdenet as sn
from sdenet.train import loop, usermodel

SPEC = os.environ.get("SDENET_TEST_DEVICE", "cpu")
DEVICE = torch.device(SPEC)
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.exit(f"SDENET_TEST_DEVICE={SPEC} but CUDA is not available on this machine", returncode=2)
CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
BF16 = torch.bfloat16


def gen(seed=0, device=DEVICE):
    return torch.Generator(device=device).manual_seed(seed)


def tiny_npz(path, n_train=64, n_test=32, seed=0):
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, 4, n)
    x = (rng.integers(0, 100, (n, 8, 8, 3)) + (y * 40)[:, None, None, None]).astype(np.uint8)
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return str(path)


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.delenv("SDENET_FAULT", raising=False)


# ------------------------------------------------------------------------ the numerical core


def test_integrate_on_the_device_matches_the_closed_form():
    """OU ``dX = −X dt + 0.5 dW``, X0 = 1: E X_T = e^{−T}; weak Euler's bias is O(Δt)."""
    seen = []

    def drift(t, x):
        seen.append(t)
        return -x

    field = sn.SDEField(drift, lambda t, x: torch.full_like(x, 0.5))
    n = 200_000
    x0 = torch.ones(n, 1, device=DEVICE)
    xT = sn.integrate(field, sn.WeakEuler(sn.Rademacher()), x0, t1=1.0, steps=64, generator=gen(1))
    assert xT.device.type == DEVICE.type and xT.dtype == torch.float32
    assert all(t.device == xT.device and t.dim() == 0 for t in seen)
    # exact mean of the scheme: (1 − Δt)^N; against it the error is Monte Carlo only
    se = xT.std().item() / math.sqrt(n)
    assert abs(xT.mean().item() - (1 - 1 / 64) ** 64) < 5 * se


@pytest.mark.parametrize("dtype", [torch.float32, BF16, torch.float64])
@pytest.mark.parametrize(
    "law", [sn.Gaussian(), sn.Uniform(), sn.Rademacher(), sn.ThreePoint(), sn.DropBernoulli(0.8)], ids=repr
)
def test_laws_sample_on_the_device_with_the_right_moments(law, dtype):
    dt, n = 0.25, 400_000
    w = law.sample((n,), dt, generator=gen(2), device=DEVICE, dtype=dtype)
    assert w.device.type == DEVICE.type and w.dtype == dtype
    w = w.double()
    m1, m2 = law.moments(dt)[:2]
    m4 = law.moments(dt)[3]
    tol_rounding = 0.01 * dt if dtype == BF16 else 0.0  # bf16 rounds the values themselves
    assert abs(w.mean().item() - m1) < 5 * math.sqrt(m2 / n) + tol_rounding
    assert abs(w.pow(2).mean().item() - m2) < 5 * math.sqrt(max(m4 - m2**2, 1e-12) / n) + tol_rounding


@cuda_only
def test_cuda_state_refuses_a_cpu_drift_and_a_cpu_generator():
    x0 = torch.ones(4, 1, device=DEVICE)
    with pytest.raises(ValueError, match=r"on cpu for a state on cuda"):
        sn.integrate(sn.ODEField(lambda t, x: torch.zeros(4, 1)), sn.Euler(), x0, t1=1.0, steps=2)
    with pytest.raises(ValueError, match="generator is on cpu"):
        field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.ones_like(x))
        sn.integrate(field, sn.EulerMaruyama(), x0, t1=1.0, steps=2, generator=torch.Generator())


# ------------------------------------------------------------------------ a training step


def _conv_spy(net):
    """Record (dtype, channels_last?) of what the convolutions see and return."""
    seen = []

    def hook(mod, inputs, out):
        seen.append((out.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("name", ["tiny_lm_resnet", "tiny_lm_sd_resnet", "tiny_shake_shake"])
def test_train_step_under_bf16_autocast_and_channels_last(name):
    torch.manual_seed(0)
    ref = sn.models.create(name, num_classes=10).to(DEVICE)
    net = sn.models.create(name, num_classes=10).to(DEVICE).to(memory_format=torch.channels_last)
    net.load_state_dict(ref.state_dict())
    seen = _conv_spy(net)
    x = torch.randn(16, 3, 32, 32, generator=gen(4), device=DEVICE)
    y = torch.arange(16, device=DEVICE) % 10
    sn.nn.set_generator(ref, gen(5))
    sn.nn.set_generator(net, gen(5))
    loss_ref = nn.functional.cross_entropy(ref(x), y)
    with torch.autocast(DEVICE.type, dtype=BF16):
        out = net(x.contiguous(memory_format=torch.channels_last))
    loss = nn.functional.cross_entropy(out, y)
    loss.backward()
    assert seen and all(dtype == BF16 for dtype, _ in seen)  # autocast ran the convs in bf16
    assert all(cl for _, cl in seen)  # on channels-last activations
    # bf16 keeps ~3 significant digits: the same noise draws give the fp32 loss to about 1%
    assert abs(loss.item() - loss_ref.item()) < 0.03 * abs(loss_ref.item())
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    convs = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_the_training_loop_runs_amp_and_channels_last_as_asked(clean, tmp_path, monkeypatch):
    """``amp=True, channels_last=True``: the loop's own autocast and memory format, on any device."""
    spies = []
    create = loop._create_model

    def spied(*args, **kwargs):
        model = create(*args, **kwargs)
        spies.append(_conv_spy(model))
        return model

    monkeypatch.setattr(usermodel, "_create_model", spied)
    data = tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "run"
    final = loop.train(
        model="tiny_lm_sd_resnet",
        dataset=data,
        epochs=1,
        batch_size=16,
        seed=1,
        device=SPEC,
        amp=True,
        channels_last=True,
        quiet=True,
        out=str(out),
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["amp"] is True and cfg["channels_last"] is True and cfg["device"].startswith(DEVICE.type)
    assert math.isfinite(final["test_loss"])
    seen = spies[0]
    assert seen and {d for d, _ in seen} == {BF16} and all(cl for _, cl in seen)
    # evaluating the checkpoint on the device type it trained on keeps its precision settings
    n_before = len(spies)
    r = loop.evaluate(out / "best.pt", device=SPEC, samples=2)
    eval_seen = spies[n_before]
    assert {d for d, _ in eval_seen} == {BF16} and all(cl for _, cl in eval_seen)
    assert 0.0 <= r["test_error"] <= 1.0 and 0.0 <= r["test_error_mc"] <= 1.0


def test_the_loop_defaults_follow_the_device(clean, tmp_path):
    """Without amp/channels_last given: on CUDA both on, on the CPU both off."""
    data = tiny_npz(tmp_path / "tiny.npz", n_train=16, n_test=16)
    out = tmp_path / "run"
    loop.train(
        model="tiny_resnet", dataset=data, epochs=1, batch_size=16, device=SPEC, quiet=True, out=str(out)
    )
    cfg = json.loads((out / "config.json").read_text())
    cuda = DEVICE.type == "cuda"
    assert cfg["amp"] is cuda and cfg["channels_last"] is cuda


@cuda_only
def test_auto_device_is_cuda_when_there_is_one():
    assert loop.resolve_device("auto").type == "cuda"


# On the CPU (torch 2.13.0+cpu, inductor) the compiled LM-ResNet's gradients differ from the
# eager ones by 2.5% in norm although the loss agrees to 1e-4; ``backend="aot_eager"`` agrees
# bit for bit and the Euler network agrees to 1e-6, so the difference is inductor's code for
# the LM step. Recorded as an expected failure until it is understood; on CUDA it may pass.
_LM_COMPILE = pytest.mark.xfail(
    DEVICE.type == "cpu",
    strict=False,
    reason="inductor CPU: LM-ResNet gradients 2.5% off eager (aot_eager exact)",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny_resnet", pytest.param("tiny_lm_resnet", marks=_LM_COMPILE)])
def test_compiled_training_step_matches_eager(clean, tmp_path, name):
    """``torch.compile`` of a training step (the ``--compile`` path) gives the eager loss and
    gradients to float tolerance, then the loop runs with ``compile=True`` on batches of the
    same shape (so inductor's graph cache can serve its training graph). Slow on the CPU
    (inductor compiles C++: a minute or more of CPU time per model)."""
    torch.manual_seed(0)
    net = sn.models.create(name, num_classes=4).to(DEVICE)
    x = torch.randn(16, 3, 8, 8, generator=gen(6), device=DEVICE)
    y = torch.arange(16, device=DEVICE) % 4

    def step(model):
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters()]

    eager_loss, eager_grads = step(net)
    compiled = torch.compile(net)
    loss, grads = step(compiled)
    assert torch.allclose(loss, eager_loss, rtol=1e-4, atol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(grads, eager_grads))

    data = tiny_npz(tmp_path / "tiny.npz", n_train=32, n_test=16)
    out = tmp_path / "run"
    final = loop.train(
        model=name,
        dataset=data,
        epochs=1,
        batch_size=16,
        device=SPEC,
        amp=False,
        channels_last=False,
        compile=True,
        quiet=True,
        out=str(out),
    )
    assert json.loads((out / "config.json").read_text())["compile"] is True
    assert math.isfinite(final["test_loss"])
