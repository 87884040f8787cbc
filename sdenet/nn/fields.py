"""Network fields: runs of residual branches read as (stochastic) vector fields.

A run of blocks ``f_0, …, f_{N−1}`` is the piecewise-constant-in-time field

    f(t, x) = f_n(x)    for t ∈ [t_n − Δt/2, t_n + Δt/2),   t_n = t_0 + nΔt,

so that any scheme evaluating the field at ``t_n`` uses block ``n`` (Heun's second
evaluation at ``t_{n+1}`` uses block ``n + 1``).

* :class:`BlockField` — the ODE ``u' = f(t, u)`` (ResNet, ResNeXt, LM-ResNet, PolyNet,
  FractalNet stages).
* :class:`DropField` — stochastic depth, ``dX = p_n f_n dt + √(p_n(1−p_n)) f_n dB``; with
  ``DropBernoulli(p_n)`` increments and Δt = 1 the weak Euler step is ``X + η f(X)``.
* :class:`ShakeField` — shake-shake, ``dX = ½(f1 + f2) dt + (f1 − f2)/√12 dB``; with
  ``Uniform`` increments and Δt = 1 the weak Euler step is ``X + α f1 + (1 − α) f2``,
  ``α ~ U[0, 1]``.
* :class:`CoupledBlockField` — RevNet's ``X' = f1(t, Y)``, ``Y' = f2(t, X)``.

The stochastic fields override :meth:`~sdenet.Field.increment` so each block is evaluated
once per step (``f·(p Δt + √(p(1−p)) ΔW)``; ``f1`` and ``f2`` once each), and keep cheap
running sums of the increments they were given in training mode, on the device, for
:func:`sdenet.nn.weak_report`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..fields import Field, noise_shape
from ..laws import Uniform

__all__ = ["BlockField", "DropField", "ShakeField", "CoupledBlockField"]

_SQRT12 = math.sqrt(12.0)


def _check_dt(dt) -> float:
    try:
        value = float(dt)
    except (TypeError, ValueError):
        raise ValueError(f"dt must be a positive number, got {dt!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"dt must be positive and finite, got dt={dt!r}")
    return value


def _as_blocks(blocks, what="blocks") -> nn.ModuleList:
    if isinstance(blocks, nn.ModuleList):
        out = blocks
    elif isinstance(blocks, nn.Module) and not isinstance(blocks, nn.Sequential):
        out = nn.ModuleList([blocks])
    else:
        try:
            items = list(blocks)
        except TypeError:
            raise ValueError(
                f"{what} must be a sequence of nn.Module blocks, got {type(blocks).__name__}"
            ) from None
        out = nn.ModuleList()
        for i, b in enumerate(items):
            if not isinstance(b, nn.Module):
                raise ValueError(
                    f"{what}[{i}] must be an nn.Module (a residual branch), got {type(b).__name__}"
                )
            out.append(b)
    if len(out) == 0:
        raise ValueError(f"{what}: need at least one block")
    return out


class BlockField(Field):
    """``u' = f(t, u)`` with ``f(t_n, ·) = blocks[n]`` on the grid ``t_n = t0 + nΔt``."""

    owns_dt = True

    tensor_time = False  # t only picks the block: a Python float, no tensor per step

    def __init__(self, blocks: Iterable[nn.Module], dt: float = 1.0, t0: float = 0.0):
        super().__init__()
        self.blocks = _as_blocks(blocks)
        self.dt = _check_dt(dt)
        self.t0 = float(t0)

    def __len__(self) -> int:
        return len(self.blocks)

    def index(self, t) -> int:
        """The block ``n`` whose time ``t_n`` is nearest ``t``."""
        n = int(round((float(t) - self.t0) / self.dt))
        if not 0 <= n < len(self.blocks):
            raise ValueError(
                f"{type(self).__name__}: time t={float(t):g} maps to block {n}, but the field has "
                f"{len(self.blocks)} blocks on t0={self.t0:g}, dt={self.dt:g} (a scheme that evaluates "
                f"at t_(n+1), like Heun, needs one block more than it takes steps)"
            )
        return n

    def drift(self, t, x):
        return self.blocks[self.index(t)](x)

    def extra_repr(self):
        return f"dt={self.dt:g}, t0={self.t0:g}"


if TYPE_CHECKING:  # the mixin is only ever mixed into nn.Module subclasses
    _MixinBase = nn.Module
else:
    _MixinBase = object


class _NoiseStats(_MixinBase):
    """Running sums of ``ΔŴ, ΔŴ², ΔŴ³`` per block, on the device (no host sync when recording)."""

    # registered buffers (annotated so that mypy reads them as tensors, not Tensor | Module)
    _sums: torch.Tensor
    _powers: torch.Tensor

    #: the field records its increments' statistics (``weak_stats``) and draws from ``_generator``
    records_noise = True

    def _init_stats(self, n: int):
        self.register_buffer("_sums", torch.zeros(n, 3, dtype=torch.float64), persistent=False)
        self.register_buffer("_powers", torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), persistent=False)
        self._counts = [0] * n
        self._generator = None

    def _apply(self, fn, *args, **kwargs):
        # keep the running sums in (at least) single precision when the model is cast to half
        out = super()._apply(fn, *args, **kwargs)
        if self._sums.dtype in (torch.float16, torch.bfloat16):
            self._sums = self._sums.float()
            self._powers = self._powers.float()
        return out

    def _record(self, n: int, dw: torch.Tensor):
        if not self.training:
            return
        with torch.no_grad():
            w = dw.detach().reshape(-1, 1).to(self._sums.dtype)
            self._sums[n].add_((w**self._powers).sum(0))
        self._counts[n] += dw.numel()

    def reset_weak_stats(self):
        self._sums.zero_()
        self._counts = [0] * len(self._counts)

    def weak_stats(self, n: int) -> dict:
        """``{"n", "m1", "m2", "m3"}`` for block ``n`` (empirical means; NaN when nothing was drawn)."""
        count = self._counts[n]
        if count == 0:
            return {"n": 0, "m1": float("nan"), "m2": float("nan"), "m3": float("nan")}
        m = (self._sums[n] / count).tolist()
        return {"n": count, "m1": m[0], "m2": m[1], "m3": m[2]}


def _check_noise(noise, cls):
    if noise not in ("sample", "batch"):
        raise ValueError(f"{cls}: noise must be 'sample' (one increment per image) or 'batch', got {noise!r}")
    return noise


class DropField(_NoiseStats, BlockField):
    """Stochastic depth: ``dX = p_n f_n(X) dt + √(p_n(1−p_n)) f_n(X) dB`` (Huang et al. 2016).

    ``p`` is the survival probability of each block at Δt = 1 (a float or one per block, in
    (0, 1]); the field uses ``survival_at(p, Δt, p_schedule)`` at its own Δt: the same ``p``
    with ``p_schedule="fixed"`` (the default), ``½ + (p − ½)√Δt`` with ``"sqrt"``, which keeps
    condition (5) as Δt → 0 (``p_base`` holds the Δt = 1 values, ``p`` the ones in use).
    :meth:`increment` evaluates ``f_n`` once: ``f_n(x)·(p_n Δt + √(p_n(1−p_n)) ΔW)``; with
    ``DropBernoulli(p_n)`` increments at Δt = 1 the coefficient is the survival indicator
    ``η`` (up to float rounding). ``noise="sample"`` draws one increment per image,
    ``noise="batch"`` one for the whole batch; in batch mode a block whose coefficient is 0
    (dropped, which happens only at Δt = 1) is not evaluated at all — reading the
    coefficient costs one host read of a single number per block.
    """

    def __init__(
        self, blocks, p, dt: float = 1.0, t0: float = 0.0, noise: str = "sample", p_schedule: str = "fixed"
    ):
        BlockField.__init__(self, blocks, dt, t0)
        n = len(self.blocks)
        ps = [p] * n if isinstance(p, (int, float)) else list(p)
        if len(ps) != n:
            raise ValueError(f"DropField: got {len(ps)} survival probabilities for {n} blocks")
        for v in ps:
            if not (isinstance(v, (int, float)) and 0.0 < float(v) <= 1.0):
                raise ValueError(f"DropField: survival probabilities must lie in (0, 1], got {v!r}")
        self.p_schedule = p_schedule
        self.set_survival([float(v) for v in ps])
        self.noise = _check_noise(noise, "DropField")
        self._init_stats(n)

    def set_survival(self, p_base) -> None:
        """Set the survival probabilities at Δt = 1 (``p_base``, one per block); the ones used
        at this field's Δt are ``survival_at(p, Δt, p_schedule)`` (:func:`sdenet.laws.survival_at`)."""
        from ..laws import survival_at

        self.p_base = [float(v) for v in p_base]
        self.p = [survival_at(v, self.dt, self.p_schedule) for v in self.p_base]
        self._sigma = [math.sqrt(v * (1.0 - v)) for v in self.p]

    def drift(self, t, x):
        n = self.index(t)
        return self.blocks[n](x) * self.p[n]

    def diffusion(self, t, x):
        n = self.index(t)
        return self.blocks[n](x) * self._sigma[n]

    def coefficients(self, t, x):
        """``(p_n f_n(x), √(p_n(1−p_n)) f_n(x))`` from one block evaluation."""
        n = self.index(t)
        fx = self.blocks[n](x)
        return fx * self.p[n], fx * self._sigma[n]

    def increment(self, t, x, dt, dw):
        n = self.index(t)
        p = self.p[n]
        if dw is None:
            return self.blocks[n](x) * (p * dt)
        self._record(n, dw)
        if self.noise == "batch":
            c = p * dt + self._sigma[n] * float(dw.reshape(()))
            if abs(c) <= 1e-6 * max(1.0, p * dt):  # dropped: do not compute the block
                return x.new_zeros(())
            return self.blocks[n](x) * c
        return self.blocks[n](x) * (dw * self._sigma[n] + p * dt)

    def extra_repr(self):
        sched = "" if self.p_schedule == "fixed" else f", p_schedule={self.p_schedule!r}"
        return f"p={[round(v, 4) for v in self.p]}, noise={self.noise!r}, dt={self.dt:g}{sched}"


class _BlockPair(_MixinBase):
    """Two runs of blocks of one length on the grid ``t_n = t0 + nΔt``: shake-shake's two
    branches, RevNet's ``f1`` and ``f2``; block ``n`` of each at ``t_n`` (``BlockField.index``)."""

    def _init_pair(self, blocks1, blocks2, what: str, mismatch: str, dt: float, t0: float):
        """``mismatch``: the message when the lengths differ, ``{}`` the two lengths."""
        self.blocks1 = _as_blocks(blocks1, f"{what}1")
        self.blocks2 = _as_blocks(blocks2, f"{what}2")
        if len(self.blocks1) != len(self.blocks2):
            raise ValueError(mismatch.format(len(self.blocks1), len(self.blocks2)))
        self.dt = _check_dt(dt)
        self.t0 = float(t0)

    def __len__(self):
        return len(self.blocks1)

    index = BlockField.index

    @property
    def blocks(self):  # for BlockField.index's message
        return self.blocks1


class _ShakeFn(torch.autograd.Function):
    """Forward ``α f1 + (1 − α) f2``, backward ``(β g, (1 − β) g)`` (Gastaldi's shake)."""

    @staticmethod
    def forward(ctx, f1, f2, alpha, beta):
        ctx.save_for_backward(beta)
        return alpha * f1 + (1 - alpha) * f2

    @staticmethod
    def backward(ctx, grad):
        (beta,) = ctx.saved_tensors
        return beta * grad, (1 - beta) * grad, None, None


class ShakeField(_NoiseStats, _BlockPair, Field):
    """Shake-shake: ``dX = ½(f1 + f2) dt + (f1 − f2)/√12 dB`` (Gastaldi 2017).

    :meth:`increment` evaluates each branch once and returns ``Δt (α f1 + (1 − α) f2)``
    with ``α = ½ + ΔW/(Δt √12)``, which is ``½(f1+f2) Δt + (f1−f2)/√12 ΔW``; at Δt = 1
    with ``Uniform`` increments ``α ~ U[0, 1]``, Gastaldi's forward shake.

    ``forward``: ``"shake"`` (noise in training) or ``"even"`` (α = ½ in training too: the
    stage then integrates the drift). ``backward``: ``"keep"`` (gradient of the forward
    map), ``"even"`` (gradients ½, ½) or ``"shake"`` (gradients β, 1 − β with a fresh β
    drawn like α from Uniform increments) — an option on top of the SDE reading, which
    covers the forward pass only. ``noise``: ``"sample"`` (Gastaldi's image level) or
    ``"batch"``.
    """

    owns_dt = True

    tensor_time = False

    def __init__(
        self,
        branches1,
        branches2,
        dt: float = 1.0,
        t0: float = 0.0,
        noise: str = "sample",
        forward: str = "shake",
        backward: str = "shake",
    ):
        super().__init__()
        self._init_pair(
            branches1, branches2, "branches", "ShakeField: {} first branches but {} second ones", dt, t0
        )
        self.noise = _check_noise(noise, "ShakeField")
        if forward not in ("shake", "even"):
            raise ValueError(f"ShakeField: forward must be 'shake' or 'even', got {forward!r}")
        if backward not in ("shake", "even", "keep"):
            raise ValueError(f"ShakeField: backward must be 'shake', 'even' or 'keep', got {backward!r}")
        self.forward_mode = forward
        self.backward = backward
        self._init_stats(len(self.blocks1))

    @property
    def forward_noise(self) -> bool:
        return self.forward_mode == "shake"

    def _beta(self, x, dt):
        if self.backward == "even":
            return x.new_full((), 0.5)
        dw = Uniform().sample(
            noise_shape(self.noise, x), dt, generator=self._generator, device=x.device, dtype=x.dtype
        )
        return dw.mul_(1.0 / (dt * _SQRT12)).add_(0.5)

    def _combine(self, f1, f2, alpha, x, dt):
        if not self.training or self.backward == "keep":
            if isinstance(alpha, float) and alpha == 0.5:
                return (f1 + f2) * 0.5
            return alpha * f1 + (1 - alpha) * f2
        if not isinstance(alpha, torch.Tensor):
            alpha = x.new_full((), alpha)
        return _ShakeFn.apply(f1, f2, alpha, self._beta(x, dt))

    def drift(self, t, x):
        n = self.index(t)
        return self._combine(self.blocks1[n](x), self.blocks2[n](x), 0.5, x, self.dt)

    def diffusion(self, t, x):
        n = self.index(t)
        return (self.blocks1[n](x) - self.blocks2[n](x)) * (1.0 / _SQRT12)

    def coefficients(self, t, x):
        """``(½(f1 + f2), (f1 − f2)/√12)`` from one evaluation of each branch."""
        n = self.index(t)
        f1, f2 = self.blocks1[n](x), self.blocks2[n](x)
        return self._combine(f1, f2, 0.5, x, self.dt), (f1 - f2) * (1.0 / _SQRT12)

    def increment(self, t, x, dt, dw):
        if dw is None:
            return self.drift(t, x) * dt
        n = self.index(t)
        self._record(n, dw)
        alpha = dw * (1.0 / (dt * _SQRT12)) + 0.5
        out = self._combine(self.blocks1[n](x), self.blocks2[n](x), alpha, x, dt)
        return out if dt == 1.0 else out * dt

    def extra_repr(self):
        return (
            f"noise={self.noise!r}, forward={self.forward_mode!r}, backward={self.backward!r}, dt={self.dt:g}"
        )


class CoupledBlockField(_BlockPair, Field):
    """RevNet's ``X' = f1(t, Y)``, ``Y' = f2(t, X)`` with ``f1(t_n) = blocks1[n]``, ``f2(t_n) = blocks2[n]``."""

    owns_dt = True

    coupled = True
    tensor_time = False

    def __init__(self, blocks1, blocks2, dt: float = 1.0, t0: float = 0.0):
        super().__init__()
        self._init_pair(
            blocks1, blocks2, "blocks", "CoupledBlockField: {} f1 blocks but {} f2 blocks", dt, t0
        )

    def f1(self, t, y):
        return self.blocks1[self.index(t)](y)

    def f2(self, t, x):
        return self.blocks2[self.index(t)](x)

    def drift(self, t, state):
        x, y = state
        return self.f1(t, y), self.f2(t, x)
