"""Memory modes compose with PyTorch: their backward returns the parameter gradients of its own
reverse sweep (no backward pass started inside the autograd function), so ``torch.autograd.grad``,
gradient accumulation, DistributedDataParallel (gloo, two CPU processes) and ``torch.compile``
work with ``reversible`` and ``checkpoint`` as with ``store``."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from test_train import clean  # noqa: F401 (fixture)

import sdenet as sn
import sdenet.models as M
from sdenet.nn import HamiltonianBlockField, Stage, TiedBlock, set_memory
from sdenet.nn.memory import reconstruction_drift

CASES = [
    ("tiny_hamiltonian", "reversible"),
    ("tiny_midpoint", "reversible"),
    ("tiny_leapfrog", "reversible"),
    ("revnet", "reversible"),
    ("tiny_hamiltonian", "checkpoint"),
    ("tiny_lm_resnet", "checkpoint"),
]
SMALL = {"revnet": {"widths": (8, 16, 16), "blocks": (2, 2, 3), "stem_width": 8}}


def _net(name, dtype=torch.float64):
    torch.manual_seed(0)
    return M.create(name, **SMALL.get(name, {})).to(dtype)


def _batch(dtype=torch.float64, n=4, seed=1):
    x = torch.randn(n, 3, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(n) % 10


def _rel(gs, refs):
    return max(float((g - r).abs().max() / r.abs().max().clamp_min(1e-300)) for g, r in zip(gs, refs))


@pytest.mark.parametrize("name, mode", CASES)
def test_autograd_grad_through_memory_modes_equals_store(name, mode):
    """torch.autograd.grad(loss, (x, *params)) sees every parameter of a stage in a memory mode, and
    .grad is left untouched (nothing accumulated behind autograd's back); float64, 1e-10."""
    net = _net(name)
    x, y = _batch()
    state = copy.deepcopy(net.state_dict())
    params = list(net.parameters())

    def grads():
        xx = x.clone().requires_grad_()
        return torch.autograd.grad(F.cross_entropy(net(xx), y), [xx, *params], allow_unused=True)

    ref = grads()
    net.load_state_dict(state)
    set_memory(net, mode)
    got = grads()
    assert all(p.grad is None for p in params)
    assert [g is None for g in got] == [r is None for r in ref]
    assert all(g is not None for g in got[:1])  # the input gradient comes back through the stages
    assert _rel([g for g in got if g is not None], [r for r in ref if r is not None]) <= 1e-10


@pytest.mark.parametrize("name, mode", [("tiny_hamiltonian", "reversible"), ("tiny_lm_resnet", "checkpoint")])
def test_gradient_accumulation_over_two_backward_passes(name, mode):
    """Two batches, two backward passes: .grad holds the sum, as with store (float64)."""
    net = _net(name)
    batches = [_batch(seed=1), _batch(seed=2)]
    state = copy.deepcopy(net.state_dict())

    def accumulated():
        net.zero_grad(set_to_none=True)
        for x, y in batches:
            F.cross_entropy(net(x), y).backward()
        return [p.grad.clone() for p in net.parameters()]

    ref = accumulated()
    net.load_state_dict(state)
    set_memory(net, mode)
    got = accumulated()
    assert _rel(got, ref) <= 1e-10
    # and the sum differs from one batch's gradient (the test can tell accumulation from overwriting)
    net.load_state_dict(state)
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(batches[1][0]), batches[1][1]).backward()
    assert _rel([p.grad for p in net.parameters()], ref) > 1e-3


def _hamiltonian_stage(n=12, c=8):
    torch.manual_seed(0)
    field = HamiltonianBlockField(
        [TiedBlock(c // 2) for _ in range(n)], [TiedBlock(c // 2) for _ in range(n)]
    )
    return Stage(field, sn.Hamiltonian())


def test_exact_false_is_plain_floating_point():
    """exact=False: float32 stages invert in plain floating point — gradients still those of store to
    float32 level, and the reconstruction drifts by rounding (reconstruction_drift(exact=False)), while the
    default keeps it at 0; the option is validated."""
    stage = _hamiltonian_stage()
    x = torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(2))
    assert reconstruction_drift(stage, x)["max_abs_error"] == 0.0
    assert reconstruction_drift(stage, x, exact=False)["max_abs_error"] > 0.0
    out = {}
    for mode, exact in (("store", True), ("reversible", True), ("reversible", False)):
        set_memory(stage, mode, exact=exact)
        stage.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        stage(xx).square().sum().backward()
        out[mode, exact] = [xx.grad] + [p.grad for p in stage.parameters()]
    assert stage.memory_exact is False
    assert _rel(out["reversible", False], out["store", True]) <= 1e-4
    assert _rel(out["reversible", True], out["store", True]) <= 1e-4
    with pytest.raises(ValueError, match="exact must be True or False"):
        set_memory(stage, "reversible", exact="no")


def test_a_field_tensor_outside_the_stage_parameters_is_refused():
    """A tensor that requires grad but is not a parameter of the stage cannot get its gradient from the
    function's outputs: the backward says so instead of dropping it silently."""
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    field = sn.ODEField(lambda t, x: torch.tanh(x @ w))
    stage = set_memory(Stage(field, sn.Midpoint(), dt=0.1, steps=3), "reversible")
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="not a parameter of the stage"):
        stage(x).sum().backward()


# ---------------------------------------------------------------------- DDP (gloo, 2 CPU processes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_MODES = [
    ("tiny_hamiltonian", "store"),
    ("tiny_hamiltonian", "reversible"),
    ("tiny_hamiltonian", "checkpoint"),
    ("tiny_midpoint", "reversible"),
    ("tiny_lm_resnet", "checkpoint"),
]
GLOBAL_BATCH, STEPS = 8, 3


def _train(name, mode, rank, world, ddp):
    """A few SGD steps in float64 on the same global batches; batch norm in eval mode (running statistics),
    so that a rank's half-batch and the whole batch give the same mean gradient."""
    net = _net(name)
    set_memory(net, mode)
    net.eval()
    model = net
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    per = GLOBAL_BATCH // world
    for step in range(STEPS):
        x, y = _batch(n=GLOBAL_BATCH, seed=10 + step)
        x, y = x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.clone() for k, v in net.state_dict().items()}


def _ddp_worker(rank, world, port, tmp):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = {f"{name}/{mode}": _train(name, mode, rank, world, ddp=True) for name, mode in DDP_MODES}
    finally:
        torch.distributed.destroy_process_group()
    torch.save(out, os.path.join(tmp, f"ddp{rank}.pt"))


def test_ddp_store_reversible_checkpoint_agree_across_ranks_and_with_one_process(tmp_path):
    """DistributedDataParallel (gloo, 2 processes, 1 thread each) with store, reversible and checkpoint:
    every rank ends with the same weights, and they equal a one-process run on the same global batches
    (float64; batch norm in eval mode so that the per-rank half-batches are comparable — in train mode
    each rank normalizes with its own batch statistics, by design of DDP)."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "ddp0.pt")
    r1 = torch.load(tmp_path / "ddp1.pt")
    for name, mode in DDP_MODES:
        key = f"{name}/{mode}"
        one = _train(name, mode, 0, 1, ddp=False)
        start = _net(name).state_dict()
        moved = False
        for k, v in one.items():
            assert torch.equal(r0[key][k], r1[key][k]), (key, k)
            if v.is_floating_point():
                scale = float(v.abs().max().clamp_min(1e-12))
                assert float((r0[key][k] - v).abs().max()) <= 1e-10 * scale, (key, k)
                moved |= not torch.allclose(v, start[k])
        assert moved, key  # the weights were trained


def _loop_worker(rank, world, port, data, tmp, memory):
    from sdenet.train import loop

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    os.environ.pop("SDENET_FAULT", None)
    torch.set_num_threads(1)

    def save(info):
        torch.save(info["model"].state_dict(), os.path.join(tmp, f"{memory}{info['rank']}.pt"))

    loop.train(
        model="tiny_hamiltonian",
        dataset=data,
        epochs=1,
        batch_size=16,
        lr=0.05,
        seed=5,
        device="cpu",
        quiet=True,
        out=os.path.join(tmp, f"run-{memory}"),
        overrides={"memory": memory},
        callback=save,
    )


@pytest.mark.slow
@pytest.mark.parametrize("memory", ["reversible", "checkpoint"])
def test_training_loop_under_ddp_with_memory_modes(tmp_path, memory):
    """What crashed before ("Expected to mark a variable ready only once"): the training loop under DDP
    with --memory reversible/checkpoint; train-mode batch norm, so the check is that the ranks agree."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    from test_train import tiny_npz

    data = tiny_npz(tmp_path / "tiny.npz")
    mp.spawn(_loop_worker, args=(2, _free_port(), data, str(tmp_path), memory), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"{memory}{r}.pt") for r in (0, 1))
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reversible", "checkpoint"])
def test_torch_compile_of_a_model_in_a_memory_mode(mode):
    """torch.compile runs a model whose stages are in a memory mode (the stages run eagerly, a graph
    break: a compiled forward would not be recomputed bit for bit by the eager backward sweep, which
    the exact reversible mode detects) and gives the gradients of the uncompiled model."""
    net = _net("tiny_hamiltonian", torch.float32)
    set_memory(net, mode)
    x, y = _batch(torch.float32)
    F.cross_entropy(net(x), y).backward()
    ref = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    compiled = torch.compile(net, backend="eager" if os.environ.get("SDENET_COMPILE_EAGER") else "inductor")
    F.cross_entropy(compiled(x), y).backward()
    assert _rel([p.grad for p in net.parameters()], ref) <= 1e-4


class _Push(torch.nn.Module):
    """``f(x) = w·v`` everywhere (``w = 1``, a parameter): pushes a state by ``v`` in one step."""

    def __init__(self, v):
        super().__init__()
        self.v = v
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.w * self.v * torch.ones_like(x)


def test_exact_reversible_detects_a_state_beyond_its_grid_between_input_and_output():
    """The grid limit is checked at a stage's input and output only; a state that goes beyond it in
    between (here +1e7, then back) loses bits in the forward pass, and the backward sweep, which checks
    that the rebuilt input equals the forward one, says so instead of returning wrong gradients."""
    from sdenet.nn.fields import CoupledBlockField

    field = CoupledBlockField([_Push(1e7), _Push(-1e7)], [_Push(0.0), _Push(0.0)])
    stage = set_memory(Stage(field, sn.CoupledEuler()), "reversible")
    x = (1e-3 * torch.randn(2, 4, generator=torch.Generator().manual_seed(0))).requires_grad_()
    out = stage(x)  # input and output are small: the forward pass goes on
    assert float(out.detach().abs().max()) < 1.0
    with pytest.raises(ValueError, match="reconstructed input of the stage differs"):
        out.sum().backward()
    # a stage that stays on the grid passes the same check (exact=False skips it)
    set_memory(stage, "reversible", exact=False)
    stage(x).sum().backward()
    assert x.grad is not None


def test_plain_arithmetic_through_create_and_the_train_command(clean, tmp_path, capsys):
    """exact=False end to end: models.create(memory_exact=False) sets it on every stage and records it in
    the config (a checkpoint rebuilds the same model); `sdenet train --reversible-arithmetic plain` trains
    with it, and without --memory reversible the flag is a one-line usage error."""
    import json

    from test_train import tiny_npz

    from sdenet.cli import main

    net = M.create("tiny_hamiltonian", memory="reversible", memory_exact=False)
    stages = [s for s in net.modules() if isinstance(s, Stage) and s.memory == "reversible"]
    assert stages and all(s.memory_exact is False for s in stages)
    again = M.create(net.name, **{k: net.config[k] for k in ("memory", "memory_exact")})
    assert all(
        s.memory_exact is False for s in again.modules() if isinstance(s, Stage) and s.memory == "reversible"
    )
    assert "memory_exact" not in M.create("tiny_hamiltonian", memory="reversible").config
    with pytest.raises(ValueError, match="exact must be True or False"):
        M.create("tiny_hamiltonian", memory="reversible", memory_exact=0)
    data = tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--model",
            "tiny_hamiltonian",
            "--memory",
            "reversible",
            "--reversible-arithmetic",
            "plain",
            "--dataset",
            data,
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert '"memory_exact": false' in (out / "config.json").read_text()
    capsys.readouterr()
    code = main(
        [
            "train",
            "--model",
            "tiny_hamiltonian",
            "--reversible-arithmetic",
            "plain",
            "--dataset",
            data,
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2 and len(err) == 1 and "needs --memory reversible" in err[0] and err[0].startswith("sdenet")
    )
    json.loads((out / "config.json").read_text())


def test_a_second_backward_through_an_exact_reversible_stage_is_refused():
    """The exact sweep rebuilds its private carry in place, so a retained graph cannot be swept twice:
    a clear error (exact=False and checkpoint sweep a copy and allow it, matching store)."""
    stage = _hamiltonian_stage(n=3)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    set_memory(stage, "reversible")
    out = stage(x).square().sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward pass"):
        out.backward()
    for mode, exact in (("reversible", False), ("checkpoint", True), ("store", True)):
        set_memory(stage, mode, exact=exact)
        x.grad = None
        out = stage(x).square().sum()
        out.backward(retain_graph=True)
        once = x.grad.clone()
        out.backward()
        assert torch.allclose(x.grad, 2 * once, rtol=1e-5, atol=1e-6), mode
