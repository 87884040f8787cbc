"""Shared by the condition-(5) check and order estimation: argument checks, the work limits
(draws, path-steps) beyond which a call is refused before it starts, and the seeding of rows."""

from __future__ import annotations

import zlib

import torch

from ..laws import NoiseLaw, _check_dt, is_law

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
        raise ValueError(
            f"dt = {dt:g} is outside the range {lo:g} <= dt <= {hi:g} where condition (5) "
            "is computed in float64 (dt^2 and the variance of dW^4 ~ dt^4 must stay normal numbers)"
        )
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
