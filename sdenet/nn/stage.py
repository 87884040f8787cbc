"""Stages: a scheme from :mod:`sdenet.schemes` integrating a run of blocks.

A :class:`Stage` holds a field (a :class:`~sdenet.nn.BlockField` built from the blocks, or
any :class:`sdenet.Field`) and one scheme per step (schemes are stateless: the state dict
one step returns is handed to the next, so a stage may switch schemes from step to step,
as stochastic depth does with its per-block ``DropBernoulli(p_n)``). Its forward pass is

    x_0 = x,   (x_{n+1}, state) = scheme_n.step(field, t_n, x_n, Δt, state, generator),

``t_n = t_0 + nΔt`` — nothing but the core's step functions, so a new scheme runs in a
network without new network code.

In eval mode a stochastic stage integrates the *mean* equation: a weak Euler scheme is
replaced by forward Euler on the drift (``X + p f(X)`` for stochastic depth,
``X + ½(f1 + f2)`` for shake-shake at Δt = 1: the original test-time rules) and
:class:`~sdenet.StochasticLM` by itself with zero increments. :func:`noise_on` turns the
noise back on regardless of ``module.training`` (Monte Carlo evaluation).

A :class:`Transition` is the block that changes width or resolution. It sits outside the
ODE, as in the paper: ``x ↦ S(x) + f(x)`` (one step of its scheme at Δt = 1 from the
lifted state ``S(x)``, with the branch evaluated at ``x``), and it also returns ``S(x)``,
which an LM stage after it uses as ``u_{−1}``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..fields import FieldCheck, is_field
from ..loop import run_steps
from ..schemes import Euler, LinearMultistep, Scheme, StochasticLM, WeakEuler, is_scheme
from .fields import BlockField, _check_dt
from .memory import MEMORY_MODES, memory_problem
from .memory import run as _run_memory

__all__ = ["Stage", "Transition", "noise_on", "set_generator", "mean_scheme", "lm_stage", "set_memory"]

_POSTS = {"relu": F.relu}


def mean_scheme(scheme: Scheme) -> Scheme:
    """The deterministic scheme a stochastic one reduces to in eval mode.

    The scheme declares it (:meth:`sdenet.Scheme.mean_scheme`): ``WeakEuler(law)`` → ``Euler()``
    on the drift; ``StochasticLM(g, law)`` → ``StochasticLM(g, DropBernoulli(1))`` (increments
    identically 0); Platen → Heun. Deterministic schemes return themselves.
    """
    declared = getattr(scheme, "mean_scheme", None)
    return declared() if callable(declared) else scheme


def _lookahead(scheme) -> int:
    """How many blocks past ``t_n`` one step evaluates (Heun's second stage uses ``t_{n+1}``)."""
    return int(getattr(scheme, "lookahead", 0))


class Stage(nn.Module):
    """Integrate ``blocks_or_field`` with ``scheme`` over ``steps`` steps of size ``dt``:

        (x_{n+1}, state) = scheme.step(field, t_n, x_n, Δt, state),   t_n = nΔt,   n = 0 … N−1,

    block ``n`` being the field at ``t_n`` (Euler: ``x_{n+1} = x_n + Δt f_n(x_n)``, a ResNet stage).

    Parameters
    ----------
    blocks_or_field:
        a sequence of residual branches (wrapped in ``BlockField(blocks, dt)``: block ``n``
        is the field at ``t_n = nΔt``) or any :class:`sdenet.Field` (a time-continuous field
        needs ``steps``).
    scheme:
        a :class:`sdenet.Scheme`, or one per step.
    dt:
        step size (default 1, or the given BlockField's own Δt). The scheme scales the
        drift by Δt and the noise by √Δt (through the law).
    steps:
        number of steps; for blocks it defaults to ``len(blocks)`` (``len(blocks) − 1``
        for Heun, whose second evaluation at ``t_{n+1}`` uses block ``n + 1``).
    post:
        ``None`` or ``"relu"`` (or a callable) applied after every step: the post-activation
        ``relu(x + f(x))`` of He et al. 2015 — a departure from the pure ODE reading exactly
        as in the original architecture.
    name:
        the key of this stage in :func:`sdenet.nn.lm_coefficients` and ``weak_report``.

    For a coupled field (RevNet) the input may be a pair ``(x, y)`` (a pair comes back) or a
    tensor, which is split in two along the channels and concatenated again at the end.

    ``memory`` (attribute, default ``"store"``; set it with :func:`sdenet.nn.set_memory`):
    ``"reversible"`` or ``"checkpoint"`` trade recomputation for saved activations in
    training (:mod:`sdenet.nn.memory`).
    """

    # plain attributes (not tensors or modules), declared for type checkers
    coefficients: torch.Tensor
    memory_exact: bool
    coefficient_kind: str

    memory = "store"

    def __init__(
        self,
        blocks_or_field,
        scheme,
        *,
        dt: float | None = None,
        steps: int | None = None,
        t0: float = 0.0,
        post=None,
        name: str | None = None,
    ):
        super().__init__()
        if is_field(blocks_or_field):
            field = blocks_or_field
            own_dt = getattr(field, "dt", None) if getattr(field, "owns_dt", False) else None
            if own_dt is not None:
                if dt is not None and not math.isclose(_check_dt(dt), own_dt):
                    raise ValueError(f"Stage: dt={dt} disagrees with the block field's own dt={own_dt}")
                dt = own_dt
                t0 = field.t0
        else:
            field = BlockField(blocks_or_field, 1.0 if dt is None else dt, t0)
        self.dt = _check_dt(1.0 if dt is None else dt)
        self.t0 = float(t0)
        self.field = field

        schemes = list(scheme) if isinstance(scheme, (list, tuple)) else None
        first = schemes[0] if schemes else scheme
        if schemes is not None and not schemes:
            raise ValueError("Stage: got an empty list of schemes")
        n_blocks = len(field) if hasattr(field, "__len__") else None
        if steps is None:
            if schemes is not None:
                steps = len(schemes)
            elif n_blocks is not None:
                steps = n_blocks - _lookahead(first)
            else:
                raise ValueError(f"Stage: a {type(field).__name__} is continuous in time; give steps=")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"Stage: steps must be a positive integer, got {steps!r}")
        if schemes is None:
            schemes = [scheme] * steps
        if len(schemes) != steps:
            raise ValueError(f"Stage: {len(schemes)} schemes for {steps} steps")
        for s in schemes:
            if not is_scheme(s):
                raise ValueError(f"Stage: scheme must be an sdenet Scheme, got {type(s).__name__}")
            s.check(field)
        if n_blocks is not None:
            need = steps + max(_lookahead(s) for s in schemes)
            if need > n_blocks:
                raise ValueError(
                    f"Stage: {steps} steps of {type(first).__name__} evaluate {need} blocks but the field has {n_blocks}"
                )
        self.steps = steps
        self.schemes = schemes
        self._eval_schemes = [mean_scheme(s) for s in schemes]
        if isinstance(post, str):
            if post not in _POSTS:
                raise ValueError(f"Stage: post must be None, 'relu' or a callable, got {post!r}")
        elif post is not None and not callable(post):
            raise ValueError(f"Stage: post must be None, 'relu' or a callable, got {post!r}")
        self.post = post
        self.name = name
        self._noise_on = False
        self._generator = None
        self._boundary_checked = False  # the first forward pass checks what the field returns

    # ------------------------------------------------------------------ helpers
    @property
    def stochastic(self) -> bool:
        return bool(self.field.stochastic)

    def _post(self, x):
        post = self.post
        if post is None:
            return x
        return _POSTS[post](x) if isinstance(post, str) else post(x)

    def _noisy(self) -> bool:
        return (
            self.field.noise is not None
            and (self.training or self._noise_on)
            and getattr(self.field, "forward_noise", True)
        )

    def coefficient(self, n: int):
        """The trained LM coefficient of step ``n`` (``k_n`` or ``g_n``), shaped to broadcast."""
        c = self.coefficients[n]
        return c.view(-1, 1, 1) if c.dim() == 1 else c

    # ------------------------------------------------------------------ forward
    def forward(self, x, prev=None):
        field = self.field
        schemes = self.schemes if self._noisy() else self._eval_schemes
        split = field.coupled and isinstance(x, torch.Tensor)
        if split:
            x = tuple(x.chunk(2, dim=1))
        t0, dt, gen = self.t0, self.dt, self._generator
        # the scheme decides how it starts from the transition's S(x) (Scheme.start)
        state = schemes[0].start(field, t0, x, dt, before=prev)
        post = self.post
        if self.memory != "store" and torch.is_grad_enabled():
            # reversible / checkpoint (sdenet.nn.memory); its steps are not boundary-checked
            x = _run_memory(self, schemes, x, state)
            return torch.cat(x, dim=1) if split else x
        check = None
        if not torch.compiler.is_compiling() and not self._boundary_checked:
            # first call: step 0 sees the field through the boundary checks (same outputs)
            check = FieldCheck(field, x, self._where())
        # the one loop (sdenet.loop); a user's time-continuous field gets t as a 0-dim tensor
        x, state = run_steps(
            field,
            schemes,
            x,
            state,
            t0=t0,
            dt=dt,
            steps=self.steps,
            generator=gen,
            post=None if post is None else self._post,
            check_field=check,
            tensor_time=field.tensor_time,
        )
        if check is not None:
            self._boundary_checked = True
        if split:
            x = torch.cat(x, dim=1)
        return x

    def _where(self) -> str:
        return f"{type(self).__name__} {self.name!r}" if self.name else type(self).__name__

    def extra_repr(self):
        kinds = sorted({repr(s) for s in self.schemes})
        law = f", schemes={kinds}" if len(kinds) <= 2 else f", schemes=[{len(kinds)} kinds]"
        return f"name={self.name!r}, steps={self.steps}, dt={self.dt:g}, post={self.post!r}{law}"


class _AtInput:
    """A field seen from a transition's lifted state: evaluated at the input ``x`` whatever the state."""

    __slots__ = ("field", "x")

    def __init__(self, field, x):
        self.field = field
        self.x = x

    noise = property(lambda self: self.field.noise)
    stochastic = property(lambda self: self.field.stochastic)
    tensor_time = property(lambda self: self.field.tensor_time)
    coupled = False

    def noise_shape(self, y):
        return self.field.noise_shape(self.x)

    def drift(self, t, y):
        return self.field.drift(t, self.x)

    def diffusion(self, t, y):
        return self.field.diffusion(t, self.x)

    def increment(self, t, y, dt, dw):
        return self.field.increment(t, self.x, dt, dw)

    def coefficients(self, t, y):
        return self.field.coefficients(t, self.x)

    def noise_term(self, g, dw):
        return self.field.noise_term(g, dw)


class Transition(Stage):
    """``x ↦ (S(x) + Δ, S(x))``, Δ one step of ``scheme`` on a one-block field at ``x``, Δt = 1.

    With ``Euler`` that is the usual ``S(x) + f(x)``; with stochastic depth's
    ``WeakEuler(DropBernoulli(p))`` it is ``S(x) + η f(x)``; with shake-shake's it is
    ``S(x) + α f1(x) + (1 − α) f2(x)``. ``post`` as in :class:`Stage`.
    """

    def __init__(self, shortcut: nn.Module, field_or_block, scheme, *, post=None, name=None):
        if not is_field(field_or_block):
            field_or_block = BlockField([field_or_block], 1.0)
        super().__init__(field_or_block, scheme, dt=1.0, steps=1, post=post, name=name)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x, prev=None):
        s = self.shortcut(x)
        scheme = (self.schemes if self._noisy() else self._eval_schemes)[0]
        lifted = _AtInput(self.field, x)
        check = not torch.compiler.is_compiling() and not self._boundary_checked
        # one step of the one loop, from S(x) (first call: checked against S(x))
        out, _ = run_steps(
            lifted,
            scheme,
            s,
            scheme.init(lifted, self.t0, s, 1.0),
            t0=self.t0,
            dt=1.0,
            steps=1,
            generator=self._generator,
            check_field=FieldCheck(lifted, s, self._where()) if check else None,
            tensor_time=self.field.tensor_time,
        )
        if check:
            self._boundary_checked = True
        if self.post is not None:
            out = self._post(out)
        return out, s


def set_memory(module: nn.Module, mode: str, *, exact: bool = True) -> nn.Module:
    """Set memory mode ``mode`` (one of :data:`MEMORY_MODES`) on every stage of ``module``.

    ``exact`` (``"reversible"`` only): ``True`` (default) carries float32/16 states on the
    :class:`FixedPoint` grid, so the backward sweep rebuilds every state bit for bit; ``False``
    inverts in plain floating point (faster; the rebuilt states drift by rounding, measured by
    :func:`~sdenet.nn.memory.reconstruction_drift`). float64 stages always invert in plain float64.

    Transitions are single steps outside the ODE and keep storing. Raises ``ValueError``
    naming the stage and the reason when the mode cannot work for one of them (nothing is
    changed then).
    """
    stages = [
        (path, m)
        for path, m in module.named_modules()
        if isinstance(m, Stage) and not isinstance(m, Transition)
    ]
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {mode!r}")
    if not isinstance(exact, bool):
        raise ValueError(f"set_memory: exact must be True or False, got {exact!r}")
    for path, stage in stages:
        why = memory_problem(stage, mode)
        if why:
            raise ValueError(f"memory={mode!r} cannot work for stage {stage.name or path or 'stage'}: {why}")
    for _, stage in stages:
        stage.memory = mode
        stage.memory_exact = exact
    return module


def lm_stage(
    blocks_or_field,
    *,
    dt=None,
    k_init=(-0.1, 0.0),
    per_channel: bool = False,
    channels: int | None = None,
    post=None,
    name=None,
    stochastic_laws: Sequence | None = None,
    generator: torch.Generator | None = None,
    steps: int | None = None,
) -> Stage:
    """An LM stage with one trained coefficient per step.

    Deterministic (``stochastic_laws=None``): ``LinearMultistep`` with ``k_n`` initialised
    ``U[k_init]`` (the paper's U[−0.1, 0]). With laws (one per step): ``StochasticLM`` with
    ``g_n = −(1 + k_n)``, so that at Δt = 1 the step ``(2 + g_n) X_n − (1 + g_n) X_{n−1} + η_n f``
    is ``(1 − k_n) X_n + k_n X_{n−1} + η_n f``. ``per_channel`` gives one coefficient per
    channel (``channels`` of them) instead of one per block. ``steps`` defaults to the
    number of blocks (or of laws); a time-continuous field needs it.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"lm_stage: generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if is_field(blocks_or_field):
        field = blocks_or_field
    else:
        field = BlockField(blocks_or_field, 1.0 if dt is None else dt)
    try:
        lo, hi = (float(v) for v in k_init)
    except (TypeError, ValueError):
        raise ValueError(f"k_init must be a range (low, high), got {k_init!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"k_init must be a finite range with low <= high, got {k_init!r}")
    if stochastic_laws is not None:
        stochastic_laws = list(stochastic_laws)
        if steps is not None and steps != len(stochastic_laws):
            raise ValueError(f"lm_stage: {len(stochastic_laws)} laws for {steps} steps")
        steps = len(stochastic_laws)
    elif steps is None:
        if not hasattr(field, "__len__"):
            raise ValueError(f"lm_stage: a {type(field).__name__} is continuous in time; give steps=")
        steps = len(field)
    shape: tuple[int, ...] = (steps,)
    if per_channel:
        if not channels:
            raise ValueError("lm_stage: per_channel=True needs the number of channels")
        shape = (steps, int(channels))
    k = torch.empty(shape)
    if hi > lo:
        k.uniform_(lo, hi, generator=generator)
    else:
        k.fill_(lo)
    if stochastic_laws is None:
        stage = Stage(field, Euler(), dt=dt, steps=steps, post=post, name=name)
        stage.coefficients = nn.Parameter(k)
        stage.coefficient_kind = "k"
        stage.schemes = [LinearMultistep(k=stage.coefficient)] * steps
    else:
        stage = Stage(field, [WeakEuler(law) for law in stochastic_laws], dt=dt, post=post, name=name)
        stage.coefficients = nn.Parameter(-1.0 - k)
        stage.coefficient_kind = "g"
        stage.schemes = [StochasticLM(g=stage.coefficient, law=law) for law in stochastic_laws]
    stage._eval_schemes = [mean_scheme(s) for s in stage.schemes]
    return stage


# ---------------------------------------------------------------------- model-wide switches


def _stages(model):
    return [m for m in model.modules() if isinstance(m, Stage)]


@contextlib.contextmanager
def noise_on(model: nn.Module):
    """Within the block, every stochastic stage of ``model`` draws noise even in eval mode."""
    stages = _stages(model)
    saved = [s._noise_on for s in stages]
    for s in stages:
        s._noise_on = True
    try:
        yield model
    finally:
        for s, v in zip(stages, saved):
            s._noise_on = v


def set_generator(model: nn.Module, generator: torch.Generator | None) -> nn.Module:
    """Draw every network increment of ``model`` from ``generator`` (None: torch's global RNG).

    The generator must live on the device of the model's activations.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"set_generator: expected a torch.Generator or None, got {type(generator).__name__}")
    for m in model.modules():
        if isinstance(m, Stage) or getattr(m, "records_noise", False):
            m._generator = generator  # type: ignore[assignment]  # a plain attribute of a field module
    return model
