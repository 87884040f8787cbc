"""Exact expectations of one-step schemes on scalar linear SDEs, and a nonlinear test SDE.

On a scalar linear SDE ``dX = (αX + β) dt + (γX + δ) dW`` every one-step scheme in
:mod:`sdenet.schemes` with at most quadratic dependence on the increment (weak Euler,
Euler–Maruyama, Milstein, Platen, the weak order-2 Taylor scheme) maps

    X_{n+1} = P(ΔŴ_n) X_n + Q(ΔŴ_n),        P, Q polynomials of degree ≤ 2,

whatever the law of ``ΔŴ``. :func:`step_polynomials` reads ``P`` and ``Q`` off the
*implementation* (one step from ``X = 0`` and ``X = 1`` at three increments, the law's
:meth:`~sdenet.NoiseLaw.from_gaussian` bypassed; a fourth increment checks the degree), and
:func:`scheme_moment` turns them into the exact ``E X_N^k`` from the law's exact moments
(:meth:`~sdenet.NoiseLaw.moment`). For additive noise with ``P`` constant and ``Q`` linear
(OU under every scheme here) :func:`scheme_cos` gives the exact ``E cos(X_N)`` through the
law's characteristic function: ``X_N = P^N x0 + Σ_n P^{N−1−n} q ΔŴ_n``, so
``E e^{iX_N} = e^{iP^N x0} Π_n φ(P^{N−1−n} q)``.

These make weak-order statements exact: the bias of the scheme as a function of Δt, with no
Monte Carlo error, so a fitted slope of 2 (or 1) is a property of the code and the law
together; a Monte Carlo test then checks that the sampled scheme has that expectation.

:class:`Arctan` is the nonlinear test SDE ``dX = −a² sin X cos³X dt + a cos²X dW`` with
``X(t) = arctan(a W(t) + tan x0)`` (Kloeden & Platen 4.4.46), so
``E φ(X(T))`` is a one-dimensional Gaussian integral (Gauss–Hermite, exact to rounding).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .fields import SDEField
from .laws import Gaussian, NoiseLaw

__all__ = ["step_polynomials", "scheme_moment", "scheme_cos", "enumerate_expectation", "Arctan"]

_F64 = torch.float64


def _one_step(field: Any, scheme: Any, x: torch.Tensor, dt: float, dw: torch.Tensor) -> torch.Tensor:
    """One step with the increment ``dw`` used as it is: a copy of the scheme with the
    Gaussian law, whose :meth:`~sdenet.Gaussian.from_gaussian` is the identity (the step's
    formula does not depend on the law, only the distribution of ``ΔŴ`` does)."""
    twin = copy.copy(scheme)
    twin.law = Gaussian()
    out: torch.Tensor
    out, _ = twin.step(field, 0.0, x, dt, twin.init(field, 0.0, x, dt), None, dw=dw)
    return out


def step_polynomials(field: Any, scheme: Any, dt: float) -> tuple[list[float], list[float]]:
    """Coefficients ``(p, q)`` (``p[j]``, ``q[j]`` of ``ΔŴ^j``, j = 0, 1, 2) of one step
    ``X ↦ P(ΔŴ) X + Q(ΔŴ)`` of ``scheme`` on a scalar linear ``field`` (states of shape (B, 1)).

    Raises ``ValueError`` when the step is not of that form (checked at a fourth increment
    and a third state)."""
    s = math.sqrt(dt)
    w = torch.tensor([-1.3 * s, 0.4 * s, 1.1 * s, 2.1 * s, -0.7 * s], dtype=_F64).view(-1, 1)
    x0 = torch.zeros_like(w)
    x1 = torch.ones_like(w)
    q_vals = _one_step(field, scheme, x0, dt, w).view(-1)
    p_vals = _one_step(field, scheme, x1, dt, w).view(-1) - q_vals
    wv = w.view(-1).numpy()
    vander = np.vander(wv[:3], 3, increasing=True)
    p = np.linalg.solve(vander, p_vals[:3].detach().numpy())
    q = np.linalg.solve(vander, q_vals[:3].detach().numpy())

    # check: the quadratic reproduces the other increments and X = 2.5 is affine
    def fit(c: Any, v: Any) -> Any:
        return c[0] + c[1] * v + c[2] * v * v

    x2 = torch.full_like(w, 2.5)
    x2_vals = _one_step(field, scheme, x2, dt, w).view(-1).detach().numpy()
    scale = 1.0 + np.abs(p_vals.detach().numpy()).max() + np.abs(q_vals.detach().numpy()).max()
    bad = (
        np.abs(fit(p, wv) - p_vals.detach().numpy()).max()
        + np.abs(fit(q, wv) - q_vals.detach().numpy()).max()
        + np.abs(fit(p, wv) * 2.5 + fit(q, wv) - x2_vals).max()
    )
    if bad > 1e-9 * scale:
        raise ValueError(
            f"step_polynomials: {scheme!r} is not X ↦ P(ΔŴ) X + Q(ΔŴ) with quadratic P, Q on this field"
        )
    return [float(v) for v in p], [float(v) for v in q]


def _poly_mul(a: list[float], b: list[float]) -> list[float]:
    out = [0.0] * (len(a) + len(b) - 1)
    for i, u in enumerate(a):
        for j, v in enumerate(b):
            out[i + j] += u * v
    return out


def _poly_pow(a: list[float], k: int) -> list[float]:
    out = [1.0]
    for _ in range(k):
        out = _poly_mul(out, a)
    return out


def _expect(poly: list[float], law: NoiseLaw, dt: float) -> float:
    return sum(c * law.moment(j, dt) for j, c in enumerate(poly))


def scheme_moment(
    field: Any, scheme: Any, x0: float, T: float, dt: float, k: int, law: NoiseLaw | None = None
) -> float:
    """Exact ``E X_N^k``, ``N = T/Δt``, of ``scheme`` on a scalar linear ``field`` from ``x0``
    with increments of ``law`` (default: the scheme's law), by the moment recursion
    ``E X_{n+1}^j = Σ_i C(j, i) E[P^i Q^{j−i}] E X_n^i``."""
    law_: NoiseLaw = scheme.law if law is None else law
    n = round(T / dt)
    p, q = step_polynomials(field, scheme, dt)
    coef = [
        [_expect(_poly_mul(_poly_pow(p, i), _poly_pow(q, j - i)), law_, dt) for i in range(j + 1)]
        for j in range(k + 1)
    ]
    mom: list[float] = [x0**j for j in range(k + 1)]
    for _ in range(n):
        mom = [sum(math.comb(j, i) * coef[j][i] * mom[i] for i in range(j + 1)) for j in range(k + 1)]
    return mom[k]


def scheme_cos(
    field: Any, scheme: Any, x0: float, T: float, dt: float, law: NoiseLaw | None = None, omega: float = 1.0
) -> float:
    """Exact ``E cos(ω X_N)`` of ``scheme`` on a linear field with additive noise whose step is
    ``X ↦ P X + q ΔŴ + r`` (``P``, ``q``, ``r`` constants), through the law's characteristic function."""
    law_: NoiseLaw = scheme.law if law is None else law
    n = round(T / dt)
    p, q = step_polynomials(field, scheme, dt)
    if abs(p[1]) + abs(p[2]) + abs(q[2]) > 1e-12 * (1 + abs(p[0]) + abs(q[1])):
        raise ValueError("scheme_cos: needs a step X ↦ P X + q ΔŴ + r with constant P (additive noise)")
    a, c, r = p[0], q[1], q[0]
    mean = x0
    phase = 1.0 + 0j
    for _ in range(n):  # X_{n+1} = a X_n + r + c ΔŴ_n: multiply the earlier noise by a
        mean = a * mean + r
    for i in range(n):
        phase *= law_.characteristic(omega * c * a ** (n - 1 - i), dt)
    return (complex(math.cos(omega * mean), math.sin(omega * mean)) * phase).real


class Arctan:
    """``dX = −a² sin X cos³X dt + a cos²X dW`` on ``[0, T]``: ``X(t) = arctan(a W(t) + tan x0)``.

    ``exact(phi)`` is ``E φ(X(T))`` by Gauss–Hermite quadrature (``nodes`` points) of
    ``φ(arctan(a √T z + tan x0))`` against the standard normal; ``phi`` is a callable on
    numpy arrays. ``E tan X(T) = tan x0`` and ``E tan² X(T) = tan² x0 + a² T`` hold exactly.
    """

    name = "arctan"

    def __init__(self, a: float = 1.0, x0: float = 0.5, T: float = 1.0) -> None:
        self.a, self.x0, self.T = float(a), float(x0), float(T)
        if not (abs(self.x0) < math.pi / 2 and self.T > 0):
            raise ValueError("Arctan: needs |x0| < π/2 and T > 0")

    def field(self) -> SDEField:
        a = self.a
        return SDEField(
            lambda t, x: -(a * a) * torch.sin(x) * torch.cos(x) ** 3,
            lambda t, x: a * torch.cos(x) ** 2,
            noise="diagonal",
        )

    def solution(self, w_T: torch.Tensor) -> torch.Tensor:
        return torch.atan(self.a * w_T + math.tan(self.x0))

    def exact(self, phi: Callable[[Any], Any], nodes: int = 200) -> float:
        z, w = np.polynomial.hermite_e.hermegauss(nodes)
        values = phi(np.arctan(self.a * math.sqrt(self.T) * z + math.tan(self.x0)))
        return float(np.sum(w * values) / math.sqrt(2.0 * math.pi))

    def __repr__(self) -> str:
        return f"Arctan(a={self.a}, x0={self.x0}, T={self.T})"


def _support(law: NoiseLaw, dt: float) -> tuple[list[float], list[float]]:
    """``(values, probabilities)`` of a discrete law at step ``dt`` (the law declares it)."""
    support = getattr(law, "support", None)
    out: tuple[list[float], list[float]] | None = support(dt) if callable(support) else None
    if out is not None:
        return out
    raise ValueError(
        f"enumerate_expectation: needs a discrete law (Rademacher, ThreePoint, DropBernoulli), got {law!r}"
    )


def enumerate_expectation(
    field: Any,
    scheme: Any,
    x0: torch.Tensor,
    T: float,
    steps: int,
    phi: Callable[[torch.Tensor], torch.Tensor],
    max_paths: int = 1 << 21,
) -> float:
    """Exact ``E φ(X_N)`` of a scheme with a discrete law (one increment per sample: ``sample``
    noise, or ``diagonal`` noise on one-element states), by running :func:`sdenet.integrate`
    on every one of the ``k^N`` increment sequences and weighting them by their probabilities.

    ``x0`` has shape ``(1, ...)``; ``phi`` maps the batch of final states to one value per
    sample. No Monte Carlo error: a fitted slope over these is the scheme's weak order on a
    nonlinear SDE as it is, for the law it uses.
    """
    from .integrate import integrate

    dt = T / steps
    values, probs = _support(scheme.law, dt)
    k = len(values)
    if k**steps > max_paths:
        raise ValueError(
            f"enumerate_expectation: {k}^{steps} = {k**steps} sequences exceed max_paths={max_paths}"
        )
    idx = torch.cartesian_prod(*[torch.arange(k)] * steps).view(-1, steps)
    weights = torch.tensor(probs, dtype=_F64)[idx].prod(1)
    x = x0.to(_F64).expand((idx.shape[0],) + tuple(x0.shape[1:])).clone()
    shape = field.noise_shape(x)
    dw = torch.tensor(values, dtype=_F64)[idx].T.reshape((steps, idx.shape[0]) + (1,) * (len(shape) - 1))
    twin = copy.copy(scheme)
    twin.law = Gaussian()  # the enumerated increments are used as they are
    with torch.no_grad():
        xN = integrate(field, twin, x, t1=T, steps=steps, dw=dw.expand((steps,) + tuple(shape)))
    return float((weights * phi(xN).reshape(idx.shape[0], -1).sum(1).to(_F64)).sum())
