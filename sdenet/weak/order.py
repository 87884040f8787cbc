"""Weak-order estimation: :func:`weak_order` (Monte Carlo over a Δt ladder, the adaptive ladder
and path count, control variates), the work it would take (:func:`order_work`) and :func:`strong_error`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch

from ..fields import Field, is_field
from ..integrate import integrate
from ..laws import Gaussian, _check_dt, is_law
from ..schemes import EulerMaruyama, Scheme, WeakEuler, is_scheme
from .condition import _Pairs, _Welford
from .limits import (
    _F64,
    CPU_PATH_STEPS_PER_S,
    MAX_ORDER_PATH_STEPS,
    _check_samples,
    _duration,
    _generator,
    _law_p,
    _row_seed,
)
from .problems import (
    _PHIS,
    GBM,
    NoClosedForm,
    WeakProblem,
    _finite,
    _positive,
    _steps,
    get_phi,
)
from .regression import fit_slope, verdict


def order_work(sde, dts=None, paths: int = 1_000_000) -> dict:
    """The work :func:`weak_order` would do: ``steps`` per Δt (``T/Δt``), ``path_steps``
    (``paths × Σ steps``) and ``cpu_seconds``, an estimate at one CPU thread's rate."""
    dts = _as_dts(dts, sde)
    steps = [_steps(sde.T, dt) for dt in dts]
    path_steps = int(_check_samples(paths, "paths")) * sum(steps)
    return {"steps": steps, "path_steps": path_steps, "cpu_seconds": path_steps / CPU_PATH_STEPS_PER_S}


def _check_order_work(sde, dts, paths) -> None:
    w = order_work(sde, dts, paths)
    if w["path_steps"] > MAX_ORDER_PATH_STEPS:
        worst = max(w["steps"])
        raise ValueError(
            f"{paths:.3g} paths x {sum(w['steps']):.3g} steps (up to {worst:.3g} steps for one dt, "
            f"T = {sde.T:g}) = {w['path_steps']:.3g} path-steps, about {_duration(w['cpu_seconds'])} on one "
            f"CPU thread (~{CPU_PATH_STEPS_PER_S:.0e} path-steps/s); at most {MAX_ORDER_PATH_STEPS:.0e} "
            "path-steps per call: use fewer paths or coarser dt"
        )


def _check_weak_scheme(scheme, field) -> Scheme:
    if scheme is None:
        return WeakEuler(Gaussian())
    if not is_scheme(scheme):
        raise ValueError(f"weak_order: scheme must be an sdenet Scheme, got {type(scheme).__name__}")
    if not scheme.stochastic:
        raise ValueError(
            f"weak_order: {type(scheme).__name__} is deterministic and cannot simulate an SDE; "
            "use weak_euler or euler_maruyama"
        )
    if getattr(scheme, "coupled", False):
        raise ValueError(f"weak_order: {type(scheme).__name__} integrates coupled (x, y) states")
    scheme.check(field)  # anything else a scheme refuses (coupled states, noise structures, …)
    return scheme


def _is_lm(scheme) -> bool:
    """The scheme converges to the second-order system of LM stochastic depth (it declares ``limit``)."""
    return getattr(scheme, "limit", "sde") == "second_order"


def _lm_g(scheme) -> float:
    g = scheme.g
    if callable(g) or isinstance(g, torch.Tensor):
        raise ValueError(
            "weak_order: stochastic_lm needs a constant float g (its limit dY = (... + g Y) dt must be one SDE); "
            f"got {g!r}"
        )
    return float(g)


def _field_of(problem) -> Field:
    f = getattr(problem, "field", None)
    if f is None:
        raise ValueError(f"weak_order: the problem {problem!r} has no field (see sdenet.weak.WeakProblem)")
    if not is_field(f):
        f = f()
    if not is_field(f):
        raise ValueError(f"weak_order: problem.field() must return an sdenet Field, got {type(f).__name__}")
    return f


def _check_problem(problem):
    missing = [m for m in ("field", "x0", "T", "exact") if not hasattr(problem, m)]
    if missing:
        raise ValueError(
            f"weak_order: {problem!r} is not a weak-order problem: it lacks {', '.join(missing)} "
            "(see sdenet.weak.WeakProblem for the protocol)"
        )
    _positive("weak_order: problem.T", problem.T)
    x0 = problem.x0
    if isinstance(x0, torch.Tensor):
        if not x0.is_floating_point():
            raise ValueError(f"weak_order: problem.x0 must be floating point, got dtype {x0.dtype}")
    else:
        _finite("weak_order: problem.x0", x0)
    return problem


def _initial(problem, n, device) -> torch.Tensor:
    """``n`` copies of the problem's initial state, shape ``(n, *S)`` (``S = (1,)`` for a float)."""
    x0 = problem.x0
    if isinstance(x0, torch.Tensor):
        x0 = x0.to(dtype=_F64, device=device)
        return x0.unsqueeze(0).expand((n,) + tuple(x0.shape)).clone()
    return torch.full((n, 1), float(x0), dtype=_F64, device=device)


def _problem_name(problem) -> str:
    return str(getattr(problem, "name", type(problem).__name__))


def _problem_key(problem) -> str:
    """What seeds a problem's generators: its repr, unless that is the default one with a
    memory address (then its name and parameters), so seeds repeat from run to run."""
    r = repr(problem)
    if " at 0x" in r:
        r = f"{_problem_name(problem)}|{sorted(_problem_params(problem).items())}"
    return r


def _problem_params(problem) -> dict:
    params = getattr(problem, "params", None)
    out = params() if callable(params) else {"T": float(problem.T)}
    return {k: float(v) if isinstance(v, (int, float)) else v for k, v in out.items()}


def _default_dts(sde) -> list[float]:
    steps = getattr(sde, "default_steps", None) or WeakProblem.default_steps
    return [sde.T / n for n in steps]


def _as_dts(dts, sde) -> list[float]:
    dts = _default_dts(sde) if dts is None else [_check_dt(dt) for dt in dts]
    if len(dts) < 2:
        raise ValueError("weak_order: give at least two dts to fit a slope")
    if len(set(dts)) < 2:
        raise ValueError("weak_order: the dts must not all be equal")
    for dt in dts:
        _steps(sde.T, dt)  # T/dt must be a whole number of steps
    return dts


#: ``weak_order(paths=None)``: paths per Δt of the first round (then doubled each round), the
#: 95 % interval width that ends the search, the time budget (seconds), and the most paths
AUTO_START_PATHS = 1 << 16
AUTO_TARGET_WIDTH = 0.5
AUTO_BUDGET_S = 120.0
AUTO_MAX_PATHS = 1 << 26


def _control_of(sde, scheme, field, phi, target, device):
    """The control variate of ``scheme``: the weak Euler scheme with the same law driven by
    the same increments, whose ``E φ(X_N)`` the problem knows exactly
    (``sde.scheme_expectation``), or None (no closed form, not a power φ, no law, a
    multistep scheme, or a scheme whose step *is* that weak Euler step: nothing to gain)."""
    law = getattr(scheme, "law", None)
    if (
        target != "closed form"
        or phi.power is None
        or not is_law(law)
        or not callable(getattr(sde, "scheme_expectation", None))
        or getattr(scheme, "history", 0)
    ):
        return None
    ref = WeakEuler(law)
    try:
        x0 = _initial(sde, 4, device)
        shape = tuple(field.noise_shape(x0))
        dw = torch.linspace(-0.45, 0.6, math.prod(shape), dtype=_F64, device=x0.device).reshape((1,) + shape)
        g = torch.Generator(device=x0.device).manual_seed(0)
        a = integrate(field, scheme, x0, steps=1, dt=0.25, dw=dw, generator=g)
        b = integrate(field, ref, x0, steps=1, dt=0.25, dw=dw, generator=g)
        sde.scheme_expectation(law, float(sde.T), phi.power)
    except (ValueError, TypeError, NotImplementedError, RuntimeError):
        return None
    return None if torch.equal(a, b) else ref


def weak_order(
    sde,
    scheme: Scheme | None = None,
    dts: Sequence[float] | None = None,
    paths: int | None = None,
    phi=3,
    seed: int = 0,
    chunk: int = 1 << 18,
    device=None,
    exact: float | None = None,
    scheme_name: str | None = None,
    control: str = "auto",
    budget: float = AUTO_BUDGET_S,
    target_width: float = AUTO_TARGET_WIDTH,
) -> dict:
    """Estimate the weak order of ``scheme`` on any problem (:class:`GBM`, :class:`OU`, a
    :class:`WeakProblem` or any object with its protocol) whose states may have any shape.

    For each ``Δt`` in ``dts`` (default ``T/N`` for ``N`` in ``sde.default_steps``),
    ``paths`` paths of :func:`sdenet.integrate` over ``[0, T]`` (float64, in chunks of
    ``chunk``, one generator per Δt seeded from ``(seed, problem, scheme, Δt)``) give
    ``ê = mean φ(X_N)``; the weak error is ``e = |ê − E φ(X(T))|`` with standard error
    ``se = sd(φ(X_N))/√paths``. :func:`fit_slope` regresses ``log e`` on ``log Δt``, and
    its 95 % interval carries the Monte Carlo error: the delta method gives
    ``Var log ê_i ≈ (se_i/e_i)²``, propagated through the least-squares weights
    (``Σ (x_i − x̄)² v_i / Sxx²``) and added to the residual variance of the fit.

    ``phi`` is a name of :data:`PHI_NAMES`, a power 1..4, or a callable on ``(B, *S)``
    states (then ``exact`` is required). ``E φ(X(T))`` is ``exact`` when given, else
    ``sde.exact(phi)``, which raises :class:`NoClosedForm` for pairs without a closed form
    (GBM with cos or exp).

    Schemes: any stochastic scheme (weak Euler, Euler–Maruyama, Platen, …, resolved by
    the caller, e.g. through :func:`sdenet.schemes.get_scheme`). :class:`StochasticLM` is
    not a discretization of ``dX = f dt + g dW``: its ``X_N`` converges to ``X(T)`` of the
    second-order system ``dX = Y dt, dY = f(X) dt + g_lm Y dt + σ(X) dW`` started at rest
    (``Y(0) = 0``; ``f``, ``σ`` the problem's drift and diffusion, ``g_lm`` the scheme's
    constant ``g``), so for it ``E φ(X(T))`` is ``sde.lm_exact(phi, g)``: exact for GBM
    (powers) and OU (every named φ) from the closed moment equations of that linear
    system; a problem without ``lm_exact`` needs ``exact``.

    Variance reduction (``control="auto"``, the default): when the problem knows the exact
    expectation of the weak Euler scheme with the scheme's law (``sde.scheme_expectation``:
    GBM and OU with a power φ) and the scheme's step is not that weak Euler step itself
    (Platen, weak Taylor 2, Milstein, …), each path is run twice on the same increments, with
    the scheme and with weak Euler, and ``E φ(X_N)`` is estimated as
    ``mean φ(X_N) − β (mean φ(X_N^{Euler}) − E φ(X_N^{Euler}))`` with the optimal
    ``β = Cov/Var`` (a control variate: unbiased, its variance the part of ``φ(X_N)`` the
    Euler path does not explain, O(Δt²) rather than O(1)). That is what lets an order-2
    scheme's O(Δt²) error stand above its Monte Carlo error. ``control="none"`` turns it off.

    How many paths (``paths=None``, the default): rounds of ``AUTO_START_PATHS`` paths per Δt,
    doubled each round, until the 95 % interval of the slope is at most ``target_width`` wide
    (decisive: e.g. 2 ± 0.25 cannot contain 1), the next round would overrun ``budget``
    seconds, or ``AUTO_MAX_PATHS``. With ``dts`` not given the ladder is chosen too: while
    the interval is not decisive, a finest Δt whose error is within one standard error of 0
    (bias swamped by Monte Carlo error) is dropped, keeping at least three. The result's
    ``auto`` entry says what was done and whether the interval became decisive; the verdict
    says so plainly when it did not. A given ``paths`` is used as it is (no search).

    The result has the fitted ``slope``, ``slope_ci``, the scheme's
    ``declared_weak_order``, ``declared_inside_ci`` and a ``verdict`` text
    (:func:`verdict`). For plain weak Euler / Euler–Maruyama on GBM or OU with a power φ
    the exact scheme bias ``E φ(X_N) − E φ(X(T))`` is known from the law's moments and
    reported as ``bias`` with its own slope ``bias_slope``; ``snr = e/se`` says how many
    standard errors each error is.
    """
    sde = _check_problem(sde)
    field = _field_of(sde)
    scheme = _check_weak_scheme(scheme, field)
    auto_ladder = dts is None
    dts = _as_dts(dts, sde)
    auto = paths is None
    if control not in ("auto", "none"):
        raise ValueError(f"weak_order: control must be 'auto' or 'none', got {control!r}")
    if auto:
        budget = _positive("weak_order: budget", budget)
        target_width = _positive("weak_order: target_width", target_width)
        _check_order_work(sde, dts, AUTO_START_PATHS)  # refuse absurd work before any of it
        steps_all = sum(_steps(sde.T, dt) for dt in dts)
        max_paths = max(AUTO_START_PATHS, min(AUTO_MAX_PATHS, MAX_ORDER_PATH_STEPS // max(steps_all, 1)))
    else:
        paths = _check_samples(paths, "paths")
        _check_order_work(sde, dts, paths)  # refuse absurd work before any of it
    phi = get_phi(phi)
    chunk = max(1, int(chunk))
    lm = _is_lm(scheme)
    if exact is not None:
        exact = _finite("weak_order: exact", exact)
        target = "given"
    elif lm:
        g = _lm_g(scheme)
        if not hasattr(sde, "lm_exact"):
            raise NoClosedForm(
                f"weak_order: stochastic_lm converges to the second-order system dX = Y dt, dY = f dt + g Y dt + "
                f"sigma dW, not to {_problem_name(sde)}; the problem has no lm_exact(phi, g), so give exact="
            )
        exact = float(sde.lm_exact(phi, g))
        target = f"second-order limit dX = Y dt, dY = f dt + {g:g} Y dt + sigma dW, Y(0) = 0"
    else:
        if _PHIS.get(phi.name) is not phi:
            raise ValueError(
                f"weak_order: phi {phi.name!r} is a user function; give its exact E phi(X(T)) as exact="
            )
        exact = float(sde.exact(phi))
        target = "closed form"
    ref = _control_of(sde, scheme, field, phi, target, device) if control == "auto" else None
    name = _problem_name(sde)
    rows = []
    for dt in dts:
        gen = _generator(_row_seed(seed, "weak_order", _problem_key(sde), repr(scheme), dt), device)
        eb = float(sde.scheme_expectation(ref.law, dt, phi.power)) if ref is not None else None
        rows.append({"dt": dt, "gen": gen, "acc": _Pairs() if ref is not None else _Welford(1), "eb": eb})

    def more(row, n_total):
        """Run row's Δt until it has ``n_total`` paths."""
        acc, g, dt = row["acc"], row["gen"], row["dt"]
        with torch.no_grad():
            while acc.n < n_total:
                n = min(chunk, n_total - acc.n)
                x0 = _initial(sde, n, g.device)
                if ref is None:
                    xN = integrate(field, scheme, x0, t1=sde.T, dt=dt, generator=g)
                    acc.add(phi(xN).to(_F64).reshape(1, -1))
                    continue
                steps = _steps(sde.T, dt)
                dw = torch.randn(
                    (steps,) + tuple(field.noise_shape(x0)), generator=g, device=g.device, dtype=_F64
                ) * math.sqrt(dt)
                xs = integrate(field, scheme, x0, t1=sde.T, dt=dt, dw=dw, generator=g)
                xr = integrate(field, ref, x0, t1=sde.T, dt=dt, dw=dw, generator=g)
                acc.add(phi(xs).to(_F64), phi(xr).to(_F64))

    def summary(row) -> tuple[float, float, float]:
        if ref is None:
            est, se = float(row["acc"].mean[0]), float(row["acc"].stderr()[0])
        else:
            est, se = row["acc"].estimate(row["eb"])
        if not math.isfinite(est):
            raise ValueError(
                f"weak_order: mean phi(X_N) is not finite at dt={row['dt']:g} ({est}); the scheme blows up on this "
                "problem at that step or phi overflows"
            )
        return est, abs(est - exact), se

    def fit(active):
        sums = [summary(r) for r in active]
        errs = [e for _, e, _ in sums]
        if any(e == 0 for e in errs):
            return sums, None
        return sums, fit_slope([r["dt"] for r in active], errs, [se for _, _, se in sums])

    import time as _time

    active = list(rows)
    dropped = []
    info = None
    if not auto:
        for row in rows:
            more(row, paths)
        sums, fitted = fit(active)
    else:
        t_start = _time.perf_counter()
        total = AUTO_START_PATHS
        rounds = 0
        decisive = False
        while True:
            t_round = _time.perf_counter()
            for row in active:
                more(row, total)
            rounds += 1
            last = _time.perf_counter() - t_round
            sums, fitted = fit(active)
            while (
                fitted is not None
                and fitted[1][1] - fitted[1][0] > target_width
                and auto_ladder
                and len(active) > 3
                and sums[-1][2] > 0
                and sums[-1][1] < sums[-1][2]
            ):
                dropped.append(active.pop())  # the finest Δt: its bias is swamped by Monte Carlo error
                sums, fitted = fit(active)
            decisive = fitted is not None and fitted[1][1] - fitted[1][0] <= target_width
            spent = _time.perf_counter() - t_start
            if decisive or 2 * total > max_paths or spent + 2.2 * last > budget:
                break
            total *= 2
        info = {
            "decisive": decisive,
            "target_width": target_width,
            "budget_s": budget,
            "rounds": rounds,
            "seconds": _time.perf_counter() - t_start,
            "paths": total,
            "dropped_dts": [r["dt"] for r in dropped],
        }
        paths = total
    dts = [cast(float, r["dt"]) for r in active]
    estimates = [est for est, _, _ in sums]
    errors = [e for _, e, _ in sums]
    stderr = [se for _, _, se in sums]
    if any(e == 0 for e in errors):
        raise ValueError(
            "weak_order: an error is exactly 0 (a deterministic X_N equal to the exact value); nothing to fit"
        )
    slope, ci = fitted
    declared = getattr(scheme, "weak_order", None)
    v = verdict(declared, ci)
    if info is not None and not info["decisive"]:
        v["text"] += (
            f"; NOT DECISIVE: the interval is {ci[1] - ci[0]:.2f} wide (target {target_width:g}) after "
            f"{paths} paths per dt in {info['seconds']:.0f} s; give coarser dts, a problem with a larger "
            "error, or a longer budget"
        )
    out = {
        "sde": name,
        "params": _problem_params(sde),
        "T": float(sde.T),
        "state_shape": list(_initial(sde, 1, None).shape[1:]),
        "law": scheme.law.name if scheme.law is not None else None,
        "p": _law_p(scheme.law) if scheme.law is not None else None,
        "scheme": scheme_name or _scheme_name(scheme),
        "declared_weak_order": declared,
        "phi": phi.label,
        "exact": exact,
        "exact_from": target,
        "paths": paths,
        "seed": seed,
        "dts": dts,
        "estimates": estimates,
        "errors": errors,
        "stderr": stderr,
        # errors in standard errors (None where the estimate has no spread: a deterministic X_N)
        "snr": [e / s if s > 0 else None for e, s in zip(errors, stderr)],
        "control": "weak_euler" if ref is not None else None,
        "auto": info,
        "slope": slope,
        "slope_ci": [ci[0], ci[1]],
        "declared_inside_ci": v["inside"],
        "verdict": v["text"],
    }
    if (
        scheme.euler_law is not None
        and hasattr(sde, "scheme_expectation")
        and phi.power is not None
        and target == "closed form"
    ):
        bias = [sde.scheme_expectation(scheme.law, dt, phi.power) - exact for dt in dts]
        out["bias"] = bias
        out["bias_slope"] = fit_slope(dts, [abs(b) for b in bias])[0] if all(b != 0 for b in bias) else None
    return out


def _scheme_name(scheme) -> str:
    return str(getattr(scheme, "name", None) or type(scheme).__name__)  # the scheme's declared name


def strong_error(
    sde: GBM | None = None,
    dts: Sequence[float] | None = None,
    paths: int = 20_000,
    seed: int = 0,
    chunk: int = 1 << 14,
    device=None,
) -> dict:
    """Strong error ``E |X_N − X(T)|`` of Euler–Maruyama on GBM against the exact solution
    ``X(T) = x0 exp((μ − σ²/2) T + σ W(T))`` driven by the same Brownian path.

    Gaussian increments are drawn on the finest grid and summed in blocks to give the
    coarse increments ``ΔW`` of every other Δt (each Δt must be a whole multiple of the
    finest one); each path takes Euler–Maruyama steps ``X + μ X Δt + σ X ΔW`` (the
    field's increment with the given ``ΔW``). Returns the errors, their standard errors
    and :func:`fit_slope`'s slope (strong order ½ for multiplicative noise).
    """
    sde = GBM(mu=0.05, sigma=0.5) if sde is None else sde
    if not isinstance(sde, GBM):
        raise ValueError("strong_error: needs a GBM (its exact solution is known path by path)")
    dts = [sde.T / n for n in (4, 8, 16, 32, 64)] if dts is None else [_check_dt(dt) for dt in dts]
    if len(dts) < 2:
        raise ValueError("strong_error: give at least two dts to fit a slope")
    paths = _check_samples(paths, "paths")
    fine = min(dts)
    n_fine = _steps(sde.T, fine)
    ratios = []
    for dt in dts:
        r = round(dt / fine)
        if not math.isclose(r * fine, dt, rel_tol=1e-9):
            raise ValueError(f"strong_error: dt={dt} is not a whole multiple of the finest dt={fine}")
        ratios.append(r)
    field = sde.field()
    g = _generator(_row_seed(seed, "strong_error", repr(sde), tuple(dts)), device)
    accs = [_Welford(1) for _ in dts]
    done = 0
    with torch.no_grad():
        while done < paths:
            n = min(chunk, paths - done)
            dw_fine = torch.randn((n_fine, n, 1), generator=g, device=g.device, dtype=_F64) * math.sqrt(fine)
            xT = sde.solution(dw_fine.sum(dim=0))
            for acc, dt, r in zip(accs, dts, ratios):
                dw = dw_fine.view(n_fine // r, r, n, 1).sum(dim=1)
                x = torch.full((n, 1), sde.x0, dtype=_F64, device=g.device)
                for i in range(dw.shape[0]):
                    x = x + field.increment(i * dt, x, dt, dw[i])
                acc.add((x - xT).abs().reshape(1, -1))
            done += n
    errors = [float(a.mean[0]) for a in accs]
    stderr = [float(a.stderr()[0]) for a in accs]
    slope, ci = fit_slope(dts, errors, stderr)
    return {
        "sde": sde.name,
        "params": sde.params(),
        "scheme": "euler_maruyama",
        "declared_strong_order": EulerMaruyama.strong_order,
        "paths": paths,
        "dts": dts,
        "errors": errors,
        "stderr": stderr,
        "slope": slope,
        "slope_ci": [ci[0], ci[1]],
    }
