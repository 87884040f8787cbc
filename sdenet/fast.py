"""The affine in-place kernel of weak Euler, and the switch of the loop's in-place path.

A :class:`LinearSDEField` is ``dX = (a X + b) dt + (c X + d) dW`` with constant float
coefficients (GBM, Ornstein–Uhlenbeck, any linear test SDE). It declares its coefficients
(:meth:`LinearSDEField.affine`), so a weak Euler step can be written in place on one state
buffer, with the increments drawn into reused buffers:

    X ← (1 + aΔt) X + bΔt + (c X + d) ΔŴ,

which is exactly the loop a user writes by hand for speed (no new tensor per step, two or
three passes over the state instead of six). The field offers this kernel
(:meth:`LinearSDEField.inplace_weak_euler`); :meth:`sdenet.WeakEuler.inplace` asks any field
for one, and the one stepping loop (:mod:`sdenet.loop`) runs it wherever it runs in place:
where a step is exactly weak Euler (``WeakEuler``, ``EulerMaruyama``; ``scheme.euler_step``),
the coefficients are Python numbers and no gradient is needed (grad mode off, or ``x0`` does
not require grad). Any other field gets the loop's generic in-place kernel, and where a
gradient is needed the loop runs plain autograd. The increments come from the same generator
calls as :meth:`NoiseLaw.sample <sdenet.laws.NoiseLaw.sample>` makes
(:meth:`NoiseLaw.draws <sdenet.laws.NoiseLaw.draws>`), so every path gives the same numbers up
to floating-point rounding (the update's arithmetic is grouped differently);
``tests/test_fast.py`` checks this for every law and noise structure.

Rademacher increments are drawn as in :func:`sdenet.laws.random_bits` (64 signs per 64-bit
draw) and applied as ``X ← (1 + aΔt) X + 2d√Δt·bit − d√Δt`` without converting the bits to
a float tensor first.

``ENABLED = False`` switches every in-place path of the loop off (benchmarks and tests compare
the two): the switch is :data:`sdenet.loop.ENABLED`, which ``sdenet.fast.ENABLED`` reads and
sets. :func:`fast_integrate` is the affine path alone. This module is a user-facing layer over
the loop: it imports :mod:`sdenet.loop`, which never imports it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import torch

from . import loop as _loop
from ._checks import checked_float
from .fields import Field, Time, _check_noise
from .laws import Draw
from .loop import inplace_allowed, run_steps

#: an in-place kernel: ``kernel(t, x, take) -> accepted`` (``take()`` draws the increment)
Kernel = Callable[[Time, torch.Tensor, Callable[[], Draw]], bool]

__all__ = ["LinearSDEField", "fast_integrate", "ENABLED"]

#: set to False to force the generic path everywhere: the loop's own switch
#: (:data:`sdenet.loop.ENABLED`), read and set through this module (see ``_Module`` below)
ENABLED: bool


def _coefficient(name: str, value: Any) -> float | torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 and value.dim() > 0:
            raise ValueError(f"LinearSDEField: {name} must be a number or a one-element tensor")
        return value
    return checked_float(
        value,
        "LinearSDEField: {name} must be a number, got {value!r}",
        "LinearSDEField: {name} must be finite, got {value!r}",
        name=name,
    )


class LinearSDEField(Field):
    """``dX = (a X + b) dt + (c X + d) dW`` elementwise, with a noise structure.

    ``a, b, c, d`` are numbers (or one-element tensors, e.g. trainable parameters: then
    only the generic path runs). GBM is ``a = μ, c = σ``; Ornstein–Uhlenbeck ``a = −θ,
    d = σ``. ``drift`` and ``diffusion`` are the formulas themselves, so the generic path
    (and autograd) see an ordinary field; :meth:`affine` declares the coefficients for
    the in-place fast path of :func:`fast_integrate`.
    """

    a: float | torch.Tensor
    b: float | torch.Tensor
    c: float | torch.Tensor
    d: float | torch.Tensor

    def __init__(
        self,
        a: float | torch.Tensor = 0.0,
        b: float | torch.Tensor = 0.0,
        c: float | torch.Tensor = 0.0,
        d: float | torch.Tensor = 0.0,
        noise: str = "diagonal",
    ) -> None:
        super().__init__()
        self.noise = _check_noise(noise)
        # an nn.Parameter coefficient is registered by nn.Module's attribute assignment
        self.a, self.b, self.c, self.d = (_coefficient(n, v) for n, v in zip("abcd", (a, b, c, d)))

    def drift(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        return self.a * x + self.b

    def diffusion(self, t: Time, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.c, float) and self.c == 0.0 and not isinstance(self.d, torch.Tensor):
            return torch.full_like(x, self.d)
        return self.c * x + self.d

    def affine(self) -> tuple[float, float, float, float] | None:
        """``(a, b, c, d)`` as floats when all are Python numbers, else None (no fast path)."""
        coeffs = (self.a, self.b, self.c, self.d)
        a, b, c, d = coeffs
        if isinstance(a, float) and isinstance(b, float) and isinstance(c, float) and isinstance(d, float):
            return a, b, c, d
        return None

    def inplace_weak_euler(self, dt: float) -> Kernel | None:
        """The weak Euler step ``X ← (1 + aΔt) X + bΔt + (c X + d) ΔŴ`` in place, as a kernel of
        :meth:`sdenet.Scheme.inplace` (``None`` unless the coefficients are Python numbers)."""
        coeffs = self.affine()
        if coeffs is None:
            return None
        a, b, c, d = coeffs
        grow, shift_b = 1.0 + a * dt, b * dt
        tmp: list[torch.Tensor] = []

        def kernel(t: Time, x: torch.Tensor, take: Callable[[], Draw]) -> bool:
            u, scale, shift = take()
            if c != 0.0:  # multiplicative noise: (c X + d) ΔŴ from the old X
                if not tmp or tmp[0].shape != x.shape:
                    tmp[:] = [torch.empty_like(x)]
                g = torch.mul(x, c, out=tmp[0]).add_(d)
                x.mul_(grow)
                if shift != 0.0:
                    x.add_(g, alpha=shift)
                x.addcmul_(g, u, value=scale)
                const = shift_b
            else:  # additive noise: X ← (1 + aΔt) X + d·scale·u + (bΔt + d·shift)
                x.mul_(grow).add_(u, alpha=d * scale)
                const = shift_b + d * shift
            if const != 0.0:
                x.add_(const)
            return True

        return kernel

    def extra_repr(self) -> str:
        return f"a={self.a}, b={self.b}, c={self.c}, d={self.d}, noise={self.noise!r}"


def _applicable(field: Any, scheme: Any, x: torch.Tensor) -> bool:
    """Whether :func:`fast_integrate` runs: a plain weak Euler step on a field with a numeric affine
    form, in-place path enabled, no gradient needed through ``x`` (the last two:
    :func:`~sdenet.loop.inplace_allowed`)."""
    if getattr(scheme, "euler_law", None) is None:
        return False
    own = getattr(field, "inplace_weak_euler", None)
    if not callable(own) or field.affine() is None:
        return False
    return inplace_allowed(x)


def fast_integrate(
    field: Any,
    scheme: Any,
    x0: torch.Tensor,
    t0: float,
    dt: float,
    steps: int,
    generator: torch.Generator | None,
    save: str,
) -> torch.Tensor | None:
    """Weak Euler in place on a :class:`LinearSDEField`; ``None`` when the affine path does not apply.

    ``x0`` is never modified (the loop runs on a copy). Arguments are those
    :func:`~sdenet.integrate.integrate` has already checked. It is the one loop
    (:func:`sdenet.loop.run_steps`) without the first step's boundary checks.
    """
    if not _applicable(field, scheme, x0):
        return None
    path: list[torch.Tensor] | None = [x0.detach().clone()] if save == "all" else None
    x: torch.Tensor
    with torch.no_grad():
        x, _ = run_steps(
            field,
            scheme,
            x0,
            scheme.init(field, t0, x0, dt),
            t0=t0,
            dt=dt,
            steps=steps,
            generator=generator,
            save=path,
        )
    return torch.stack(path) if path is not None else x


class _Module(types.ModuleType):
    """This module's type: ``ENABLED`` reads and sets :data:`sdenet.loop.ENABLED`, so that
    ``sdenet.fast.ENABLED = False`` keeps switching the loop's in-place path off while the loop
    owns the switch (and imports nothing from here)."""

    @property
    def ENABLED(self) -> bool:
        return _loop.ENABLED

    @ENABLED.setter
    def ENABLED(self, value: bool) -> None:
        _loop.ENABLED = value


sys.modules[__name__].__class__ = _Module
