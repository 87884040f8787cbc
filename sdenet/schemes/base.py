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
``invert_step`` / ``reverse_step`` and ``exact_arithmetic`` (memory="reversible"),
optionally a fused in-place kernel ``inplace(field, x, dt)`` (:mod:`sdenet.loop`), and how
:func:`~sdenet.get_scheme` builds it: ``aliases``, ``options``, ``takes_law``, ``only_gaussian``
and :meth:`Scheme.refuse_law` (:mod:`sdenet.schemes.registry`).

Networks read as schemes (Lu et al., ICML 2018, Table 1): ResNet is :class:`Euler`,
FractalNet :class:`Heun`, PolyNet :class:`NeumannEuler`, RevNet :class:`CoupledEuler`,
LM-ResNet :class:`LinearMultistep`, stochastic depth and shake-shake :class:`WeakEuler`,
LM stochastic depth :class:`StochasticLM`.
"""

from __future__ import annotations

import torch

from .._checks import checked_float
from ..fields import NOISE_TYPES, is_field
from ..laws import Gaussian, NoiseLaw

__all__ = ["Scheme", "is_scheme"]


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
            raise ValueError(
                f"{cls}: {name} must be finite; the tensor {name} has {bad} NaN or infinite "
                f"entr{'y' if bad == 1 else 'ies'}"
            )
        return value
    if isinstance(value, (bool, str)):
        raise ValueError(f"{cls}: {name} must be a float, a tensor or a callable, got {value!r}")
    return checked_float(
        value,
        "{cls}: {name} must be a float, a tensor or a callable, got {value!r}",
        "{cls}: {name} must be finite, got {name}={value!r}",
        cls=cls,
        name=name,
    )


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

    # How :func:`~sdenet.get_scheme` builds the scheme (:mod:`sdenet.schemes.registry` reads these
    # on the classes it registers; each declares its own ``aliases``, the rest may be inherited).
    #: the names ``get_scheme`` knows the class by (case and ``-``/``_`` aside); the first is the
    #: one ``SCHEME_NAMES`` lists; ``()``: not built by name
    aliases: tuple[str, ...] = ()
    #: the constructor's keyword arguments ``get_scheme`` passes on (it refuses any other)
    options: tuple[str, ...] = ()
    #: True when the constructor takes ``law=``, which ``get_scheme`` then passes on; otherwise a
    #: given law is not passed (and ignored, unless :meth:`refuse_law` refuses it)
    takes_law: bool = False
    #: set on a scheme that takes only Gaussian increments: the end of ``get_scheme``'s message
    #: refusing another law (``"; use weak_euler for another law"``); ``None``: any law
    only_gaussian: str | None = None

    @classmethod
    def refuse_law(cls, law: NoiseLaw | None) -> str | None:
        """Why ``get_scheme`` cannot build this scheme with increments of ``law`` (its ValueError's
        message), or ``None`` when it can: only a law other than the Gaussian, for a scheme that
        declares :attr:`only_gaussian`."""
        if cls.only_gaussian is None or law is None or law == Gaussian():
            return None
        return f"{cls.aliases[0]} uses Gaussian increments{cls.only_gaussian}"

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

    def mean_scheme(self) -> Scheme:
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
            raise ValueError(
                f"{name} supports {', '.join(self.noise_types)} noise; this field has noise={field.noise!r}"
            )

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


class _TwoStep(Scheme):
    """A two-step scheme: the state carries ``"prev"`` (``X_{n−1}``; ``None`` before the first
    step, until :meth:`Scheme.start` hands a history in) and the step count ``"n"``."""

    history = 1

    def init(self, field, t0, x0, dt):
        return {"prev": None, "n": 0}


def _at(coefficient, n: int):
    """A two-step scheme's coefficient of step ``n``: ``coefficient(n)`` when it is a callable."""
    return coefficient(n) if callable(coefficient) else coefficient


def _shown(coefficient):
    """A coefficient as a repr shows it: ``callable``, a tensor's shape, or the number."""
    if callable(coefficient):
        return "callable"
    return tuple(coefficient.shape) if isinstance(coefficient, torch.Tensor) else coefficient
