"""Slopes and verdicts: the weighted regression of ``log e`` on ``log Δt`` with its 95 %
confidence interval (:func:`fit_slope`), and whether a declared order lies inside it (:func:`verdict`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def bisect(
    inside: Callable[[float], bool], a: float, b: float, close: Callable[[float, float], bool]
) -> float:
    """The boundary between ``a``, where ``inside`` holds, and ``b``, where it does not: halve the
    bracket (at most 200 times) until ``close(a, b)``, and return its midpoint."""
    for _ in range(200):
        m = 0.5 * (a + b)
        if inside(m):
            a = m
        else:
            b = m
        if close(a, b):
            break
    return 0.5 * (a + b)


def _t_cdf_two_sided(t: float, dof: int) -> float:
    """``P(|T| ≤ t)`` for Student's t with an integer ``dof`` (Abramowitz & Stegun 26.7.3–4,
    finite sums in ``θ = arctan(t/√ν)``)."""
    theta = math.atan(t / math.sqrt(dof))
    s, c = math.sin(theta), math.cos(theta)
    if dof % 2:  # odd: (2/π)(θ + sin θ (cos θ + 2/3 cos³θ + … + (2·4…(ν−3))/(1·3…(ν−2)) cos^{ν−2}θ))
        if dof == 1:
            return 2.0 * theta / math.pi
        term, total = c, c
        for k in range(3, dof - 1, 2):
            term *= c * c * (k - 1) / k
            total += term
        return 2.0 / math.pi * (theta + s * total)
    term, total = 1.0, 1.0  # even: sin θ (1 + ½cos²θ + (1·3)/(2·4) cos⁴θ + … )
    for k in range(2, dof - 1, 2):
        term *= c * c * (k - 1) / k
        total += term
    return s * total


def _t975(dof: int) -> float:
    """0.975 quantile of Student's t with ``dof`` degrees of freedom (bisection on the exact
    distribution function; no scipy needed)."""
    dof = max(1, int(dof))
    lo, hi = 0.0, 1.0
    while _t_cdf_two_sided(hi, dof) < 0.95:
        hi *= 2.0
    return bisect(lambda t: _t_cdf_two_sided(t, dof) < 0.95, lo, hi, lambda lo, hi: hi - lo < 1e-13 * hi)


def fit_slope(dts: Sequence[float], errors: Sequence[float], stderr: Sequence[float] | None = None):
    """Least-squares slope of ``log e`` against ``log Δt`` and a 95 % confidence interval.

    The slope ``b`` is the ordinary least-squares fit of ``y_i = log e_i`` on
    ``x_i = log Δt_i``. Its variance is taken as the sum of two parts:

    * the residual part ``s²/Sxx`` (``s²`` = residual variance with ``n − 2`` degrees
      of freedom, ``Sxx = Σ (x_i − x̄)²``): misfit of a straight line, i.e. higher-order
      terms of the error expansion, plus Monte Carlo scatter;
    * the propagated Monte Carlo part ``Σ (x_i − x̄)² v_i / Sxx²`` with
      ``v_i = (se_i/e_i)²``, the delta-method variance of ``log ê_i``.

    Adding both counts the Monte Carlo scatter twice, so the interval is conservative.
    The half-width is ``t_{0.975, n−2}`` times the standard deviation (with two points
    there is no residual and the normal quantile 1.96 is used with the Monte Carlo part
    alone). Returns ``(slope, (lo, hi))``.
    """
    dts = [float(v) for v in dts]
    errors = [float(v) for v in errors]
    n = len(dts)
    if n < 2 or len(errors) != n:
        raise ValueError(
            f"fit_slope: need at least two (dt, error) pairs of equal length, got {n} and {len(errors)}"
        )
    if stderr is None:
        stderr = [0.0] * n
    stderr = [float(v) for v in stderr]
    if len(stderr) != n:
        raise ValueError("fit_slope: stderr must have one entry per dt")
    if any(not (d > 0) for d in dts):
        raise ValueError(f"fit_slope: every dt must be positive, got {dts}")
    if any(not (e > 0) or not math.isfinite(e) for e in errors):
        raise ValueError(f"fit_slope: every error must be positive and finite to take its log, got {errors}")
    x = [math.log(d) for d in dts]
    y = [math.log(e) for e in errors]
    xbar = sum(x) / n
    ybar = sum(y) / n
    sxx = sum((xi - xbar) ** 2 for xi in x)
    if sxx == 0:
        raise ValueError("fit_slope: the dts must not all be equal")
    slope = sum((xi - xbar) * (yi - ybar) for xi, yi in zip(x, y)) / sxx
    var_mc = sum((xi - xbar) ** 2 * (se / e) ** 2 for xi, se, e in zip(x, stderr, errors)) / sxx**2
    if n > 2:
        intercept = ybar - slope * xbar
        s2 = sum((yi - intercept - slope * xi) ** 2 for xi, yi in zip(x, y)) / (n - 2)
        var = s2 / sxx + var_mc
        q = _t975(n - 2)
    else:
        var = var_mc
        q = 1.96
    half = q * math.sqrt(var)
    return slope, (slope - half, slope + half)


# =========================================================================== weak order


def verdict(declared, ci) -> dict:
    """Whether the declared order lies in the slope's 95 % confidence interval.

    ``{"declared": d, "inside": bool | None, "text": ...}``; ``inside`` is None when the
    scheme declares no weak order.
    """
    lo, hi = ci
    if declared is None:
        return {"declared": None, "inside": None, "text": "the scheme declares no weak order"}
    inside = bool(lo <= declared <= hi)
    where = "inside" if inside else "OUTSIDE"
    text = (
        f"declared weak order {declared:g} lies {where} the 95% CI [{lo:.3f}, {hi:.3f}] of the fitted slope"
    )
    if not inside:
        text += (
            " (over this dt ladder the error does not decay at the declared rate: the ladder is not in the "
            "asymptotic regime, the Monte Carlo error is too large, or the declaration is wrong)"
        )
    return {"declared": float(declared), "inside": inside, "text": text}
