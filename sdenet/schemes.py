"""Schemes: stateless one-step (and multistep) maps over a field.

Every scheme has

* ``init(field, t0, x0, dt) -> state``: whatever history the method carries (``None``
  for one-step methods; the previous state for multistep ones), never stored on the
  scheme itself, so one scheme object may drive many stages at once;
* ``start(field, t0, x0, dt, before=None) -> state``: how it starts — ``history`` (0 for
  one-step methods, 1 for the two-step LM schemes) says how many earlier states it needs;
  ``before`` is a state handed over from one unit of time before ``x0`` (a transition's
  shortcut ``S(x)``), which :meth:`Scheme.start` turns into the history at step ``Δt``
  (see :meth:`Scheme.start` for the rule and why it has a limit as Δt → 0);
* ``step(field, t, x, dt, state, generator=None, *, dw=None, **extras) -> (x_next, state)``:
  one signature for every scheme. ``dw`` gives the step's Brownian increments (a scheme with
  a ``law`` derives its own from them, :meth:`~sdenet.NoiseLaw.from_gaussian`; without ``dw``
  it draws them from ``generator``); ``extras`` are what a scheme declares beyond that
  (``fp=`` of the exactly invertible schemes, ``exact_arithmetic``). Deterministic schemes
  take no increments and refuse a given ``dw``;
* ``check(field)``: raises ``ValueError`` when the scheme cannot integrate that field
  (a deterministic scheme given an SDE, a stochastic one given an ODE, a coupled
  field given to a scheme for single states…); ``integrate`` and the network stages
  call it when they are built;
* metadata ``order`` (deterministic order on ``u' = f(u)``), ``weak_order`` and
  ``strong_order`` (``None`` where they do not apply), checked by the test-suite.

What else a scheme declares (the rest of the library asks these instead of testing classes;
``docs/protocol.md`` has the table): ``law`` (the increment law, ``None`` for a
deterministic scheme), ``increments`` (ΔŴ draws per step), ``accepts_dw``, ``evaluations``
(the times of its field evaluations in units of Δt from ``t_n``; ``lookahead`` the largest),
``history``, ``noise_types`` (the noise structures it integrates: ``check`` refuses the
others), ``mean_scheme()`` (what it reduces to in eval mode), ``euler_law`` (the law when a
step is exactly the one-step weak Euler step ``X + fΔt + gΔŴ``, whose closed forms
:mod:`sdenet.weak` and :mod:`sdenet.nn.transform` use), ``name``, ``invertible`` /
``invert_step`` / ``reverse_step`` and ``exact_arithmetic`` (memory="reversible"), and
optionally a fused in-place kernel ``inplace(field, x, dt)`` (:mod:`sdenet.loop`).

Networks read as schemes (Lu et al., ICML 2018, Table 1): ResNet is :class:`Euler`,
FractalNet :class:`Heun`, PolyNet :class:`NeumannEuler`, RevNet :class:`CoupledEuler`,
LM-ResNet :class:`LinearMultistep`, stochastic depth and shake-shake :class:`WeakEuler`,
LM stochastic depth :class:`StochasticLM`.
"""

from __future__ import annotations

import math

import torch

from .fields import NOISE_TYPES, is_field
from .laws import DropBernoulli, Gaussian, NoiseLaw, is_law

__all__ = [
    "Scheme",
    "Euler",
    "Heun",
    "NeumannEuler",
    "LinearMultistep",
    "CoupledEuler",
    "EulerMaruyama",
    "WeakEuler",
    "StochasticLM",
    "Platen",
    "WeakTaylor2",
    "Milstein",
    "Hamiltonian",
    "Midpoint",
    "Leapfrog",
    "get_scheme",
    "register_scheme",
    "SCHEME_NAMES",
    "is_scheme",
]


def is_scheme(obj) -> bool:
    """True when ``obj`` is an sdenet scheme (the check callers make instead of testing a class)."""
    return isinstance(obj, Scheme)


def _recording(v) -> bool:
    """True when autograd records ``v`` (a gradient is needed: the in-place path must not run)."""
    return isinstance(v, torch.Tensor) and v.requires_grad and torch.is_grad_enabled()


def _fits(v, x) -> bool:
    """True when ``v`` can be added into ``x`` in place: a tensor of x's dtype and device that
    broadcasts to x's shape and shares no memory with it (a drift may return ``x`` itself only
    where noted)."""
    if not isinstance(v, torch.Tensor):
        return False
    if v.dim() == 0:  # a number as a tensor: broadcast, no aliasing
        return v.device == x.device or v.device.type == "cpu"
    if v.dtype != x.dtype or v.device != x.device or v.dim() > x.dim():
        return False
    if v.shape != x.shape and any(a != b and a != 1 for a, b in zip(reversed(v.shape), reversed(x.shape))):
        return False
    # the same first element: x itself or a view of it (a partial overlap elsewhere is refused by torch)
    return v.data_ptr() != x.data_ptr()


def _is_field(field):
    if not is_field(field):
        raise ValueError(
            f"expected an sdenet Field (SDEField, ODEField, CoupledField, …), got {type(field).__name__}"
        )
    return field


def _coefficient(cls: str, name: str, value):
    """A scheme coefficient: a finite float, a tensor of finite floating entries, or a callable ``c(n)``.

    A tensor is checked once, when the scheme is built (a trained coefficient that later
    turns non-finite shows up in the loss, which the training loop watches).
    """
    if callable(value) and not isinstance(value, torch.Tensor):
        return value
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise ValueError(f"{cls}: a tensor {name} must be floating point, got dtype {value.dtype}")
        with torch.no_grad():
            finite = bool(torch.isfinite(value).all())
        if not finite:
            bad = int((~torch.isfinite(value.detach())).sum())
            raise ValueError(f"{cls}: {name} must be finite; the tensor {name} has {bad} NaN or infinite "
                             f"entr{'y' if bad == 1 else 'ies'}")
        return value
    if isinstance(value, (bool, str)):
        raise ValueError(f"{cls}: {name} must be a float, a tensor or a callable, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{cls}: {name} must be a float, a tensor or a callable, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{cls}: {name} must be finite, got {name}={value!r}")
    return out


class Scheme:
    """Base class of the one-step protocol ``(x_{n+1}, state_{n+1}) = step(field, t_n, x_n, Δt, state_n)``
    (a multistep history travels in ``state``); see the module docstring for the protocol."""

    order: int = 1
    weak_order: float | None = None
    strong_order: float | None = None
    #: True when the scheme draws increments from a law
    stochastic: bool = False
    #: True when the state is a pair (coupled systems)
    coupled: bool = False
    #: how many earlier states a step needs (0: one-step; 1: two-step, the state's ``"prev"``)
    history: int = 0
    #: True when a step can be undone exactly: ``invert_step`` recovers ``(x_n, state_n)`` from
    #: ``(x_{n+1}, state_{n+1})`` (memory="reversible" in a network stage asks this)
    invertible: bool = False
    #: True when ``step``, ``invert_step`` and ``reverse_step`` take ``fp=`` (a fixed-point
    #: arithmetic, :class:`sdenet.nn.memory.FixedPoint`): states held on a grid, every increment
    #: rounded to it before it is added, so that the inverse undoes a step bit for bit
    exact_arithmetic: bool = False
    #: the law of the increments a step consumes (``None``: a deterministic scheme draws none)
    law: NoiseLaw | None = None
    #: field evaluations of one step, each at ``t_n + c Δt`` for ``c`` in this tuple
    evaluations: tuple = (0.0,)
    #: how many blocks past ``t_n`` a step evaluates (Heun's second stage uses ``t_{n+1}``: 1)
    lookahead: int = 0
    #: the noise structures (``field.noise``) a stochastic scheme integrates; ``check`` refuses the rest
    noise_types: tuple = NOISE_TYPES
    #: the scheme's command-line name where it has one (reports use it)
    name: str | None = None

    @property
    def increments(self) -> int:
        """How many increments ``ΔŴ`` (each of the field's ``noise_shape``) a step draws: 0 or 1."""
        return 0 if self.law is None else 1

    @property
    def accepts_dw(self) -> bool:
        """Whether ``step`` takes given Brownian increments ``dw=`` (schemes with a law derive theirs from them)."""
        return self.law is not None

    #: the equation the scheme converges to: ``"sde"`` (the field's own) or ``"second_order"``
    #: (:class:`StochasticLM`: ``dX = Y dt, dY = f dt + g Y dt + σ dW``)
    limit: str = "sde"

    @property
    def euler_step(self) -> bool:
        """True when a step is exactly forward Euler ``X + fΔt`` (with a ``law``: the simplified weak
        Euler step ``X + fΔt + gΔŴ``); False for any other step, a subclass's own included."""
        return False

    @property
    def euler_law(self) -> NoiseLaw | None:
        """The law when a step is exactly the simplified weak Euler step ``X + fΔt + gΔŴ`` (whose
        closed forms :mod:`sdenet.weak` uses), else ``None``."""
        return self.law if self.euler_step else None

    def mean_scheme(self) -> "Scheme":
        """The scheme this one reduces to without noise (a stage in eval mode); itself when deterministic."""
        return self

    def draws(self, field, x, dt, generator=None):
        """A drawer of this scheme's increments into reused buffers (:meth:`sdenet.NoiseLaw.draws`);
        ``None`` for a deterministic scheme."""
        if self.law is None:
            return None
        return self.law.draws(field.noise_shape(x), dt, generator, x)

    def inplace(self, field, x, dt):
        """An optional fused in-place step: ``None``, or ``kernel(t, x, take) -> bool`` that writes
        ``x_{n+1}`` into ``x`` and returns True, or returns False *before* calling ``take`` and
        without touching ``x`` when it cannot (autograd records the field's output) — the loop
        then runs :meth:`step`. ``take()`` returns the step's increment as ``(u, scale, shift)``,
        ``ΔŴ = scale·u + shift`` (:class:`sdenet.laws.Draws`; ``None`` for a deterministic scheme).
        Only one-step schemes whose state stays as it is may declare one."""
        return None

    def _refuse_dw(self, dw):
        if dw is not None:
            raise ValueError(f"{type(self).__name__} is deterministic: it takes no increments (got dw=)")

    def check(self, field) -> None:
        field = _is_field(field)
        name = type(self).__name__
        if field.coupled != self.coupled:
            if field.coupled:
                raise ValueError(f"{name} integrates single states; a CoupledField needs CoupledEuler")
            raise ValueError(f"{name} integrates coupled (x, y) states; give it a CoupledField")
        if field.stochastic and not self.stochastic:
            raise ValueError(
                f"{name} is deterministic and cannot integrate a stochastic field "
                f"(noise={field.noise!r}); use WeakEuler, EulerMaruyama or StochasticLM"
            )
        if self.stochastic and not field.stochastic:
            raise ValueError(f"{name} needs a stochastic field (with a diffusion); this field is an ODE")
        if self.stochastic and field.noise not in self.noise_types:
            raise ValueError(f"{name} supports {', '.join(self.noise_types)} noise; this field has "
                             f"noise={field.noise!r}")

    def init(self, field, t0, x0, dt):
        return None

    def start(self, field, t0, x0, dt, before=None):
        r"""The state the first step needs: :meth:`init`, with the history set from ``before``.

        ``before`` is ``None`` (start from rest: a two-step scheme takes ``X_{−1} = X_0``, so
        its first step is the one-step Euler step) or a state one *unit* of time before
        ``x0`` — what a transition hands over: its shortcut ``S(x)``, with ``X_0 = S(x) + r``
        and ``r`` the transition's residual, a displacement over its own step Δt = 1. A
        two-step scheme reads ``(X_0 − X_{−1})/Δt`` as the velocity ``X'(0)``. Taking
        ``X_{−1} = S(x)`` at every Δt (the old rule) makes that velocity ``r/Δt``, which
        blows up as Δt → 0 (LM stochastic depth then has no limit at fixed T). The
        consistent history keeps the velocity the transition actually produced,
        ``X'(0) = r/1 = X_0 − S(x)``, and steps back by Δt along it:

            X_{−1} = X_0 − Δt (X_0 − S(x)) = X_0 + Δt (S(x) − X_0),

        which is ``S(x)`` at Δt = 1 (handed over as it is there, so networks at Δt = 1 are
        unchanged bit for bit) and tends to ``X_0`` with
        velocity ``r`` as Δt → 0. One-step schemes (``history = 0``) ignore ``before``.
        """
        state = self.init(field, t0, x0, dt)
        if before is None or self.history == 0 or not isinstance(state, dict) or "prev" not in state:
            return state
        dt = float(dt)
        state["prev"] = before if dt == 1.0 else torch.lerp(x0, before.to(x0.dtype), dt)
        return state

    def step(self, field, t, x, dt, state, generator=None, *, dw=None, **extras):
        raise NotImplementedError

    def invert_step(self, field, t, x_next, dt, state_next):
        """``(x_n, state_n)`` from the result ``(x_{n+1}, state_{n+1})`` of ``step`` at time ``t = t_n``."""
        raise ValueError(f"{type(self).__name__} is not invertible")

    def __repr__(self):
        return f"{type(self).__name__}()"


# --------------------------------------------------------------------------- ODE


class Euler(Scheme):
    """Forward Euler ``u_{n+1} = u_n + Δt f(t_n, u_n)`` (ResNet). Order 1."""

    order = 1
    name = "euler"

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        self._refuse_dw(dw)
        # one fused kernel: x + dt·f (no separate f·dt pass, even at Δt = 1)
        return torch.add(x, field.drift(t, x), alpha=dt), state

    @property
    def euler_step(self):
        return type(self).step is Euler.step

    def inplace(self, field, x, dt):
        if not self.euler_step:  # a subclass with its own step
            return None

        def kernel(t, x, take):  # the same arithmetic as step, into x
            f = field.drift(t, x)
            if _recording(f) or not (f is x or _fits(f, x)):
                return False
            x.add_(f, alpha=dt)
            return True

        return kernel


class Heun(Scheme):
    """Heun's method (explicit trapezoid, 2nd-order Runge–Kutta; FractalNet's scheme).

    ``ũ = u_n + Δt f(t_n, u_n)``, ``u_{n+1} = u_n + Δt/2 (f(t_n, u_n) + f(t_{n+1}, ũ))``.
    Order 2.
    """

    order = 2
    name = "heun"
    #: the second stage evaluates the field at ``t_{n+1}`` (block ``n + 1`` of a network)
    lookahead = 1
    evaluations = (0.0, 1.0)

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        self._refuse_dw(dw)
        k1 = field.drift(t, x)
        k2 = field.drift(t + dt, x + k1 * dt)
        return x + (k1 + k2) * (0.5 * dt), state


class NeumannEuler(Scheme):
    """Backward Euler approximated by a truncated Neumann series (PolyNet's scheme).

    Backward Euler ``u_{n+1} = (I − Δt F)^{-1} u_n`` is replaced by
    ``u_{n+1} = u_n + Δt F(u_n) + Δt² F(F(u_n)) + … + Δt^m F^m(u_n)`` with ``m = terms``
    (PolyNet's poly-2 module ``I + F + F²`` is ``terms=2`` at Δt = 1). For linear ``F``
    this is exactly the series of ``(I − Δt F)^{-1}`` cut after ``m`` terms. Order 1,
    like backward Euler (``terms=1`` is forward Euler).
    """

    order = 1

    def __init__(self, terms: int = 2):
        if not isinstance(terms, int) or isinstance(terms, bool) or terms < 1:
            raise ValueError(f"NeumannEuler: terms must be an integer >= 1, got {terms!r}")
        self.terms = terms

    name = "neumann"

    @property
    def evaluations(self):
        return (0.0,) * self.terms

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        self._refuse_dw(dw)
        out = x
        power = x
        scale = 1.0
        for _ in range(self.terms):
            power = field.drift(t, power)
            scale *= dt
            out = out + power * scale
        return out, state

    def __repr__(self):
        return f"NeumannEuler(terms={self.terms})"


class LinearMultistep(Scheme):
    """The LM-ResNet two-step scheme ``u_{n+1} = (1 − k) u_n + k u_{n−1} + Δt f(t_n, u_n)``.

    ``k`` is a float or a tensor (trainable, broadcast against the state, e.g. per
    channel). The first step is forward Euler. Taylor expansion gives the modified
    equation ``(1 + k) u' + (1 − k) Δt/2 u'' = f``: the scheme is consistent, with
    order 1, with ``u' = f/(1 + k)`` (``k = 0`` is forward Euler bit for bit). The
    characteristic roots of ``z² − (1 − k) z − k = 0`` are ``1`` and ``−k``, so zero
    stability needs ``−1 < k ≤ 1``.

    The state carries ``u_{n−1}`` (``None`` before the first step; a transition's history
    enters through :meth:`Scheme.start`). ``k`` may also be a
    callable ``k(n)`` returning the coefficient of step ``n`` (one trained ``k_n`` per
    block in LM-ResNet).
    """

    order = 1
    history = 1

    def __init__(self, k=0.0):
        self.k = _coefficient("LinearMultistep", "k", k)

    def init(self, field, t0, x0, dt):
        return {"prev": None, "n": 0}

    def coefficient(self, n: int):
        return self.k(n) if callable(self.k) else self.k

    name = "lm"

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        self._refuse_dw(dw)
        prev, n = state["prev"], state["n"]
        fx = field.drift(t, x)
        if prev is None:
            x_next = torch.add(x, fx, alpha=dt)
        else:
            k = self.coefficient(n)
            if isinstance(k, torch.Tensor) and k.dtype != x.dtype:
                k = k.to(x.dtype)  # lerp wants one dtype (bf16 states under autocast)
            # lerp(x, prev, k) = x + k (prev − x) = (1 − k) x + k prev; exact x at k = 0
            x_next = torch.add(torch.lerp(x, prev, k), fx, alpha=dt)
        return x_next, {"prev": x, "n": n + 1}

    def __repr__(self):
        k = "callable" if callable(self.k) else (tuple(self.k.shape) if isinstance(self.k, torch.Tensor) else self.k)
        return f"LinearMultistep(k={k})"


class CoupledEuler(Scheme):
    """RevNet's update of the coupled system ``X' = f1(Y)``, ``Y' = f2(X)``:

    ``X_{n+1} = X_n + Δt f1(t_n, Y_n)``, ``Y_{n+1} = Y_n + Δt f2(t_n, X_{n+1})``
    (forward Euler on each component in turn — symplectic Euler). Order 1, and
    exactly invertible step by step, which is what makes RevNet reversible.
    """

    order = 1
    coupled = True
    invertible = True
    exact_arithmetic = True

    def step(self, field, t, state_xy, dt, state, generator=None, fp=None):
        x, y = state_xy
        if fp is None:
            x = x + field.f1(t, y) * dt
            y = y + field.f2(t, x) * dt
        else:  # exact: grid states, each increment rounded to the grid
            x = fp.add_(x, field.f1(t, fp.value(y)), dt)
            y = fp.add_(y, field.f2(t, fp.value(x)), dt)
        return (x, y), state

    @staticmethod
    def inverse(field, t, state_xy, dt, fp=None):
        """Recover ``(X_n, Y_n)`` from ``(X_{n+1}, Y_{n+1})``."""
        x, y = state_xy
        if fp is None:
            y = y - field.f2(t, x) * dt
            x = x - field.f1(t, y) * dt
        else:
            y = fp.sub_(y, field.f2(t, fp.value(x)), dt)
            x = fp.sub_(x, field.f1(t, fp.value(y)), dt)
        return x, y

    def invert_step(self, field, t, x_next, dt, state_next, fp=None):
        return self.inverse(field, t, x_next, dt, fp), state_next

    def reverse_step(self, field, t, x_next, dt, state_next, grads, vjp, fp=None):
        """Undo one step and pull its gradients back, evaluating each field once.

        ``grads`` are the gradients of the loss with respect to ``(X_{n+1}, Y_{n+1})``;
        ``vjp(fn, u, g, scale)`` returns ``(fn(u), scale·(∂fn/∂u)ᵀ g)`` (a fresh tensor) and
        collects the parameter gradients (memory="reversible" in :mod:`sdenet.nn.memory` provides
        it). The caller hands ``x_next`` over: it is overwritten (in place where ``fp`` allows it,
        and always in plain arithmetic). Returns ``((X_n, Y_n), state_n, (g_X_n, g_Y_n))``.
        """
        x1, y1 = x_next
        gx, gy = grads
        sub = (lambda z, v: z.sub_(v, alpha=dt)) if fp is None else (lambda z, v: fp.sub_(z, v, dt))
        val = (lambda v: v) if fp is None else fp.value
        f2, back = vjp(lambda u: field.f2(t, u), val(x1), gy, dt)
        y0 = sub(y1, f2)
        gx = back if gx is None else (gx if back is None else back.add_(gx))
        f1, back = vjp(lambda u: field.f1(t, u), val(y0), gx, dt)
        x0 = sub(x1, f1)
        gy = back if gy is None else (gy if back is None else back.add_(gy))
        return (x0, y0), state_next, (gx, gy)


# --------------------------------------------------------------------------- SDE


class WeakEuler(Scheme):
    """The simplified weak Euler scheme ``X_{n+1} = X_n + f Δt + g ΔŴ_n``.

    ``ΔŴ_n`` is drawn from ``law`` with the field's noise structure. It converges
    weakly with order 1 whenever the law satisfies condition (5); stochastic depth
    (``DropBernoulli`` at p ≠ ½) only reaches order ½. Shake-shake is this scheme with
    ``Uniform`` increments at Δt = 1, stochastic depth with ``DropBernoulli``.
    """

    order = 1
    stochastic = True
    name = "weak_euler"

    def __init__(self, law: NoiseLaw | None = None):
        law = Gaussian() if law is None else law
        if not is_law(law):
            raise ValueError(f"{type(self).__name__}: law must be an sdenet NoiseLaw, got {law!r}")
        self.law = law

    @property
    def weak_order(self):
        return min(1.0, self.law.weak_order)

    def draw(self, field, x, dt, generator=None, dw=None):
        """Increments of the law: drawn from ``generator``, or derived from given Brownian
        increments ``dw`` by :meth:`~sdenet.NoiseLaw.from_gaussian`."""
        if dw is not None:
            return self.law.from_gaussian(dw, dt)
        return self.law.sample(field.noise_shape(x), dt, generator=generator, device=x.device, dtype=x.dtype)

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        dw = self.draw(field, x, dt, generator, dw)
        return x + field.increment(t, x, dt, dw), state

    @property
    def euler_step(self):
        return type(self).step is WeakEuler.step

    def mean_scheme(self) -> Scheme:
        """Forward Euler on the drift (``X + p f(X)`` for stochastic depth at Δt = 1)."""
        return Euler()

    def inplace(self, field, x, dt):
        """``X ← X + fΔt + g·(scale·u + shift)`` in place; a field that declares a fused update of its
        own (``field.inplace_weak_euler(dt)``, e.g. :class:`~sdenet.LinearSDEField`) uses it."""
        if not self.euler_step:  # a subclass with its own step
            return None
        own = getattr(field, "inplace_weak_euler", None)
        if callable(own):
            kernel = own(dt)
            if kernel is not None:
                return kernel
        if field.noise == "general":
            return None
        if not getattr(field, "plain_increment", False):  # the field computes its increment itself
            if not callable(getattr(field, "parameters", None)):
                return None

            def kernel(t, x, take):
                if any(p.requires_grad for p in field.parameters()) and torch.is_grad_enabled():
                    return False
                u, scale, shift = take()
                dw = u if (scale == 1.0 and shift == 0.0) else u.to(x.dtype) * scale + shift
                x.add_(field.increment(t, x, dt, dw))
                return True

            return kernel

        grad_mode = torch.is_grad_enabled
        Tensor = torch.Tensor
        held = [None]

        def kernel(t, x, take):
            f, g = field.drift(t, x), field.diffusion(t, x)
            tensor_g = isinstance(g, Tensor)
            if grad_mode() and (getattr(f, "requires_grad", False) or (tensor_g and g.requires_grad)):
                return False  # autograd records the field: the generic step
            # (a drift on another device than x fails in add_ below, as it would out of place)
            if not (f is x or (isinstance(f, Tensor) and f.shape == x.shape and f.dtype == x.dtype
                               and f.data_ptr() != x.data_ptr()) or _fits(f, x)):
                return False
            if tensor_g:
                if g.dim() != 0 and not _fits(g, x):
                    if g is not x and not (g.dtype == x.dtype and g.shape == x.shape):
                        return False
                    g = g.clone()  # the diffusion is x itself (or a view of it): keep X_n's value
                u, scale, shift = take()
                x.add_(f, alpha=dt)
                x.addcmul_(g, u, value=scale)
                if shift != 0.0:
                    x.add_(g, alpha=shift)
                held[0] = f
            else:  # a number
                g = float(g)
                u, scale, shift = take()
                x.add_(f, alpha=dt)
                x.add_(u, alpha=g * scale)
                if shift != 0.0:
                    x.add_(g * shift)
            return True

        return kernel

    def __repr__(self):
        return f"{type(self).__name__}({self.law!r})"


class EulerMaruyama(WeakEuler):
    """Euler–Maruyama: :class:`WeakEuler` with Gaussian increments. Strong order ½, weak order 1."""

    strong_order = 0.5
    name = "euler_maruyama"

    def __init__(self):
        super().__init__(Gaussian())

    def __repr__(self):
        return "EulerMaruyama()"


class StochasticLM(WeakEuler):
    r"""The LM stochastic-depth scheme, for general Δt.

    It discretizes the second-order system

        dX = Y dt,    dY = p f(X) dt + √(p(1−p)) f(X) dB + g Y dt,

    whose drift ``p f`` and diffusion ``√(p(1−p)) f`` are the given field's (any
    stochastic field works). Derivation: advance the velocity with a weak Euler step
    from the old velocity, then the position with the new velocity (semi-implicit
    Euler),

        Y_n     = Y_{n−1} + g Y_{n−1} Δt + (f Δt + σ ΔŴ_n)          (f, σ at X_n)
        X_{n+1} = X_n + Δt Y_n.

    Eliminating ``Y`` with ``Δt Y_{n−1} = X_n − X_{n−1}``:

        X_{n+1} = (2 + gΔt) X_n − (1 + gΔt) X_{n−1} + Δt (f Δt + σ ΔŴ_n).

    At Δt = 1 with ``DropBernoulli(p)`` increments ``p f + √(p(1−p)) f ΔŴ = η f``, which
    is the paper's ``X_{n+1} = (2 + g_n) X_n − (1 + g_n) X_{n−1} + η_n f(X_n)``. The
    first step starts from rest (``Y_{−1} = 0``, i.e. ``X_{−1} = X_0``), which at Δt = 1
    is the plain stochastic-depth step ``X_1 = X_0 + η_0 f(X_0)``; after a transition
    :meth:`Scheme.start` sets ``Δt Y_{−1} = Δt (X_0 − S(x))`` (the transition's velocity),
    not ``X_0 − S(x)``, so the system has a limit as Δt → 0 at fixed T.

    ``g`` is a float, a tensor, or a callable ``g(n)``. Order 1 in Δt for the
    deterministic part and weak order ``min(1, law.weak_order)`` for the system.
    """

    order = 1
    history = 1
    name = "stochastic_lm"

    def __init__(self, g=0.0, law: NoiseLaw | None = None):
        super().__init__(law)
        self.g = _coefficient("StochasticLM", "g", g)

    def init(self, field, t0, x0, dt):
        return {"prev": None, "n": 0}

    def coefficient(self, n: int):
        return self.g(n) if callable(self.g) else self.g

    limit = "second_order"

    def mean_scheme(self) -> Scheme:
        """Itself with zero increments (``DropBernoulli(1)``): the second-order system without noise."""
        return StochasticLM(g=self.g, law=DropBernoulli(1.0))

    def inplace(self, field, x, dt):
        return None

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        prev, n = state["prev"], state["n"]
        dw = self.draw(field, x, dt, generator, dw)
        kick = field.increment(t, x, dt, dw)
        if dt != 1.0:
            kick = kick * dt
        if prev is None:
            x_next = x + kick
        else:
            x_next = x + (1.0 + self.coefficient(n) * dt) * (x - prev) + kick
        return x_next, {"prev": x, "n": n + 1}

    def __repr__(self):
        g = "callable" if callable(self.g) else (tuple(self.g.shape) if isinstance(self.g, torch.Tensor) else self.g)
        return f"StochasticLM(g={g}, law={self.law!r})"


SCHEME_NAMES = ("euler", "heun", "neumann", "lm", "coupled", "euler_maruyama", "weak_euler", "stochastic_lm",
                "platen", "weak_taylor2", "milstein", "hamiltonian", "midpoint", "leapfrog", "srk")

#: schemes defined in their own modules, which register themselves on import (``sdenet.srk``):
#: name -> (class, options it takes, whether it takes only Gaussian increments)
_REGISTERED: dict = {}


def register_scheme(names, cls, options=(), gaussian_only: bool = False) -> None:
    """Make ``cls`` buildable by :func:`get_scheme` (and ``--scheme`` on the command line) under
    each of ``names``; ``options`` are the constructor's keyword arguments a caller may give."""
    for name in names:
        _REGISTERED[str(name).lower().replace("-", "_")] = (cls, tuple(options), bool(gaussian_only))


def get_scheme(name: str, law: NoiseLaw | None = None, **kwargs) -> Scheme:
    """Build a scheme from its command-line name. Stochastic schemes take ``law``.

    Options go to the scheme's constructor (``terms`` for ``neumann``, ``k`` for ``lm``,
    ``g`` for ``stochastic_lm``); an option the scheme does not take is a ``ValueError``.
    """
    key = str(name).lower().replace("-", "_")

    def build(cls, allowed=(), **extra):
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            takes = f"takes only {', '.join(allowed)}" if allowed else "takes no options"
            raise ValueError(f"scheme {name!r} {takes}; got {', '.join(unknown)}")
        return cls(**extra, **kwargs)

    if key in ("euler", "forward_euler"):
        return build(Euler)
    if key == "heun":
        return build(Heun)
    if key in ("neumann", "neumann_euler"):
        return build(NeumannEuler, ("terms",))
    if key in ("lm", "linear_multistep"):
        return build(LinearMultistep, ("k",))
    if key in ("coupled", "coupled_euler", "revnet"):
        return build(CoupledEuler)
    if key in ("euler_maruyama", "em"):
        if law is not None and law != Gaussian():
            raise ValueError("euler_maruyama uses Gaussian increments; use weak_euler for another law")
        return build(EulerMaruyama)
    if key in ("weak_euler", "weak"):
        return build(WeakEuler, (), law=law)
    if key in ("stochastic_lm", "lm_sd"):
        return build(StochasticLM, ("g",), law=law)
    if key == "platen":
        return build(Platen, (), law=law)
    if key in ("weak_taylor2", "taylor2"):
        return build(WeakTaylor2, ("time_dependent",), law=law)
    if key == "milstein":
        if law is not None and law != Gaussian():
            raise ValueError("milstein uses Gaussian increments (it is a strong scheme); use platen for another law")
        return build(Milstein, ("derivative",))
    if key in ("hamiltonian", "verlet"):
        return build(Hamiltonian)
    if key == "midpoint":
        return build(Midpoint, ("start",))
    if key == "leapfrog":
        return build(Leapfrog, ("start", "velocity"))
    if key in _REGISTERED:
        cls, options, gaussian_only = _REGISTERED[key]
        if gaussian_only and law is not None and law != Gaussian():
            raise ValueError(f"{key} uses Gaussian increments (it is a strong scheme); use platen for another law")
        return build(cls, options)
    raise ValueError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEME_NAMES)}")


# --------------------------------------------------------------------------- weak order 2, Milstein
#
# Notation (Kloeden & Platen 1992): a = drift, b = diffusion, Δ = Δt, ΔŴ the increment,
# L^0 = ∂_t + a·∇ + ½ Σ b^i b^j ∂_ij and L^j = b^j·∇. "Elementwise" diagonal noise means the
# k-th diffusion element depends on x only through x_k (GBM, OU, any elementwise diffusion):
# then L^l b^k = 0 for l ≠ k and the diagonal schemes below are the scalar schemes applied
# element by element. A diagonal diffusion with cross-dependence gets the scalar formulas
# applied to the whole vector (the cross terms L^l b^k, l ≠ k, which would cost 2d more field
# evaluations per step, are not computed): consistent, but without the higher order.


def _noise_kind(field):
    return "general" if field.noise == "general" else "scalar"


def _column(dw, j, like):
    """Increment ``j`` of ``general`` noise, ``(B,) → (B, 1, …, 1)`` to broadcast against ``like``."""
    return dw[:, j].reshape((dw.shape[0],) + (1,) * (like.dim() - 1))


def _two_point(shape, dt, generator, like):
    """Two-point ``±Δt`` variables ``V`` with probability ½ each (K&P 14.2.8)."""
    from .laws import Rademacher

    return Rademacher().sample(shape, dt, generator=generator, device=like.device, dtype=like.dtype) * math.sqrt(dt)


class _LawScheme(Scheme):
    """A stochastic scheme driven by a law (not a weak Euler scheme: ``isinstance(…, WeakEuler)``
    is False, so code that knows weak Euler's closed forms does not apply them)."""

    stochastic = True
    order = 1

    __init__ = WeakEuler.__init__
    draw = WeakEuler.draw

    def mean_scheme(self) -> Scheme:
        """The deterministic scheme this one reduces to without noise (eval mode of a stage)."""
        return Euler()

    def __repr__(self):
        return f"{type(self).__name__}({self.law!r})"


class _Weak2(_LawScheme):
    """Shared parts of the weak order-2 schemes: the law decides the declared order."""

    order = 2

    def mean_scheme(self) -> Scheme:
        return Heun()

    @property
    def weak_order(self):
        # weak order 2 needs E ΔŴ^k to match the Gaussian's for k ≤ 5 (K&P 14.2.3): Gaussian and
        # three-point laws; a law that only meets condition (5) (Rademacher, uniform) gives 1,
        # stochastic depth at p ≠ ½ gives ½.
        return 2.0 if self.law.weak_order >= 2 else min(1.0, self.law.weak_order)


class Platen(_Weak2):
    r"""Platen's explicit (derivative-free) weak order-2 scheme (Kloeden & Platen §15.1).

    One Brownian motion (``sample``/``batch`` noise, or elementwise ``diagonal`` noise),
    eq. (15.1.1), with supporting values

        Ῡ = X + aΔ + bΔŴ,    Ῡ± = X + aΔ ± b√Δ,

        X_{n+1} = X + ½(a(t_{n+1}, Ῡ) + a)Δ + ¼(b(t_{n+1}, Ῡ⁺) + b(t_{n+1}, Ῡ⁻) + 2b)ΔŴ
                    + ¼(b(t_{n+1}, Ῡ⁺) − b(t_{n+1}, Ῡ⁻))(ΔŴ² − Δ)/√Δ.

    ``general`` noise (m Brownian motions, b^j the j-th column), eq. (15.1.3)–(15.1.5): with
    ``Ῡ = X + aΔ + Σ_j b^j ΔŴ^j``, ``R^±_j = X + aΔ ± b^j√Δ``, ``U^±_r = X ± b^r√Δ``,

        X_{n+1} = X + ½(a(Ῡ) + a)Δ
          + ¼ Σ_j [(b^j(R⁺_j) + b^j(R⁻_j) + 2b^j)ΔŴ^j + (b^j(R⁺_j) − b^j(R⁻_j))((ΔŴ^j)² − Δ)/√Δ]
          + ¼ Σ_j Σ_{r≠j} [(b^j(U⁺_r) + b^j(U⁻_r) − 2b^j)ΔŴ^j + (b^j(U⁺_r) − b^j(U⁻_r))(ΔŴ^jΔŴ^r + V_{r,j})/√Δ]

    with two-point ``V_{r,j} = ±Δ`` (r < j, drawn from ``generator``), ``V_{j,r} = −V_{r,j}``.
    No derivative of the field is needed. Without noise the scheme is :class:`Heun`
    (deterministic order 2); it evaluates the field at ``t_n`` and ``t_{n+1}``
    (``lookahead = 1``: a network stage needs one block more than it takes steps, as Heun).
    Field evaluations per step: ``coefficients`` at ``X`` (one block for network fields), the
    drift at ``Ῡ`` and the diffusion at ``Ῡ±`` (``2 + 2`` block evaluations for network
    fields; ``2 + 4m`` for general noise).

    Weak order 2 with increments whose moments match the Gaussian's up to the fifth
    (:class:`~sdenet.Gaussian`, :class:`~sdenet.ThreePoint`); with a law that only meets
    condition (5) (Rademacher: E ΔŴ⁴ = Δ² ≠ 3Δ²) the scheme is still consistent but of weak
    order 1, and ``weak_order`` says so. Anchor: StochasticDiffEq.jl's ``PL1WM``, which gives the
    same paths on scalar autonomous problems; sdenet departs from it where PL1WM loses weak order 2:
    the supporting values are evaluated at ``t_{n+1}`` (PL1WM: ``t_n``, order 1 with time-dependent
    coefficients), ``Ῡ±`` shift only the component of their own noise for diagonal noise (PL1WM
    shifts every component), and ``V = ±Δ`` (PL1WM's ``Î₂ = ±√Δ``) for general noise
    (``tests/test_platen_pl1wm.py``).
    """

    lookahead = 1
    name = "platen"
    #: coefficients at t_n, the drift at Ῡ and the diffusion at Ῡ± at t_{n+1} (``2 + 4m`` for general noise)
    evaluations = (0.0, 0.0, 1.0, 1.0, 1.0)

    def __init__(self, law: NoiseLaw | None = None):
        from .laws import ThreePoint

        super().__init__(ThreePoint() if law is None else law)

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        dw = self.draw(field, x, dt, generator, dw)
        a, b = field.coefficients(t, x)
        s = math.sqrt(dt)
        t1 = t + dt
        base = x + a * dt
        a2 = field.drift(t1, base + field.noise_term(b, dw))
        out = x + (a + a2) * (0.5 * dt)
        if field.noise != "general":
            bp = field.diffusion(t1, base + b * s)
            bm = field.diffusion(t1, base - b * s)
            return out + (bp + bm + 2.0 * b) * (0.25 * dw) + (bp - bm) * ((dw * dw - dt) * (0.25 / s)), state
        m = b.shape[-1]
        cols = [_column(dw, j, x) for j in range(m)]
        for j in range(m):
            bj = b[..., j]
            gp = field.diffusion(t1, base + bj * s)[..., j]
            gm = field.diffusion(t1, base - bj * s)[..., j]
            out = out + (gp + gm + 2.0 * bj) * (0.25 * cols[j]) + (gp - gm) * ((cols[j] ** 2 - dt) * (0.25 / s))
        if m > 1:
            v = self._two_point((x.shape[0], m, m), dt, generator, x)
            v = torch.triu(v, diagonal=1)
            v = v - v.transpose(1, 2)  # V_{r,j} = −V_{j,r}
            for r in range(m):
                hp = field.diffusion(t, x + b[..., r] * s)
                hm = field.diffusion(t, x - b[..., r] * s)
                for j in range(m):
                    if j == r:
                        continue
                    vrj = v[:, r, j].reshape(cols[j].shape)
                    out = out + (hp[..., j] + hm[..., j] - 2.0 * b[..., j]) * (0.25 * cols[j])
                    out = out + (hp[..., j] - hm[..., j]) * ((cols[j] * cols[r] + vrj) * (0.25 / s))
        return out, state

    @staticmethod
    def _two_point(shape, dt, generator, like):
        return _two_point(shape, dt, generator, like)

    def __repr__(self):
        return f"Platen({self.law!r})"


def _jvp(fn, x, v, graph: bool | None = None):
    """Directional derivative ``(d/dε) fn(x + εv)`` at ε = 0 by the double-backward trick
    (``torch.autograd.functional.jvp``; forward-mode AD would be one pass cheaper, but in this
    torch it imports the compiler stack, seconds of start-up). ``graph`` (default: whether
    grad mode is on) keeps the result differentiable — for training, and for nesting."""
    graph = torch.is_grad_enabled() if graph is None else graph
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        return torch.autograd.functional.jvp(fn, xg, v, create_graph=graph)[1]


class WeakTaylor2(_Weak2):
    r"""The simplified weak order-2 Taylor scheme (Kloeden & Platen 14.2.1), derivatives by autograd:

        X_{n+1} = X + aΔ + bΔŴ + ½ L¹b (ΔŴ² − Δ) + ½ (L¹a + L⁰b) ΔŴΔ + ½ L⁰a Δ²,

    ``L¹f = (∇f) b``, ``L⁰f = ∂_t f + (∇f) a + ½ ∇²f[b, b]``, every derivative a forward-mode
    Jacobian–vector product (``∂_t`` only when ``time_dependent``, which
    needs drift and diffusion that accept a tensor ``t``). A reference for :class:`Platen`:
    ``sample``/``batch`` noise on any state, ``diagonal`` noise with elementwise drift and
    diffusion (``∇²f[b, b]`` is the full second derivative along b, which is the diagonal
    sum K&P need only when f has no cross-dependence). Weak order 2 with Gaussian or
    three-point increments.
    """

    name = "weak_taylor2"
    noise_types = ("sample", "batch", "diagonal")

    def __init__(self, law: NoiseLaw | None = None, time_dependent: bool = False):
        super().__init__(law)
        self.time_dependent = bool(time_dependent)

    def check(self, field):
        if getattr(field, "noise", None) == "general":
            _is_field(field)
            raise ValueError("WeakTaylor2 supports sample, batch and diagonal noise; use Platen for noise='general'")
        super().check(field)

    def _L0(self, fn, t, x, a, b):
        """``L⁰f`` for ``fn(t, x)``."""
        out = _jvp(lambda y: fn(t, y), x, a)
        out = out + 0.5 * _jvp(lambda y: _jvp(lambda z: fn(t, z), y, b, graph=True), x, b)
        if self.time_dependent:
            tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
            out = out + _jvp(lambda s_: fn(s_, x), tt, torch.ones_like(tt))
        return out

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        dw = self.draw(field, x, dt, generator, dw)
        a, b = field.drift(t, x), field.diffusion(t, x)
        L1b = _jvp(lambda y: field.diffusion(t, y), x, b)
        L1a = _jvp(lambda y: field.drift(t, y), x, b)
        L0a = self._L0(field.drift, t, x, a, b)
        L0b = self._L0(field.diffusion, t, x, a, b)
        out = x + a * dt + b * dw + 0.5 * L1b * (dw * dw - dt) + (0.5 * dt) * (L1a + L0b) * dw
        return out + (0.5 * dt * dt) * L0a, state

    def __repr__(self):
        return f"WeakTaylor2({self.law!r}" + (", time_dependent=True)" if self.time_dependent else ")")


class Milstein(_LawScheme):
    r"""Milstein's scheme (strong order 1, weak order 1), Gaussian increments:

        X_{n+1} = X + aΔ + bΔW + ½ L¹b (ΔW² − Δ),     L¹b = (∇b) b,

    for one Brownian motion (``sample``/``batch`` noise) and elementwise ``diagonal`` noise
    (where ``L¹b`` is ``b_k ∂_k b_k``). For ``general`` noise with m Brownian motions it is
    the commutative-noise Milstein scheme ``X + aΔ + Σ_j b^j ΔW^j + ½ Σ_{j,r} L^j b^r
    (ΔW^j ΔW^r − δ_{jr} Δ)``, which needs ``L^j b^r = L^r b^j``: a general field with m > 1
    must declare ``commutative=True`` (``check`` refuses it otherwise). Additive noise
    (``field.additive``: every ``L^j b`` vanishes) is commutative, and the step is then
    Euler–Maruyama's, with no derivative taken.

    ``derivative="autograd"`` computes ``L^j b`` exactly by a forward-mode Jacobian–vector
    product; ``derivative="difference"`` is the derivative-free Runge–Kutta form (K&P 11.1.3),
    ``L^j b ≈ (b(X + aΔ + b^j√Δ) − b(X))/√Δ``, of the same strong order.
    """

    strong_order = 1.0
    weak_order = 1.0

    def __init__(self, derivative: str = "autograd"):
        super().__init__(Gaussian())
        if derivative not in ("autograd", "difference"):
            raise ValueError(f"Milstein: derivative must be 'autograd' or 'difference', got {derivative!r}")
        self.derivative = derivative

    def check(self, field):
        super().check(field)
        if field.noise == "general" and field.m > 1 and not (field.commutative or field.additive):
            raise ValueError(
                "Milstein supports general noise only when it is commutative (L^j g^r = L^r g^j); "
                "declare it with SDEField(..., noise='general', m=..., commutative=True), or use Platen "
                "(weak order 2) or EulerMaruyama"
            )

    def _L(self, field, t, x, a, b, direction, dt):
        if self.derivative == "autograd":
            return _jvp(lambda y: field.diffusion(t, y), x, direction)
        s = math.sqrt(dt)
        return (field.diffusion(t, x + a * dt + direction * s) - b) / s

    def step(self, field, t, x, dt, state, generator=None, dw=None):
        dw = self.draw(field, x, dt, generator, dw)
        if field.additive:  # the diffusion ignores the state: every L^j b vanishes (Euler–Maruyama)
            return x + field.increment(t, x, dt, dw), state
        if field.noise == "general" and self.derivative == "autograd":
            return self._general_autograd(field, t, x, dt, dw), state
        a, b = field.coefficients(t, x)
        out = x + a * dt + field.noise_term(b, dw)
        if field.noise != "general":
            return out + 0.5 * self._L(field, t, x, a, b, b, dt) * (dw * dw - dt), state
        for j in range(b.shape[-1]):  # difference quotients: one diffusion evaluation per column
            Lj = self._L(field, t, x, a, b, b[..., j].contiguous(), dt)  # (…, m): L^j b^r for every r
            cj = _column(dw, j, x)
            out = out + 0.5 * (field.noise_term(Lj, dw) * cj - Lj[..., j] * dt)
        return out, state

    @staticmethod
    def _general_autograd(field, t, x, dt, dw):
        r"""The general-noise step with every ``L^j b^r`` from one evaluation of the diffusion.

        Double-backward trick, batched over the m directions: ``h(u) = (∂g/∂x)ᵀ u`` is linear in
        ``u`` (one backward pass through ``g``), and the gradient of ``⟨h(u), b^j⟩`` with respect
        to ``u`` is ``(∂g/∂x) b^j = L^j g``; ``is_grads_batched`` takes all m contiguous
        directions ``b^j`` in one vectorized backward pass, instead of m passes along strided
        column views. Then ``½ Σ_{j,r} L^j b^r (ΔW^j ΔW^r − δ_{jr} Δ)`` is one contraction.
        """
        graph = torch.is_grad_enabled()
        a = field.drift(t, x)
        m = dw.shape[-1]
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            g = field.diffusion(t, xg)  # (*x.shape, m)
            directions = g.movedim(-1, 0)  # (m, *x.shape): b^j
            directions = (directions if graph else directions.detach()).contiguous()
            L = None
            if g.requires_grad:
                u = torch.zeros_like(g, requires_grad=True)
                (h,) = torch.autograd.grad(g, xg, u, create_graph=True, allow_unused=True)
                if h is not None and h.requires_grad:
                    (L,) = torch.autograd.grad(h, u, directions, create_graph=graph, is_grads_batched=True,
                                               allow_unused=True)
        b = g if graph else g.detach()
        out = x + a * dt + field.noise_term(b, dw)
        if L is None:  # g does not depend on the state
            return out
        # L[j, …, r] = L^j b^r; c[:, j, r] = ΔW^j ΔW^r − δ_{jr} Δ
        c = dw.unsqueeze(-1) * dw.unsqueeze(-2) - dt * torch.eye(m, dtype=dw.dtype, device=dw.device)
        c = c.reshape((c.shape[0],) + (1,) * (x.dim() - 1) + (m, m))
        return out + 0.5 * (L.movedim(0, -2) * c).sum((-2, -1))

    def __repr__(self):
        return f"Milstein(derivative={self.derivative!r})"


# --------------------------------------------------------------------------- reversible (Chang et al. 2018)


class Hamiltonian(CoupledEuler):
    """Chang et al.'s Hamiltonian step (AAAI 2018) on a coupled field ``Y' = f1(t, Z)``, ``Z' = f2(t, Y)``:

    ``Y_{n+1} = Y_n + Δt f1(t_n, Z_n)``,  ``Z_{n+1} = Z_n + Δt f2(t_n, Y_{n+1})``.

    With the field of a Hamiltonian network, ``f1(Z) = σ(K Z + b)`` and ``f2(Y) = −σ(Kᵀ Y + b)``
    (or the tied ``±Kᵀσ(K·)`` of their eq. (8), :mod:`sdenet.nn.reversible`), this is the
    paper's update. The arithmetic is the symplectic-Euler step of :class:`CoupledEuler`
    (RevNet's); what makes the network Hamiltonian is the field. Read on collocated states
    ``(Y_n, Z_n)`` the step has order 1 (``order``); read on the staggered grid, ``Z_n`` standing
    for ``Z(t_{n+1/2})`` (started with ``Z(t_{1/2}) = Z_0 + Δt/2 f2(Y_0)``, ended with
    ``Z(T) = Z_N − Δt/2 f2(Y_N)``), it is the Störmer–Verlet leapfrog, order 2 (``staggered_order``). Each step inverts exactly:
    ``Z_n = Z_{n+1} − Δt f2(Y_{n+1})``, ``Y_n = Y_{n+1} − Δt f1(Z_n)`` (up to rounding).
    """

    order = 1
    staggered_order = 2
    invertible = True

    def __repr__(self):
        return "Hamiltonian()"


def _two_step_state(state):
    return (None, 0) if state is None else (state["prev"], state["n"])


def _next_state(state, x, n, prev):
    """The two-step state after step ``n``; ``given`` remembers whether step 0 had a history
    ``Y_{−1}`` handed in (else it was the scheme's own start, which ``invert_step`` undoes)."""
    given = (prev is not None) if n == 0 else (state or {}).get("given", True)
    return {"prev": x, "n": n + 1, "given": given}


class _TwoStepInvertible(Scheme):
    """Shared declarations of the invertible two-step schemes: the state carries ``Y_{n−1}``
    (``None`` before the first step), and a history handed in (:meth:`Scheme.start`) becomes
    ``Y_{−1}``."""

    invertible = True
    exact_arithmetic = True
    history = 1

    def init(self, field, t0, x0, dt):
        return {"prev": None, "n": 0}


class Midpoint(_TwoStepInvertible):
    """The explicit midpoint (leapfrog-in-time) two-step scheme ``Y_{n+1} = Y_{n−1} + 2Δt f(t_n, Y_n)``.

    How it starts: ``start="euler"`` (default) takes one forward-Euler step ``Y_1 = Y_0 + Δt f(t_0, Y_0)``,
    whose local error ``O(Δt²)`` keeps the global order 2; ``start="rest"`` sets ``Y_{−1} = Y_0``
    (``Y_1 = Y_0 + 2Δt f``), which costs one order (``order`` is then 1). A history handed in
    (a stage's ``prev``, e.g. a transition's shortcut) is used as ``Y_{−1}`` instead.

    Exactly invertible: ``Y_{n−1} = Y_{n+1} − 2Δt f(t_n, Y_n)``; the state carries ``Y_{n−1}``. Its
    characteristic roots on ``u' = λu`` are ``λΔt ± √(1 + λ²Δt²)``: on the imaginary axis
    (``|λΔt| ≤ 1``) both have modulus 1 — stable and non-dissipative, the point of Chang et al.'s
    construction — while for real ``λ < 0`` the parasitic root has modulus > 1 (weak instability).
    """


    def __init__(self, start: str = "euler"):
        if start not in ("euler", "rest"):
            raise ValueError(f"Midpoint: start must be 'euler' or 'rest', got {start!r}")
        self.first_step = start

    @property
    def order(self):
        return 2 if self.first_step == "euler" else 1

    def step(self, field, t, x, dt, state, generator=None, fp=None):
        prev, n = _two_step_state(state)
        c = 2.0 * dt if prev is not None else self._start_coefficient(dt)
        if fp is None:
            x_next = torch.add(x if prev is None else prev, field.drift(t, x), alpha=c)
        else:
            fx = field.drift(t, fp.value(x))  # x stays (the next history): overwrite prev only
            x_next = fp.add(x, fx, c) if prev is None else fp.add_(prev, fx, c)
        return x_next, _next_state(state, x, n, prev)

    def invert_step(self, field, t, x_next, dt, state_next, fp=None):
        x, n, given = state_next["prev"], state_next["n"] - 1, state_next.get("given", True)
        if n == 0 and not given:
            return x, {"prev": None, "n": 0}
        if fp is None:
            prev = torch.add(x_next, field.drift(t, x), alpha=-2.0 * dt)
        else:
            prev = fp.sub_(x_next, field.drift(t, fp.value(x)), 2.0 * dt)
        return x, {"prev": prev, "n": n, "given": given}

    def _start_coefficient(self, dt):  # x_1 = x_0 + c0 f(x_0)
        return dt if self.first_step == "euler" else 2.0 * dt

    def reverse_step(self, field, t, x_next, dt, state_next, grads, vjp, fp=None):
        """Undo one step and pull gradients back with one field evaluation (see ``CoupledEuler.reverse_step``);
        ``grads = (g_{Y_{n+1}}, g_{Y_n})``."""
        return _two_step_reverse(self, field, t, x_next, dt, state_next, grads, vjp, 1.0, 0.0, 2.0 * dt, fp)

    def __repr__(self):
        return f"Midpoint(start={self.first_step!r})"


class Leapfrog(_TwoStepInvertible):
    """The two-step scheme ``Y_{n+1} = 2Y_n − Y_{n−1} + Δt² f(t_n, Y_n)`` for the second-order ODE ``Y'' = f(t, Y)``
    (Störmer's method; Chang et al.'s leapfrog network with ``f = −Kᵀσ(K Y + b)``).

    ``order`` is the order on ``Y'' = f`` (2 with the default start). How it starts:
    ``start="taylor"`` (default) takes ``Y_1 = Y_0 + Δt v_0 + Δt²/2 f(t_0, Y_0)`` with the initial
    velocity ``v_0 = velocity`` (default 0: from rest), order 2; ``start="rest"`` sets
    ``Y_{−1} = Y_0`` (``Y_1 = Y_0 + Δt² f``), whose ``O(Δt)`` velocity error makes the scheme
    order 1. A history handed in (a stage's ``prev``) is used as ``Y_{−1}``.

    Exactly invertible: ``Y_{n−1} = 2Y_n − Y_{n+1} + Δt² f(t_n, Y_n)``.
    """


    def __init__(self, start: str = "taylor", velocity: float = 0.0):
        if start not in ("taylor", "rest"):
            raise ValueError(f"Leapfrog: start must be 'taylor' or 'rest', got {start!r}")
        try:
            velocity = float(velocity)
        except (TypeError, ValueError):
            raise ValueError(f"Leapfrog: velocity must be a number, got {velocity!r}") from None
        if not math.isfinite(velocity):
            raise ValueError(f"Leapfrog: velocity must be finite, got {velocity!r}")
        self.first_step = start
        self.velocity = velocity

    @property
    def order(self):
        return 2 if self.first_step == "taylor" else 1

    def step(self, field, t, x, dt, state, generator=None, fp=None):
        prev, n = _two_step_state(state)
        if fp is not None:
            fx = field.drift(t, fp.value(x))
            if prev is None:
                if self.velocity:  # the start step only: grid(c0·f + Δt·v0)
                    return x + fp.grid(fx * self._start_coefficient(dt) + self.velocity * dt), \
                        _next_state(state, x, n, prev)
                return fp.add(x, fx, self._start_coefficient(dt)), _next_state(state, x, n, prev)
            return fp.add_(2.0 * x - prev, fx, dt * dt), _next_state(state, x, n, prev)
        fx = field.drift(t, x)
        if prev is None:
            if self.first_step == "taylor":
                x_next = torch.add(x, fx, alpha=0.5 * dt * dt)
                if self.velocity:
                    x_next = x_next + self.velocity * dt
            else:
                x_next = torch.add(x, fx, alpha=dt * dt)
        else:
            x_next = torch.add(2.0 * x - prev, fx, alpha=dt * dt)
        return x_next, _next_state(state, x, n, prev)

    def invert_step(self, field, t, x_next, dt, state_next, fp=None):
        x, n, given = state_next["prev"], state_next["n"] - 1, state_next.get("given", True)
        if n == 0 and not given:
            return x, {"prev": None, "n": 0}
        if fp is None:
            prev = torch.add(2.0 * x - x_next, field.drift(t, x), alpha=dt * dt)
        else:
            prev = fp.add_(2.0 * x - x_next, field.drift(t, fp.value(x)), dt * dt)
        return x, {"prev": prev, "n": n, "given": given}

    def _start_coefficient(self, dt):  # x_1 = x_0 + c0 f(x_0) (+ Δt v_0, a constant: no gradient)
        return 0.5 * dt * dt if self.first_step == "taylor" else dt * dt

    def reverse_step(self, field, t, x_next, dt, state_next, grads, vjp, fp=None):
        """Undo one step and pull gradients back with one field evaluation (see ``CoupledEuler.reverse_step``);
        ``grads = (g_{Y_{n+1}}, g_{Y_n})``."""
        return _two_step_reverse(self, field, t, x_next, dt, state_next, grads, vjp, -1.0, 2.0, dt * dt, fp)

    def __repr__(self):
        v = f", velocity={self.velocity:g}" if self.velocity else ""
        return f"Leapfrog(start={self.first_step!r}{v})"


def _add_grads(*gs):
    out = None
    for g in gs:
        if g is not None:
            out = g if out is None else out + g
    return out


def _two_step_reverse(scheme, field, t, x_next, dt, state_next, grads, vjp, a, b, c, fp=None):
    """Reverse of ``x_{n+1} = a·x_{n−1} + b·x_n + c·f(x_n)`` (after a start, if step 0 had no history);
    ``grads = (g_{x_{n+1}}, g_{x_n})`` (the second for the history slot of the state). With ``fp``
    the increment ``c·f`` is rounded to the grid exactly as ``step`` rounds it (``a = ±1``, ``b``
    ∈ {0, 2}: the rest is exact on the grid)."""
    x, n, given = state_next["prev"], state_next["n"] - 1, state_next.get("given", True)
    g_next, g_hist = grads
    u = x if fp is None else fp.value(x)
    if n == 0 and not given:  # the scheme's own start x_1 = x_0 + c0 f(x_0)
        c0 = scheme._start_coefficient(dt)
        _, back = vjp(lambda v: field.drift(t, v), u, g_next, c0)
        return x, {"prev": None, "n": 0}, (_add_grads(g_next, g_hist, back),)
    fx, back = vjp(lambda v: field.drift(t, v), u, g_next, c)
    base = x_next - b * x if b else x_next  # x_next is handed over: overwritten below
    prev = base.sub_(fx, alpha=c) if fp is None else fp.sub_(base, fx, c)  # a·x_{n−1}
    if a != 1.0:
        prev = prev.div_(a)
    g_x = _add_grads(g_hist, back, None if (g_next is None or not b) else g_next * b)
    g_prev = None if g_next is None else (g_next if a == 1.0 else g_next * a)
    return x, {"prev": prev, "n": n, "given": given}, (g_x, g_prev)
