"""Talay–Tubaro extrapolation: weak order 2 from any weak order-1 scheme.

For a scheme of weak order ``p`` the error expands as ``E φ(X_N^{Δt}) − E φ(X(T)) =
C Δt^p + O(Δt^{p+1})`` (Talay & Tubaro 1990), so

    (2^p E_{Δt/2} − E_{Δt}) / (2^p − 1)

cancels the leading term; for ``p = 1`` this is ``2 E_{Δt/2} − E_{Δt}``, of weak order 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["extrapolate", "monte_carlo"]


def extrapolate(expectation: Callable[[float], Any], dt: float, order: float = 1.0) -> Any:
    """``(2^p E(Δt/2) − E(Δt)) / (2^p − 1)`` with ``p = order`` (``2E(Δt/2) − E(Δt)`` for p = 1).

    ``expectation(dt)`` returns ``E φ(X_N)`` at step ``dt``: a number, a tensor, or a pair
    ``(mean, stderr)`` from independent Monte Carlo runs (as :func:`monte_carlo` returns), in
    which case the result is a pair too, with the standard error
    ``√(4^p se(Δt/2)² + se(Δt)²)/(2^p − 1)``.
    """
    try:
        dt = float(dt)
        order = float(order)
    except (TypeError, ValueError):
        raise ValueError(
            f"extrapolate: dt and order must be numbers, got dt={dt!r}, order={order!r}"
        ) from None
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"extrapolate: dt must be positive and finite, got {dt!r}")
    if not (order > 0 and math.isfinite(order)):
        raise ValueError(f"extrapolate: order must be positive, got {order!r}")
    if not callable(expectation):
        raise ValueError("extrapolate: expectation must be a callable dt -> E φ(X_N)")
    c = 2.0**order
    fine, coarse = expectation(dt / 2), expectation(dt)
    if isinstance(fine, tuple) != isinstance(coarse, tuple):
        raise ValueError("extrapolate: expectation must return the same kind of value at every dt")
    if isinstance(fine, tuple):
        (mf, sf), (mc, sc) = fine, coarse
        return (c * mf - mc) / (c - 1.0), math.sqrt(c * c * sf * sf + sc * sc) / (c - 1.0)
    return (c * fine - coarse) / (c - 1.0)


def monte_carlo(
    field: Any,
    scheme: Any,
    x0: torch.Tensor,
    t1: float,
    dt: float,
    phi: Callable[[torch.Tensor], torch.Tensor],
    paths: int,
    generator: torch.Generator | None = None,
    chunk: int = 1 << 16,
) -> tuple[float, float]:
    """``(mean, stderr)`` of ``phi(X_N)`` over ``paths`` runs of :func:`sdenet.integrate` from
    ``x0`` (one sample, shape ``(1, ...)``, repeated), in chunks; ``phi`` maps a batch of
    final states to one value per sample."""
    from .integrate import integrate

    if not isinstance(x0, torch.Tensor) or x0.dim() < 1 or x0.shape[0] != 1:
        raise ValueError("monte_carlo: x0 must be one sample, a tensor of shape (1, ...)")
    if isinstance(paths, bool) or not isinstance(paths, int) or paths < 2:
        raise ValueError(f"monte_carlo: paths must be an integer >= 2, got {paths!r}")
    total = total2 = 0.0
    done = 0
    with torch.no_grad():
        while done < paths:
            n = min(chunk, paths - done)
            x = integrate(
                field,
                scheme,
                x0.expand((n,) + tuple(x0.shape[1:])).clone(),
                t1=t1,
                dt=dt,
                generator=generator,
            )
            v = phi(x).reshape(n, -1).sum(1).to(torch.float64)
            total += float(v.sum())
            total2 += float((v * v).sum())
            done += n
    mean = total / paths
    var = max(total2 / paths - mean * mean, 0.0) * paths / (paths - 1)
    return mean, math.sqrt(var / paths)
