"""Deterministic schemes: forward Euler (ResNet), Heun (FractalNet), the Neumann-series
backward Euler (PolyNet) and the two-step linear multistep scheme (LM-ResNet)."""

from __future__ import annotations

import torch

from .base import Scheme, _at, _coefficient, _fits, _recording, _shown, _TwoStep

__all__ = ["Euler", "Heun", "NeumannEuler", "LinearMultistep"]


class Euler(Scheme):
    """Forward Euler ``u_{n+1} = u_n + Δt f(t_n, u_n)`` (ResNet). Order 1."""

    order = 1
    name = "euler"
    aliases = ("euler", "forward_euler")

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
    aliases = ("heun",)
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
    aliases = ("neumann", "neumann_euler")
    options = ("terms",)

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


class LinearMultistep(_TwoStep):
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

    def __init__(self, k=0.0):
        self.k = _coefficient("LinearMultistep", "k", k)

    def coefficient(self, n: int):
        return _at(self.k, n)

    name = "lm"
    aliases = ("lm", "linear_multistep")
    options = ("k",)

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
        return f"LinearMultistep(k={_shown(self.k)})"
