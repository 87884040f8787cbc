"""``integrate``: the one entry point that runs a scheme over a uniform time grid."""

from __future__ import annotations

import math

import torch

from .fast import fast_integrate
from .schemes import Scheme

__all__ = ["integrate", "make_grid"]


def _finite(name, value, what="a finite number") -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"integrate: {name} must be {what}, got {name}={value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"integrate: {name} must be {what}, got {name}={value!r}")
    return out


def _whole_steps(steps) -> int:
    bad = ValueError(f"integrate: steps must be a positive integer, got steps={steps!r}")
    if isinstance(steps, (bool, str)):
        raise bad
    try:
        value = float(steps)
    except (TypeError, ValueError):
        raise bad from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise bad
    return int(value)


def make_grid(t0=0.0, t1=None, steps=None, dt=None) -> tuple[float, float, int]:
    """Resolve a uniform grid from ``t0`` and any two of ``t1``, ``steps``, ``dt``.

    Returns ``(t0, dt, steps)``. Raises ``ValueError`` for a grid that is missing,
    over-determined and inconsistent, empty, or not a whole number of steps.
    """
    t0 = _finite("t0", t0)
    given = sum(v is not None for v in (t1, steps, dt))
    if given < 2:
        raise ValueError("integrate: give two of t1, steps and dt (e.g. t1=1.0, steps=100)")
    if steps is not None:
        steps = _whole_steps(steps)
    if dt is not None:
        value = _finite("dt", dt, "positive and finite")
        if not value > 0:
            raise ValueError(f"integrate: dt must be positive and finite, got dt={dt!r}")
        dt = value
    if t1 is not None:
        t1 = _finite("t1", t1)
        if not t1 > t0:
            raise ValueError(f"integrate: t1 must be greater than t0, got t0={t0}, t1={t1}")
    if t1 is not None and steps is not None:
        grid_dt = (t1 - t0) / steps
        if dt is not None and not math.isclose(dt, grid_dt, rel_tol=1e-9):
            raise ValueError(f"integrate: dt={dt} disagrees with (t1 - t0)/steps = {grid_dt}")
        return t0, grid_dt, steps
    if t1 is not None:  # t1 and dt
        n = (t1 - t0) / dt
        steps = round(n)
        if steps < 1 or not math.isclose(n, steps, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(f"integrate: (t1 - t0)/dt = {n} is not a whole number of steps")
        return t0, dt, steps
    return t0, dt, steps  # steps and dt


def _check_state(field, x0):
    if field.coupled:
        if not (isinstance(x0, (tuple, list)) and len(x0) == 2 and all(isinstance(v, torch.Tensor) for v in x0)):
            raise ValueError("integrate: a CoupledField needs x0 = (x, y), a pair of tensors")
        for name, v in zip("xy", x0):
            _check_tensor(f"x0[{'xy'.index(name)}] ({name})", v)
        return tuple(x0)
    if not isinstance(x0, torch.Tensor):
        raise ValueError(f"integrate: x0 must be a torch.Tensor, got {type(x0).__name__}")
    return _check_tensor("x0", x0)


def _check_tensor(name, x):
    if x.dim() == 0:
        raise ValueError(f"integrate: {name} must have a batch dimension (shape (B, ...)), got a scalar")
    if not x.is_floating_point():
        raise ValueError(f"integrate: {name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def integrate(
    field,
    scheme: Scheme,
    x0,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    dt: float | None = None,
    generator: torch.Generator | None = None,
    save: str = "last",
):
    """Integrate ``field`` with ``scheme`` from ``x0`` at ``t0`` over a uniform grid.

    Give two of ``t1``, ``steps``, ``dt``. Stochastic schemes draw their increments
    from ``generator`` (on ``x0``'s device) or torch's global generator. The whole
    computation is plain autograd: gradients flow to ``x0`` and to every parameter of
    the field (and to a tensor ``k`` of :class:`~sdenet.schemes.LinearMultistep`).

    ``save="last"`` returns ``X(t1)``; ``save="all"`` returns every grid value stacked
    along a new leading dimension (``steps + 1`` of them; a pair of such stacks for a
    coupled field).
    """
    if not isinstance(scheme, Scheme):
        raise ValueError(f"integrate: scheme must be an sdenet Scheme, got {type(scheme).__name__}")
    scheme.check(field)
    if save not in ("last", "all"):
        raise ValueError(f"integrate: save must be 'last' or 'all', got {save!r}")
    x = _check_state(field, x0)
    t0, dt, steps = make_grid(t0, t1, steps, dt)
    if generator is not None:
        device = (x[0] if field.coupled else x).device
        if generator.device.type != device.type:
            raise ValueError(
                f"integrate: generator is on {generator.device} but x0 is on {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )

    if not field.coupled:  # in-place fast path for fields that declare an affine form (sdenet.fast)
        out = fast_integrate(field, scheme, x, t0, dt, steps, generator, save)
        if out is not None:
            return out
    state = scheme.init(field, t0, x, dt)
    path = [x] if save == "all" else None
    for n in range(steps):
        x, state = scheme.step(field, t0 + n * dt, x, dt, state, generator)
        if path is not None:
            path.append(x)
    if path is None:
        return x
    if field.coupled:
        return torch.stack([p[0] for p in path]), torch.stack([p[1] for p in path])
    return torch.stack(path)
