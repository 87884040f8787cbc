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
    autograd and differentiated. Saved activations are ``O(1)`` in ``N`` (the last carry, plus
    one step's graph alive at a time).

    Drift. By default (``set_memory(..., exact=True)``) float32/16 states are carried on a
    fixed-point grid (:class:`FixedPoint`: float64 values on the grid 2^-32, every increment
    rounded to the grid before it is added), so each step is undone bit for bit, at any depth —
    the reconstruction has no floating-point drift and the gradients are exactly those of the
    forward pass that ran (the field sees the grid states cast to the network's dtype; the
    rounding, 2.3e-10, is finer than float32's own for states above 4e-3; straight-through for
    the gradient). The carried last state costs twice its float32 bytes (still O(1) in depth);
    a stage whose input or output is beyond 2^20 in magnitude is refused, and a reconstructed
    input that differs from the forward one (a state went beyond 2^20 in between) is an error
    of the backward pass. Schemes declare this with ``exact_arithmetic`` (all four invertible
    ones). ``exact=False`` inverts in plain floating point: faster, with a reconstruction error
    that grows with depth (:func:`reconstruction_drift` measures it). float64 stages
    reconstruct in plain float64 (drift ~1e-15).
``"checkpoint"``
    for any stage and scheme: the forward pass saves every ``k``-th carry, ``k = ⌈√N⌉``, and
    the random-generator state at each of them; the backward pass re-runs each segment of
    ``k`` steps under autograd from its saved carry, with the generator reset to the saved
    state, so a stochastic stage replays exactly the increments of the forward pass (and the
    generator is put back afterwards). Saved activations ``O(√N)``.

How the backward works: the steps of a stage are one :class:`torch.autograd.Function` whose
inputs are the carry *and the stage's parameters*. Its backward recomputes each step (or
segment) under :func:`torch.enable_grad` on detached inputs and calls
:func:`torch.autograd.grad` for the inputs of the step and the parameters its graph reaches;
it returns the parameter gradients as the gradients of its parameter inputs. No backward pass
runs inside it (no reentrant ``torch.autograd.backward``), so autograd delivers each
parameter's gradient once per backward pass: ``torch.autograd.grad(loss, params)``,
gradient accumulation, DistributedDataParallel and ``torch.compile`` (the function runs
eagerly inside the compiled model) work as with ``"store"``. A field that uses a tensor
requiring grad which is not a parameter of the stage is refused in the backward pass (its
gradient would have nowhere to go). Double backward is not supported.

Every forward step of a mode runs through the one loop, :func:`sdenet.loop.run_steps` (the
graph-free forward pass, a checkpointed segment's re-run in backward, the re-run of a step that
``invert_step`` rebuilt); the reverse sweep of ``"reversible"`` — steps undone from the last to
the first, carrying gradients — is a loop of its own.

Recomputation must not count twice what a forward pass records as a side effect: the batch
norm running statistics and the weak-condition running sums (``_NoiseStats``) of the stage are
saved before a backward recomputation and restored after it. Under CUDA autocast the
recomputation runs under the autocast state of the forward pass.

:func:`sdenet.nn.set_memory` (in :mod:`sdenet.nn.stage`) sets a mode on every stage of a model (transitions, single steps outside
the ODE, keep storing) and refuses, with the reason, a stage that the mode cannot work for.
"""

from __future__ import annotations

import math

import torch

from ..loop import run_steps

__all__ = ["MEMORY_MODES", "FixedPoint", "memory_problem", "saved_tensor_bytes", "reconstruction_drift"]

MEMORY_MODES = ("store", "reversible", "checkpoint")


class FixedPoint:
    """Exact arithmetic for ``memory="reversible"``: states held in float64 on the grid ``2^-bits``.

    A carry ``x`` is a float64 tensor whose values are multiples of ``2^-bits``; a step adds an
    increment rounded to the grid, ``x + grid(c·v)``, and its inverse subtracts the identical
    rounded increment, so a step is undone bit for bit at any depth (momentumnet's idea, with the
    integers kept in float64). Sums and differences of grid values are exact in float64 while they
    stay below :attr:`limit` ``= 2^(52−bits)`` in magnitude. ``value(x)`` is what the field sees:
    ``x`` in the network's dtype. With ``bits = 32`` the grid is 2.3e-10 (finer than float32
    rounding of any state above 4e-3) and ``limit`` 2^20 ≈ 1.0e6.

    Cost per increment: the rounded increment is formed in float32 as the integer
    ``r = round(v·(c·2^bits))`` (one multiply, one in-place round: ``c·2^bits`` is a power-of-two
    scaling of ``c``, so ``r`` equals ``round((c·v)·2^bits)`` bit for bit) and added with one
    mixed-precision ``torch.add(x, r, alpha=±2^-bits)`` (exact: ``r·2^-bits`` is a grid value);
    ``value`` is one cast. The limit is not checked per step: :func:`run` checks the largest
    |state| at the stage's input and output, and verifies after the backward sweep that the
    reconstructed input equals the forward one (a 64-bit checksum of its bits).
    """

    bits = 32

    def __init__(self, dtype, inplace: bool = False):
        self.dtype = dtype
        #: whether :meth:`add_` and :meth:`sub_` may overwrite their first argument (the caller owns
        #: the carries: a memory mode does, :func:`reconstruction_drift`, which compares, does not)
        self.inplace = inplace
        self.scale = 2.0**self.bits
        self.unit = 2.0**-self.bits
        self.limit = 2.0 ** (52 - self.bits)

    def grid(self, v):
        """``v`` rounded to the grid, as float64 (for the states a stage starts from)."""
        # v·2^bits is exact in v's own dtype (a power-of-two scaling), and so is its rounding to an
        # integer (above 2^24 a float32 is already an integer)
        if v.dtype != torch.float64:
            return torch.round(v.float() * self.scale).double().mul_(self.unit)
        return torch.round(v * self.scale).mul_(self.unit)

    def _r(self, v, c):
        # the increment c·v in units of the grid, rounded to an integer (a float32 value); 16-bit
        # field outputs are widened first (2^32·v would overflow float16)
        if v.dtype not in (torch.float32, torch.float64):
            v = v.float()
        return torch.mul(v, c * self.scale).round_()

    def add(self, x, v, c):
        """``x + grid(c·v)`` (``x`` a float64 grid tensor, ``v`` what the field returned)."""
        return torch.add(x, self._r(v, c), alpha=self.unit)

    def sub(self, x, v, c):
        """``x − grid(c·v)``: undoes :meth:`add` with the same ``v`` and ``c`` bit for bit."""
        return torch.add(x, self._r(v, c), alpha=-self.unit)

    def add_(self, x, v, c):
        """:meth:`add`, overwriting ``x`` when :attr:`inplace` (a scheme passes a carry it drops)."""
        return x.add_(self._r(v, c), alpha=self.unit) if self.inplace else self.add(x, v, c)

    def sub_(self, x, v, c):
        """:meth:`sub`, overwriting ``x`` when :attr:`inplace`."""
        return x.add_(self._r(v, c), alpha=-self.unit) if self.inplace else self.sub(x, v, c)

    def value(self, x):
        return x.to(self.dtype)

    def check(self, peak, where):
        """Refuse a run whose largest |state| ``peak`` (a tensor) reached :attr:`limit`, where the
        grid arithmetic stops being exact (non-finite states go on: the loss check sees them)."""
        top = float(peak)
        if math.isfinite(top) and top >= self.limit:
            raise ValueError(
                f"{where} reached |state| = {top:.3g}, beyond {self.limit:.3g} where the exact "
                f"fixed-point reconstruction holds"
            )

    @staticmethod
    def checksum(tensors):
        """A 64-bit checksum of the bits of float64 ``tensors`` (any changed element changes it)."""
        return [int(t.view(torch.int64).sum()) for t in tensors]

    def __repr__(self):
        return f"FixedPoint(bits={self.bits}, dtype={self.dtype})"


def exact_arithmetic(stage, dtype) -> bool:
    """Whether ``memory="reversible"`` runs ``stage`` on :class:`FixedPoint` carries: every scheme
    declares ``exact_arithmetic`` and the states are not float64 (float64 reconstructs in float64)."""
    return dtype != torch.float64 and all(getattr(s, "exact_arithmetic", False) for s in stage.schemes)


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
        return (
            f"its post-activation {stage.post!r} after every step is not invertible (use memory='checkpoint')"
        )
    return None


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
    storages: dict = {}
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
        return torch.cuda.default_generators[
            device.index if device.index is not None else torch.cuda.current_device()
        ]
    if device.type == "cpu":
        return torch.default_generator
    return None


class _Plan:
    """What the autograd function needs besides tensors."""

    def __init__(self, stage, schemes, x, state, mode):
        self.stage, self.schemes, self.mode = stage, schemes, mode
        self.exact = getattr(stage, "memory_exact", True)
        tensors, self.layout = _split(x, state)
        self.state0 = state
        self.device = tensors[0].device
        dev = self.device.type
        self.autocast = (
            (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
            if dev in ("cuda", "cpu")
            else None
        )

    def autocast_ctx(self):
        if self.autocast is None or not self.autocast[1]:
            return torch.autocast(self.device.type, enabled=False) if self.autocast else _null()
        return torch.autocast(self.autocast[0], dtype=self.autocast[2])

    def run(self, first, end, x, state, fp=None):
        """Steps ``first … end − 1`` from ``(x, state)`` through the one loop (:func:`sdenet.loop.run_steps`),
        as :meth:`Stage.forward` runs them except: ``t`` a Python float (what the reverse sweep's
        ``reverse_step``/``invert_step`` get: the forward and its undoing see the same time), never
        in place (a fused kernel may round differently from the ``step`` a backward re-runs), no
        boundary checks; ``fp`` (exact reversible mode) reaches every ``scheme.step``."""
        st = self.stage
        return run_steps(
            st.field,
            self.schemes,
            x,
            state,
            t0=st.t0,
            dt=st.dt,
            steps=end,
            first=first,
            generator=st._generator,
            post=None if st.post is None else st._post,  # refused for "reversible" (not invertible)
            tensor_time=False,
            inplace=False,
            step_kw=None if fp is None else {"fp": fp},
        )


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Sweep:
    """The gradients of one backward sweep: vector–Jacobian products of recomputed steps, with the
    parameter gradients collected here (and returned by the autograd function as the gradients of
    its parameter inputs) instead of accumulated into ``.grad`` by a nested backward.

    Each recomputation runs under :func:`torch.enable_grad` on detached inputs, and
    :func:`torch.autograd.grad` differentiates it with respect to those inputs and to the
    parameters its graph reaches — found by walking that small graph (a step's graph holds a
    few nodes, so the walk costs microseconds, while passing all of a stage's parameters to every
    call would cost per parameter and step)."""

    def __init__(self, stage, params):
        self.where = stage.name or "stage"
        self.index = {id(p): i for i, p in enumerate(params)}
        self.grads = [None] * len(params)
        self.params = params

    def _reached(self, outs, inputs):
        """The parameters (indices into ``params``) that the graph of ``outs`` reaches."""
        mine = {id(t) for t in inputs}
        seen, found = set(), []
        stack = [o.grad_fn for o in outs]
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            v = getattr(fn, "variable", None)  # a leaf's AccumulateGrad
            if v is not None:
                i = self.index.get(id(v))
                if i is not None:
                    found.append(i)
                elif id(v) not in mine:
                    raise RuntimeError(
                        f"memory mode of {self.where}: the field uses a tensor that requires grad "
                        f"(shape {tuple(v.shape)}) but is not a parameter of the stage; register it as an "
                        f"nn.Parameter of the field, or use memory='store'"
                    )
                continue
            stack.extend(f for f, _ in fn.next_functions)
        return found

    def pull(self, outputs, grads, inputs, scale=1.0):
        """``(∂outputs/∂inputs)ᵀ grads`` for the leaf ``inputs``; the parameter part, times ``scale``,
        is collected."""
        outs, gs = [], []
        for o, g in zip(outputs, grads):
            if g is not None and o.requires_grad:
                outs.append(o)
                gs.append(g)
        if not outs:
            return [None] * len(inputs)
        found = self._reached(outs, inputs)
        wrt = [t for t in inputs if t.requires_grad] + [self.params[i] for i in found]
        got = torch.autograd.grad(outs, wrt, gs, allow_unused=True)
        k = 0
        res = []
        for t in inputs:
            if t.requires_grad:
                res.append(got[k])
                k += 1
            else:
                res.append(None)
        for i, g in zip(found, got[k:]):
            if g is None:
                continue
            if self.grads[i] is None:
                # a copy: autograd may hand back a grad_output itself (a field adding a full-shape parameter)
                self.grads[i] = g.clone() if scale == 1.0 else g * scale
            else:
                self.grads[i].add_(g, alpha=scale)  # a fresh sum this sweep owns
        return res

    def vjp(self, fn, u, g, scale=1.0):
        """``(fn(u), scale·(∂fn/∂u)ᵀ g)`` with one evaluation of ``fn`` (what a scheme's
        ``reverse_step`` asks for); ``scale·(∂fn/∂θ)ᵀ g`` is collected. The returned gradient is a
        fresh tensor the caller may overwrite."""
        u = u.detach().requires_grad_()
        with torch.enable_grad():
            out = fn(u)
        if g is None or not out.requires_grad:
            return out.detach(), None
        (gu,) = self.pull([out], [g], [u], scale)
        if gu is not None:
            if gu.untyped_storage().data_ptr() == g.untyped_storage().data_ptr():
                gu = gu.clone()  # autograd handed g itself back (an identity-like field)
            if scale != 1.0:
                gu.mul_(scale)
        return out.detach(), gu


class _StageFunction(torch.autograd.Function):
    """The steps of a stage as one autograd node: ``forward`` runs them without a graph and keeps
    what the memory mode keeps; ``backward`` sweeps back over them and returns the gradients of
    every input — the carry and the stage's parameters (passed as explicit inputs so that autograd,
    and DDP's hooks on it, see one gradient per parameter and backward pass). No backward pass is
    started inside ``backward``: only :func:`torch.autograd.grad` on recomputed steps, so the
    function composes with DDP, ``torch.autograd.grad``, gradient accumulation and torch.compile
    (which runs it as an opaque function)."""

    @staticmethod
    def forward(ctx, plan, n_carry, *tensors):
        carry, params = tensors[:n_carry], tensors[n_carry:]
        dtype = carry[0].dtype
        fp = (
            FixedPoint(dtype, inplace=True)
            if plan.mode == "reversible" and plan.exact and exact_arithmetic(plan.stage, dtype)
            else None
        )
        where = (
            f"memory='reversible' (use memory='checkpoint', exact=False or float64): stage "
            f"{plan.stage.name or 'stage'}"
        )
        if fp is not None:
            # the cheap bound: the largest |state| at the stage's input (and below, its output);
            # what happens between them is verified after the backward sweep (checksum)
            fp.check(_peak(carry), where)
            carry = [fp.grid(t) for t in carry]
            ctx.checksum = FixedPoint.checksum(carry)
        x, state = _join(list(carry), plan.layout, plan.state0)
        n_steps = plan.stage.steps
        segments = []
        k = max(1, math.ceil(math.sqrt(n_steps)))
        gen = _generator(plan.stage, plan.device) if plan.mode == "checkpoint" else None
        with torch.no_grad():
            if plan.mode == "checkpoint":  # segment by segment, keeping each one's start
                for n in range(0, n_steps, k):
                    t, layout = _split(x, state)
                    segments.append(
                        (n, len(t), layout, _strip(state), gen.get_state() if gen is not None else None, t)
                    )
                    x, state = plan.run(n, min(n + k, n_steps), x, state)
            else:
                x, state = plan.run(0, n_steps, x, state, fp)
        final, layout = _split(x, state)
        if fp is not None:
            fp.check(_peak(final), where)
        ctx.plan, ctx.n_carry, ctx.n_params, ctx.fp, ctx.where = plan, n_carry, len(params), fp, where
        ctx.final_layout, ctx.final_state = layout, _strip(state)
        if plan.mode == "checkpoint":
            flat = [t for seg in segments for t in seg[5]]
            ctx.segments = [seg[:5] for seg in segments]
            ctx.save_for_backward(*flat)
        else:
            ctx.save_for_backward(*final)
        if fp is not None:
            return tuple(t.to(dtype) for t in final[: layout[1]])
        return tuple(final[: layout[1]])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_out):
        plan = ctx.plan
        stage = plan.stage
        if ctx.fp is not None:  # before unpacking: autograd would only say "modified by an inplace operation"
            if getattr(ctx, "swept", False):
                raise RuntimeError(
                    f"{ctx.where}: a second backward pass through the stage (retain_graph=True) "
                    f"is not supported by the exact reversible mode; use exact=False or "
                    f"memory='checkpoint'"
                )
            ctx.swept = True
        saved = list(ctx.saved_tensors)
        sweep = _Sweep(stage, plan.params)
        with _FrozenSideEffects(stage), plan.autocast_ctx():
            if plan.mode == "reversible":
                # the sweep overwrites the carry in place: the exact carry is private to this function
                # (its output is a cast copy) and is used once; the plain one is also the stage's
                # output, so the sweep starts from a copy
                if ctx.fp is None:
                    saved = [t.clone() for t in saved]
                x, state = _join(saved, ctx.final_layout, ctx.final_state)
                g = list(grad_out) + [None] * (len(saved) - len(grad_out))
                kw = {} if ctx.fp is None else {"fp": ctx.fp}  # exact: bit for bit on grid carries
                # Its own loop, not sdenet.loop.run_steps: it walks n downwards, calling the scheme's
                # reverse_step (or invert_step) rather than step, and carries the gradients with the
                # states; only the fallback's re-run of step n below is a forward step, and that goes
                # through the one loop.
                for n in reversed(range(stage.steps)):
                    scheme = plan.schemes[n]
                    if hasattr(
                        scheme, "reverse_step"
                    ):  # one field evaluation per sub-step: rebuild and pull back
                        with torch.no_grad():
                            x, state, g = scheme.reverse_step(
                                stage.field,
                                stage.t0 + n * stage.dt,
                                x,
                                stage.dt,
                                state,
                                tuple(g),
                                sweep.vjp,
                                **kw,
                            )
                        g = list(g)
                        continue
                    with torch.no_grad():
                        xp, sp = scheme.invert_step(
                            stage.field, stage.t0 + n * stage.dt, x, stage.dt, state, **kw
                        )
                    inputs, layout = _split(xp, sp)
                    inputs = [t.detach().requires_grad_() for t in inputs]
                    with torch.enable_grad():
                        xi, si = _join([t if ctx.fp is None else ctx.fp.value(t) for t in inputs], layout, sp)
                        xo, so = plan.run(n, n + 1, xi, si)
                        outs, _ = _split(xo, so)
                        g = sweep.pull(outs, g, inputs)
                    x, state = _join([t.detach() for t in inputs], layout, sp)
                if ctx.fp is not None:
                    back, _ = _split(x, state)
                    if FixedPoint.checksum(back) != ctx.checksum and all(
                        bool(t.isfinite().all()) for t in back
                    ):
                        raise ValueError(
                            f"{ctx.where}: the reconstructed input of the stage differs from the "
                            f"forward one (a state went beyond {ctx.fp.limit:.3g} between its input "
                            f"and output, where the exact fixed-point arithmetic holds)"
                        )
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
                        inputs = [t.detach().requires_grad_() for t in saved[pos : pos + count]]
                        if rng is not None:
                            gen.set_state(rng)
                        with torch.enable_grad():  # the segment's forward again, through the one loop
                            x, state = _join(inputs, layout, st_strip)
                            x, state = plan.run(start, end, x, state)
                            outs, _ = _split(x, state)
                            g = g + [None] * (len(outs) - len(g))
                            g = sweep.pull(outs, g, inputs)
                finally:
                    if here is not None:
                        gen.set_state(here)
        g = list(g) + [None] * (ctx.n_carry - len(g))
        g = [None if t is None else t for t in g[: ctx.n_carry]]
        # a gradient of the carry in float64 (exact mode) goes back in the input's dtype
        g = [t if t is None or t.dtype == d else t.to(d) for t, d in zip(g, plan.carry_dtypes)]
        return (None, None, *g, *sweep.grads)


def _peak(tensors):
    """The largest |value| over ``tensors`` (one pass each: ``aminmax``, no temporary)."""
    top = None
    for t in tensors:
        lo, hi = torch.aminmax(t)
        m = torch.maximum(hi, -lo)
        top = m if top is None else torch.maximum(top, m.to(top.dtype))
    return top


def _strip(state):
    """``state`` without its tensor history (kept as the carry) — the rest is small Python data."""
    if isinstance(state, dict) and isinstance(state.get("prev"), torch.Tensor):
        state = dict(state)
        state["prev"] = None
    return state


_EAGER_RUN = None


def run(stage, schemes, x, state):
    """Run ``stage``'s steps from ``(x, state)`` in its memory mode (called by ``Stage.forward``).

    Never compiled (``torch.compiler.disable``: a graph break in a compiled model): the backward
    sweep recomputes the steps eagerly, and must compute bit for bit what the forward computed
    (the exact reversible carries are undone by subtracting the very increments that were added;
    a checkpointed segment replays its noise), which a compiled forward — fused kernels, other
    rounding — would not. The disabled wrapper is made on the first call: building it imports
    torch's compiler stack (and sympy), which ``import sdenet`` should not pay for."""
    global _EAGER_RUN
    if _EAGER_RUN is None:
        _EAGER_RUN = torch.compiler.disable(_run)
    return _EAGER_RUN(stage, schemes, x, state)


def _run(stage, schemes, x, state):
    plan = _Plan(stage, schemes, x, state, stage.memory)
    carry, _ = _split(x, state)
    # the parameters are inputs of the function: its backward returns their gradients
    plan.params = [p for p in stage.parameters() if p.requires_grad]
    plan.carry_dtypes = [t.dtype for t in carry]
    outs = _StageFunction.apply(plan, len(carry), *carry, *plan.params)
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
        raise ValueError(
            "reconstruction_drift: exact=True needs float32/16 states and schemes that declare "
            "exact_arithmetic"
        )
    fp = FixedPoint(dtype) if exact else None
    kw = {} if fp is None else {"fp": fp}
    with torch.no_grad(), _FrozenSideEffects(stage):
        state = stage.schemes[0].start(field, stage.t0, x0, stage.dt, before=prev)
        start, layout = _split(x0, state)
        if fp is not None:
            start = [fp.grid(t) for t in start]
            x0, state = _join(start, layout, state)
        peak = torch.zeros((), dtype=torch.float64)

        def watch(xn):  # the largest |state| of every step (an observer in the loop's post slot)
            nonlocal peak
            for t in xn if isinstance(xn, tuple) else (xn,):
                peak = torch.maximum(peak, t.abs().amax().cpu())
            return xn

        # forward as the reversible mode runs it (sdenet.loop.run_steps, Python-float times, fp)
        xs, st = run_steps(
            field,
            stage.schemes,
            x0,
            state,
            t0=stage.t0,
            dt=stage.dt,
            steps=stage.steps,
            generator=stage._generator,
            post=None if fp is None else watch,
            tensor_time=False,
            inplace=False,
            step_kw=kw or None,
        )
        final, final_layout = _split(xs, st)
        if fp is not None:  # as memory="reversible" refuses such a stage, rather than a meaningless error
            if final_layout[2] and stage.steps:  # a two-step scheme's history holds x_0 too
                watch(x0)
            fp.check(peak, "reconstruction_drift (exact=False measures plain inversion): the stage")
        # the walk back is its own loop (the schemes' invert_step, n downwards), not run_steps
        for n in reversed(range(stage.steps)):
            xs, st = stage.schemes[n].invert_step(field, stage.t0 + n * stage.dt, xs, stage.dt, st, **kw)
        back, _ = _split(xs, st)
    num = math.sqrt(sum(float((a.double() - b.double()).square().sum()) for a, b in zip(back, start)))
    den = math.sqrt(sum(float(b.double().square().sum()) for b in start))
    return {
        "steps": stage.steps,
        "rel_error": num / max(den, 1e-300),
        "exact": bool(exact),
        "max_abs_error": max(float((a.double() - b.double()).abs().max()) for a, b in zip(back, start)),
        "state_norm": math.sqrt(sum(float(f.double().square().sum()) for f in final)),
    }
