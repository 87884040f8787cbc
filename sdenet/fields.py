"""Fields: the right-hand sides ``dX = f(t, X) dt + g(t, X) dW`` that schemes discretize.

A field is an ``nn.Module`` with ``drift(t, x)`` and ``diffusion(t, x)`` acting on states
of any shape, batch first, and a *noise structure* that says how many independent
increments drive it:

``"diagonal"``
    one increment per element: ``dW`` has the shape of ``x``;
``"sample"``
    one increment per sample, broadcast over its other dimensions (the paper's
    ``[1_{N×1}, 0]`` structure: one coin per image in stochastic depth, one uniform
    per image in shake-shake); ``dW`` has shape ``(B, 1, ..., 1)``;
``"batch"``
    one increment for the whole batch; ``dW`` has shape ``(1, ..., 1)``;
``"general"``
    ``m`` Brownian motions per sample (a d×m noise matrix): ``dW`` has shape ``(B, m)`` and
    ``diffusion(t, x)`` returns ``(*x.shape, m)``; ``g dW`` is ``Σ_j g[..., j] dW_j``.

For the first three ``diffusion(t, x)`` returns a tensor of ``x``'s shape that multiplies
``dW`` elementwise (after broadcasting), so ``g dW`` is ``diffusion(t, x) * dw``.

Time: :func:`sdenet.integrate` and network stages hand ``drift`` and ``diffusion`` the time
``t`` as a 0-dim tensor on the state's device and dtype (torchsde's convention), so
``torch.sqrt(1 + t)`` works. A field that declares ``tensor_time = False`` (the network
fields of :mod:`sdenet.nn`, which only pick a block by ``t``) gets a Python float instead.
The callables of :class:`SDEField`, :class:`ODEField` and :class:`CoupledField` always get a
tensor, even when the field is called directly with a float.

Boundary checks: on the first step :func:`sdenet.integrate` (and a stage, on its first call)
checks what the field returns — the drift a floating tensor of the state's shape (or one
that broadcasts to it without changing it), dtype and device; the diffusion one that
broadcasts against the noise ``dW`` to the state's shape — and raises ``ValueError``
naming the field and the shapes (:class:`FieldCheck`). Under autocast the dtype may differ.

Schemes call :meth:`Field.increment` for ``f Δt + g ΔW``; a field whose drift and
diffusion share work (a network block ``f`` with ``drift = p f`` and
``diffusion = √(p(1−p)) f``) overrides it to evaluate the block once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "NOISE_TYPES",
    "is_field",
    "Field",
    "SDEField",
    "ODEField",
    "CoupledField",
    "noise_shape",
    "FieldCheck",
    "time_points",
]

NOISE_TYPES = ("diagonal", "sample", "batch", "general")

#: the time a field is handed: a 0-dim tensor (``tensor_time = True``) or a Python float
Time = torch.Tensor | float
#: a user's drift or diffusion: ``(t, x) -> tensor``
FieldFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def noise_shape(noise: str, x: torch.Tensor, m: int | None = None) -> tuple[int, ...]:
    """Shape of one increment ``dW`` for state ``x`` under a noise structure (``m``: the
    number of Brownian motions of ``general`` noise)."""
    if noise == "diagonal":
        return tuple(x.shape)
    if noise == "sample":
        return (x.shape[0],) + (1,) * (x.dim() - 1)
    if noise == "batch":
        return (1,) * x.dim()
    if noise == "general":
        if m is None:
            raise ValueError("noise_shape: 'general' noise needs m, the number of Brownian motions")
        return (x.shape[0], int(m))
    raise ValueError(f"unknown noise structure {noise!r}; choose one of {', '.join(NOISE_TYPES)}")


def is_field(obj: object) -> bool:
    """True when ``obj`` is an sdenet field (the check callers make instead of testing a class)."""
    return isinstance(obj, Field)


def _check_noise(noise: Any) -> str:
    if noise not in NOISE_TYPES:
        raise ValueError(f"noise must be one of {', '.join(NOISE_TYPES)}, got {noise!r}")
    return str(noise)


def _set_brownian_count(field: Field, owner: str, noise: str, m: Any) -> None:
    """``field.m = m`` for ``general`` noise (a positive int); other noise takes ``m`` None or 1
    (the class's ``m = 1`` stands)."""
    if noise == "general":
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(
                f"{owner}: noise='general' needs m, a positive number of Brownian motions, got m={m!r}"
            )
        field.m = m
    elif m is not None and m != 1:
        raise ValueError(f"{owner}: m={m!r} Brownian motions needs noise='general' (got noise={noise!r})")


class Field(nn.Module):
    """Base class of ``dX = drift(t, X) dt + diffusion(t, X) dW`` (``dX = drift(t, X) dt`` for an ODE).
    Subclasses define :meth:`drift` and, when stochastic, :meth:`diffusion`.

    Attributes
    ----------
    noise:
        ``None`` for an ODE, else one of :data:`NOISE_TYPES`.
    coupled:
        True when the state is a pair ``(x, y)`` (RevNet-type systems).
    """

    # What a field declares, one class attribute each; sdenet.schemes.base.Scheme declares what a
    # scheme is the same way (a duplicates pair in form only: different attributes, nothing shared).
    noise: str | None = None
    coupled: bool = False
    #: True: ``integrate`` and stages pass ``t`` as a 0-dim tensor on the state's device and
    #: dtype; False: as a Python float (network fields, which index their blocks by ``t``)
    tensor_time: bool = True
    #: number of Brownian motions per sample of ``general`` noise (1 for the other structures)
    m: int = 1
    #: True when the noise is declared commutative (``L^j g^r = L^r g^j``), which Milstein
    #: needs for ``general`` noise with m > 1
    commutative: bool = False
    #: True when the diffusion does not depend on the state (``g(t)``: additive noise,
    #: :class:`sdenet.additive.AdditiveField`); schemes may then skip every ``L^j g`` term
    additive: bool = False

    #: True for a network field that carries its own grid step ``dt`` (a stage takes it from the field)
    owns_dt: bool = False

    @property
    def stochastic(self) -> bool:
        return self.noise is not None

    @property
    def plain_increment(self) -> bool:
        """True when :meth:`increment` is ``drift·Δt + noise_term(diffusion, ΔW)`` as defined here (not
        overridden), so a scheme may evaluate drift and diffusion separately (the in-place path)."""
        return type(self).increment is Field.increment

    def drift(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} defines no drift")

    def diffusion(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} is deterministic: it has no diffusion")

    def increment(self, t: Time, x: torch.Tensor, dt: float, dw: torch.Tensor | None) -> torch.Tensor:
        """``f(t, x) Δt + g(t, x) ΔW`` (just ``f Δt`` when ``dw`` is None)."""
        out = self.drift(t, x) * dt
        if dw is not None:
            out = out + self.noise_term(self.diffusion(t, x), dw)
        return out

    def noise_term(self, g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        """``g ΔW`` for a diffusion value ``g``: elementwise, or ``Σ_j g[..., j] ΔW_j`` for
        ``general`` noise (``dw`` of shape ``(B, m)``)."""
        if self.noise == "general":
            return (g * dw.reshape(dw.shape[:1] + (1,) * (g.dim() - 2) + dw.shape[1:])).sum(-1)
        return g * dw

    def coefficients(self, t: Time, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(drift(t, x), diffusion(t, x))``; network fields override it to evaluate their
        block once for both."""
        return self.drift(t, x), self.diffusion(t, x)

    def noise_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        if self.noise is None:
            raise ValueError(f"{type(self).__name__} is deterministic: it draws no noise")
        return noise_shape(self.noise, x, self.m)

    # ---------------------------------------------------------------- interop
    def to_torchsde(self, shape: tuple[int, ...] | None = None) -> nn.Module:
        """An object ``torchsde.sdeint`` accepts (Itô), acting on flattened ``(B, D)`` states.

        ``shape`` is the per-sample shape of the state (default: flat). ``diagonal``
        noise maps to torchsde's ``"diagonal"``, ``sample`` noise to ``"scalar"``
        (one Brownian motion per sample), ``general`` noise to ``"general"`` (``g`` of shape
        ``(B, D, m)``); ``batch`` noise has no torchsde equivalent.
        """
        return _TorchsdeAdapter(self, shape)

    def to_torchdiffeq(self, shape: tuple[int, ...] | None = None) -> nn.Module:
        """``func(t, y)`` for ``torchdiffeq.odeint``: the drift on the same tensors."""
        if self.coupled:
            raise ValueError("to_torchdiffeq: coupled fields are not supported; integrate each component")
        return _TorchdiffeqAdapter(self, shape)


class _CallableDrift(Field):
    """A field whose drift is a user's callable ``_f(t, x)`` (:class:`SDEField`, :class:`ODEField`,
    :class:`sdenet.additive.AdditiveField`)."""

    _f: FieldFn

    def drift(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        return _call(self._f, t, x)


class SDEField(_CallableDrift):
    """``dX = drift(t, X) dt + diffusion(t, X) dW`` from two callables ``(t, x) -> tensor``.

    Callables that are ``nn.Module`` s are registered as submodules (``_f``, ``_g``), so
    their parameters train and are saved once in the state dict.
    """

    def __init__(
        self,
        drift: FieldFn,
        diffusion: FieldFn,
        noise: str = "diagonal",
        m: int | None = None,
        commutative: bool = False,
    ) -> None:
        super().__init__()
        if not callable(drift) or not callable(diffusion):
            raise ValueError("SDEField: drift and diffusion must be callables (t, x) -> tensor")
        self.noise = _check_noise(noise)
        _set_brownian_count(self, "SDEField", noise, m)
        self.commutative = bool(commutative)
        self._f = drift
        self._g = diffusion

    def diffusion(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        return _call(self._g, t, x)

    def extra_repr(self) -> str:
        return f"noise={self.noise!r}" + (f", m={self.m}" if self.noise == "general" else "")


class ODEField(_CallableDrift):
    """``u' = drift(t, u)``."""

    def __init__(self, drift: FieldFn) -> None:
        super().__init__()
        if not callable(drift):
            raise ValueError("ODEField: drift must be a callable (t, x) -> tensor")
        self._f = drift


class CoupledField(Field):
    """The coupled system ``X' = f1(t, Y)``, ``Y' = f2(t, X)`` of RevNet; the state is ``(x, y)``.

    ``drift(t, (x, y))`` returns ``(f1(t, y), f2(t, x))``; the RevNet update itself is
    the scheme :class:`sdenet.schemes.CoupledEuler`.
    """

    coupled = True

    def __init__(self, f1: FieldFn, f2: FieldFn) -> None:
        super().__init__()
        if not callable(f1) or not callable(f2):
            raise ValueError("CoupledField: f1 and f2 must be callables (t, state) -> tensor")
        self._f1 = f1
        self._f2 = f2

    def f1(self, t: Time, y: torch.Tensor) -> torch.Tensor:
        return _call(self._f1, t, y)

    def f2(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        return _call(self._f2, t, x)

    # the state of a coupled field is a pair, so its drift is one (as FieldCheck and CoupledEuler expect)
    def drift(self, t: Time, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x, y = state
        return self.f1(t, y), self.f2(t, x)


class _TorchsdeAdapter(nn.Module):
    sde_type = "ito"

    def __init__(self, field: Field, shape: Sequence[int] | None) -> None:
        super().__init__()
        if field.coupled:
            raise ValueError("to_torchsde: coupled fields are not supported")
        if field.noise is None:
            raise ValueError("to_torchsde: an ODE field has no diffusion; use to_torchdiffeq")
        if field.noise == "batch":
            raise ValueError(
                "to_torchsde: 'batch' noise (one increment for the whole batch) has no torchsde "
                "noise type; use 'sample' or 'diagonal'"
            )
        self.field = field
        self.shape = None if shape is None else tuple(shape)
        self.noise_type = {"diagonal": "diagonal", "general": "general"}.get(field.noise, "scalar")

    def _unflat(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.shape is None else y.reshape((y.shape[0],) + self.shape)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.field.drift(t, self._unflat(y)).reshape(y.shape[0], -1)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = self.field.diffusion(t, self._unflat(y))
        if self.noise_type == "general":
            return g.reshape(y.shape[0], -1, g.shape[-1])
        g = g.expand(self._unflat(y).shape).reshape(y.shape[0], -1)
        return g if self.noise_type == "diagonal" else g.unsqueeze(-1)


class _TorchdiffeqAdapter(nn.Module):
    def __init__(self, field: Field, shape: Sequence[int] | None) -> None:
        super().__init__()
        self.field = field
        self.shape = None if shape is None else tuple(shape)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.shape is None:
            return self.field.drift(t, y)
        x = y.reshape((y.shape[0],) + self.shape)
        return self.field.drift(t, x).reshape(y.shape)


# ---------------------------------------------------------------------- time and boundary checks


def _as_time(t: Time, x: torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """``t`` as a 0-dim tensor on the device and dtype of the state ``x`` (a tensor or a pair)."""
    like = x[0] if isinstance(x, (tuple, list)) else x
    return torch.tensor(float(t), dtype=like.dtype, device=like.device)


def _call(fn: FieldFn, t: Time, x: torch.Tensor) -> torch.Tensor:
    """``fn(t, x)`` of a user's callable, with a float ``t`` made a tensor first (:func:`_as_time`)."""
    return fn(t if isinstance(t, torch.Tensor) else _as_time(t, x), x)


def time_points(
    t0: float,
    dt: float,
    steps: int,
    like: torch.Tensor,
    tensor: bool = True,
    chunk: int = 4096,
    first: int = 0,
) -> Iterator[Time]:
    """The grid times ``t_n = t0 + nΔt``, ``n = first … steps−1``, one at a time.

    ``tensor=True`` yields 0-dim tensors on ``like``'s device and dtype (built ``chunk`` at a
    time: one host-to-device copy per chunk, never one per step); ``tensor=False`` yields
    Python floats. Both compute ``t0 + nΔt`` in double precision, so they agree exactly
    before the cast.
    """
    if not tensor:
        for n in range(first, steps):
            yield t0 + n * dt
        return
    for start in range(first, steps, chunk):
        ns = torch.arange(start, min(start + chunk, steps), dtype=torch.float64)
        yield from (ns * dt + t0).to(device=like.device, dtype=like.dtype).unbind(0)


def _shape(s: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(v)) for v in s) + ("," if len(s) == 1 else "") + ")"


class FieldCheck:
    """A field seen through checks of what it returns, for the first step of a scheme.

    ``FieldCheck(field, state, where)`` behaves like ``field`` (every attribute is the
    field's) but checks each output against the state ``state`` the step starts from:

    * ``drift`` (and ``f1``/``f2`` of a coupled field): a floating tensor on the state's
      device, of the state's dtype (any floating dtype under autocast), whose shape
      broadcasts to the state's without changing it;
    * ``diffusion``: the same, except that its shape times the noise ``dW`` must broadcast
      to the state's shape;
    * ``increment`` of a field that overrides it: the same as the drift.

    A failure is a ``ValueError`` naming ``where``, the field (and its block) and the shapes.
    The outputs are returned unchanged, so a checked step is bit for bit the plain one.
    """

    __slots__ = ("field", "state", "where")

    def __init__(self, field: Any, state: Any, where: str) -> None:
        self.field = field
        self.state = state
        self.where = where

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "field"), name)

    # -- the checks ----------------------------------------------------------------------
    def _name(self, what: str, t: Time) -> str:
        field = self.field
        inner = getattr(field, "field", None)  # a transition's view of its one-block field
        shown = inner if isinstance(inner, Field) else field
        name = type(shown).__name__
        blocks = getattr(shown, "blocks", None)
        index = getattr(shown, "index", None)
        if blocks is not None and callable(index):
            try:
                n = index(t)
                name += f" (block {n}, {type(blocks[n]).__name__})"
            except Exception:
                pass
        return f"{self.where}: the {what} of {name}"

    def _check(
        self, what: str, out: Any, x: torch.Tensor, t: Time, noise: Sequence[int] | None = None
    ) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"{self._name(what, t)} returned {type(out).__name__}; it must return a tensor "
                f"(for a state of shape {_shape(x.shape)})"
            )
        if not out.is_floating_point():
            raise ValueError(
                f"{self._name(what, t)} returned a tensor of dtype {out.dtype}; it must be "
                f"floating point like the state ({x.dtype})"
            )
        if out.device != x.device:
            raise ValueError(
                f"{self._name(what, t)} returned a tensor on {out.device} for a state on {x.device}"
            )
        if out.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(
                f"{self._name(what, t)} returned dtype {out.dtype} for a state of dtype "
                f"{x.dtype}; return the state's dtype (it would silently change the state's)"
            )
        shapes = (out.shape,) if noise is None else (out.shape, noise)
        try:
            joint = torch.broadcast_shapes(*shapes, x.shape)  # type: ignore[no-untyped-call]  # untyped in torch
        except RuntimeError:
            joint = None
        if joint != x.shape:
            if noise is None:
                raise ValueError(
                    f"{self._name(what, t)} returned shape {_shape(out.shape)} for a state of "
                    f"shape {_shape(x.shape)}; it must return the state's shape"
                )
            raise ValueError(
                f"{self._name(what, t)} returned shape {_shape(out.shape)}, which times the "
                f"noise of shape {_shape(noise)} does not broadcast to the state's shape "
                f"{_shape(x.shape)}"
            )
        return out

    # -- the field's methods, checked -----------------------------------------------------
    def drift(self, t: Time, x: Any) -> Any:
        out = self.field.drift(t, x)
        if isinstance(x, (tuple, list)):  # a coupled state (x, y): the drift is (f1(y), f2(x))
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise ValueError(
                    f"{self._name('drift', t)} returned {type(out).__name__}; a coupled drift returns a pair"
                )
            self._check("drift (first component)", out[0], x[0], t)
            self._check("drift (second component)", out[1], x[1], t)
            return out
        return self._check("drift", out, x, t)

    def _check_diffusion(
        self, out: Any, x: torch.Tensor, t: Time, noise: Sequence[int] | None = None
    ) -> torch.Tensor:
        m = getattr(self.field, "m", 1)
        if getattr(self.field, "noise", None) == "general":  # g of shape (*x.shape, m), dW of (B, m)
            return self._check("diffusion", out, x.new_empty(()).expand(*x.shape, m), t)
        if noise is None:
            noise = tuple(self.field.noise_shape(x))
        return self._check("diffusion", out, x, t, noise)

    def diffusion(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        return self._check_diffusion(self.field.diffusion(t, x), x, t)

    def coefficients(self, t: Time, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        drift, diffusion = self.field.coefficients(t, x)
        return self._check("drift", drift, x, t), self._check_diffusion(diffusion, x, t)

    def increment(self, t: Time, x: torch.Tensor, dt: float, dw: torch.Tensor | None) -> torch.Tensor:
        if getattr(self.field, "plain_increment", False):
            # the base rule f Δt + g ΔW, with each part checked (the same operations as Field.increment)
            out: torch.Tensor = self.drift(t, x) * dt
            if dw is not None:
                g = self._check_diffusion(self.field.diffusion(t, x), x, t, tuple(dw.shape))
                term = getattr(self.field, "noise_term", None)
                out = out + (term(g, dw) if term is not None else g * dw)
            return out
        return self._check("increment", self.field.increment(t, x, dt, dw), x, t)

    def f1(self, t: Time, y: torch.Tensor) -> torch.Tensor:
        return self._check("f1", self.field.f1(t, y), self.state[0], t)

    def f2(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        return self._check("f2", self.field.f2(t, x), self.state[1], t)
