"""Invertible schemes (memory="reversible"): RevNet's coupled Euler step, Chang et al.'s
Hamiltonian step (AAAI 2018), and the two-step midpoint and leapfrog schemes."""

from __future__ import annotations

import torch

from .._checks import checked_float
from .base import Scheme, _TwoStep

__all__ = ["CoupledEuler", "Hamiltonian", "Midpoint", "Leapfrog"]


class CoupledEuler(Scheme):
    """RevNet's update of the coupled system ``X' = f1(Y)``, ``Y' = f2(X)``:

    ``X_{n+1} = X_n + Δt f1(t_n, Y_n)``, ``Y_{n+1} = Y_n + Δt f2(t_n, X_{n+1})``
    (forward Euler on each component in turn — symplectic Euler). Order 1, and
    exactly invertible step by step, which is what makes RevNet reversible.
    """

    order = 1
    coupled = True
    invertible = True
    exact_arithmetic = True
    aliases: tuple[str, ...] = ("coupled", "coupled_euler", "revnet")

    def step(self, field, t, state_xy, dt, state, generator=None, fp=None):
        x, y = state_xy
        if fp is None:
            x = x + field.f1(t, y) * dt
            y = y + field.f2(t, x) * dt
        else:  # exact: grid states, each increment rounded to the grid
            x = fp.add_(x, field.f1(t, fp.value(y)), dt)
            y = fp.add_(y, field.f2(t, fp.value(x)), dt)
        return (x, y), state

    @staticmethod
    def inverse(field, t, state_xy, dt, fp=None):
        """Recover ``(X_n, Y_n)`` from ``(X_{n+1}, Y_{n+1})``."""
        x, y = state_xy
        if fp is None:
            y = y - field.f2(t, x) * dt
            x = x - field.f1(t, y) * dt
        else:
            y = fp.sub_(y, field.f2(t, fp.value(x)), dt)
            x = fp.sub_(x, field.f1(t, fp.value(y)), dt)
        return x, y

    def invert_step(self, field, t, x_next, dt, state_next, fp=None):
        return self.inverse(field, t, x_next, dt, fp), state_next

    def reverse_step(self, field, t, x_next, dt, state_next, grads, vjp, fp=None):
        """Undo one step and pull its gradients back, evaluating each field once.

        ``grads`` are the gradients of the loss with respect to ``(X_{n+1}, Y_{n+1})``;
        ``vjp(fn, u, g, scale)`` returns ``(fn(u), scale·(∂fn/∂u)ᵀ g)`` (a fresh tensor) and
        collects the parameter gradients (memory="reversible" in :mod:`sdenet.nn.memory` provides
        it). The caller hands ``x_next`` over: it is overwritten (in place where ``fp`` allows it,
        and always in plain arithmetic). Returns ``((X_n, Y_n), state_n, (g_X_n, g_Y_n))``.
        """
        x1, y1 = x_next
        gx, gy = grads
        sub = (lambda z, v: z.sub_(v, alpha=dt)) if fp is None else (lambda z, v: fp.sub_(z, v, dt))
        val = (lambda v: v) if fp is None else fp.value
        f2, back = vjp(lambda u: field.f2(t, u), val(x1), gy, dt)
        y0 = sub(y1, f2)
        gx = back if gx is None else (gx if back is None else back.add_(gx))
        f1, back = vjp(lambda u: field.f1(t, u), val(y0), gx, dt)
        x0 = sub(x1, f1)
        gy = back if gy is None else (gy if back is None else back.add_(gy))
        return (x0, y0), state_next, (gx, gy)


class Hamiltonian(CoupledEuler):
    """Chang et al.'s Hamiltonian step (AAAI 2018) on a coupled field ``Y' = f1(t, Z)``, ``Z' = f2(t, Y)``:

    ``Y_{n+1} = Y_n + Δt f1(t_n, Z_n)``,  ``Z_{n+1} = Z_n + Δt f2(t_n, Y_{n+1})``.

    With the field of a Hamiltonian network, ``f1(Z) = σ(K Z + b)`` and ``f2(Y) = −σ(Kᵀ Y + b)``
    (or the tied ``±Kᵀσ(K·)`` of their eq. (8), :mod:`sdenet.nn.reversible`), this is the
    paper's update. The arithmetic is the symplectic-Euler step of :class:`CoupledEuler`
    (RevNet's); what makes the network Hamiltonian is the field. Read on collocated states
    ``(Y_n, Z_n)`` the step has order 1 (``order``); read on the staggered grid, ``Z_n`` standing
    for ``Z(t_{n+1/2})`` (started with ``Z(t_{1/2}) = Z_0 + Δt/2 f2(Y_0)``, ended with
    ``Z(T) = Z_N − Δt/2 f2(Y_N)``), it is the Störmer–Verlet leapfrog, order 2 (``staggered_order``). Each step inverts exactly:
    ``Z_n = Z_{n+1} − Δt f2(Y_{n+1})``, ``Y_n = Y_{n+1} − Δt f1(Z_n)`` (up to rounding).
    """

    order = 1
    staggered_order = 2
    invertible = True
    aliases = ("hamiltonian", "verlet")

    def __repr__(self):
        return "Hamiltonian()"


def _two_step_state(state):
    return (None, 0) if state is None else (state["prev"], state["n"])


def _next_state(state, x, n, prev):
    """The two-step state after step ``n``; ``given`` remembers whether step 0 had a history
    ``Y_{−1}`` handed in (else it was the scheme's own start, which ``invert_step`` undoes)."""
    given = (prev is not None) if n == 0 else (state or {}).get("given", True)
    return {"prev": x, "n": n + 1, "given": given}


class _TwoStepInvertible(_TwoStep):
    """Shared declarations of the invertible two-step schemes: the state carries ``Y_{n−1}``
    (``None`` before the first step), and a history handed in (:meth:`Scheme.start`) becomes
    ``Y_{−1}``."""

    invertible = True
    exact_arithmetic = True
    #: the two ways to start without a history: the first keeps order 2, the second ("rest",
    #: ``Y_{−1} = Y_0``) costs one order
    starts: tuple[str, str]

    def _set_start(self, name: str, start: str):
        if start not in self.starts:
            raise ValueError(f"{name}: start must be {self.starts[0]!r} or {self.starts[1]!r}, got {start!r}")
        self.first_step = start

    @property
    def order(self):
        return 2 if self.first_step == self.starts[0] else 1

    def invert_step(self, field, t, x_next, dt, state_next, fp=None):
        x, n, given = state_next["prev"], state_next["n"] - 1, state_next.get("given", True)
        if n == 0 and not given:
            return x, {"prev": None, "n": 0}
        return x, {"prev": self._previous(field, t, x, x_next, dt, fp), "n": n, "given": given}

    def _previous(self, field, t, x, x_next, dt, fp):
        """``Y_{n−1}`` from ``Y_n = x`` and ``Y_{n+1} = x_next`` (the scheme solved backwards)."""
        raise NotImplementedError


class Midpoint(_TwoStepInvertible):
    """The explicit midpoint (leapfrog-in-time) two-step scheme ``Y_{n+1} = Y_{n−1} + 2Δt f(t_n, Y_n)``.

    How it starts: ``start="euler"`` (default) takes one forward-Euler step ``Y_1 = Y_0 + Δt f(t_0, Y_0)``,
    whose local error ``O(Δt²)`` keeps the global order 2; ``start="rest"`` sets ``Y_{−1} = Y_0``
    (``Y_1 = Y_0 + 2Δt f``), which costs one order (``order`` is then 1). A history handed in
    (a stage's ``prev``, e.g. a transition's shortcut) is used as ``Y_{−1}`` instead.

    Exactly invertible: ``Y_{n−1} = Y_{n+1} − 2Δt f(t_n, Y_n)``; the state carries ``Y_{n−1}``. Its
    characteristic roots on ``u' = λu`` are ``λΔt ± √(1 + λ²Δt²)``: on the imaginary axis
    (``|λΔt| ≤ 1``) both have modulus 1 — stable and non-dissipative, the point of Chang et al.'s
    construction — while for real ``λ < 0`` the parasitic root has modulus > 1 (weak instability).
    """

    aliases = ("midpoint",)
    options = ("start",)
    starts = ("euler", "rest")

    def __init__(self, start: str = "euler"):
        self._set_start("Midpoint", start)

    def step(self, field, t, x, dt, state, generator=None, fp=None):
        prev, n = _two_step_state(state)
        c = 2.0 * dt if prev is not None else self._start_coefficient(dt)
        if fp is None:
            x_next = torch.add(x if prev is None else prev, field.drift(t, x), alpha=c)
        else:
            fx = field.drift(t, fp.value(x))  # x stays (the next history): overwrite prev only
            x_next = fp.add(x, fx, c) if prev is None else fp.add_(prev, fx, c)
        return x_next, _next_state(state, x, n, prev)

    def _previous(self, field, t, x, x_next, dt, fp):
        if fp is None:
            return torch.add(x_next, field.drift(t, x), alpha=-2.0 * dt)
        return fp.sub_(x_next, field.drift(t, fp.value(x)), 2.0 * dt)

    def _start_coefficient(self, dt):  # x_1 = x_0 + c0 f(x_0)
        return dt if self.first_step == "euler" else 2.0 * dt

    def reverse_step(self, field, t, x_next, dt, state_next, grads, vjp, fp=None):
        """Undo one step and pull gradients back with one field evaluation (see ``CoupledEuler.reverse_step``);
        ``grads = (g_{Y_{n+1}}, g_{Y_n})``."""
        return _two_step_reverse(self, field, t, x_next, dt, state_next, grads, vjp, 1.0, 0.0, 2.0 * dt, fp)

    def __repr__(self):
        return f"Midpoint(start={self.first_step!r})"


class Leapfrog(_TwoStepInvertible):
    """The two-step scheme ``Y_{n+1} = 2Y_n − Y_{n−1} + Δt² f(t_n, Y_n)`` for the second-order ODE ``Y'' = f(t, Y)``
    (Störmer's method; Chang et al.'s leapfrog network with ``f = −Kᵀσ(K Y + b)``).

    ``order`` is the order on ``Y'' = f`` (2 with the default start). How it starts:
    ``start="taylor"`` (default) takes ``Y_1 = Y_0 + Δt v_0 + Δt²/2 f(t_0, Y_0)`` with the initial
    velocity ``v_0 = velocity`` (default 0: from rest), order 2; ``start="rest"`` sets
    ``Y_{−1} = Y_0`` (``Y_1 = Y_0 + Δt² f``), whose ``O(Δt)`` velocity error makes the scheme
    order 1. A history handed in (a stage's ``prev``) is used as ``Y_{−1}``.

    Exactly invertible: ``Y_{n−1} = 2Y_n − Y_{n+1} + Δt² f(t_n, Y_n)``.
    """

    aliases = ("leapfrog",)
    options = ("start", "velocity")
    starts = ("taylor", "rest")

    def __init__(self, start: str = "taylor", velocity: float = 0.0):
        self._set_start("Leapfrog", start)
        self.velocity = checked_float(
            velocity,
            "Leapfrog: velocity must be a number, got {value!r}",
            "Leapfrog: velocity must be finite, got {number!r}",
        )

    def step(self, field, t, x, dt, state, generator=None, fp=None):
        prev, n = _two_step_state(state)
        if fp is not None:
            fx = field.drift(t, fp.value(x))
            if prev is None:
                if self.velocity:  # the start step only: grid(c0·f + Δt·v0)
                    return x + fp.grid(fx * self._start_coefficient(dt) + self.velocity * dt), _next_state(
                        state, x, n, prev
                    )
                return fp.add(x, fx, self._start_coefficient(dt)), _next_state(state, x, n, prev)
            return fp.add_(2.0 * x - prev, fx, dt * dt), _next_state(state, x, n, prev)
        fx = field.drift(t, x)
        if prev is None:
            if self.first_step == "taylor":
                x_next = torch.add(x, fx, alpha=0.5 * dt * dt)
                if self.velocity:
                    x_next = x_next + self.velocity * dt
            else:
                x_next = torch.add(x, fx, alpha=dt * dt)
        else:
            x_next = torch.add(2.0 * x - prev, fx, alpha=dt * dt)
        return x_next, _next_state(state, x, n, prev)

    def _previous(self, field, t, x, x_next, dt, fp):
        if fp is None:
            return torch.add(2.0 * x - x_next, field.drift(t, x), alpha=dt * dt)
        return fp.add_(2.0 * x - x_next, field.drift(t, fp.value(x)), dt * dt)

    def _start_coefficient(self, dt):  # x_1 = x_0 + c0 f(x_0) (+ Δt v_0, a constant: no gradient)
        return 0.5 * dt * dt if self.first_step == "taylor" else dt * dt

    def reverse_step(self, field, t, x_next, dt, state_next, grads, vjp, fp=None):
        """Undo one step and pull gradients back with one field evaluation (see ``CoupledEuler.reverse_step``);
        ``grads = (g_{Y_{n+1}}, g_{Y_n})``."""
        return _two_step_reverse(self, field, t, x_next, dt, state_next, grads, vjp, -1.0, 2.0, dt * dt, fp)

    def __repr__(self):
        v = f", velocity={self.velocity:g}" if self.velocity else ""
        return f"Leapfrog(start={self.first_step!r}{v})"


def _add_grads(*gs):
    out = None
    for g in gs:
        if g is not None:
            out = g if out is None else out + g
    return out


def _two_step_reverse(scheme, field, t, x_next, dt, state_next, grads, vjp, a, b, c, fp=None):
    """Reverse of ``x_{n+1} = a·x_{n−1} + b·x_n + c·f(x_n)`` (after a start, if step 0 had no history);
    ``grads = (g_{x_{n+1}}, g_{x_n})`` (the second for the history slot of the state). With ``fp``
    the increment ``c·f`` is rounded to the grid exactly as ``step`` rounds it (``a = ±1``, ``b``
    ∈ {0, 2}: the rest is exact on the grid)."""
    x, n, given = state_next["prev"], state_next["n"] - 1, state_next.get("given", True)
    g_next, g_hist = grads
    u = x if fp is None else fp.value(x)
    if n == 0 and not given:  # the scheme's own start x_1 = x_0 + c0 f(x_0)
        c0 = scheme._start_coefficient(dt)
        _, back = vjp(lambda v: field.drift(t, v), u, g_next, c0)
        return x, {"prev": None, "n": 0}, (_add_grads(g_next, g_hist, back),)
    fx, back = vjp(lambda v: field.drift(t, v), u, g_next, c)
    base = x_next - b * x if b else x_next  # x_next is handed over: overwritten below
    prev = base.sub_(fx, alpha=c) if fp is None else fp.sub_(base, fx, c)  # a·x_{n−1}
    if a != 1.0:
        prev = prev.div_(a)
    g_x = _add_grads(g_hist, back, None if (g_next is None or not b) else g_next * b)
    g_prev = None if g_next is None else (g_next if a == 1.0 else g_next * a)
    return x, {"prev": prev, "n": n, "given": given}, (g_x, g_prev)
