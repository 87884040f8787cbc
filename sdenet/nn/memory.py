"""Memory modes of a stage: what its backward pass keeps of the forward one.

A :class:`~sdenet.nn.Stage` runs ``N`` steps ``(x_{n+1}, s_{n+1}) = scheme_n.step(field, t_n, x_n, Δt, s_n)``;
the *carry* of step ``n`` is ``x_n`` (a tensor, or a pair for a coupled field) and the tensor
history in ``s_n`` (``s_n["prev"] = x_{n−1}`` for two-step schemes). Three modes:

``"store"``
    plain autograd: every intermediate activation of every block is saved; memory ``O(N)``.
``"reversible"``
    for stages whose schemes declare ``invertible`` (RevNet's :class:`~sdenet.CoupledEuler`,
    :class:`~sdenet.Hamiltonian`, :class:`~sdenet.Midpoint`, :class:`~sdenet.Leapfrog`), no
    stochastic field and no ``post``: the forward pass runs without a graph and saves only the
    last carry; the backward pass walks back, reconstructing carry ``n`` from carry ``n+1``. A
    scheme with ``reverse_step`` (all four invertible ones) rebuilds the carry and pulls the
    gradients back in one go, evaluating each field once under autograd (one forward and one
    backward of the step, as a stored step costs, plus the graph-free forward pass: about 4/3
    of stored backprop); otherwise ``invert_step`` rebuilds it and the step is re-run under
    autograd and back-propagated. Saved activations are ``O(1)`` in ``N`` (the last carry, plus one step's graph
    alive at a time). Drift: in float32/16 the states are carried on a fixed-point grid
    (:class:`FixedPoint`: float64 values on the grid 2^-32, every increment rounded to the grid
    before it is added), so each step is undone bit for bit, at any depth — the reconstruction
    has no floating-point drift and the gradients are exactly those of the forward pass that ran
    (the field sees the grid states cast to the network's dtype; the rounding, 2.3e-10, is
    finer than float32's own for states above 4e-3; straight-through for the gradient). The
    carried last state costs twice its float32 bytes (still O(1) in depth); a state beyond
    2^20 in magnitude is refused (exactness would be lost). Schemes declare this with
    ``exact_arithmetic`` (all four invertible ones). float64 stages reconstruct in plain
    float64 (drift ~1e-15).
``"checkpoint"``
    for any stage and scheme: the forward pass saves every ``k``-th carry, ``k = ⌈√N⌉``, and
    the random-generator state at each of them; the backward pass re-runs each segment of
    ``k`` steps under autograd from its saved carry, with the generator reset to the saved
    state, so a stochastic stage replays exactly the increments of the forward pass (and the
    generator is put back afterwards). Saved activations ``O(√N)``.

Parameter gradients are accumulated into ``.grad`` during the recomputation (as reentrant
``torch.utils.checkpoint`` does), so train with ``loss.backward()``: ``torch.autograd.grad(loss,
params)`` does not see the parameters of a stage in these modes (use ``"store"`` for that).

Recomputation must not count twice what a forward pass records as a side effect: the batch
norm running statistics and the weak-condition running sums (``_NoiseStats``) of the stage are
saved before a backward recomputation and restored after it. Under CUDA autocast the
recomputation runs under the autocast state of the forward pass.

:func:`set_memory` sets a mode on every stage of a model (transitions, single steps outside
the ODE, keep storing) and refuses, with the reason, a stage that the mode cannot work for.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MEMORY_MODES", "FixedPoint", "set_memory", "memory_problem", "saved_tensor_bytes",
           "reconstruction_drift"]

MEMORY_MODES = ("store", "reversible", "checkpoint")


class FixedPoint:
    """Exact arithmetic for ``memory="reversible"``: states held in float64 on the grid ``2^-bits``.

    ``grid(v)`` rounds ``v`` to the grid (``round(v·2^bits)·2^-bits``, exact: power-of-two scaling);
    sums and differences of grid values are exact in float64 while they stay below
    ``limit = 2^(52−bits)`` in magnitude, so a step ``x + grid(Δt·f(value(x')))`` is undone by
    subtracting the identical rounded increment, bit for bit (momentumnet's idea, with the
    integers kept in float64). ``value(x)`` is what the field sees: ``x`` in the network's dtype.
    With ``bits = 32`` the grid is 2.3e-10 (finer than float32 rounding of any state above 4e-3)
    and ``limit`` 2^20 ≈ 1.0e6.
    """

    bits = 32

    def __init__(self, dtype):
        self.dtype = dtype
        self.scale = 2.0 ** self.bits
        self.limit = 2.0 ** (52 - self.bits)

    def grid(self, v):
        # v·2^bits is exact in v's own dtype (a power-of-two scaling), and its rounding to an
        # integer is too (above 2^24 a float32 is already an integer), so rounding before the
        # cast gives the float64 result with one float64 operation fewer
        if v.dtype != torch.float64:
            return torch.round(v * self.scale).double().div_(self.scale)
        return torch.round(v * self.scale).div_(self.scale)

    def value(self, x):
        return x.to(self.dtype)

    def check(self, peak, where):
        """Refuse a run whose largest |state| ``peak`` (a tensor) reached :attr:`limit`, where the
        grid arithmetic stops being exact (non-finite states go on: the loss check sees them)."""
        top = float(peak)
        if math.isfinite(top) and top >= self.limit:
            raise ValueError(f"{where} reached |state| = {top:.3g}, beyond {self.limit:.3g} where the exact "
                             f"fixed-point reconstruction holds")

    def __repr__(self):
        return f"FixedPoint(bits={self.bits}, dtype={self.dtype})"


def exact_arithmetic(stage, dtype) -> bool:
    """Whether ``memory="reversible"`` runs ``stage`` on :class:`FixedPoint` carries: every scheme
    declares ``exact_arithmetic`` and the states are not float64 (float64 reconstructs in float64)."""
    return dtype != torch.float64 and all(getattr(s, "exact_arithmetic", False) for s in stage.schemes)


def _stage_types():
    from .stage import Stage, Transition

    return Stage, Transition


def memory_problem(stage, mode: str) -> str | None:
    """Why ``mode`` cannot work for ``stage`` (``None`` when it can); ``ValueError`` for an unknown mode."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {mode!r}")
    if mode != "reversible":
        return None
    bad = sorted({type(s).__name__ for s in stage.schemes if not getattr(s, "invertible", False)})
    if bad:
        return f"its scheme {', '.join(bad)} is not invertible (use memory='checkpoint')"
    if stage.field.stochastic:
        return "it is stochastic: its increments cannot be recovered backward (use memory='checkpoint')"
    if stage.post is not None:
        return f"its post-activation {stage.post!r} after every step is not invertible (use memory='checkpoint')"
    return None


def set_memory(module: nn.Module, mode: str) -> nn.Module:
    """Set memory mode ``mode`` (one of :data:`MEMORY_MODES`) on every stage of ``module``.

    Transitions are single steps outside the ODE and keep storing. Raises ``ValueError``
    naming the stage and the reason when the mode cannot work for one of them (nothing is
    changed then).
    """
    Stage, Transition = _stage_types()
    stages = [(path, m) for path, m in module.named_modules()
              if isinstance(m, Stage) and not isinstance(m, Transition)]
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {mode!r}")
    for path, stage in stages:
        why = memory_problem(stage, mode)
        if why:
            raise ValueError(f"memory={mode!r} cannot work for stage {stage.name or path or 'stage'}: {why}")
    for _, stage in stages:
        stage.memory = mode
    return module


def saved_tensor_bytes(fn) -> tuple:
    """``(bytes, result)``: the bytes of the distinct tensors autograd saves for backward while
    ``fn()`` runs (``torch.autograd.graph.saved_tensors_hooks``; a tensor saved twice counts once)."""
    seen = {}

    def pack(t):
        try:
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
            seen[key] = t.untyped_storage().nbytes() if t.numel() else 0
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    # count storages once
    storages = {}
    for (ptr, *_), nbytes in seen.items():
        storages[ptr] = max(storages.get(ptr, 0), nbytes)
    return sum(storages.values()), out


# ---------------------------------------------------------------------- carries


def _split(x, state):
    """The tensors of a carry: the parts of ``x`` and the tensor history ``state["prev"]``."""
    xs = list(x) if isinstance(x, tuple) else [x]
    hist = isinstance(state, dict) and isinstance(state.get("prev"), torch.Tensor)
    return xs + ([state["prev"]] if hist else []), (isinstance(x, tuple), len(xs), hist)


def _join(tensors, layout, state):
    pair, nx, hist = layout
    x = tuple(tensors[:nx]) if pair else tensors[0]
    if hist:
        state = dict(state)
        state["prev"] = tensors[nx]
    return x, state


class _FrozenSideEffects:
    """Save the stage's buffers (batch-norm running statistics, noise sums) and the
    ``_counts`` of its noise statistics; restore them on exit."""

    def __init__(self, stage):
        self.stage = stage

    def __enter__(self):
        self.buffers = [(b, b.detach().clone()) for b in self.stage.buffers()]
        self.counts = [(m, list(m._counts)) for m in self.stage.modules() if hasattr(m, "_counts")]
        return self

    def __exit__(self, *exc):
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        for m, c in self.counts:
            m._counts = c
        return False


def _generator(stage, device):
    gen = stage._generator
    if gen is not None:
        return gen
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    if device.type == "cpu":
        return torch.default_generator
    return None


class _Plan:
    """What the autograd function needs besides tensors."""

    def __init__(self, stage, schemes, x, state, mode):
        self.stage, self.schemes, self.mode = stage, schemes, mode
        tensors, self.layout = _split(x, state)
        self.state0 = state
        self.device = tensors[0].device
        dev = self.device.type
        self.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)) \
            if dev in ("cuda", "cpu") else None

    def autocast_ctx(self):
        if self.autocast is None or not self.autocast[1]:
            return torch.autocast(self.device.type, enabled=False) if self.autocast else _null()
        return torch.autocast(self.autocast[0], dtype=self.autocast[2])

    def step(self, n, x, state, fp=None):
        st = self.stage
        kw = {} if fp is None else {"fp": fp}
        out, state = self.schemes[n].step(st.field, st.t0 + n * st.dt, x, st.dt, state, st._generator, **kw)
        if st.post is not None:  # refused for "reversible" (not invertible)
            out = st._post(out)
        return out, state


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _vjp():
    """``vjp(fn, u, g) -> (fn(u), (∂fn/∂u)ᵀ g)``, one evaluation of ``fn``; the parameter gradients
    ``(∂fn/∂θ)ᵀ g`` are accumulated into ``θ.grad`` directly (as reentrant checkpointing does), so the
    cost of a step does not grow with the number of parameters of the stage."""

    def vjp(fn, u, g):
        u = u.detach().requires_grad_()
        with torch.enable_grad():
            out = fn(u)
        if g is None or not out.requires_grad:
            return out.detach(), None
        torch.autograd.backward(out, g)
        return out.detach(), u.grad

    return vjp


def _pull(outputs, grads, inputs):
    """Back-propagate ``grads`` from ``outputs`` (parameter gradients accumulate into ``.grad``);
    return the gradients of the leaf ``inputs``."""
    outs, gs = [], []
    for o, g in zip(outputs, grads):
        if g is not None and o.requires_grad:
            outs.append(o)
            gs.append(g)
    if outs:
        torch.autograd.backward(outs, gs)
    return [t.grad for t in inputs]


class _StageFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, n_carry, *tensors):
        carry, params = tensors[:n_carry], tensors[n_carry:]
        dtype = carry[0].dtype
        fp = FixedPoint(dtype) if plan.mode == "reversible" and exact_arithmetic(plan.stage, dtype) else None
        if fp is not None:
            carry = [fp.grid(t) for t in carry]
            peak = torch.zeros((), dtype=torch.float64, device=plan.device)
            for t in carry:
                peak = torch.maximum(peak, t.abs().amax())
        x, state = _join(list(carry), plan.layout, plan.state0)
        n_steps = plan.stage.steps
        segments = []
        k = max(1, math.ceil(math.sqrt(n_steps)))
        gen = _generator(plan.stage, plan.device) if plan.mode == "checkpoint" else None
        with torch.no_grad():
            for n in range(n_steps):
                if plan.mode == "checkpoint" and n % k == 0:
                    t, layout = _split(x, state)
                    segments.append((n, len(t), layout, _strip(state),
                                     gen.get_state() if gen is not None else None, t))
                x, state = plan.step(n, x, state, fp)
                if fp is not None:  # the new state(s); a two-step history was checked as the last state
                    for t in (x if isinstance(x, tuple) else (x,)):
                        peak = torch.maximum(peak, t.abs().amax())
        final, layout = _split(x, state)
        if fp is not None:
            fp.check(peak, f"memory='reversible' (use memory='checkpoint', or float64): stage "
                           f"{plan.stage.name or 'stage'}")
        ctx.plan, ctx.n_carry, ctx.n_params, ctx.fp = plan, n_carry, len(params), fp
        ctx.final_layout, ctx.final_state = layout, _strip(state)
        if plan.mode == "checkpoint":
            flat = [t for seg in segments for t in seg[5]]
            ctx.segments = [seg[:5] for seg in segments]
            ctx.save_for_backward(*flat)
        else:
            ctx.save_for_backward(*final)
        if fp is not None:
            return tuple(t.to(dtype) for t in final[:layout[1]])
        return tuple(final[:layout[1]])

    @staticmethod
    def backward(ctx, *grad_out):
        plan = ctx.plan
        stage = plan.stage
        saved = list(ctx.saved_tensors)
        with _FrozenSideEffects(stage), plan.autocast_ctx():
            if plan.mode == "reversible":
                x, state = _join(saved, ctx.final_layout, ctx.final_state)
                g = [None if t is None else t for t in grad_out] + [None] * (len(saved) - len(grad_out))
                vjp = _vjp()
                for n in reversed(range(stage.steps)):
                    scheme = plan.schemes[n]
                    if hasattr(scheme, "reverse_step"):  # one field evaluation per sub-step: rebuild and pull back
                        kw = {} if ctx.fp is None else {"fp": ctx.fp}  # exact: bit-for-bit on grid carries
                        with torch.no_grad():
                            x, state, g = scheme.reverse_step(stage.field, stage.t0 + n * stage.dt, x, stage.dt,
                                                              state, tuple(g), vjp, **kw)
                        g = list(g)
                        continue
                    with torch.no_grad():
                        xp, sp = scheme.invert_step(stage.field, stage.t0 + n * stage.dt, x, stage.dt, state)
                    inputs, layout = _split(xp, sp)
                    inputs = [t.detach().requires_grad_() for t in inputs]
                    with torch.enable_grad():
                        xi, si = _join(inputs, layout, sp)
                        xo, so = plan.step(n, xi, si)
                        outs, _ = _split(xo, so)
                        g = _pull(outs, g, inputs)
                    x, state = _join([t.detach() for t in inputs], layout, sp)
            else:
                gen = _generator(stage, plan.device)
                here = gen.get_state() if gen is not None else None
                ends = [seg[0] for seg in ctx.segments[1:]] + [stage.steps]
                pos = sum(seg[1] for seg in ctx.segments)
                g = list(grad_out)
                try:
                    for seg, end in zip(reversed(ctx.segments), reversed(ends)):
                        start, count, layout, st_strip, rng = seg
                        pos -= count
                        inputs = [t.detach().requires_grad_() for t in saved[pos:pos + count]]
                        if rng is not None:
                            gen.set_state(rng)
                        with torch.enable_grad():
                            x, state = _join(inputs, layout, st_strip)
                            for n in range(start, end):
                                x, state = plan.step(n, x, state)
                            outs, _ = _split(x, state)
                            g = g + [None] * (len(outs) - len(g))
                            g = _pull(outs, g, inputs)
                finally:
                    if here is not None:
                        gen.set_state(here)
        # parameter gradients were accumulated into .grad during the recomputation (the
        # parameters are inputs of the function only so that its output requires grad)
        g = list(g) + [None] * (ctx.n_carry - len(g))
        return (None, None, *g[:ctx.n_carry], *([None] * ctx.n_params))


def _strip(state):
    """``state`` without its tensor history (kept as the carry) — the rest is small Python data."""
    if isinstance(state, dict) and isinstance(state.get("prev"), torch.Tensor):
        state = dict(state)
        state["prev"] = None
    return state


def run(stage, schemes, x, state):
    """Run ``stage``'s steps from ``(x, state)`` in its memory mode (called by ``Stage.forward``)."""
    plan = _Plan(stage, schemes, x, state, stage.memory)
    carry, _ = _split(x, state)
    params = [p for p in stage.parameters()]
    outs = _StageFunction.apply(plan, len(carry), *carry, *params)
    return tuple(outs) if plan.layout[0] else outs[0]


def reconstruction_drift(stage, x, prev=None, exact=None) -> dict:
    """How far ``memory="reversible"`` drifts in floating point on ``stage`` from input ``x``.

    Runs the stage forward (no graph), then inverts every step back to the start and returns
    ``{"steps", "rel_error", "max_abs_error", "state_norm", "exact"}``: the relative and absolute
    error of the reconstructed input against ``x`` (and of the history, if given), and the norm of
    the final state. ``exact=None`` uses the arithmetic the stage's reversible mode uses
    (:class:`FixedPoint` carries for float32/16 states: the errors are then 0, measured against
    the input rounded to the grid; a state beyond ``FixedPoint.limit`` raises ``ValueError``, as
    the stage does); ``exact=False`` measures plain floating-point inversion.
    Batch-norm statistics and noise sums are left as they were.
    """
    why = memory_problem(stage, "reversible")
    if why:
        raise ValueError(f"reconstruction_drift: {why}")
    field = stage.field
    split = field.coupled and isinstance(x, torch.Tensor)
    x0 = tuple(x.chunk(2, dim=1)) if split else x
    dtype = (x0[0] if isinstance(x0, tuple) else x0).dtype
    if exact is None:
        exact = exact_arithmetic(stage, dtype)
    elif exact and not exact_arithmetic(stage, dtype):
        raise ValueError("reconstruction_drift: exact=True needs float32/16 states and schemes that declare "
                         "exact_arithmetic")
    fp = FixedPoint(dtype) if exact else None
    kw = {} if fp is None else {"fp": fp}
    with torch.no_grad(), _FrozenSideEffects(stage):
        state = stage.schemes[0].start(field, stage.t0, x0, stage.dt, before=prev)
        start, layout = _split(x0, state)
        if fp is not None:
            start = [fp.grid(t) for t in start]
            x0, state = _join(start, layout, state)
        xs, st = x0, state
        peak = torch.zeros((), dtype=torch.float64)
        for n in range(stage.steps):
            xs, st = stage.schemes[n].step(field, stage.t0 + n * stage.dt, xs, stage.dt, st, stage._generator, **kw)
            if fp is not None:
                for t in _split(xs, st)[0]:
                    peak = torch.maximum(peak, t.abs().amax().cpu())
        final, _ = _split(xs, st)
        if fp is not None:  # as memory="reversible" refuses such a stage, rather than a meaningless error
            fp.check(peak, "reconstruction_drift (exact=False measures plain inversion): the stage")
        for n in reversed(range(stage.steps)):
            xs, st = stage.schemes[n].invert_step(field, stage.t0 + n * stage.dt, xs, stage.dt, st, **kw)
        back, _ = _split(xs, st)
    num = math.sqrt(sum(float((a.double() - b.double()).square().sum()) for a, b in zip(back, start)))
    den = math.sqrt(sum(float(b.double().square().sum()) for b in start))
    return {"steps": stage.steps, "rel_error": num / max(den, 1e-300), "exact": bool(exact),
            "max_abs_error": max(float((a.double() - b.double()).abs().max()) for a, b in zip(back, start)),
            "state_norm": math.sqrt(sum(float(f.double().square().sum()) for f in final))}
