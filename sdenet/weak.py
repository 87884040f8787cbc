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
"""

from __future__ import annotations

import math
import zlib
from typing import Iterable, Sequence

import torch

from .fast import LinearSDEField
from .fields import Field, is_field
from .integrate import make_grid
from .laws import DropBernoulli, Gaussian, NoiseLaw, Rademacher, ThreePoint, Uniform, _check_dt, is_law
from .schemes import EulerMaruyama, Scheme, WeakEuler, is_scheme

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

#: default Δt ladder of ``sdenet weak check``
DEFAULT_CHECK_DTS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.01)

_F64 = torch.float64


def _check_samples(samples, what="samples") -> int:
    if isinstance(samples, bool) or not isinstance(samples, (int, float)) or int(samples) != samples:
        raise ValueError(f"{what} must be an integer >= 2, got {samples!r}")
    samples = int(samples)
    if samples < 2:
        raise ValueError(f"{what} must be at least 2 (a standard error needs two draws), got {samples}")
    return samples


#: Δt range of :func:`check`: every moment and variance it computes (down to ``Var ΔŴ⁴ ∝ Δt⁴``
#: and ``K = C/Δt²``) stays a normal float64 number inside it
CHECK_DT_RANGE = (1e-50, 1e50)
#: most random draws one :func:`check` call makes (rows × samples), and most path-steps one
#: :func:`weak_order` call simulates (paths × Σ T/Δt); beyond them the work is refused before
#: it starts (memory is bounded by the chunks either way: the bound is time)
MAX_CHECK_DRAWS = 10**11
MAX_ORDER_PATH_STEPS = 10**12
#: one-thread CPU rates used for the time estimates of refusals (measured on a 2-core AMD EPYC,
#: torch 2.13: ~9·10⁶ draws/s with their four moments; ~2·10⁷ weak Euler path-steps/s)
CPU_DRAWS_PER_S = 1e7
CPU_PATH_STEPS_PER_S = 2e7


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _check_check_dt(dt) -> float:
    dt = _check_dt(dt)
    lo, hi = CHECK_DT_RANGE
    if not lo <= dt <= hi:
        raise ValueError(f"dt = {dt:g} is outside the range {lo:g} <= dt <= {hi:g} where condition (5) "
                         "is computed in float64 (dt^2 and the variance of dW^4 ~ dt^4 must stay normal numbers)")
    return dt


def _check_draws(rows: int, samples: int) -> None:
    total = rows * samples
    if total > MAX_CHECK_DRAWS:
        raise ValueError(
            f"{rows} (law, dt) rows x {samples:.3g} samples = {total:.3g} draws, about "
            f"{_duration(total / CPU_DRAWS_PER_S)} on one CPU thread (~{CPU_DRAWS_PER_S:.0e} draws/s); "
            f"at most {MAX_CHECK_DRAWS:.0e} draws per call, so samples <= {MAX_CHECK_DRAWS // rows:.3g} "
            f"for {rows} rows (memory stays bounded: the draws come in chunks)"
        )


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


def _check_law(law) -> NoiseLaw:
    if not is_law(law):
        raise ValueError(f"expected an sdenet NoiseLaw (e.g. sdenet.get_law('uniform')), got {law!r}")
    return law


def _law_p(law: NoiseLaw):
    return getattr(law, "p", None)


def _row_seed(seed: int, *parts) -> int:
    """A seed for one (law, Δt, …) cell derived from ``seed``, independent of the other cells.

    So ``check([law], [dt])`` reproduces the same row as the full table.
    """
    key = "|".join(repr(p) for p in parts).encode()
    return (int(seed) * 1_000_003 + zlib.crc32(key)) % (2**63 - 1)


def _generator(seed: int, device) -> torch.Generator:
    g = torch.Generator(device=torch.device("cpu") if device is None else torch.device(device))
    g.manual_seed(int(seed))
    return g


# =========================================================================== condition (5)


def condition(law: NoiseLaw, dt: float) -> float:
    """Exact ``C(Δt) = |E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt|`` from the law's moments."""
    return float(_check_law(law).condition(dt))


def condition_K(law: NoiseLaw, dt: float) -> float:
    """``K(Δt) = C(Δt)/Δt²``: condition (5) holds when this stays bounded as Δt → 0.

    0 for the symmetric laws; ``Δt^{-1/2} |1 − 2p|/√(p(1−p))`` for stochastic depth
    (unbounded unless p = ½); ``1/Δt`` for the degenerate ``DropBernoulli(1)``.
    """
    return float(_check_law(law).condition_constant(dt))  # the law answers for itself


class _Welford:
    """Running mean and sum of squared deviations of a vector of statistics, merged
    chunk by chunk in float64 (Chan et al.'s pairwise update; no cancellation)."""

    def __init__(self, size: int):
        self.n = 0
        self.mean = torch.zeros(size, dtype=_F64)
        self.m2 = torch.zeros(size, dtype=_F64)

    def add(self, values: torch.Tensor):
        """``values``: shape (size, n) for n new draws."""
        values = values.to(_F64)
        n = values.shape[1]
        if n == 0:
            return
        cvar, cmean = torch.var_mean(values, dim=1, correction=0)  # one fused pass
        cmean, cm2 = cmean.cpu(), cvar.cpu() * n
        total = self.n + n
        delta = cmean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + cm2 + delta.square() * (self.n * n / total)
        self.n = total

    def stderr(self) -> torch.Tensor:
        """Standard error of the mean, ``sd/√n`` with the unbiased sample variance."""
        if self.n < 2:
            return torch.full_like(self.mean, float("nan"))
        return (self.m2 / (self.n - 1) / self.n).clamp_min(0.0).sqrt()


class _Pairs:
    """Running means and co-moments of pairs ``(a, b)`` (a statistic and its control variate),
    merged chunk by chunk in float64 (Chan et al.'s pairwise update)."""

    def __init__(self):
        self.n = 0
        self.mean = torch.zeros(2, dtype=_F64)
        self.c = torch.zeros(2, 2, dtype=_F64)

    def add(self, a: torch.Tensor, b: torch.Tensor):
        v = torch.stack([a.reshape(-1).to(_F64), b.reshape(-1).to(_F64)]).cpu()
        n = v.shape[1]
        if n == 0:
            return
        cmean = v.mean(dim=1)
        d = v - cmean[:, None]
        cc = d @ d.T
        total = self.n + n
        delta = cmean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.c = self.c + cc + torch.outer(delta, delta) * (self.n * n / total)
        self.n = total

    def estimate(self, eb: float | None):
        """``(mean, stderr)`` of ``E a``: plain (``eb`` None) or with the control variate
        ``b`` of known mean ``eb`` at the optimal coefficient ``β = Cov(a, b)/Var b``:
        ``mean a − β (mean b − E b)``, variance ``(Var a − Cov²/Var b)/n``."""
        n = self.n
        caa, cab, cbb = float(self.c[0, 0]), float(self.c[0, 1]), float(self.c[1, 1])
        ma, mb = float(self.mean[0]), float(self.mean[1])
        if eb is None or cbb <= 0:
            return ma, math.sqrt(max(caa, 0.0) / (n - 1) / n) if n > 1 else float("nan")
        beta = cab / cbb
        var = max(caa - cab * cab / cbb, 0.0) / (n - 1) if n > 1 else float("nan")
        return ma - beta * (mb - eb), math.sqrt(var / n)


def empirical_moments(
    law: NoiseLaw,
    dt: float,
    samples: int = 1_000_000,
    generator: torch.Generator | None = None,
    chunk: int = 1 << 19,
    device=None,
) -> dict:
    """Monte Carlo estimates of ``E ΔŴ^k``, ``k = 1..4``, from ``samples`` draws.

    Draws in chunks of ``chunk`` (float64, on ``device`` or the generator's device), so
    memory stays bounded for any ``samples``. Returns ``{"m": (m1, m2, m3, m4),
    "stderr": (se1, …, se4), "samples": n}`` where ``se_k = sd(ΔŴ^k)/√n``.
    """
    law = _check_law(law)
    dt = _check_dt(dt)
    samples = _check_samples(samples)
    chunk = max(1, int(chunk))
    if device is None and generator is not None:
        device = generator.device
    acc = _Welford(4)
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        x = law.sample((n,), dt, generator=generator, device=device, dtype=_F64)
        x2 = x * x
        acc.add(torch.stack((x, x2, x2 * x, x2 * x2)))
        done += n
    return {
        "m": tuple(float(v) for v in acc.mean),
        "stderr": tuple(float(v) for v in acc.stderr()),
        "samples": acc.n,
    }


def _condition_from(m, se, dt):
    c = abs(m[0]) + abs(m[2]) + abs(m[1] - dt)
    return c, se[0] + se[1] + se[2]


def empirical_condition(
    law: NoiseLaw,
    dt: float,
    samples: int = 1_000_000,
    generator: torch.Generator | None = None,
    chunk: int = 1 << 19,
    device=None,
) -> tuple[float, float]:
    """``Ĉ(Δt) = |m̂1| + |m̂3| + |m̂2 − Δt|`` from sample moments, and its standard error.

    The standard error returned is ``se1 + se2 + se3``, a conservative bound: by the
    triangle inequality ``|Ĉ − C| ≤ |m̂1 − m1| + |m̂2 − m2| + |m̂3 − m3|`` and by
    Minkowski's inequality the standard deviation of that sum is at most the sum of
    the three standard deviations (whatever their correlation). Note ``Ĉ`` is biased
    upward where ``C = 0``: ``E|m̂| ≈ 0.8 se``.
    """
    mom = empirical_moments(law, dt, samples, generator, chunk, device)
    return _condition_from(mom["m"], mom["stderr"], _check_dt(dt))


def default_laws() -> list[NoiseLaw]:
    """Every built-in law: Gaussian, Uniform, Rademacher, ThreePoint, and stochastic depth
    at p = ½ (condition (5) holds) and p = 0.8 (it fails: ``C ∝ Δt^{3/2}``)."""
    return [Gaussian(), Uniform(), Rademacher(), ThreePoint(), DropBernoulli(0.5), DropBernoulli(0.8)]


def check(
    laws: Iterable[NoiseLaw] | None = None,
    dts: Sequence[float] = DEFAULT_CHECK_DTS,
    samples: int = 1_000_000,
    seed: int = 0,
    chunk: int = 1 << 19,
    device=None,
) -> list[dict]:
    """Condition (5), exact and empirical, for every (law, Δt); one dict per pair.

    Keys: ``law``, ``p`` (None except for ``drop``), ``dt``, ``exact`` {m1..m4},
    ``empirical`` {m1..m4, ``stderr`` {m1..m4}, ``samples``}, ``condition`` {``exact``,
    ``empirical``, ``empirical_stderr`` (see :func:`empirical_condition`), ``K`` (exact
    ``C/Δt²``), ``K_empirical``}. Each row draws from its own generator seeded from
    ``(seed, law, Δt)``, so a row does not depend on which other rows are computed.
    """
    laws = default_laws() if laws is None else [_check_law(law) for law in laws]
    dts = [_check_check_dt(dt) for dt in dts]
    if not dts:
        raise ValueError("check: give at least one dt")
    samples = _check_samples(samples)
    _check_draws(len(laws) * len(dts), samples)
    keys = ("m1", "m2", "m3", "m4")
    rows = []
    for law in laws:
        for dt in dts:
            g = _generator(_row_seed(seed, repr(law), dt), device)
            exact = law.moments(dt)
            mom = empirical_moments(law, dt, samples, generator=g, chunk=chunk, device=device)
            c_exact = condition(law, dt)
            c_emp, c_se = _condition_from(mom["m"], mom["stderr"], dt)
            rows.append(
                {
                    "law": law.name,
                    "p": _law_p(law),
                    "dt": dt,
                    "exact": dict(zip(keys, (float(v) for v in exact))),
                    "empirical": {
                        **dict(zip(keys, mom["m"])),
                        "stderr": dict(zip(keys, mom["stderr"])),
                        "samples": mom["samples"],
                    },
                    "condition": {
                        "exact": c_exact,
                        "empirical": c_emp,
                        "empirical_stderr": c_se,
                        "K": c_exact / (dt * dt),
                        "K_empirical": c_emp / (dt * dt),
                    },
                }
            )
    return rows


# =========================================================================== test SDEs


def _check_power(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 4:
        raise ValueError(f"phi must be a power k in 1..4 (φ(x) = x^k), got {k!r}")
    return k


def _steps(T: float, dt: float) -> int:
    dt = _check_dt(dt)
    try:
        _, _, n = make_grid(0.0, T, dt=dt)
    except ValueError:
        raise ValueError(
            f"T/dt = {T / dt:g} is not a whole number of steps (T = {T:g}, dt = {dt:g}); choose dt = T/N"
        ) from None
    return n


def _positive(name, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def _finite(name, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _law_moments(law: NoiseLaw, dt: float) -> tuple[float, ...]:
    """``(1, E ΔŴ, …, E ΔŴ⁴)``."""
    return (1.0,) + tuple(float(v) for v in _check_law(law).moments(dt))


# =========================================================================== test functions


class NoClosedForm(ValueError):
    """Raised by a problem's ``exact(phi)`` when it has no exact ``E φ(X(T))`` for that φ."""


class TestFunction:
    """A test function φ for the weak error ``|E φ(X_N) − E φ(X(T))|``.

    ``fn`` maps a batch of states ``(B, *S)`` to a tensor of shape ``(B,)`` or ``(B, *S)``;
    calling the test function always returns shape ``(B,)``: values with more dimensions
    are averaged over the non-batch dimensions. The named functions act elementwise, so on
    a state of several elements ``φ(X) = mean_i φ(X_i)`` and ``E φ(X) = mean_i E φ(X_i)``.
    """

    __test__ = False  # not a pytest class

    def __init__(self, name: str, fn, label: str | None = None, power: int | None = None):
        if not callable(fn):
            raise ValueError(f"test function {name!r} must be callable, got {fn!r}")
        self.name = str(name)
        self.fn = fn
        self.label = label or self.name
        #: k for φ(x) = x^k, else None
        self.power = power

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = self.fn(x)
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"test function {self.name!r} must return a tensor, got {type(v).__name__}")
        if v.dim() == 0 or v.shape[0] != x.shape[0]:
            raise ValueError(
                f"test function {self.name!r} must return one value per path (shape ({x.shape[0]},) or "
                f"({x.shape[0]}, ...)), got shape {tuple(v.shape)} for states of shape {tuple(x.shape)}"
            )
        return v.reshape(v.shape[0], -1).mean(dim=1) if v.dim() > 1 else v

    def __repr__(self):
        return f"TestFunction({self.name!r})"


def _power(k):
    return lambda x: x**k


_PHIS = {
    "x": TestFunction("x", _power(1), "x", 1),
    "x2": TestFunction("x2", _power(2), "x^2", 2),
    "x3": TestFunction("x3", _power(3), "x^3", 3),
    "x4": TestFunction("x4", _power(4), "x^4", 4),
    "cos": TestFunction("cos", torch.cos, "cos x"),
    "exp": TestFunction("exp", torch.exp, "exp x"),
}
#: the named test functions (elementwise): powers x..x⁴, cos and exp
PHI_NAMES = tuple(_PHIS)


def get_phi(phi) -> TestFunction:
    """A :class:`TestFunction` from a name in :data:`PHI_NAMES` (``"x^3"`` is ``"x3"``), a power
    ``k`` in 1..4, a :class:`TestFunction`, or a callable ``(B, *S) -> (B,)`` (named after it)."""
    if isinstance(phi, TestFunction):
        return phi
    if isinstance(phi, bool):
        raise ValueError(f"phi must be a name ({', '.join(PHI_NAMES)}), a power 1..4 or a callable, got {phi!r}")
    if isinstance(phi, int):
        if not 1 <= phi <= 4:
            raise ValueError(f"phi must be a power k in 1..4 (φ(x) = x^k), got {phi!r}")
        return _PHIS["x" if phi == 1 else f"x{phi}"]
    if isinstance(phi, str):
        key = phi.strip().lower().replace("^", "").replace("**", "")
        key = {"x1": "x", "cosx": "cos", "expx": "exp"}.get(key, key)
        if key not in _PHIS:
            raise ValueError(f"unknown test function {phi!r}; choose one of {', '.join(PHI_NAMES)}")
        return _PHIS[key]
    if callable(phi):
        return TestFunction(getattr(phi, "__name__", "phi"), phi)
    raise ValueError(f"phi must be a name ({', '.join(PHI_NAMES)}), a power 1..4 or a callable, got {phi!r}")


def import_object(spec: str, what: str = "object"):
    """The object ``Name`` of ``package.module:Name``, imported with :func:`importlib.import_module`.

    Only the module the spec names is imported, from ``sys.path`` (put its folder on
    ``PYTHONPATH``); nothing is read from a file path or evaluated from text. Errors are
    ``ValueError`` s naming the spec.
    """
    import importlib

    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"{what} must be given as package.module:Name, got {spec!r}")
    modname, attr = spec.split(":")
    if not modname or not attr or not all(p.isidentifier() for p in modname.split(".")) or not all(
        p.isidentifier() for p in attr.split(".")
    ):
        raise ValueError(f"{what} must be given as package.module:Name with Python identifiers, got {spec!r}")
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as err:
        raise ValueError(
            f"cannot import module {modname!r} for {what} {spec!r} ({err}); is its folder on PYTHONPATH?"
        ) from None
    except Exception as err:  # the user's module failed while importing
        raise ValueError(f"importing {modname!r} for {what} {spec!r} failed: {type(err).__name__}: {err}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {modname!r} has no attribute {attr!r} (from {what} {spec!r})")
        obj = getattr(obj, part)
    return obj


# =========================================================================== problems


class WeakProblem:
    """A weak-order problem: ``dX = f dt + g dW`` from ``x0`` on ``[0, T]`` with known ``E φ(X(T))``.

    The protocol :func:`weak_order` reads (any object with these members works; this class
    is a convenient implementation and the base of :class:`GBM` and :class:`OU`):

    ``field()``
        the :class:`~sdenet.fields.Field` to integrate (a ``field`` attribute holding a
        Field also works);
    ``x0``
        the initial state of one path: a float (state shape ``(1,)``) or a tensor of any
        shape ``S`` (states of the batch have shape ``(paths, *S)``);
    ``T``
        the horizon (positive);
    ``exact(phi)``
        ``E φ(X(T))`` for a :class:`TestFunction` ``phi``; raise :class:`NoClosedForm`
        (a ``ValueError``) when it is not known;
    optional: ``name``, ``params()``, ``default_steps`` (the ladder ``Δt = T/N``),
    ``lm_exact(phi, g)`` (``E φ(X(T))`` of the second-order limit that
    :class:`~sdenet.schemes.StochasticLM` discretizes, see :func:`weak_order`).

    ``exact`` given to the constructor is a mapping ``{phi name: value}`` or a callable
    ``exact(phi) -> float`` (``None`` for no value).
    """

    name = "problem"
    default_steps = (4, 6, 8, 12, 16)

    def __init__(self, field, x0, T: float, exact=None, name: str | None = None,
                 default_steps: Sequence[int] | None = None, lm_exact=None):
        if not is_field(field):
            raise ValueError(f"WeakProblem: field must be an sdenet Field, got {type(field).__name__}")
        if not isinstance(x0, torch.Tensor):
            x0 = _finite("WeakProblem: x0", x0)
        elif not x0.is_floating_point():
            raise ValueError(f"WeakProblem: x0 must be a floating-point tensor, got dtype {x0.dtype}")
        if exact is not None and not callable(exact) and not hasattr(exact, "get"):
            raise ValueError("WeakProblem: exact must be a mapping {phi name: value} or a callable exact(phi)")
        self._field = field
        self.x0 = x0
        self.T = _positive("WeakProblem: T", T)
        self._exact = exact
        self._lm_exact = lm_exact
        if name is not None:
            self.name = str(name)
        if default_steps is not None:
            self.default_steps = tuple(int(n) for n in default_steps)

    def field(self) -> Field:
        return self._field

    def params(self) -> dict:
        return {"T": self.T}

    def exact(self, phi) -> float:
        phi = get_phi(phi)
        value = None
        if callable(self._exact):
            value = self._exact(phi)
        elif self._exact is not None:
            value = self._exact.get(phi.name)
        if value is None:
            raise NoClosedForm(f"{self.name}: no exact E phi(X(T)) for phi = {phi.label}")
        return float(value)

    def lm_exact(self, phi, g: float) -> float:
        if self._lm_exact is None:
            raise NoClosedForm(f"{self.name}: no exact expectation of the stochastic_lm limit is known")
        value = self._lm_exact(get_phi(phi), g)
        if value is None:
            raise NoClosedForm(f"{self.name}: no exact expectation of the stochastic_lm limit for {get_phi(phi).label}")
        return float(value)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, T={self.T})"


def _linear_moments(alpha, beta, gamma, delta, g, x0, T, k) -> dict:
    """Exact moments ``E X^a Y^b`` (``a + b ≤ k``) at ``T`` of the linear second-order system

        dX = Y dt,   dY = (α X + β + g Y) dt + (γ X + δ) dW,   X(0) = x0, Y(0) = 0,

    from the closed linear ODE the generator ``L`` gives on monomials of degree ≤ k:
    ``L(X^a Y^b) = a X^{a−1} Y^{b+1} + b X^a Y^{b−1}(αX + β + gY) + ½ b(b−1) X^a Y^{b−2}(γX + δ)²``
    (degrees never rise), solved by a matrix exponential in float64.
    """
    monos = [(a, d - a) for d in range(k + 1) for a in range(d, -1, -1)]
    index = {m: i for i, m in enumerate(monos)}
    L = torch.zeros(len(monos), len(monos), dtype=_F64)

    def add(row, a, b, c):
        if c != 0 and a >= 0 and b >= 0:
            L[row, index[(a, b)]] += c

    for row, (a, b) in enumerate(monos):
        add(row, a - 1, b + 1, a)
        add(row, a + 1, b - 1, b * alpha)
        add(row, a, b - 1, b * beta)
        add(row, a, b, b * g)
        h = 0.5 * b * (b - 1)
        add(row, a + 2, b - 2, h * gamma**2)
        add(row, a + 1, b - 2, h * 2 * gamma * delta)
        add(row, a, b - 2, h * delta**2)
    m0 = torch.tensor([x0**a if b == 0 else 0.0 for a, b in monos], dtype=_F64)
    m = torch.linalg.matrix_exp(L * T) @ m0
    return {mono: float(m[i]) for mono, i in index.items()}


def _lm_exact_linear(problem, phi, g) -> float:
    """``E φ(X(T))`` of the stochastic_lm limit of a scalar linear SDE (see :func:`_linear_moments`)."""
    alpha, beta, gamma, delta = problem.linear_coefficients()
    g = _finite("stochastic_lm: g", g)
    if phi.power is not None:
        return _linear_moments(alpha, beta, gamma, delta, g, problem.x0, problem.T, phi.power)[(phi.power, 0)]
    if gamma != 0:
        raise NoClosedForm(
            f"{problem.name}: the stochastic_lm limit has multiplicative noise, X(T) is not Gaussian and "
            f"E {phi.label} has no closed form; give --exact VALUE (exact=...)"
        )
    m = _linear_moments(alpha, beta, gamma, delta, g, problem.x0, problem.T, 2)
    mean, var = m[(1, 0)], m[(2, 0)] - m[(1, 0)] ** 2
    return _gaussian_expectation(phi, mean, var, problem.name)


def _gaussian_expectation(phi, mean, var, name) -> float:
    """``E φ(Y)``, ``Y ~ N(mean, var)``: moments, ``E cos Y = cos(m) e^{−v/2}`` (characteristic
    function), ``E e^Y = e^{m + v/2}`` (moment generating function)."""
    if phi.power is not None:
        return _gaussian_moment(mean, var, phi.power)
    if phi.name == "cos":
        return math.cos(mean) * math.exp(-var / 2)
    if phi.name == "exp":
        return math.exp(mean + var / 2)
    raise NoClosedForm(f"{name}: no exact E phi(X(T)) for phi = {phi.label}; give --exact VALUE (exact=...)")


class GBM(WeakProblem):
    """Geometric Brownian motion ``dX = μ X dt + σ X dW``, ``X(0) = x0``, on ``[0, T]``.

    ``X(T) = x0 exp((μ − σ²/2) T + σ W(T))``, so ``E X(T)^k = x0^k exp(k μ T + k(k−1) σ² T/2)``.
    The weak Euler scheme multiplies by ``1 + μΔt + σΔŴ`` each step, so
    ``E X_N^k = x0^k (E (1 + μΔt + σΔŴ)^k)^N`` exactly, from the law's moments.
    """

    name = "gbm"
    #: default ladder ``Δt = T/N``. With the default parameters (drift-dominated, small noise)
    #: the bias of x³ has slope 0.97 over it for every law meeting condition (5) and is ~50
    #: standard errors of 10⁶ paths at N = 16. GBM is a poor probe of the third moment: the
    #: ``O(Δt^{1/2})`` term of stochastic depth is ``∝ σ³`` against a noise ``∝ σ``, so for
    #: p ≠ ½ the ``O(Δt)`` term dominates here (slope 0.94); use :class:`OU` for order ½.
    default_steps = (4, 6, 8, 12, 16)

    def __init__(self, mu: float = -1.0, sigma: float = 0.3, x0: float = 1.0, T: float = 1.0):
        self.mu = _finite("GBM: mu", mu)
        self.sigma = _positive("GBM: sigma", sigma)
        self.x0 = _finite("GBM: x0", x0)
        self.T = _positive("GBM: T", T)

    def params(self) -> dict:
        return {"mu": self.mu, "sigma": self.sigma, "x0": self.x0, "T": self.T}

    def field(self) -> Field:
        """``drift = μ x``, ``diffusion = σ x``, diagonal noise: a
        :class:`~sdenet.fast.LinearSDEField`, so weak Euler runs in place without gradients."""
        return LinearSDEField(a=self.mu, c=self.sigma, noise="diagonal")

    def exact(self, phi=3) -> float:
        """``E X(T)^k = x0^k exp(k μ T + k(k−1) σ² T/2)`` for ``φ = x^k``, k = 1..4.

        ``cos`` and ``exp`` have no closed form (the log-normal law has no closed-form
        characteristic function; ``E exp(X(T))`` is infinite when ``x0 > 0``):
        :class:`NoClosedForm`.
        """
        phi = get_phi(phi)
        if phi.power is None:
            if phi.name == "exp" and self.x0 > 0:
                raise NoClosedForm(
                    "gbm: E exp(X(T)) is infinite (X(T) is log-normal with x0 > 0), so phi = exp has no weak error"
                )
            raise NoClosedForm(
                f"gbm: E {phi.label} of the log-normal X(T) has no closed form; give --exact VALUE (exact=...) "
                "or use a power x..x4"
            )
        k = phi.power
        return self.x0**k * math.exp(k * self.mu * self.T + k * (k - 1) * self.sigma**2 * self.T / 2)

    def linear_coefficients(self):
        """``(α, β, γ, δ)`` with drift ``αx + β`` and diffusion ``γx + δ``."""
        return (self.mu, 0.0, self.sigma, 0.0)

    def lm_exact(self, phi, g: float = 0.0) -> float:
        """``E φ(X(T))`` of the limit ``dX = Y dt, dY = (μX + gY) dt + σX dW``, ``Y(0) = 0``
        (powers only; see :func:`weak_order`)."""
        return _lm_exact_linear(self, get_phi(phi), g)

    def scheme_expectation(self, law: NoiseLaw, dt: float, k: int = 3) -> float:
        """Exact ``E X_N^k`` of the weak Euler scheme with increments from ``law``:
        ``x0^k (Σ_j C(k, j) (1 + μΔt)^{k−j} σ^j E ΔŴ^j)^N``."""
        k = _check_power(k)
        n = _steps(self.T, dt)
        m = _law_moments(law, dt)
        a = 1.0 + self.mu * dt
        factor = sum(math.comb(k, j) * a ** (k - j) * self.sigma**j * m[j] for j in range(k + 1))
        return self.x0**k * factor**n

    def solution(self, w_T: torch.Tensor) -> torch.Tensor:
        """The exact ``X(T) = x0 exp((μ − σ²/2) T + σ W(T))`` for given ``W(T)``."""
        return self.x0 * torch.exp((self.mu - 0.5 * self.sigma**2) * self.T + self.sigma * w_T)

    def __repr__(self):
        return f"GBM(mu={self.mu}, sigma={self.sigma}, x0={self.x0}, T={self.T})"


def _gaussian_moment(mean: float, var: float, k: int) -> float:
    """``E Y^k`` for ``Y ~ N(mean, var)``: ``Σ_{j even} C(k, j) mean^{k−j} var^{j/2} (j−1)!!``."""
    total = 0.0
    for j in range(0, k + 1, 2):
        double_fact = math.prod(range(j - 1, 0, -2)) if j > 0 else 1
        total += math.comb(k, j) * mean ** (k - j) * var ** (j // 2) * double_fact
    return total


class OU(WeakProblem):
    """Ornstein–Uhlenbeck ``dX = −θ X dt + σ dW``, ``X(0) = x0``, on ``[0, T]``.

    ``X(T)`` is Gaussian with mean ``x0 e^{−θT}`` and variance ``σ²(1 − e^{−2θT})/(2θ)``.
    The weak Euler scheme is ``X_{n+1} = a X_n + σ ΔŴ_n`` with ``a = 1 − θΔt``; its
    moments follow the recursion
    ``E X_{n+1}^j = Σ_i C(j, i) a^i E X_n^i σ^{j−i} E ΔŴ^{j−i}`` (independent increments).
    """

    name = "ou"
    #: default ladder ``Δt = T/N``. With the default parameters and φ = x³ the bias of every
    #: law meeting condition (5) has slope 1.04 over it (~10 standard errors of 10⁶ paths at
    #: N = 8) and stochastic depth at p = 0.8 has slope 0.52: its ``O(Δt^{1/2})`` third-moment
    #: term dominates the ``O(Δt)`` term over the whole ladder.
    default_steps = (2, 3, 4, 6, 8)

    def __init__(self, theta: float = 0.25, sigma: float = 1.0, x0: float = 1.0, T: float = 1.0):
        self.theta = _positive("OU: theta", theta)
        self.sigma = _positive("OU: sigma", sigma)
        self.x0 = _finite("OU: x0", x0)
        self.T = _positive("OU: T", T)

    def params(self) -> dict:
        return {"theta": self.theta, "sigma": self.sigma, "x0": self.x0, "T": self.T}

    def field(self) -> Field:
        """``drift = −θ x``, ``diffusion = σ`` (additive), diagonal noise (a
        :class:`~sdenet.fast.LinearSDEField`)."""
        return LinearSDEField(a=-self.theta, d=self.sigma, noise="diagonal")

    def mean(self) -> float:
        return self.x0 * math.exp(-self.theta * self.T)

    def variance(self) -> float:
        return self.sigma**2 * (1.0 - math.exp(-2.0 * self.theta * self.T)) / (2.0 * self.theta)

    def exact(self, phi=3) -> float:
        """``E φ(X(T))`` of the Gaussian ``X(T)``: every named φ (powers from the Gaussian
        moments, ``E cos X = cos(m) e^{−v/2}``, ``E e^X = e^{m + v/2}``)."""
        return _gaussian_expectation(get_phi(phi), self.mean(), self.variance(), self.name)

    def linear_coefficients(self):
        """``(α, β, γ, δ)`` with drift ``αx + β`` and diffusion ``γx + δ``."""
        return (-self.theta, 0.0, 0.0, self.sigma)

    def lm_exact(self, phi, g: float = 0.0) -> float:
        """``E φ(X(T))`` of the limit ``dX = Y dt, dY = (−θX + gY) dt + σ dW``, ``Y(0) = 0``:
        ``(X, Y)`` is Gaussian, so every named φ has an exact value (see :func:`weak_order`)."""
        return _lm_exact_linear(self, get_phi(phi), g)

    def scheme_expectation(self, law: NoiseLaw, dt: float, k: int = 3) -> float:
        """Exact ``E X_N^k`` of the weak Euler scheme by the moment recursion."""
        k = _check_power(k)
        n = _steps(self.T, dt)
        m = _law_moments(law, dt)
        a = 1.0 - self.theta * dt
        s = self.sigma
        mom = [self.x0**j for j in range(k + 1)]
        for _ in range(n):
            mom = [
                sum(math.comb(j, i) * a**i * mom[i] * s ** (j - i) * m[j - i] for i in range(j + 1))
                for j in range(k + 1)
            ]
        return mom[k]

    def __repr__(self):
        return f"OU(theta={self.theta}, sigma={self.sigma}, x0={self.x0}, T={self.T})"


SDE_NAMES = ("gbm", "ou")


def get_sde(name: str, **params):
    """Build a test SDE by name (``gbm`` or ``ou``) with its default parameters."""
    key = str(name).lower()
    if key == "gbm":
        return GBM(**params)
    if key in ("ou", "ornstein_uhlenbeck", "ornstein-uhlenbeck"):
        return OU(**params)
    raise ValueError(f"unknown test SDE {name!r}; choose one of {', '.join(SDE_NAMES)}")


# =========================================================================== slopes


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
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf_two_sided(mid, dof) < 0.95:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


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
        raise ValueError(f"fit_slope: need at least two (dt, error) pairs of equal length, got {n} and {len(errors)}")
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
    if (target != "closed form" or phi.power is None or not is_law(law)
            or not callable(getattr(sde, "scheme_expectation", None)) or getattr(scheme, "history", 0)):
        return None
    ref = WeakEuler(law)
    try:
        x0 = _initial(sde, 4, device)
        shape = tuple(field.noise_shape(x0))
        dw = torch.linspace(-0.45, 0.6, math.prod(shape), dtype=_F64, device=x0.device).reshape((1,) + shape)
        from .integrate import integrate

        g = torch.Generator(device=x0.device).manual_seed(0)
        a = integrate(field, scheme, x0, steps=1, dt=0.25, dw=dw, generator=g)
        b = integrate(field, ref, x0, steps=1, dt=0.25, dw=dw, generator=g)
        sde.scheme_expectation(law, float(sde.T), phi.power)
    except (ValueError, TypeError, NotImplementedError, RuntimeError):
        return None
    return None if torch.equal(a, b) else ref


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
    text = f"declared weak order {declared:g} lies {where} the 95% CI [{lo:.3f}, {hi:.3f}] of the fitted slope"
    if not inside:
        text += (" (over this dt ladder the error does not decay at the declared rate: the ladder is not in the "
                 "asymptotic regime, the Monte Carlo error is too large, or the declaration is wrong)")
    return {"declared": float(declared), "inside": inside, "text": text}


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
            raise ValueError(f"weak_order: phi {phi.name!r} is a user function; give its exact E phi(X(T)) as exact=")
        exact = float(sde.exact(phi))
        target = "closed form"
    from .integrate import integrate

    ref = _control_of(sde, scheme, field, phi, target, device) if control == "auto" else None
    name = _problem_name(sde)
    rows = []
    for dt in dts:
        g = _generator(_row_seed(seed, "weak_order", _problem_key(sde), repr(scheme), dt), device)
        eb = float(sde.scheme_expectation(ref.law, dt, phi.power)) if ref is not None else None
        rows.append({"dt": dt, "gen": g, "acc": _Pairs() if ref is not None else _Welford(1), "eb": eb})

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
                dw = torch.randn((steps,) + tuple(field.noise_shape(x0)), generator=g, device=g.device,
                                 dtype=_F64) * math.sqrt(dt)
                xs = integrate(field, scheme, x0, t1=sde.T, dt=dt, dw=dw, generator=g)
                xr = integrate(field, ref, x0, t1=sde.T, dt=dt, dw=dw, generator=g)
                acc.add(phi(xs).to(_F64), phi(xr).to(_F64))

    def summary(row):
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
            while (fitted is not None and fitted[1][1] - fitted[1][0] > target_width and auto_ladder
                   and len(active) > 3 and sums[-1][2] > 0 and sums[-1][1] < sums[-1][2]):
                dropped.append(active.pop())  # the finest Δt: its bias is swamped by Monte Carlo error
                sums, fitted = fit(active)
            decisive = fitted is not None and fitted[1][1] - fitted[1][0] <= target_width
            spent = _time.perf_counter() - t_start
            if decisive or 2 * total > max_paths or spent + 2.2 * last > budget:
                break
            total *= 2
        info = {"decisive": decisive, "target_width": target_width, "budget_s": budget, "rounds": rounds,
                "seconds": _time.perf_counter() - t_start, "paths": total,
                "dropped_dts": [r["dt"] for r in dropped]}
        paths = total
    dts = [r["dt"] for r in active]
    estimates = [est for est, _, _ in sums]
    errors = [e for _, e, _ in sums]
    stderr = [se for _, _, se in sums]
    if any(e == 0 for e in errors):
        raise ValueError("weak_order: an error is exactly 0 (a deterministic X_N equal to the exact value); "
                         "nothing to fit")
    slope, ci = fitted
    declared = getattr(scheme, "weak_order", None)
    v = verdict(declared, ci)
    if info is not None and not info["decisive"]:
        v["text"] += (f"; NOT DECISIVE: the interval is {ci[1] - ci[0]:.2f} wide (target {target_width:g}) after "
                      f"{paths} paths per dt in {info['seconds']:.0f} s; give coarser dts, a problem with a larger "
                      "error, or a longer budget")
    out = {
        "sde": name,
        "params": _problem_params(sde),
        "T": float(sde.T),
        "state_shape": list(_initial(sde, 1, None).shape[1:]),
        "law": scheme.law.name if hasattr(scheme, "law") else None,
        "p": _law_p(scheme.law) if hasattr(scheme, "law") else None,
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
    if (scheme.euler_law is not None and hasattr(sde, "scheme_expectation") and phi.power is not None
            and target == "closed form"):
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


# Talay–Tubaro extrapolation lives in its own module; it is part of this toolkit's API.
from .extrapolation import extrapolate, monte_carlo  # noqa: E402

__all__ += ["extrapolate", "monte_carlo"]
