r"""Stochastic Runge–Kutta schemes of strong order 1.5 (Rößler 2010): :class:`SRK`.

Reference: A. Rößler, "Runge–Kutta methods for the strong approximation of solutions of
stochastic differential equations", SIAM J. Numer. Anal. 48(3):922–952, 2010
(doi:10.1137/09076636X). The same tableaux drive torchsde's ``method="srk"`` (SRA1 for
additive noise, SRI2 for scalar and diagonal noise) and diffrax's ``SRA1``.

Iterated integrals over one step ``[t, t + h]`` (Itô; ``W`` one Brownian motion):

    I_(1) = ΔW,   I_(1,1) = (ΔW² − h)/2,   I_(1,1,1) = (ΔW³ − 3hΔW)/6,
    I_(1,0) = ΔZ = ∫_t^{t+h} (W(s) − W(t)) ds.

``ΔZ`` is not a function of ``ΔW``: ``(ΔW, ΔZ)`` is jointly Gaussian with ``Var ΔZ = h³/3``
and ``Cov(ΔW, ΔZ) = h²/2``, drawn as ``ΔZ = ½h(ΔW + ΔU/√3)`` with ``ΔU ~ N(0, h)``
independent of ``ΔW`` (Kloeden & Platen 1992, §10.4; ``ΔZ/h − ΔW/2`` is the space-time Lévy
area ``H`` of diffrax, of variance ``h/12``). :func:`space_time_increments` draws the pair,
:func:`coarsen_increments` sums fine pairs into the exact pair of a coarser step (so one
Brownian path drives every step size), and a torchsde ``BrownianInterval`` with
``levy_area_approximation="space-time"`` gives it as ``bm(t, t + h, return_U=True)``.

**Additive noise** (``field.additive``, :class:`sdenet.additive.AdditiveField`; any
increment structure, including ``general`` noise with ``m`` Brownian motions), the SRA
family: with ``f_j = f(t + c⁰_j h, H_j)`` and ``g(τ)`` the diffusion at time ``t + τh``,

    H_i     = X + h Σ_{j<i} A⁰_ij f_j + Σ_{j<i} B⁰_ij g(c¹_j) ΔZ/h,
    X_{n+1} = X + h Σ_i α_i f_i + Σ_i g(c¹_i) (β¹_i ΔW + β²_i ΔZ/h)

(``g ΔW`` is ``Σ_k g^k ΔW^k`` for general noise, each ``ΔZ^k`` from its own ``ΔW^k``).

**Scalar and diagonal noise** (``sample``, ``batch`` and ``diagonal`` structures, diffusion
depending on the state), the SRI family: with ``f_j = f(t + c⁰_j h, H⁰_j)`` and
``g_j = g(t + c¹_j h, H¹_j)``,

    H⁰_i    = X + h Σ_{j<i} A⁰_ij f_j + Σ_{j<i} B⁰_ij g_j ΔZ/h,
    H¹_i    = X + h Σ_{j<i} A¹_ij f_j + Σ_{j<i} B¹_ij g_j √h,
    X_{n+1} = X + h Σ_i α_i f_i
                + Σ_i g_j (β¹_i I_(1) + β²_i I_(1,1)/√h + β³_i I_(1,0)/h + β⁴_i I_(1,1,1)/h),

products elementwise. Strong order 1.5 needs one Brownian motion per component whose
diffusion depends on that component only (``sample``/``batch`` noise: one Brownian
motion, any state; ``diagonal`` noise: elementwise diffusions, as for
:class:`~sdenet.schemes.Milstein`); a diagonal diffusion with cross-dependence gets a
consistent scheme without the higher order. Non-additive ``general`` noise is refused when
the scheme is checked (as torchsde refuses it): it needs Lévy areas this scheme does not draw.

Tableaux (:data:`SRA_TABLEAUX`, :data:`SRI_TABLEAUX`; deterministic order / weak order as
declared, each checked by a fitted slope in ``tests/test_srk.py``):

======== ===== ============ ==================================================
name     stages det. / weak  where
======== ===== ============ ==================================================
sra1       2    2 / 2       Rößler's SRA1; torchsde ``srk`` (additive), diffrax ``SRA1``
sra3       3    3 / 1.5     Rößler's SRA3; torchsde's ``sra3`` tableau
sriw1      4    2 / 2       Rößler's SRI (StochasticDiffEq.jl's SRIW1; torchsde ``srid1``)
sri2       4    3 / 1.5     torchsde ``srk``'s diagonal tableau (``srid2``)
======== ===== ============ ==================================================

A weak order of 1.5 is the lower bound strong order 1.5 implies (torchsde declares the
same); 2 is Rößler's weak order-2 claim for SRA1 and SRIW1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .fields import Time
from .laws import Gaussian
from .schemes import Scheme, register_scheme

__all__ = [
    "SRK",
    "SRATableau",
    "SRITableau",
    "ExplicitRK",
    "SRA_TABLEAUX",
    "SRI_TABLEAUX",
    "space_time_increments",
    "space_time_integral",
    "coarsen_increments",
]

_R3 = math.sqrt(3.0)


# --------------------------------------------------------------------------- increments


def space_time_integral(dw: torch.Tensor, du: torch.Tensor, dt: float) -> torch.Tensor:
    """``ΔZ = I_(1,0) = ½Δt(ΔW + ΔU/√3)`` from ``ΔW`` and an independent ``ΔU ~ N(0, Δt)``."""
    return (0.5 * dt) * (dw + du / _R3)


def space_time_increments(
    shape: Sequence[int],
    dt: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A jointly Gaussian pair ``(ΔW, ΔZ)`` of one step ``Δt``: ``ΔW ~ N(0, Δt)``,
    ``ΔZ = ∫ (W(s) − W(t)) ds`` (``Var = Δt³/3``, ``Cov(ΔW, ΔZ) = Δt²/2``)."""
    dt = float(dt)
    if not dt > 0:
        raise ValueError(f"space_time_increments: dt must be positive, got {dt!r}")
    s = math.sqrt(dt)
    dw = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype) * s
    du = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype) * s
    return dw, space_time_integral(dw, du, dt)


def coarsen_increments(
    dw: torch.Tensor, dz: torch.Tensor, dt: float, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact ``(ΔW, ΔZ)`` of steps ``factor·Δt`` from those of ``Δt`` (leading dimension: steps).

    Over two adjacent steps ``ΔW = ΔW₁ + ΔW₂`` and ``ΔZ = ΔZ₁ + ΔZ₂ + Δt ΔW₁``; in general
    each fine ``ΔZ_k`` adds ``Δt`` times the Brownian increment before it in the coarse step.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"coarsen_increments: factor must be a positive integer, got {factor!r}")
    if dw.shape != dz.shape or dw.dim() < 1 or dw.shape[0] % factor:
        raise ValueError(
            f"coarsen_increments: dw and dz need one shape (steps, ...) with steps a multiple of "
            f"factor={factor}; got {tuple(dw.shape)} and {tuple(dz.shape)}"
        )
    shape = (dw.shape[0] // factor, factor) + tuple(dw.shape[1:])
    w = dw.reshape(shape)
    before = torch.cumsum(w, dim=1) - w
    return w.sum(1), (dz.reshape(shape) + float(dt) * before).sum(1)


# --------------------------------------------------------------------------- tableaux


def _check_rows(name: str, what: str, rows: Sequence[Sequence[float]], s: int) -> None:
    if len(rows) != s or any(len(r) != i for i, r in enumerate(rows)):
        raise ValueError(
            f"{name}: {what} must have {s} rows, row i with i entries (explicit, lower triangular)"
        )


def _check_sum(name: str, what: str, values: Sequence[float], target: float) -> None:
    if abs(sum(values) - target) > 1e-12:
        raise ValueError(
            f"{name}: the weights {what} must sum to {target} (consistency), they sum to {sum(values)}"
        )


class _Tableau:
    """What ``__post_init__`` checks of a tableau: the vectors with one entry per stage (as many as
    ``alpha``), the lower-triangular rows, and the weights with the sums they must have."""

    _vectors: ClassVar[tuple[str, ...]]
    _rows: ClassVar[tuple[str, ...]]
    _sums: ClassVar[tuple[tuple[str, float], ...]]
    name: str
    alpha: tuple[float, ...]

    def __post_init__(self) -> None:
        label = f"{type(self).__name__} {self.name}"
        s = len(self.alpha)
        for what in self._vectors:
            if len(getattr(self, what)) != s:
                raise ValueError(f"{label}: {what} must have {s} entries")
        for what in self._rows:
            _check_rows(label, what, getattr(self, what), s)
        for what, target in self._sums:
            _check_sum(label, what, getattr(self, what), target)

    @property
    def stages(self) -> int:
        return len(self.alpha)


@dataclass(frozen=True)
class SRATableau(_Tableau):
    """Rößler's SRA tableau for additive noise: ``c0, c1`` (drift and diffusion times),
    ``a0, b0`` (lower-triangular rows; ``a0[i]`` has ``i`` entries), weights ``alpha``,
    ``beta1``, ``beta2``; ``order`` (deterministic) and ``weak_order`` as declared."""

    name: str
    c0: tuple[float, ...]
    c1: tuple[float, ...]
    a0: tuple[tuple[float, ...], ...]
    b0: tuple[tuple[float, ...], ...]
    alpha: tuple[float, ...]
    beta1: tuple[float, ...]
    beta2: tuple[float, ...]
    order: int
    weak_order: float

    _vectors = ("c0", "c1", "beta1", "beta2")
    _rows = ("a0", "b0")
    _sums = (("alpha", 1.0), ("beta1", 1.0), ("beta2", 0.0))


@dataclass(frozen=True)
class SRITableau(_Tableau):
    """Rößler's SRI tableau for scalar / diagonal Itô noise: ``c0, c1``, lower-triangular
    ``a0, a1, b0, b1``, weights ``alpha``, ``beta1`` … ``beta4``; ``order`` and ``weak_order``."""

    name: str
    c0: tuple[float, ...]
    c1: tuple[float, ...]
    a0: tuple[tuple[float, ...], ...]
    a1: tuple[tuple[float, ...], ...]
    b0: tuple[tuple[float, ...], ...]
    b1: tuple[tuple[float, ...], ...]
    alpha: tuple[float, ...]
    beta1: tuple[float, ...]
    beta2: tuple[float, ...]
    beta3: tuple[float, ...]
    beta4: tuple[float, ...]
    order: int
    weak_order: float

    _vectors = ("c0", "c1", "beta1", "beta2", "beta3", "beta4")
    _rows = ("a0", "a1", "b0", "b1")
    _sums = (("alpha", 1.0), ("beta1", 1.0), ("beta2", 0.0), ("beta3", 0.0), ("beta4", 0.0))


#: Rößler (2010)'s SRA tableaux for additive noise, by name
SRA_TABLEAUX = {
    "sra1": SRATableau(
        "sra1",
        c0=(0.0, 3 / 4),
        c1=(1.0, 0.0),
        a0=((), (3 / 4,)),
        b0=((), (3 / 2,)),
        alpha=(1 / 3, 2 / 3),
        beta1=(1.0, 0.0),
        beta2=(-1.0, 1.0),
        order=2,
        weak_order=2.0,
    ),
    "sra3": SRATableau(
        "sra3",
        c0=(0.0, 1.0, 1 / 2),
        c1=(1.0, 0.0, 0.0),
        a0=((), (1.0,), (1 / 4, 1 / 4)),
        b0=((), (0.0,), (1.0, 1 / 2)),
        alpha=(1 / 6, 1 / 6, 2 / 3),
        beta1=(1.0, 0.0, 0.0),
        beta2=(-1.0, 1.0, 0.0),
        order=3,
        weak_order=1.5,
    ),
}

#: Rößler (2010)'s SRI tableaux for scalar and diagonal noise, by name
SRI_TABLEAUX = {
    "sriw1": SRITableau(
        "sriw1",
        c0=(0.0, 3 / 4, 0.0, 0.0),
        c1=(0.0, 1 / 4, 1.0, 1 / 4),
        a0=((), (3 / 4,), (0.0, 0.0), (0.0, 0.0, 0.0)),
        a1=((), (1 / 4,), (1.0, 0.0), (0.0, 0.0, 1 / 4)),
        b0=((), (3 / 2,), (0.0, 0.0), (0.0, 0.0, 0.0)),
        b1=((), (1 / 2,), (-1.0, 0.0), (-5.0, 3.0, 1 / 2)),
        alpha=(1 / 3, 2 / 3, 0.0, 0.0),
        beta1=(-1.0, 4 / 3, 2 / 3, 0.0),
        beta2=(-1.0, 4 / 3, -1 / 3, 0.0),
        beta3=(2.0, -4 / 3, -2 / 3, 0.0),
        beta4=(-2.0, 5 / 3, -2 / 3, 1.0),
        order=2,
        weak_order=2.0,
    ),
    "sri2": SRITableau(
        "sri2",
        c0=(0.0, 1.0, 1 / 2, 0.0),
        c1=(0.0, 1 / 4, 1.0, 1 / 4),
        a0=((), (1.0,), (1 / 4, 1 / 4), (0.0, 0.0, 0.0)),
        a1=((), (1 / 4,), (1.0, 0.0), (0.0, 0.0, 1 / 4)),
        b0=((), (0.0,), (1.0, 1 / 2), (0.0, 0.0, 0.0)),
        b1=((), (-1 / 2,), (1.0, 0.0), (2.0, -1.0, 1 / 2)),
        alpha=(1 / 6, 1 / 6, 2 / 3, 0.0),
        beta1=(-1.0, 4 / 3, 2 / 3, 0.0),
        beta2=(1.0, -4 / 3, 1 / 3, 0.0),
        beta3=(2.0, -4 / 3, -2 / 3, 0.0),
        beta4=(-2.0, 5 / 3, -2 / 3, 1.0),
        order=3,
        weak_order=1.5,
    ),
}


def _tableau(value: Any, table: dict[str, Any], cls: type, what: str) -> Any:
    if isinstance(value, cls):
        return value
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise ValueError(f"SRK: {what} must be one of {', '.join(table)} or an {cls.__name__}, got {value!r}")


def _used_later(rows: Sequence[Sequence[Sequence[float]]], i: int) -> bool:
    """Whether stage ``i``'s value enters a later stage through any of the coefficient ``rows``."""
    return any(r[k][i] != 0 for r in rows for k in range(i + 1, len(r)))


# --------------------------------------------------------------------------- schemes


class _OneStep(Scheme):
    """The protocol's step for this module's one-step schemes, typed once: the state passes
    through, and extra keywords are refused (no ``**extras``, hence the narrower signature)."""

    def step(  # type: ignore[override]
        self,
        field: Any,
        t: Time,
        x: torch.Tensor,
        dt: float,
        state: Any,
        generator: torch.Generator | None = None,
        *,
        dw: Any = None,
    ) -> tuple[torch.Tensor, Any]:
        return self._advance(field, t, x, dt, generator, dw), state

    def _advance(
        self, field: Any, t: Time, x: torch.Tensor, dt: float, generator: torch.Generator | None, dw: Any
    ) -> torch.Tensor:
        """``X_{n+1}`` from ``X_n = x`` (``dw``: given increments, or None)."""
        raise NotImplementedError


class ExplicitRK(_OneStep):
    """The explicit Runge–Kutta scheme ``k_i = f(t + c_i h, X + h Σ_{j<i} a_ij k_j)``,
    ``X_{n+1} = X + h Σ b_i k_i`` on the drift: what :class:`SRK` reduces to without noise
    (its ``mean_scheme``). ``order`` is the tableau's declared deterministic order."""

    def __init__(
        self,
        a: Sequence[Sequence[float]],
        b: Sequence[float],
        c: Sequence[float],
        order: int,
        name: str = "rk",
    ) -> None:
        s = len(b)
        _check_rows(f"ExplicitRK {name}", "a", a, s)
        if len(c) != s:
            raise ValueError(f"ExplicitRK {name}: c must have {s} entries")
        _check_sum(f"ExplicitRK {name}", "b", b, 1.0)
        self.a, self.b, self.c = tuple(map(tuple, a)), tuple(b), tuple(c)
        self.order = int(order)
        self.name = name
        self.lookahead = int(math.ceil(max(self.c)))
        #: the drift's evaluation times of one step, in units of Δt from t_n
        self.evaluations = tuple(sorted(set(self.c)))
        self._needed = [self.b[i] != 0 or _used_later((self.a,), i) for i in range(s)]

    def _advance(
        self, field: Any, t: Time, x: torch.Tensor, dt: float, generator: torch.Generator | None, dw: Any
    ) -> torch.Tensor:
        self._refuse_dw(dw)  # type: ignore[no-untyped-call]  # Scheme (sdenet.schemes) is not annotated yet
        ks: list[torch.Tensor | None] = []
        out = x
        for i, need in enumerate(self._needed):
            if not need:
                ks.append(None)
                continue
            y = x
            for j, a in enumerate(self.a[i]):
                if a:
                    kj = ks[j]
                    assert kj is not None  # a stage a later one uses is evaluated (_needed)
                    y = y + (a * dt) * kj
            k: torch.Tensor = field.drift(t + self.c[i] * dt if self.c[i] else t, y)
            ks.append(k)
            if self.b[i]:
                out = out + (self.b[i] * dt) * k
        return out

    def __repr__(self) -> str:
        return f"ExplicitRK({self.name!r})"


class SRK(_OneStep):
    r"""Rößler's stochastic Runge–Kutta scheme of strong order 1.5 (see :mod:`sdenet.srk`).

    ``SRK(sra="sra1", sri="sriw1")``: the SRA tableau steps fields that declare additive
    noise (``field.additive``), the SRI tableau the others (``sample``, ``batch`` or
    ``diagonal`` noise). Gaussian increments; a step draws ``(ΔW, ΔZ)`` from ``generator``
    (:func:`space_time_increments`) or takes them given: ``dw=(ΔW, ΔZ)`` (e.g.
    ``integrate(..., dw=(dW, dZ))`` or a torchsde ``bm(t, t + h, return_U=True)``), or
    ``dw=ΔW`` alone, when ``ΔZ`` is drawn from its conditional law given ``ΔW`` (then the
    error against *that* path is of order 1, since ``ΔZ`` is not a function of ``ΔW``).

    Declares ``strong_order = 1.5``, ``order`` and ``weak_order`` the smaller of its two
    tableaux' (2 and 2 by default), ``lookahead = 1`` (stages at ``t + c h``, ``c ≤ 1``), and
    ``mean_scheme()`` the drift Runge–Kutta scheme of its SRI tableau.
    """

    stochastic = True
    strong_order = 1.5
    lookahead = 1
    aliases = ("srk",)
    options = ("sra", "sri")
    only_gaussian = " (it is a strong scheme); use platen for another law"
    #: a step accepts ``dw=(ΔW, ΔZ)``: the Brownian increment with its space-time integral
    space_time = True

    def __init__(self, sra: str | SRATableau = "sra1", sri: str | SRITableau = "sriw1") -> None:
        self.sra: SRATableau = _tableau(sra, SRA_TABLEAUX, SRATableau, "sra")
        self.sri: SRITableau = _tableau(sri, SRI_TABLEAUX, SRITableau, "sri")
        self.law = Gaussian()
        t = self.sri
        self._sri_f = [t.alpha[i] != 0 or _used_later((t.a0, t.a1), i) for i in range(t.stages)]
        self._sri_g = [
            any(b[i] != 0 for b in (t.beta1, t.beta2, t.beta3, t.beta4)) or _used_later((t.b0, t.b1), i)
            for i in range(t.stages)
        ]

    # the Scheme base declares these as plain attributes; here they follow the tableaux
    @property
    def order(self) -> int:  # type: ignore[override]
        return min(self.sra.order, self.sri.order)

    @property
    def weak_order(self) -> float:  # type: ignore[override]
        return min(self.sra.weak_order, self.sri.weak_order)

    def check(self, field: Any) -> None:
        super().check(field)
        if field.noise == "general" and not field.additive:
            raise ValueError(
                "SRK supports general noise (m Brownian motions) only when it is additive "
                "(sdenet.additive.AdditiveField); for state-dependent general noise use Milstein "
                "(commutative noise), Platen or EulerMaruyama"
            )

    @property
    def evaluations(self) -> tuple[float, ...]:  # type: ignore[override]
        """The times ``t_n + c Δt`` of the drift and diffusion evaluations of both tableaux (the
        SRA one serves additive fields, the SRI one the others)."""
        times: set[float] = set()
        for tab in (self.sra, self.sri):
            times |= set(tab.c0) | set(tab.c1)
        return tuple(sorted(times))

    def mean_scheme(self) -> Scheme:
        t = self.sri
        out: Scheme = ExplicitRK(t.a0, t.alpha, t.c0, t.order, name=t.name)
        return out

    def draw(
        self, field: Any, x: torch.Tensor, dt: float, generator: torch.Generator | None = None, dw: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ΔW, ΔZ)``: drawn, given as a pair, or ``ΔZ`` drawn given ``ΔW``."""
        if dw is None:
            return space_time_increments(field.noise_shape(x), dt, generator, x.device, x.dtype)
        if isinstance(dw, (tuple, list)):
            if len(dw) != 2:
                raise ValueError(f"SRK: given increments are ΔW or a pair (ΔW, ΔZ), got {len(dw)} tensors")
            pair: tuple[torch.Tensor, torch.Tensor] = (dw[0], dw[1])
            return pair
        w: torch.Tensor = dw
        du = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype) * math.sqrt(dt)
        return w, space_time_integral(w, du, dt)

    def _advance(
        self, field: Any, t: Time, x: torch.Tensor, dt: float, generator: torch.Generator | None, dw: Any
    ) -> torch.Tensor:
        dw, dz = self.draw(field, x, dt, generator, dw)
        if field.additive:
            return self._additive_step(field, t, x, dt, dw, dz)
        return self._ito_step(field, t, x, dt, dw, dz)

    @staticmethod
    def _at(t: Time, c: float, dt: float) -> Time:
        return t + c * dt if c else t

    def _additive_step(
        self, field: Any, t: Time, x: torch.Tensor, dt: float, dw: torch.Tensor, dz: torch.Tensor
    ) -> torch.Tensor:
        tab = self.sra
        zh = dz / dt
        g_at: dict[
            float, torch.Tensor
        ] = {}  # the diffusion at each distinct time t + c¹h (it does not depend on the state)

        def g(c: float) -> torch.Tensor:
            if c not in g_at:
                g_at[c] = field.diffusion(self._at(t, c, dt), x)
            return g_at[c]

        fs: list[torch.Tensor] = []
        out = x
        for i in range(tab.stages):
            y = x
            for j in range(i):
                if tab.a0[i][j]:
                    y = y + (tab.a0[i][j] * dt) * fs[j]
                if tab.b0[i][j]:
                    y = y + field.noise_term(g(tab.c1[j]), tab.b0[i][j] * zh)
            f: torch.Tensor = field.drift(self._at(t, tab.c0[i], dt), y)
            fs.append(f)
            if tab.alpha[i]:
                out = out + (tab.alpha[i] * dt) * f
        weights: dict[
            float, torch.Tensor
        ] = {}  # Σ_i over stages sharing a diffusion time: one g-product per time
        for i in range(tab.stages):
            if tab.beta1[i] or tab.beta2[i]:
                w = tab.beta1[i] * dw + tab.beta2[i] * zh
                c = tab.c1[i]
                weights[c] = w if c not in weights else weights[c] + w
        for c, w in weights.items():
            out = out + field.noise_term(g(c), w)
        return out

    def _ito_step(
        self, field: Any, t: Time, x: torch.Tensor, dt: float, dw: torch.Tensor, dz: torch.Tensor
    ) -> torch.Tensor:
        tab = self.sri
        s = math.sqrt(dt)
        i10 = dz / dt
        i11 = (dw * dw - dt) * (0.5 / s)
        i111 = (dw * dw - 3.0 * dt) * dw / (6.0 * dt)
        fs: list[Any] = []  # None where a stage's value is never used (_sri_f, _sri_g)
        gs: list[Any] = []
        out = x
        for i in range(tab.stages):
            h0 = h1 = x
            for j in range(i):
                if tab.a0[i][j]:
                    h0 = h0 + (tab.a0[i][j] * dt) * fs[j]
                if tab.b0[i][j]:
                    h0 = h0 + tab.b0[i][j] * gs[j] * i10
                if tab.a1[i][j]:
                    h1 = h1 + (tab.a1[i][j] * dt) * fs[j]
                if tab.b1[i][j]:
                    h1 = h1 + (tab.b1[i][j] * s) * gs[j]
            need_f, need_g = self._sri_f[i], self._sri_g[i]
            if i == 0 and need_f and need_g and tab.c0[0] == tab.c1[0] == 0:
                f: Any
                g: Any
                f, g = field.coefficients(t, x)  # one evaluation for fields that share the work
            else:
                f = field.drift(self._at(t, tab.c0[i], dt), h0) if need_f else None
                g = field.diffusion(self._at(t, tab.c1[i], dt), h1) if need_g else None
            fs.append(f)
            gs.append(g)
            if tab.alpha[i]:
                out = out + (tab.alpha[i] * dt) * f
            if g is not None:
                w = tab.beta1[i] * dw + tab.beta2[i] * i11 + tab.beta3[i] * i10 + tab.beta4[i] * i111
                out = out + g * w
        return out

    def __repr__(self) -> str:
        return f"SRK(sra={self.sra.name!r}, sri={self.sri.name!r})"


register_scheme(SRK)
