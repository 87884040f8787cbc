"""Noise laws for the increments ΔŴ of a weak scheme.

Every law here has mean 0 and variance Δt (except the degenerate ``DropBernoulli(1)``,
whose increment is identically 0), knows its exact moments ``E[ΔŴ^k]``, ``k = 1..4``,
as functions of Δt, and samples any shape through a ``torch.Generator`` on any device
and dtype.

Weak convergence of the simplified weak Euler scheme (Kloeden & Platen, ch. 14.1)
needs condition (5),

    C(Δt) = |E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt| ≤ K Δt²,

which every symmetric law below meets with ``C = 0``. The stochastic-depth increment
``√Δt (η − p)/√(p(1 − p))`` has third moment ``Δt^{3/2} (1 − 2p)/√(p(1 − p))`` and meets it
only when ``1 − 2p = O(√Δt)``.

Sampling is cheap: two- and three-point laws draw uniform integers, never a Gaussian
per element (large Rademacher draws unpack 64 random bits from each 64-bit integer).
"""

from __future__ import annotations

import cmath
import math
import operator
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ._checks import checked_float

__all__ = [
    "NoiseLaw",
    "Draws",
    "is_law",
    "Gaussian",
    "Uniform",
    "Rademacher",
    "ThreePoint",
    "DropBernoulli",
    "get_law",
    "LAW_NAMES",
    "random_bits",
    "survival_at",
    "P_SCHEDULES",
]


_SHIFTS: dict[str, torch.Tensor] = {}

#: a sample shape: an int or a sequence of ints (a ``torch.Size`` is one)
ShapeLike = int | Sequence[int]
#: where to sample: a ``torch.device``, its name, or None (the default / the generator's device)
DeviceLike = torch.device | str | None
#: a checked sample shape (what ``_check_shape`` returns)
Shape = tuple[int, ...]
#: a random generator, or None for torch's global one
Gen = torch.Generator | None
#: what ``Draws.draw`` returns: ``(u, scale, shift)`` with ``ΔŴ = scale · u + shift``
Draw = tuple[torch.Tensor, float, float]


def random_bits(n: int, generator: torch.Generator | None = None, device: DeviceLike = None) -> torch.Tensor:
    """``n`` independent fair bits as a uint8 tensor of 0/1.

    Draws ``⌈n/64⌉`` 64-bit integers and unpacks them: 64 bits per random draw,
    against one draw per element for ``rand() < ½``.
    """
    words = torch.randint(
        -(2**63), 2**63 - 1, ((n + 63) // 64,), dtype=torch.int64, generator=generator, device=device
    )
    key = str(words.device)
    shifts = _SHIFTS.get(key)
    if shifts is None:
        shifts = _SHIFTS[key] = torch.arange(8, dtype=torch.uint8, device=words.device)
    return ((words.view(torch.uint8).unsqueeze(-1) >> shifts) & 1).view(-1)[:n]


def _check_shape(shape: Any) -> tuple[int, ...]:
    """A sample shape: an int or a sequence of non-negative ints."""
    try:
        out = (
            (operator.index(shape),)
            if not isinstance(shape, (tuple, list, torch.Size))
            else tuple(operator.index(n) for n in shape)
        )
    except TypeError:
        raise ValueError(f"shape must be an int or a sequence of ints, got shape={shape!r}") from None
    if any(n < 0 for n in out):
        raise ValueError(f"shape must have non-negative sizes, got shape={shape!r}")
    return out


def _device_for(generator: Any, device: DeviceLike) -> DeviceLike:
    """The device to sample on: ``device``, else the generator's; they must be of one type."""
    if generator is None:
        return device
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if device is None:
        return generator.device
    if torch.device(device).type != generator.device.type:
        raise ValueError(
            f"generator is on {generator.device} but the sample was asked on {device}; "
            f"create the generator with torch.Generator(device={str(device)!r})"
        )
    return device


def _check_dtype(dtype: Any) -> torch.dtype:
    """A floating sample dtype (None: torch's default); integer, bool and complex are refused."""
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"dtype must be a floating torch dtype (float32, float64, bfloat16, float16), got dtype={dtype!r}"
        )
    return dtype


def _check_dt(dt: Any) -> float:
    return checked_float(
        dt,
        "dt must be a positive number, got {value!r}",
        "dt must be positive and finite, got dt={value!r}",
        positive=True,
    )


#: the 5/6 quantile of the standard normal (−_Q16 is the 1/6 quantile)
_Q16 = 0.9674215661017010


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"moment order k must be a non-negative integer, got {k!r}")
    return k


class NoiseLaw:
    """An increment law ``ΔŴ`` with ``E ΔŴ = 0`` and ``E ΔŴ² = Δt``.

    Subclasses implement :meth:`moments` (exact ``E[ΔŴ^k]``, ``k = 1..4``) and
    :meth:`_sample` (draws for a *checked* ``dt``).
    """

    #: short name used on the command line and in reports
    name: str = "law"
    #: True when every odd moment vanishes
    symmetric: bool = True
    #: ``E ΔŴ⁴/Δt²`` of a symmetric law of variance Δt: the default :meth:`moments` is then
    #: ``(0, Δt, 0, fourth · Δt²)``; None where the law computes its moments itself
    _fourth: float | None = None

    def moments(self, dt: float) -> tuple[float, float, float, float]:
        """Exact ``(E ΔŴ, E ΔŴ², E ΔŴ³, E ΔŴ⁴)`` at step ``dt``."""
        if self._fourth is None:
            raise NotImplementedError
        dt = _check_dt(dt)
        return (0.0, dt, 0.0, self._fourth * dt * dt)

    def sample(
        self,
        shape: ShapeLike,
        dt: float,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw increments of the given shape at step ``dt``."""
        dt = _check_dt(dt)
        return self._sample(
            _check_shape(shape), dt, generator, _device_for(generator, device), _check_dtype(dtype)
        )

    def _sample(
        self, shape: Shape, dt: float, generator: Gen, device: DeviceLike, dtype: torch.dtype
    ) -> torch.Tensor:
        raise NotImplementedError

    @property
    def weak_order(self) -> float:
        """Highest weak order a scheme driven by this law can reach.

        1 when condition (5) holds (moments 1..3 match the Gaussian's to O(Δt²)),
        2 when moments 1..5 match (the three-point law), ½ when the third moment is
        only O(Δt^{3/2}) (stochastic depth with p ≠ ½).
        """
        return 1.0

    def condition(self, dt: float) -> float:
        """Condition (5): ``|E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt|`` computed from exact moments."""
        dt = _check_dt(dt)
        m1, m2, m3, _ = self.moments(dt)
        return abs(m1) + abs(m3) + abs(m2 - dt)

    def condition_constant(self, dt: float) -> float:
        """Condition (5)'s constant ``K = C(Δt)/Δt²`` at step ``dt`` (bounded as Δt → 0 iff (5) holds)."""
        dt = _check_dt(dt)
        return self.condition(dt) / (dt * dt)

    # ------------------------------------------------------------ what a law declares
    #: True for a law that drops blocks (stochastic depth): ``survival`` is then its parameter
    drops: bool = False

    @property
    def survival(self) -> float | None:
        """The probability that a block driven by this law survives a step (``None``: it drops nothing)."""
        return None

    def with_survival(self, p: float | None) -> NoiseLaw:
        """This law with survival probability ``p`` (a law that drops nothing, or ``p=None``, returns itself)."""
        return self

    def rescheduled(self, dt: float, schedule: str = "fixed") -> NoiseLaw:
        """The law a block given this law at Δt = 1 has at step ``dt`` under ``schedule``
        (:data:`P_SCHEDULES`; only a dropping law's survival changes, by :func:`survival_at`)."""
        if schedule not in P_SCHEDULES:
            raise ValueError(f"p_schedule must be one of {', '.join(P_SCHEDULES)}, got {schedule!r}")
        return self

    def support(self, dt: float) -> tuple[list[float], list[float]] | None:
        """``(values, probabilities)`` of a discrete law at step ``dt``; ``None`` for a continuous one."""
        return None

    def draws(
        self, shape: ShapeLike, dt: float, generator: torch.Generator | None, like: torch.Tensor
    ) -> Draws:
        """A drawer of increments of ``shape`` at step ``dt`` into reused buffers (the stepping loop's
        in-place path, :mod:`sdenet.loop`): see :class:`Draws`. It makes the generator calls
        :meth:`sample` makes, so both give the same numbers."""
        return self._drawer(self, *_draw_args(shape, dt, generator, like))

    #: the :class:`Draws` class :meth:`draws` builds: ``Draws`` itself (set below it), or a
    #: faster subclass the law names
    _drawer: ClassVar[type[Draws]]

    # ------------------------------------------------------------ exact laws, coupling
    def moment(self, k: int, dt: float) -> float:
        """Exact ``E ΔŴ^k`` for any integer ``k ≥ 0`` (``moments`` gives ``k = 1..4``)."""
        raise NotImplementedError(f"{type(self).__name__} does not know its moments beyond the fourth")

    def characteristic(self, s: float, dt: float) -> complex:
        """Exact characteristic function ``E exp(i s ΔŴ)`` (a complex number)."""
        raise NotImplementedError(f"{type(self).__name__} does not know its characteristic function")

    def from_gaussian(self, dw: torch.Tensor, dt: float) -> torch.Tensor:
        """Increments of this law derived elementwise from Brownian increments ``dw ~ N(0, Δt)``.

        Each law is a nondecreasing function of ``z = dw/√Δt`` applied elementwise, so one
        Brownian path drives runs with different laws (and strong and weak errors are
        measured on the same randomness); when ``dw`` is Gaussian the result has exactly
        this law.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot derive its increments from Gaussian ones")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.__dict__.items()))))


def _draw_args(
    shape: Any, dt: Any, generator: torch.Generator | None, like: torch.Tensor
) -> tuple[tuple[int, ...], float, torch.Generator | None, torch.Tensor]:
    _device_for(generator, like.device)
    return _check_shape(shape), _check_dt(dt), generator, like


def is_law(obj: object) -> bool:
    """True when ``obj`` is an sdenet noise law (the check callers make instead of testing a class)."""
    return isinstance(obj, NoiseLaw)


class Draws:
    """Increments ``ΔŴ = scale · u + shift`` of one shape and step, drawn again on every call.

    ``draw()`` returns ``(u, scale, shift)`` with ``u`` a tensor in a buffer reused from call
    to call (overwritten by the next call): the law's own sample (``scale = 1, shift = 0``) in
    general, ``N(0, 1)`` draws with ``scale = √Δt`` for the Gaussian, 0/1 bits (uint8) with
    ``scale = 2√Δt, shift = −√Δt`` for a large Rademacher draw — so an in-place update can fold
    the scale into its own arithmetic (``x.addcmul_(g, u, value=scale)``) instead of spending a
    pass over the increments. ``dw()`` returns ``ΔŴ`` itself (a float tensor).
    """

    def __init__(
        self,
        law: NoiseLaw,
        shape: Sequence[int],
        dt: float,
        generator: torch.Generator | None,
        like: torch.Tensor,
    ) -> None:
        self.law, self.shape, self.dt, self.generator = law, tuple(shape), float(dt), generator
        self.n = math.prod(self.shape)
        self.device, self.dtype = like.device, like.dtype

    def draw(self) -> Draw:
        # the arguments were checked once, by NoiseLaw.draws
        return self.law._sample(self.shape, self.dt, self.generator, self.device, self.dtype), 1.0, 0.0

    def dw(self) -> torch.Tensor:
        u, scale, shift = self.draw()
        if scale == 1.0 and shift == 0.0:
            return u
        out = u.to(self.dtype) if u.dtype != self.dtype else u.clone()
        out.mul_(scale)
        return out.add_(shift) if shift != 0.0 else out


NoiseLaw._drawer = Draws


class _GaussianDraws(Draws):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.buf = torch.empty(self.shape, device=self.device, dtype=self.dtype)
        self.scale = math.sqrt(self.dt)

    def draw(self) -> Draw:
        return torch.randn(self.shape, generator=self.generator, out=self.buf), self.scale, 0.0


class _UniformDraws(Draws):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.buf = torch.empty(self.shape, device=self.device, dtype=self.dtype)
        self.a = math.sqrt(3.0 * self.dt)

    def draw(self) -> Draw:
        return self.buf.uniform_(-self.a, self.a, generator=self.generator), 1.0, 0.0


class _BitDraws(Draws):
    """Rademacher as 0/1 bits unpacked from 64-bit words, the draws of :func:`random_bits`."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.words = (self.n + 63) // 64
        self.bits = torch.empty((self.words, 8, 8), device=self.device, dtype=torch.uint8)
        self.shifts = torch.arange(8, dtype=torch.uint8, device=self.device)
        s = math.sqrt(self.dt)
        self.scale, self.shift = 2.0 * s, -s

    def draw(self) -> Draw:
        w = torch.randint(
            -(2**63),
            2**63 - 1,
            (self.words,),
            dtype=torch.int64,
            generator=self.generator,
            device=self.device,
        )
        torch.bitwise_right_shift(w.view(torch.uint8).view(self.words, 8, 1), self.shifts, out=self.bits)
        self.bits.bitwise_and_(1)
        return self.bits.view(-1)[: self.n].view(self.shape), self.scale, self.shift


class _SmallBitDraws(Draws):
    """Rademacher below ``small`` elements: ``randint(0, 2)`` per element, as :meth:`Rademacher.sample`."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.buf = torch.empty(self.shape, device=self.device, dtype=self.dtype)
        s = math.sqrt(self.dt)
        self.scale, self.shift = 2.0 * s, -s

    def draw(self) -> Draw:
        return torch.randint(0, 2, self.shape, generator=self.generator, out=self.buf), self.scale, self.shift


class Gaussian(NoiseLaw):
    """``ΔŴ ~ N(0, Δt)``: the Brownian increment itself (Euler–Maruyama)."""

    name = "gaussian"
    _fourth = 3.0
    weak_order = 2.0
    _drawer = _GaussianDraws

    def _sample(
        self, shape: Shape, dt: float, generator: Gen, device: DeviceLike, dtype: torch.dtype
    ) -> torch.Tensor:
        out = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return out.mul_(math.sqrt(dt))

    def moment(self, k: int, dt: float) -> float:
        k, dt = _check_k(k), _check_dt(dt)
        return 0.0 if k % 2 else math.prod(range(k - 1, 0, -2)) * dt ** (k // 2)

    def characteristic(self, s: float, dt: float) -> complex:
        return complex(math.exp(-0.5 * s * s * _check_dt(dt)))

    def from_gaussian(self, dw: torch.Tensor, dt: float) -> torch.Tensor:
        """The Brownian increments themselves."""
        _check_dt(dt)
        return dw


class Uniform(NoiseLaw):
    """``ΔŴ ~ U[−√(3Δt), √(3Δt)]``: shake-shake's increment (variance Δt, E ΔŴ⁴ = 9Δt²/5)."""

    name = "uniform"
    _drawer = _UniformDraws

    def moments(self, dt: float) -> tuple[float, float, float, float]:
        dt = _check_dt(dt)
        return (0.0, dt, 0.0, 9.0 * dt * dt / 5.0)

    def _sample(
        self, shape: Shape, dt: float, generator: Gen, device: DeviceLike, dtype: torch.dtype
    ) -> torch.Tensor:
        a = math.sqrt(3.0 * dt)
        out = torch.empty(shape, device=device, dtype=dtype)
        return out.uniform_(-a, a, generator=generator)

    def moment(self, k: int, dt: float) -> float:
        k, dt = _check_k(k), _check_dt(dt)
        return 0.0 if k % 2 else math.sqrt(3.0 * dt) ** k / (k + 1)

    def characteristic(self, s: float, dt: float) -> complex:
        a = s * math.sqrt(3.0 * _check_dt(dt))
        return complex(1.0 if a == 0 else math.sin(a) / a)

    def from_gaussian(self, dw: torch.Tensor, dt: float) -> torch.Tensor:
        """The probability-integral transform: ``√(3Δt) (2Φ(dw/√Δt) − 1)``."""
        dt = _check_dt(dt)
        u: torch.Tensor = torch.special.ndtr(dw / math.sqrt(dt))  # torch.special is untyped
        return u.mul(2.0).sub_(1.0).mul_(math.sqrt(3.0 * dt))


class Rademacher(NoiseLaw):
    """``ΔŴ = ±√Δt`` with probability ½ each (E ΔŴ⁴ = Δt²)."""

    name = "rademacher"
    _fourth = 1.0

    #: below this many elements one ``randint`` draw per element is cheaper than
    #: unpacking 64-bit words (the unpacking costs a handful of extra tensor ops)
    small: int = 8192

    def _sample(
        self, shape: Shape, dt: float, generator: Gen, device: DeviceLike, dtype: torch.dtype
    ) -> torch.Tensor:
        s = math.sqrt(dt)
        n = math.prod(shape)
        if n <= self.small:
            out = torch.randint(0, 2, shape, generator=generator, device=device, dtype=dtype)
        else:
            out = random_bits(n, generator, device).to(dtype).view(shape)
        return out.mul_(2.0 * s).sub_(s)

    def moment(self, k: int, dt: float) -> float:
        k, dt = _check_k(k), _check_dt(dt)
        return 0.0 if k % 2 else dt ** (k // 2)

    def support(self, dt: float) -> tuple[list[float], list[float]] | None:
        s = math.sqrt(_check_dt(dt))
        return [-s, s], [0.5, 0.5]

    def draws(
        self, shape: ShapeLike, dt: float, generator: torch.Generator | None, like: torch.Tensor
    ) -> Draws:
        args = _draw_args(shape, dt, generator, like)
        if math.prod(args[0]) > self.small:
            return _BitDraws(self, *args)
        return _SmallBitDraws(self, *args)

    def characteristic(self, s: float, dt: float) -> complex:
        return complex(math.cos(s * math.sqrt(_check_dt(dt))))

    def from_gaussian(self, dw: torch.Tensor, dt: float) -> torch.Tensor:
        """``√Δt sign(dw)`` (``+√Δt`` at ``dw = 0``, a null event)."""
        s = math.sqrt(_check_dt(dt))
        return torch.where(dw >= 0, s, -s).to(dw.dtype)


class ThreePoint(NoiseLaw):
    """``ΔŴ = ±√(3Δt)`` with probability 1/6 each and 0 with probability 2/3.

    Its moments match the Gaussian's up to the fifth (E ΔŴ⁴ = 3Δt²), which is what a
    weak order-2 scheme needs (Kloeden & Platen, 14.2).
    """

    name = "threepoint"
    _fourth = 3.0
    weak_order = 2.0

    def _sample(
        self, shape: Shape, dt: float, generator: Gen, device: DeviceLike, dtype: torch.dtype
    ) -> torch.Tensor:
        a = math.sqrt(3.0 * dt)
        # v uniform on {0,..,5}: v == 0 -> -a, v == 5 -> +a, otherwise 0.
        v = torch.empty(shape, device=device, dtype=dtype).random_(0, 6, generator=generator)
        return (v == 5).to(dtype).sub_((v == 0).to(dtype)).mul_(a)

    def moment(self, k: int, dt: float) -> float:
        k, dt = _check_k(k), _check_dt(dt)
        if k == 0:
            return 1.0
        return 0.0 if k % 2 else (3.0 * dt) ** (k / 2) / 3.0

    def support(self, dt: float) -> tuple[list[float], list[float]] | None:
        a = math.sqrt(3.0 * _check_dt(dt))
        return [-a, 0.0, a], [1 / 6, 2 / 3, 1 / 6]

    def characteristic(self, s: float, dt: float) -> complex:
        return complex(2.0 / 3.0 + math.cos(s * math.sqrt(3.0 * _check_dt(dt))) / 3.0)

    def from_gaussian(self, dw: torch.Tensor, dt: float) -> torch.Tensor:
        """Thresholds at the 1/6 and 5/6 normal quantiles (as StochasticDiffEq.jl does):
        ``−√(3Δt)`` below ``√Δt q_{1/6}``, ``+√(3Δt)`` above ``√Δt q_{5/6}``, 0 between."""
        dt = _check_dt(dt)
        a, q = math.sqrt(3.0 * dt), _Q16 * math.sqrt(dt)
        return ((dw > q).to(dw.dtype) - (dw < -q).to(dw.dtype)) * a


class DropBernoulli(NoiseLaw):
    """Stochastic-depth increment ``ΔŴ = √Δt (η − p)/√(p(1 − p))``, ``η ~ Bernoulli(p)``.

    ``p`` is the survival probability, in (0, 1]. With drift ``p f`` and diffusion
    ``√(p(1−p)) f`` the weak Euler step at Δt = 1 is ``X + η f(X)``: the block is kept
    with probability p. Moments: ``E ΔŴ³ = Δt^{3/2} (1 − 2p)/√(p(1 − p))`` and
    ``E ΔŴ⁴ = Δt² (1 − 3p + 3p²)/(p(1 − p))``.

    At ``p = 1`` nothing is dropped: the increment is identically 0 (so is the
    diffusion ``√(p(1−p)) f``), every moment is 0 and condition (5) reports
    ``C = Δt`` — the law no longer has variance Δt, and the stage is deterministic.
    """

    name = "drop"
    drops = True

    def __init__(self, p: float = 0.5) -> None:
        try:
            p = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"DropBernoulli: p must be a number in (0, 1], got {p!r}") from None
        if not (0.0 < p <= 1.0):
            raise ValueError(f"DropBernoulli: p must lie in (0, 1], got p={p!r}")
        self.p = p

    # a class attribute on NoiseLaw, a property here (it depends on p): read-only on purpose
    @property
    def symmetric(self) -> bool:  # type: ignore[override]
        return self.p == 0.5

    @property
    def survival(self) -> float:
        return self.p

    def with_survival(self, p: float | None) -> NoiseLaw:
        return self if p is None else DropBernoulli(p)

    def rescheduled(self, dt: float, schedule: str = "fixed") -> NoiseLaw:
        return DropBernoulli(survival_at(self.p, dt, schedule))

    def support(self, dt: float) -> tuple[list[float], list[float]] | None:
        if self.p == 1.0:
            return None
        c = self.scale(_check_dt(dt))
        return [-self.p * c, (1.0 - self.p) * c], [1.0 - self.p, self.p]

    @property
    def degenerate(self) -> bool:
        """True at p = 1, where the increment is identically 0."""
        return self.p == 1.0

    def moments(self, dt: float) -> tuple[float, float, float, float]:
        dt = _check_dt(dt)
        p = self.p
        if p == 1.0:
            return (0.0, 0.0, 0.0, 0.0)
        q = 1.0 - p
        v = p * q  # Var η
        m3 = dt**1.5 * (1.0 - 2.0 * p) / math.sqrt(v)
        m4 = dt * dt * (1.0 - 3.0 * p + 3.0 * p * p) / v
        return (0.0, dt, m3, m4)

    @property
    def weak_order(self) -> float:
        if self.p == 1.0:
            return 0.0
        return 1.0 if self.p == 0.5 else 0.5

    def scale(self, dt: float) -> float:
        """``√Δt/√(p(1−p))``, the factor that maps ``η − p`` to ``ΔŴ`` (0 at p = 1)."""
        if self.p == 1.0:
            return 0.0
        return math.sqrt(dt / (self.p * (1.0 - self.p)))

    def sample_eta(
        self,
        shape: ShapeLike,
        *,
        generator: torch.Generator | None = None,
        device: DeviceLike = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw the Bernoulli(p) survival indicators η themselves."""
        device = _device_for(generator, device)
        dtype_ = _check_dtype(dtype)
        shape_ = _check_shape(shape)
        if self.p == 1.0:
            return torch.ones(shape_, device=device, dtype=dtype_)
        # rand() < p is several times faster than bernoulli_ on the CPU
        u = torch.rand(shape_, generator=generator, device=device, dtype=torch.float32)
        return (u < self.p).to(dtype_)

    def _sample(
        self, shape: Shape, dt: float, generator: Gen, device: DeviceLike, dtype: torch.dtype
    ) -> torch.Tensor:
        if self.p == 1.0:
            return torch.zeros(shape, device=device, dtype=dtype)
        eta = self.sample_eta(shape, generator=generator, device=device, dtype=dtype)
        return eta.sub_(self.p).mul_(self.scale(dt))

    def moment(self, k: int, dt: float) -> float:
        k, dt = _check_k(k), _check_dt(dt)
        if k == 0:
            return 1.0
        p = self.p
        return (p * (1.0 - p) ** k + (1.0 - p) * (-p) ** k) * self.scale(dt) ** k

    def characteristic(self, s: float, dt: float) -> complex:
        c = self.scale(_check_dt(dt))
        p = self.p
        return p * cmath.exp(1j * s * c * (1.0 - p)) + (1.0 - p) * cmath.exp(-1j * s * c * p)

    def from_gaussian(self, dw: torch.Tensor, dt: float) -> torch.Tensor:
        """The block survives (``η = 1``) when ``Φ(dw/√Δt) > 1 − p``, i.e. on the largest
        Brownian increments, with probability p; ``ΔŴ = (η − p) √Δt/√(p(1−p))`` is then a
        nondecreasing function of ``dw``."""
        dt = _check_dt(dt)
        if self.p == 1.0:
            return torch.zeros_like(dw)
        phi: torch.Tensor = torch.special.ndtr(dw / math.sqrt(dt))  # torch.special is untyped
        eta = (phi > 1.0 - self.p).to(dw.dtype)
        return eta.sub_(self.p).mul_(self.scale(dt))

    def __repr__(self) -> str:
        return f"DropBernoulli(p={self.p})"


LAW_NAMES = ("gaussian", "uniform", "rademacher", "threepoint", "drop")


def get_law(name: str, p: float | None = None) -> NoiseLaw:
    """Build a law from its command-line name (``drop`` takes ``p``, default ½)."""
    key = str(name).lower().replace("-", "").replace("_", "")
    table = {
        "gaussian": Gaussian,
        "normal": Gaussian,
        "uniform": Uniform,
        "rademacher": Rademacher,
        "threepoint": ThreePoint,
        "drop": DropBernoulli,
        "dropbernoulli": DropBernoulli,
        "bernoulli": DropBernoulli,
    }
    if key not in table:
        raise ValueError(f"unknown noise law {name!r}; choose one of {', '.join(LAW_NAMES)}")
    cls = table[key]
    if cls is DropBernoulli:
        return DropBernoulli(0.5 if p is None else p)
    if p is not None:
        raise ValueError(f"--p applies only to the 'drop' law, not to {name!r}")
    return cls()


#: how a stochastic-depth survival probability ``p`` (given at Δt = 1) changes with the step
P_SCHEDULES = ("fixed", "sqrt")


def survival_at(p: float, dt: float, schedule: str = "fixed") -> float:
    r"""The survival probability at step ``dt`` of a block whose survival at Δt = 1 is ``p``.

    ``"fixed"``: ``p`` at every Δt (the original rule). The increment
    ``ΔŴ = √Δt (η − p)/√(p(1−p))`` then has ``E ΔŴ³ = Δt^{3/2} (1 − 2p)/√(p(1−p))``, so
    condition (5)'s ``K = C/Δt²`` grows like ``Δt^{−1/2}`` and the weak order drops to ½.

    ``"sqrt"``: ``p(Δt) = ½ + (p − ½)√Δt``, i.e. ``1 − 2p(Δt) = (1 − 2p)√Δt``: then
    ``K = |1 − 2p| / √(p(Δt)(1 − p(Δt)))`` stays bounded (→ 2|1 − 2p| as Δt → 0), condition
    (5) holds, and Δt = 1 gives ``p`` back. The schedule keeps ``p(Δt)`` in ``(0, 1]`` for
    Δt ≤ 1; above 1 it may leave the interval, which is a ``ValueError``.
    """
    if schedule not in P_SCHEDULES:
        raise ValueError(f"p_schedule must be one of {', '.join(P_SCHEDULES)}, got {schedule!r}")
    p = float(p)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"survival probability must lie in (0, 1], got {p!r}")
    dt = _check_dt(dt)
    if schedule == "fixed" or dt == 1.0:
        return p
    q = 0.5 + (p - 0.5) * math.sqrt(dt)
    if not 0.0 < q <= 1.0:
        raise ValueError(
            f"p_schedule='sqrt': survival {p:g} at dt=1 gives p={q:g} at dt={dt:g}, "
            f"outside (0, 1]; use dt <= 1 or p_schedule='fixed'"
        )
    return q
