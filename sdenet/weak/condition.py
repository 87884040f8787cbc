"""Condition (5) on the increments of the simplified weak Euler scheme, exact from a law's
moments (:func:`condition`, :func:`condition_K`) and empirical from samples with standard errors
(:func:`empirical_moments`, :func:`empirical_condition`, :func:`check`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from ..laws import LAW_NAMES, DropBernoulli, NoiseLaw, _check_dt, get_law
from .limits import (
    _F64,
    DEFAULT_CHECK_DTS,
    _check_check_dt,
    _check_draws,
    _check_law,
    _check_samples,
    _generator,
    _law_p,
    _row_seed,
)


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


# The same parameters as empirical_moments, which it hands them to: spelled out (a duplicates
# pair with empirical_moments' signature) so that the signature documents them.
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
    return [get_law(name) for name in LAW_NAMES] + [DropBernoulli(0.8)]  # "drop" is p = ½


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
