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

Schemes call :meth:`Field.increment` for ``f Δt + g ΔW``; a field whose drift and
diffusion share work (a network block ``f`` with ``drift = p f`` and
``diffusion = √(p(1−p)) f``) overrides it to evaluate the block once.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = [
    "NOISE_TYPES",
    "Field",
    "SDEField",
    "ODEField",
    "CoupledField",
    "noise_shape",
]

NOISE_TYPES = ("diagonal", "sample", "batch", "general")


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


def _check_noise(noise) -> str:
    if noise not in NOISE_TYPES:
        raise ValueError(f"noise must be one of {', '.join(NOISE_TYPES)}, got {noise!r}")
    return noise


class Field(nn.Module):
    """Base class. Subclasses define :meth:`drift` and, when stochastic, :meth:`diffusion`.

    Attributes
    ----------
    noise:
        ``None`` for an ODE, else one of :data:`NOISE_TYPES`.
    coupled:
        True when the state is a pair ``(x, y)`` (RevNet-type systems).
    """

    noise: str | None = None
    coupled: bool = False
    #: number of Brownian motions per sample of ``general`` noise (1 for the other structures)
    m: int = 1
    #: True when the noise is declared commutative (``L^j g^r = L^r g^j``), which Milstein
    #: needs for ``general`` noise with m > 1
    commutative: bool = False

    @property
    def stochastic(self) -> bool:
        return self.noise is not None

    def drift(self, t, x):
        raise NotImplementedError(f"{type(self).__name__} defines no drift")

    def diffusion(self, t, x):
        raise ValueError(f"{type(self).__name__} is deterministic: it has no diffusion")

    def increment(self, t, x, dt: float, dw: torch.Tensor | None):
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

    def coefficients(self, t, x):
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

    def to_torchdiffeq(self, shape: tuple[int, ...] | None = None) -> Callable:
        """``func(t, y)`` for ``torchdiffeq.odeint``: the drift on the same tensors."""
        if self.coupled:
            raise ValueError("to_torchdiffeq: coupled fields are not supported; integrate each component")
        return _TorchdiffeqAdapter(self, shape)


class SDEField(Field):
    """``dX = drift(t, X) dt + diffusion(t, X) dW`` from two callables ``(t, x) -> tensor``.

    Callables that are ``nn.Module`` s are registered as submodules (``_f``, ``_g``), so
    their parameters train and are saved once in the state dict.
    """

    def __init__(self, drift: Callable, diffusion: Callable, noise: str = "diagonal", m: int | None = None,
                 commutative: bool = False):
        super().__init__()
        if not callable(drift) or not callable(diffusion):
            raise ValueError("SDEField: drift and diffusion must be callables (t, x) -> tensor")
        self.noise = _check_noise(noise)
        if noise == "general":
            if isinstance(m, bool) or not isinstance(m, int) or m < 1:
                raise ValueError(f"SDEField: noise='general' needs m, a positive number of Brownian motions, got m={m!r}")
            self.m = m
        elif m is not None and m != 1:
            raise ValueError(f"SDEField: m={m!r} Brownian motions needs noise='general' (got noise={noise!r})")
        self.commutative = bool(commutative)
        self._f = drift
        self._g = diffusion

    def drift(self, t, x):
        return self._f(t, x)

    def diffusion(self, t, x):
        return self._g(t, x)

    def extra_repr(self):
        return f"noise={self.noise!r}" + (f", m={self.m}" if self.noise == "general" else "")


class ODEField(Field):
    """``u' = drift(t, u)``."""

    def __init__(self, drift: Callable):
        super().__init__()
        if not callable(drift):
            raise ValueError("ODEField: drift must be a callable (t, x) -> tensor")
        self._f = drift

    def drift(self, t, x):
        return self._f(t, x)


class CoupledField(Field):
    """The coupled system ``X' = f1(t, Y)``, ``Y' = f2(t, X)`` of RevNet; the state is ``(x, y)``.

    ``drift(t, (x, y))`` returns ``(f1(t, y), f2(t, x))``; the RevNet update itself is
    the scheme :class:`sdenet.schemes.CoupledEuler`.
    """

    coupled = True

    def __init__(self, f1: Callable, f2: Callable):
        super().__init__()
        if not callable(f1) or not callable(f2):
            raise ValueError("CoupledField: f1 and f2 must be callables (t, state) -> tensor")
        self._f1 = f1
        self._f2 = f2

    def f1(self, t, y):
        return self._f1(t, y)

    def f2(self, t, x):
        return self._f2(t, x)

    def drift(self, t, state):
        x, y = state
        return self._f1(t, y), self._f2(t, x)


class _TorchsdeAdapter(nn.Module):
    sde_type = "ito"

    def __init__(self, field: Field, shape):
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

    def _unflat(self, y):
        return y if self.shape is None else y.reshape((y.shape[0],) + self.shape)

    def f(self, t, y):
        return self.field.drift(t, self._unflat(y)).reshape(y.shape[0], -1)

    def g(self, t, y):
        g = self.field.diffusion(t, self._unflat(y))
        if self.noise_type == "general":
            return g.reshape(y.shape[0], -1, g.shape[-1])
        g = g.expand(self._unflat(y).shape).reshape(y.shape[0], -1)
        return g if self.noise_type == "diagonal" else g.unsqueeze(-1)


class _TorchdiffeqAdapter(nn.Module):
    def __init__(self, field: Field, shape):
        super().__init__()
        self.field = field
        self.shape = None if shape is None else tuple(shape)

    def forward(self, t, y):
        if self.shape is None:
            return self.field.drift(t, y)
        x = y.reshape((y.shape[0],) + self.shape)
        return self.field.drift(t, x).reshape(y.shape)
