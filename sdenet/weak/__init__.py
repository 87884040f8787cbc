"""Weak convergence toolkit: condition (5) and weak-order estimation.

Condition (5) (Kloeden & Platen, ch. 14.1) on the increments ``ΔŴ`` of the simplified
weak Euler scheme ``X_{n+1} = X_n + f Δt + g ΔŴ_n``::

    C(Δt) = |E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt| ≤ K Δt²,

computed here exactly from a law's moments (:func:`condition`, :func:`condition_K`)
and empirically from samples with standard errors (:func:`empirical_moments`,
:func:`empirical_condition`, :func:`check`).

Weak order: for an SDE with closed-form moments (:class:`GBM`, :class:`OU`) the weak
error of a scheme at ``T`` is ``e(Δt) = |E φ(X_N) − E φ(X(T))|``, ``N = T/Δt``, with
``φ(x) = x^k``. :func:`weak_order` estimates ``E φ(X_N)`` by Monte Carlo over a ladder of
Δt and regresses ``log e`` on ``log Δt`` (:func:`fit_slope`); the slope is the weak
order. Each test SDE also knows the *exact* expectation of the weak Euler scheme,
``E X_N^k``, from the law's moments (:meth:`GBM.scheme_expectation`,
:meth:`OU.scheme_expectation`), so the bias of the scheme is known without sampling
and the Monte Carlo simulator can itself be checked.

With ``φ(x) = x³`` the weak Euler expectation depends on ``E ΔŴ``, ``E ΔŴ²`` and
``E ΔŴ³``: every law meeting condition (5) gives weak order 1, while the
stochastic-depth increment with ``p ≠ ½`` (``E ΔŴ³ ∝ Δt^{3/2}``) gives weak order ½.
:func:`strong_error` measures the strong error of Euler–Maruyama on GBM against the
exact solution driven by the same Brownian path (strong order ½).

Any problem: :func:`weak_order` takes any object that follows the :class:`WeakProblem`
protocol (a field, an initial state of any shape, a horizon ``T`` and ``exact(phi)``, the
exact ``E φ(X(T))``), and any test function from :data:`PHI_NAMES` or a callable with an
exact value given by hand::

    import torch, sdenet as sn
    from sdenet.weak import WeakProblem, weak_order

    # dX = -X dt + 0.5 dW elementwise on (B, 3, 4) states, X(0) = 1: E X(1) = e^{-1}
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.full_like(x, 0.5))
    problem = WeakProblem(field, x0=torch.ones(3, 4), T=1.0, exact={"x": math.exp(-1)})
    res = weak_order(problem, sn.WeakEuler(sn.Rademacher()), dts=[1/2, 1/4, 1/8], paths=10**5, phi="x")
    res["slope"], res["slope_ci"], res["declared_inside_ci"]

The package is split by concern (every public name is re-exported here):
:mod:`sdenet.weak.condition` (condition (5), exact and empirical), :mod:`sdenet.weak.problems`
(test functions, the problem protocol, GBM and OU), :mod:`sdenet.weak.regression` (slopes and
verdicts), :mod:`sdenet.weak.order` (weak-order estimation and the adaptive ladder, strong error)
and :mod:`sdenet.weak.limits` (argument checks and work limits they share).
"""

from __future__ import annotations

# private names below are re-exported for the command line (sdenet.commands) and the tests
# ruff: noqa: F401
from ..extrapolation import extrapolate, monte_carlo
from .condition import (
    _Pairs,
    _Welford,
    check,
    condition,
    condition_K,
    default_laws,
    empirical_condition,
    empirical_moments,
)
from .limits import (
    CHECK_DT_RANGE,
    CPU_DRAWS_PER_S,
    CPU_PATH_STEPS_PER_S,
    DEFAULT_CHECK_DTS,
    MAX_CHECK_DRAWS,
    MAX_ORDER_PATH_STEPS,
    _check_check_dt,
    _check_draws,
    _check_law,
    _check_samples,
)
from .order import (
    AUTO_BUDGET_S,
    AUTO_MAX_PATHS,
    AUTO_START_PATHS,
    AUTO_TARGET_WIDTH,
    _check_order_work,
    _check_problem,
    order_work,
    strong_error,
    weak_order,
)
from .problems import (
    GBM,
    OU,
    PHI_NAMES,
    SDE_NAMES,
    NoClosedForm,
    TestFunction,
    WeakProblem,
    _linear_moments,
    get_phi,
    get_sde,
    import_object,
)
from .regression import _t975, fit_slope, verdict

__all__ = [
    "condition",
    "condition_K",
    "empirical_moments",
    "empirical_condition",
    "default_laws",
    "check",
    "DEFAULT_CHECK_DTS",
    "GBM",
    "OU",
    "get_sde",
    "SDE_NAMES",
    "fit_slope",
    "weak_order",
    "strong_error",
    "order_work",
    "CHECK_DT_RANGE",
    "MAX_CHECK_DRAWS",
    "MAX_ORDER_PATH_STEPS",
    "PHI_NAMES",
    "TestFunction",
    "get_phi",
    "NoClosedForm",
    "WeakProblem",
    "import_object",
    "verdict",
    "AUTO_TARGET_WIDTH",
    "AUTO_BUDGET_S",
]


# Talay–Tubaro extrapolation lives in its own module; it is part of this toolkit's API.
__all__ += ["extrapolate", "monte_carlo"]
