"""Stochastic schemes of weak Euler type: the simplified weak Euler scheme (stochastic depth,
shake-shake), Euler–Maruyama and the LM stochastic-depth scheme."""

from __future__ import annotations

import torch

from ..laws import DropBernoulli, Gaussian, NoiseLaw, is_law
from .base import Scheme, _at, _coefficient, _fits, _shown, _TwoStep
from .deterministic import Euler

__all__ = ["WeakEuler", "EulerMaruyama", "StochasticLM"]


class _LawDriven(Scheme):
    """What every scheme driven by a law shares: the law (Gaussian by default), checked when
    the scheme is built, and the draw of its increments."""

    stochastic = True

    def __init__(self, law: NoiseLaw | None = None):
        law = Gaussian() if law is None else law
        if not is_law(law):
            raise ValueError(f"{type(self).__name__}: law must be an sdenet NoiseLaw, got {law!r}")
        self.law = law

    def draw(self, field, x, dt, generator=None, dw=None):
        """Increments of the law: drawn from ``generator``, or derived from given Brownian
        increments ``dw`` by :meth:`~sdenet.NoiseLaw.from_gaussian`."""
        if dw is not None:
            return self.law.from_gaussian(dw, dt)
        return self.law.sample(field.noise_shape(x), dt, generator=generator, device=x.device, dtype=x.dtype)


class WeakEuler(_LawDriven):
    """The simplified weak Euler scheme ``X_{n+1} = X_n + f Δt + g ΔŴ_n``.

    ``ΔŴ_n`` is drawn from ``law`` with the field's noise structure. It converges
    weakly with order 1 whenever the law satisfies condition (5); stochastic depth
    (``DropBernoulli`` at p ≠ ½) only reaches order ½. Shake-shake is this scheme with
    ``Uniform`` increments at Δt = 1, stochastic depth with ``DropBernoulli``.
    """

    order = 1
    stochastic = True
    name = "weak_euler"
    aliases = ("weak_euler", "weak")
    takes_law = True

    @property
    def weak_order(self):
        return min(1.0, self.law.weak_order)

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
            if not (
                f is x
                or (
                    isinstance(f, Tensor)
                    and f.shape == x.shape
                    and f.dtype == x.dtype
                    and f.data_ptr() != x.data_ptr()
                )
                or _fits(f, x)
            ):
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
    aliases = ("euler_maruyama", "em")
    takes_law = False
    only_gaussian = "; use weak_euler for another law"

    def __init__(self):
        super().__init__(Gaussian())

    def __repr__(self):
        return "EulerMaruyama()"


class StochasticLM(_TwoStep, WeakEuler):
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
    name = "stochastic_lm"
    aliases = ("stochastic_lm", "lm_sd")
    options = ("g",)

    def __init__(self, g=0.0, law: NoiseLaw | None = None):
        super().__init__(law)
        self.g = _coefficient("StochasticLM", "g", g)

    def coefficient(self, n: int):
        return _at(self.g, n)

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
        return f"StochasticLM(g={_shown(self.g)}, law={self.law!r})"
