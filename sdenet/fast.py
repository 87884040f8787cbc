"""An in-place fast path of :func:`sdenet.integrate` for fields that declare an affine form.

A :class:`LinearSDEField` is ``dX = (a X + b) dt + (c X + d) dW`` with constant float
coefficients (GBM, Ornstein–Uhlenbeck, any linear test SDE). It declares its coefficients
(:meth:`LinearSDEField.affine`), so a weak Euler step can be written in place on one state
buffer, with the increments drawn into reused buffers:

    X ← (1 + aΔt) X + bΔt + (c X + d) ΔŴ,

which is exactly the loop a user writes by hand for speed (no new tensor per step, two or
three passes over the state instead of six). :func:`fast_integrate` takes this path only
when

* the scheme is plain :class:`~sdenet.schemes.WeakEuler` or
  :class:`~sdenet.schemes.EulerMaruyama` (not a subclass: a subclass may step differently),
* the field is a :class:`LinearSDEField` whose coefficients are Python numbers,
* the law is one of the built-in laws (exact type),
* no gradient is needed (grad mode off, or ``x0`` does not require grad),

and returns ``None`` otherwise, so :func:`~sdenet.integrate.integrate` runs the generic
path, which stays plain autograd. The increments come from the same generator calls as
:meth:`NoiseLaw.sample <sdenet.laws.NoiseLaw.sample>` makes, so both paths give the same
numbers up to floating-point rounding (the update's arithmetic is grouped differently);
``tests/test_fast.py`` checks this for every law and noise structure.

Rademacher increments are drawn as in :func:`sdenet.laws.random_bits` (64 signs per 64-bit
draw) and applied as ``X ← (1 + aΔt) X + 2d√Δt·bit − d√Δt`` without converting the bits to
a float tensor first.

``ENABLED = False`` switches the fast path off (benchmarks and tests compare the two).
"""

from __future__ import annotations

import math

import torch

from .fields import Field, _check_noise
from .laws import DropBernoulli, Gaussian, Rademacher, ThreePoint, Uniform
from .schemes import EulerMaruyama, WeakEuler

__all__ = ["LinearSDEField", "fast_integrate", "ENABLED"]

#: set to False to force the generic path everywhere
ENABLED = True

_LAWS = (Gaussian, Uniform, Rademacher, ThreePoint, DropBernoulli)


def _coefficient(name, value):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 and value.dim() > 0:
            raise ValueError(f"LinearSDEField: {name} must be a number or a one-element tensor")
        return value
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"LinearSDEField: {name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"LinearSDEField: {name} must be finite, got {value!r}")
    return out


class LinearSDEField(Field):
    """``dX = (a X + b) dt + (c X + d) dW`` elementwise, with a noise structure.

    ``a, b, c, d`` are numbers (or one-element tensors, e.g. trainable parameters: then
    only the generic path runs). GBM is ``a = μ, c = σ``; Ornstein–Uhlenbeck ``a = −θ,
    d = σ``. ``drift`` and ``diffusion`` are the formulas themselves, so the generic path
    (and autograd) see an ordinary field; :meth:`affine` declares the coefficients for
    the in-place fast path of :func:`fast_integrate`.
    """

    def __init__(self, a=0.0, b=0.0, c=0.0, d=0.0, noise: str = "diagonal"):
        super().__init__()
        self.noise = _check_noise(noise)
        # an nn.Parameter coefficient is registered by nn.Module's attribute assignment
        self.a, self.b, self.c, self.d = (_coefficient(n, v) for n, v in zip("abcd", (a, b, c, d)))

    def drift(self, t, x):
        return self.a * x + self.b

    def diffusion(self, t, x):
        if isinstance(self.c, float) and self.c == 0.0 and not isinstance(self.d, torch.Tensor):
            return torch.full_like(x, self.d)
        return self.c * x + self.d

    def affine(self):
        """``(a, b, c, d)`` as floats when all are Python numbers, else None (no fast path)."""
        coeffs = (self.a, self.b, self.c, self.d)
        if all(isinstance(v, float) for v in coeffs):
            return coeffs
        return None

    def extra_repr(self):
        return f"a={self.a}, b={self.b}, c={self.c}, d={self.d}, noise={self.noise!r}"


class _Draw:
    """Draws ``ΔŴ`` of one shape into reused buffers, with the generator calls of ``law.sample``."""

    def __init__(self, law, shape, dt, generator, like: torch.Tensor):
        self.law, self.shape, self.dt, self.gen = law, tuple(shape), dt, generator
        self.n = math.prod(self.shape)
        self.device, self.dtype = like.device, like.dtype
        self.buf = torch.empty(self.shape, device=self.device, dtype=self.dtype)
        self.bits = None
        if type(law) is Rademacher and self.n > law.small:
            words = (self.n + 63) // 64
            self.words = words
            self.bits = torch.empty((words, 8, 8), device=self.device, dtype=torch.uint8)
            self.shifts = torch.arange(8, dtype=torch.uint8, device=self.device)

    def rademacher_bits(self) -> torch.Tensor:
        """``n`` fair bits (0/1, uint8) in the shape of ΔŴ, as :func:`sdenet.laws.random_bits`."""
        w = torch.randint(-(2**63), 2**63 - 1, (self.words,), dtype=torch.int64, generator=self.gen,
                          device=self.device)
        torch.bitwise_right_shift(w.view(torch.uint8).view(self.words, 8, 1), self.shifts, out=self.bits)
        self.bits.bitwise_and_(1)
        return self.bits.view(-1)[: self.n].view(self.shape)

    def __call__(self) -> torch.Tensor:
        law, buf, dt, gen = self.law, self.buf, self.dt, self.gen
        kind = type(law)
        if kind is Gaussian:
            torch.randn(self.shape, generator=gen, out=buf)
            return buf.mul_(math.sqrt(dt))
        if kind is Uniform:
            a = math.sqrt(3.0 * dt)
            return buf.uniform_(-a, a, generator=gen)
        if kind is Rademacher and self.bits is not None:
            s = math.sqrt(dt)
            return buf.copy_(self.rademacher_bits()).mul_(2.0 * s).sub_(s)
        # the other laws (and small Rademacher draws): the law's own sampler
        return law.sample(self.shape, dt, generator=gen, device=self.device, dtype=self.dtype)


def _applicable(field, scheme, x) -> bool:
    if not ENABLED or type(scheme) not in (WeakEuler, EulerMaruyama):
        return False
    if not isinstance(field, LinearSDEField) or field.affine() is None:
        return False
    if type(scheme.law) not in _LAWS:
        return False
    if torch.is_grad_enabled() and x.requires_grad:
        return False
    return True


def fast_integrate(field, scheme, x0, t0, dt, steps, generator, save):
    """Weak Euler in place on a :class:`LinearSDEField`; ``None`` when the fast path does not apply.

    ``x0`` is never modified (the loop runs on a copy). Arguments are those
    :func:`~sdenet.integrate.integrate` has already checked. The step is specialised once
    per call (a closure per law), so each step is two or three tensor ops and no Python
    branching.
    """
    if not _applicable(field, scheme, x0):
        return None
    a, b, c, d = field.affine()
    law = scheme.law
    kind = type(law)
    grow = 1.0 + a * dt
    shift = b * dt
    s = math.sqrt(dt)
    with torch.no_grad():
        x = x0.detach().clone()
        draw = _Draw(law, field.noise_shape(x), dt, generator, x)
        buf, shape, gen = draw.buf, draw.shape, generator
        if c != 0.0:  # multiplicative noise: (c X + d) ΔŴ from the old X, then (1 + aΔt) X + bΔt
            tmp = torch.empty_like(x)

            def step():
                dw = draw()
                torch.mul(x, c, out=tmp).add_(d).mul_(dw)
                x.mul_(grow).add_(tmp)
                if shift != 0.0:
                    x.add_(shift)
        elif kind is Rademacher and draw.bits is not None:
            hi, lo = 2.0 * d * s, shift - d * s

            def step():  # X ← (1 + aΔt) X + 2d√Δt·bit + (bΔt − d√Δt)
                x.mul_(grow).add_(draw.rademacher_bits(), alpha=hi).add_(lo)
        elif kind is Gaussian:
            alpha = d * s

            def step():  # ΔŴ = √Δt z with z from randn: √Δt folded into the update
                torch.randn(shape, generator=gen, out=buf)
                x.mul_(grow).add_(buf, alpha=alpha)
                if shift != 0.0:
                    x.add_(shift)
        elif kind is Uniform:
            u = math.sqrt(3.0 * dt)

            def step():
                buf.uniform_(-u, u, generator=gen)
                x.mul_(grow).add_(buf, alpha=d)
                if shift != 0.0:
                    x.add_(shift)
        else:

            def step():
                x.mul_(grow).add_(draw(), alpha=d)
                if shift != 0.0:
                    x.add_(shift)

        if save == "all":
            path = [x0.detach().clone()]
            for _ in range(steps):
                step()
                path.append(x.clone())
            return torch.stack(path)
        for _ in range(steps):
            step()
    return x
