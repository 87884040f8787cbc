"""Higher-order stochastic schemes: the weak order-2 schemes (Platen, weak Taylor 2) and Milstein."""

from __future__ import annotations

import math

import torch

from ..laws import Gaussian, NoiseLaw, Rademacher, ThreePoint
from .base import Scheme, _is_field
from .deterministic import Euler, Heun
from .stochastic import _LawDriven

__all__ = ["Platen", "WeakTaylor2", "Milstein"]


#
# Notation (Kloeden & Platen 1992): a = drift, b = diffusion, Δ = Δt, ΔŴ the increment,
# L^0 = ∂_t + a·∇ + ½ Σ b^i b^j ∂_ij and L^j = b^j·∇. "Elementwise" diagonal noise means the
# k-th diffusion element depends on x only through x_k (GBM, OU, any elementwise diffusion):
# then L^l b^k = 0 for l ≠ k and the diagonal schemes below are the scalar schemes applied
# element by element. A diagonal diffusion with cross-dependence gets the scalar formulas
# applied to the whole vector (the cross terms L^l b^k, l ≠ k, which would cost 2d more field
# evaluations per step, are not computed): consistent, but without the higher order.


def _noise_kind(field):
    return "general" if field.noise == "general" else "scalar"


def _column(dw, j, like):
    """Increment ``j`` of ``general`` noise, ``(B,) → (B, 1, …, 1)`` to broadcast against ``like``."""
    return dw[:, j].reshape((dw.shape[0],) + (1,) * (like.dim() - 1))


def _two_point(shape, dt, generator, like):
    """Two-point ``±Δt`` variables ``V`` with probability ½ each (K&P 14.2.8)."""
    return Rademacher().sample(
        shape, dt, generator=generator, device=like.device, dtype=like.dtype
    ) * math.sqrt(dt)


class _LawScheme(_LawDriven):
    """A stochastic scheme driven by a law (not a weak Euler scheme: ``isinstance(…, WeakEuler)``
    is False, so code that knows weak Euler's closed forms does not apply them)."""

    stochastic = True
    order = 1

    def mean_scheme(self) -> Scheme:
        """The deterministic scheme this one reduces to without noise (eval mode of a stage)."""
        return Euler()

    def __repr__(self):
        return f"{type(self).__name__}({self.law!r})"


class _Weak2(_LawScheme):
    """Shared parts of the weak order-2 schemes: the law decides the declared order."""

    order = 2

    def mean_scheme(self) -> Scheme:
        return Heun()

    @property
    def weak_order(self):
        # weak order 2 needs E ΔŴ^k to match the Gaussian's for k ≤ 5 (K&P 14.2.3): Gaussian and
        # three-point laws; a law that only meets condition (5) (Rademacher, uniform) gives 1,
        # stochastic depth at p ≠ ½ gives ½.
        return 2.0 if self.law.weak_order >= 2 else min(1.0, self.law.weak_order)


class Platen(_Weak2):
    r"""Platen's explicit (derivative-free) weak order-2 scheme (Kloeden & Platen §15.1).

    One Brownian motion (``sample``/``batch`` noise, or elementwise ``diagonal`` noise),
    eq. (15.1.1), with supporting values

        Ῡ = X + aΔ + bΔŴ,    Ῡ± = X + aΔ ± b√Δ,

        X_{n+1} = X + ½(a(t_{n+1}, Ῡ) + a)Δ + ¼(b(t_{n+1}, Ῡ⁺) + b(t_{n+1}, Ῡ⁻) + 2b)ΔŴ
                    + ¼(b(t_{n+1}, Ῡ⁺) − b(t_{n+1}, Ῡ⁻))(ΔŴ² − Δ)/√Δ.

    ``general`` noise (m Brownian motions, b^j the j-th column), eq. (15.1.3)–(15.1.5): with
    ``Ῡ = X + aΔ + Σ_j b^j ΔŴ^j``, ``R^±_j = X + aΔ ± b^j√Δ``, ``U^±_r = X ± b^r√Δ``,

        X_{n+1} = X + ½(a(Ῡ) + a)Δ
          + ¼ Σ_j [(b^j(R⁺_j) + b^j(R⁻_j) + 2b^j)ΔŴ^j + (b^j(R⁺_j) − b^j(R⁻_j))((ΔŴ^j)² − Δ)/√Δ]
          + ¼ Σ_j Σ_{r≠j} [(b^j(U⁺_r) + b^j(U⁻_r) − 2b^j)ΔŴ^j + (b^j(U⁺_r) − b^j(U⁻_r))(ΔŴ^jΔŴ^r + V_{r,j})/√Δ]

    with two-point ``V_{r,j} = ±Δ`` (r < j, drawn from ``generator``), ``V_{j,r} = −V_{r,j}``.
    No derivative of the field is needed. Without noise the scheme is :class:`Heun`
    (deterministic order 2); it evaluates the field at ``t_n`` and ``t_{n+1}``
    (``lookahead = 1``: a network stage needs one block more than it takes steps, as Heun).
    Field evaluations per step: ``coefficients`` at ``X`` (one block for network fields), the
    drift at ``Ῡ`` and the diffusion at ``Ῡ±`` (``2 + 2`` block evaluations for network
    fields; ``2 + 4m`` for general noise).

    Weak order 2 with increments whose moments match the Gaussian's up to the fifth
    (:class:`~sdenet.Gaussian`, :class:`~sdenet.ThreePoint`); with a law that only meets
    condition (5) (Rademacher: E ΔŴ⁴ = Δ² ≠ 3Δ²) the scheme is still consistent but of weak
    order 1, and ``weak_order`` says so. Anchor: StochasticDiffEq.jl's ``PL1WM``, which gives the
    same paths on scalar autonomous problems; sdenet departs from it where PL1WM loses weak order 2:
    the supporting values are evaluated at ``t_{n+1}`` (PL1WM: ``t_n``, order 1 with time-dependent
    coefficients), ``Ῡ±`` shift only the component of their own noise for diagonal noise (PL1WM
    shifts every component), and ``V = ±Δ`` (PL1WM's ``Î₂ = ±√Δ``) for general noise
    (``tests/test_platen_pl1wm.py``).
    """

    lookahead = 1
    name = "platen"
    aliases = ("platen",)
    takes_law = True
    #: coefficients at t_n, the drift at Ῡ and the diffusion at Ῡ± at t_{n+1} (``2 + 4m`` for general noise)
    evaluations = (0.0, 0.0, 1.0, 1.0, 1.0)

    def __init__(self, law: NoiseLaw | None = None):

        super().__init__(ThreePoint() if law is None else law)

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        dw = self.draw(field, x, dt, generator, dw)
        a, b = field.coefficients(t, x)
        s = math.sqrt(dt)
        t1 = t + dt
        base = x + a * dt
        a2 = field.drift(t1, base + field.noise_term(b, dw))
        out = x + (a + a2) * (0.5 * dt)
        if field.noise != "general":
            bp = field.diffusion(t1, base + b * s)
            bm = field.diffusion(t1, base - b * s)
            return out + (bp + bm + 2.0 * b) * (0.25 * dw) + (bp - bm) * ((dw * dw - dt) * (0.25 / s)), state
        m = b.shape[-1]
        cols = [_column(dw, j, x) for j in range(m)]
        for j in range(m):
            bj = b[..., j]
            gp = field.diffusion(t1, base + bj * s)[..., j]
            gm = field.diffusion(t1, base - bj * s)[..., j]
            out = (
                out + (gp + gm + 2.0 * bj) * (0.25 * cols[j]) + (gp - gm) * ((cols[j] ** 2 - dt) * (0.25 / s))
            )
        if m > 1:
            v = self._two_point((x.shape[0], m, m), dt, generator, x)
            v = torch.triu(v, diagonal=1)
            v = v - v.transpose(1, 2)  # V_{r,j} = −V_{j,r}
            for r in range(m):
                hp = field.diffusion(t, x + b[..., r] * s)
                hm = field.diffusion(t, x - b[..., r] * s)
                for j in range(m):
                    if j == r:
                        continue
                    vrj = v[:, r, j].reshape(cols[j].shape)
                    out = out + (hp[..., j] + hm[..., j] - 2.0 * b[..., j]) * (0.25 * cols[j])
                    out = out + (hp[..., j] - hm[..., j]) * ((cols[j] * cols[r] + vrj) * (0.25 / s))
        return out, state

    @staticmethod
    def _two_point(shape, dt, generator, like):
        return _two_point(shape, dt, generator, like)

    def __repr__(self):
        return f"Platen({self.law!r})"


def _jvp(fn, x, v, graph: bool | None = None):
    """Directional derivative ``(d/dε) fn(x + εv)`` at ε = 0 by the double-backward trick
    (``torch.autograd.functional.jvp``; forward-mode AD would be one pass cheaper, but in this
    torch it imports the compiler stack, seconds of start-up). ``graph`` (default: whether
    grad mode is on) keeps the result differentiable — for training, and for nesting."""
    graph = torch.is_grad_enabled() if graph is None else graph
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        return torch.autograd.functional.jvp(fn, xg, v, create_graph=graph)[1]


class WeakTaylor2(_Weak2):
    r"""The simplified weak order-2 Taylor scheme (Kloeden & Platen 14.2.1), derivatives by autograd:

        X_{n+1} = X + aΔ + bΔŴ + ½ L¹b (ΔŴ² − Δ) + ½ (L¹a + L⁰b) ΔŴΔ + ½ L⁰a Δ²,

    ``L¹f = (∇f) b``, ``L⁰f = ∂_t f + (∇f) a + ½ ∇²f[b, b]``, every derivative a forward-mode
    Jacobian–vector product (``∂_t`` only when ``time_dependent``, which
    needs drift and diffusion that accept a tensor ``t``). A reference for :class:`Platen`:
    ``sample``/``batch`` noise on any state, ``diagonal`` noise with elementwise drift and
    diffusion (``∇²f[b, b]`` is the full second derivative along b, which is the diagonal
    sum K&P need only when f has no cross-dependence). Weak order 2 with Gaussian or
    three-point increments.
    """

    name = "weak_taylor2"
    aliases = ("weak_taylor2", "taylor2")
    options = ("time_dependent",)
    takes_law = True
    noise_types = ("sample", "batch", "diagonal")

    def __init__(self, law: NoiseLaw | None = None, time_dependent: bool = False):
        super().__init__(law)
        self.time_dependent = bool(time_dependent)

    def check(self, field):
        if getattr(field, "noise", None) == "general":
            _is_field(field)
            raise ValueError(
                "WeakTaylor2 supports sample, batch and diagonal noise; use Platen for noise='general'"
            )
        super().check(field)

    def _L0(self, fn, t, x, a, b):
        """``L⁰f`` for ``fn(t, x)``."""
        out = _jvp(lambda y: fn(t, y), x, a)
        out = out + 0.5 * _jvp(lambda y: _jvp(lambda z: fn(t, z), y, b, graph=True), x, b)
        if self.time_dependent:
            tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
            out = out + _jvp(lambda s_: fn(s_, x), tt, torch.ones_like(tt))
        return out

    def step(self, field, t, x, dt, state, generator=None, *, dw=None):
        dw = self.draw(field, x, dt, generator, dw)
        a, b = field.drift(t, x), field.diffusion(t, x)
        L1b = _jvp(lambda y: field.diffusion(t, y), x, b)
        L1a = _jvp(lambda y: field.drift(t, y), x, b)
        L0a = self._L0(field.drift, t, x, a, b)
        L0b = self._L0(field.diffusion, t, x, a, b)
        out = x + a * dt + b * dw + 0.5 * L1b * (dw * dw - dt) + (0.5 * dt) * (L1a + L0b) * dw
        return out + (0.5 * dt * dt) * L0a, state

    def __repr__(self):
        return f"WeakTaylor2({self.law!r}" + (", time_dependent=True)" if self.time_dependent else ")")


class Milstein(_LawScheme):
    r"""Milstein's scheme (strong order 1, weak order 1), Gaussian increments:

        X_{n+1} = X + aΔ + bΔW + ½ L¹b (ΔW² − Δ),     L¹b = (∇b) b,

    for one Brownian motion (``sample``/``batch`` noise) and elementwise ``diagonal`` noise
    (where ``L¹b`` is ``b_k ∂_k b_k``). For ``general`` noise with m Brownian motions it is
    the commutative-noise Milstein scheme ``X + aΔ + Σ_j b^j ΔW^j + ½ Σ_{j,r} L^j b^r
    (ΔW^j ΔW^r − δ_{jr} Δ)``, which needs ``L^j b^r = L^r b^j``: a general field with m > 1
    must declare ``commutative=True`` (``check`` refuses it otherwise). Additive noise
    (``field.additive``: every ``L^j b`` vanishes) is commutative, and the step is then
    Euler–Maruyama's, with no derivative taken.

    ``derivative="autograd"`` computes ``L^j b`` exactly by a forward-mode Jacobian–vector
    product; ``derivative="difference"`` is the derivative-free Runge–Kutta form (K&P 11.1.3),
    ``L^j b ≈ (b(X + aΔ + b^j√Δ) − b(X))/√Δ``, of the same strong order.
    """

    strong_order = 1.0
    weak_order = 1.0
    aliases = ("milstein",)
    options = ("derivative",)
    only_gaussian = " (it is a strong scheme); use platen for another law"

    def __init__(self, derivative: str = "autograd"):
        super().__init__(Gaussian())
        if derivative not in ("autograd", "difference"):
            raise ValueError(f"Milstein: derivative must be 'autograd' or 'difference', got {derivative!r}")
        self.derivative = derivative

    def check(self, field):
        super().check(field)
        if field.noise == "general" and field.m > 1 and not (field.commutative or field.additive):
            raise ValueError(
                "Milstein supports general noise only when it is commutative (L^j g^r = L^r g^j); "
                "declare it with SDEField(..., noise='general', m=..., commutative=True), or use Platen "
                "(weak order 2) or EulerMaruyama"
            )

    def _L(self, field, t, x, a, b, direction, dt):
        if self.derivative == "autograd":
            return _jvp(lambda y: field.diffusion(t, y), x, direction)
        s = math.sqrt(dt)
        return (field.diffusion(t, x + a * dt + direction * s) - b) / s

    def step(self, field, t, x, dt, state, generator=None, dw=None):
        dw = self.draw(field, x, dt, generator, dw)
        if field.additive:  # the diffusion ignores the state: every L^j b vanishes (Euler–Maruyama)
            return x + field.increment(t, x, dt, dw), state
        if field.noise == "general" and self.derivative == "autograd":
            return self._general_autograd(field, t, x, dt, dw), state
        a, b = field.coefficients(t, x)
        out = x + a * dt + field.noise_term(b, dw)
        if field.noise != "general":
            return out + 0.5 * self._L(field, t, x, a, b, b, dt) * (dw * dw - dt), state
        for j in range(b.shape[-1]):  # difference quotients: one diffusion evaluation per column
            Lj = self._L(field, t, x, a, b, b[..., j].contiguous(), dt)  # (…, m): L^j b^r for every r
            cj = _column(dw, j, x)
            out = out + 0.5 * (field.noise_term(Lj, dw) * cj - Lj[..., j] * dt)
        return out, state

    @staticmethod
    def _general_autograd(field, t, x, dt, dw):
        r"""The general-noise step with every ``L^j b^r`` from one evaluation of the diffusion.

        Double-backward trick, batched over the m directions: ``h(u) = (∂g/∂x)ᵀ u`` is linear in
        ``u`` (one backward pass through ``g``), and the gradient of ``⟨h(u), b^j⟩`` with respect
        to ``u`` is ``(∂g/∂x) b^j = L^j g``; ``is_grads_batched`` takes all m contiguous
        directions ``b^j`` in one vectorized backward pass, instead of m passes along strided
        column views. Then ``½ Σ_{j,r} L^j b^r (ΔW^j ΔW^r − δ_{jr} Δ)`` is one contraction.
        """
        graph = torch.is_grad_enabled()
        a = field.drift(t, x)
        m = dw.shape[-1]
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            g = field.diffusion(t, xg)  # (*x.shape, m)
            directions = g.movedim(-1, 0)  # (m, *x.shape): b^j
            directions = (directions if graph else directions.detach()).contiguous()
            L = None
            if g.requires_grad:
                u = torch.zeros_like(g, requires_grad=True)
                (h,) = torch.autograd.grad(g, xg, u, create_graph=True, allow_unused=True)
                if h is not None and h.requires_grad:
                    (L,) = torch.autograd.grad(
                        h, u, directions, create_graph=graph, is_grads_batched=True, allow_unused=True
                    )
        b = g if graph else g.detach()
        out = x + a * dt + field.noise_term(b, dw)
        if L is None:  # g does not depend on the state
            return out
        # L[j, …, r] = L^j b^r; c[:, j, r] = ΔW^j ΔW^r − δ_{jr} Δ
        c = dw.unsqueeze(-1) * dw.unsqueeze(-2) - dt * torch.eye(m, dtype=dw.dtype, device=dw.device)
        c = c.reshape((c.shape[0],) + (1,) * (x.dim() - 1) + (m, m))
        return out + 0.5 * (L.movedim(0, -2) * c).sum((-2, -1))

    def __repr__(self):
        return f"Milstein(derivative={self.derivative!r})"
