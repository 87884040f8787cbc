"""``integrate``: the one entry point that runs a scheme over a uniform time grid."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch

from ._checks import checked_float
from .fields import Field, FieldCheck
from .loop import run_steps
from .schemes import Scheme, is_scheme

__all__ = ["integrate", "make_grid"]


def _finite(name: str, value: Any, what: str = "a finite number") -> float:
    bad = "integrate: {name} must be {what}, got {name}={value!r}"
    return checked_float(value, bad, bad, name=name, what=what)


def _whole_steps(steps: Any) -> int:
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


def make_grid(
    t0: float = 0.0, t1: float | None = None, steps: int | None = None, dt: float | None = None
) -> tuple[float, float, int]:
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
    assert dt is not None  # two of the three are given, and not both t1 and steps
    if t1 is not None:  # t1 and dt
        n = (t1 - t0) / dt
        steps = round(n)
        if steps < 1 or not math.isclose(n, steps, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(f"integrate: (t1 - t0)/dt = {n} is not a whole number of steps")
        return t0, dt, steps
    assert steps is not None
    return t0, dt, steps  # steps and dt


def _check_state(field: Field, x0: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
    if field.coupled:
        if not (
            isinstance(x0, (tuple, list)) and len(x0) == 2 and all(isinstance(v, torch.Tensor) for v in x0)
        ):
            raise ValueError("integrate: a CoupledField needs x0 = (x, y), a pair of tensors")
        for name, v in zip("xy", x0):
            _check_tensor(f"x0[{'xy'.index(name)}] ({name})", v)
        return tuple(x0)
    if not isinstance(x0, torch.Tensor):
        raise ValueError(f"integrate: x0 must be a torch.Tensor, got {type(x0).__name__}")
    return _check_tensor("x0", x0)


def _check_tensor(name: str, x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 0:
        raise ValueError(f"integrate: {name} must have a batch dimension (shape (B, ...)), got a scalar")
    if not x.is_floating_point():
        raise ValueError(f"integrate: {name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


#: a state: a tensor, or a pair of tensors for a coupled field; ``integrate`` returns the same kind
#: (X(t1), or the stacked path)
State = TypeVar("State", torch.Tensor, tuple[torch.Tensor, torch.Tensor])


def integrate(
    field: Field,
    scheme: Scheme,
    x0: State,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    dt: float | None = None,
    generator: torch.Generator | None = None,
    save: str = "last",
    dw: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | Callable[..., Any] | None = None,
) -> State:
    """Integrate ``field`` with ``scheme`` from ``x0`` at ``t0`` over a uniform grid:

        X_{n+1} = Φ_Δt(t_n, X_n, ΔŴ_n),   t_n = t0 + nΔt,   n = 0 … N−1,   X_0 = x0,

    ``Φ`` the scheme's step, ``ΔŴ_n`` drawn from its law (or given as ``dw``).

    Give two of ``t1``, ``steps``, ``dt``. Stochastic schemes draw their increments
    from ``generator`` (on ``x0``'s device) or torch's global generator. The whole
    computation is plain autograd: gradients flow to ``x0`` and to every parameter of
    the field (and to a tensor ``k`` of :class:`~sdenet.schemes.LinearMultistep`).

    ``save="last"`` returns ``X(t1)``; ``save="all"`` returns every grid value stacked
    along a new leading dimension (``steps + 1`` of them; a pair of such stacks for a
    coupled field).

    The field receives ``t`` as a 0-dim tensor on ``x0``'s device and dtype (torchsde's
    convention; a field with ``tensor_time = False`` gets a float). On the first step what
    the field returns is checked (:class:`sdenet.fields.FieldCheck`): a drift of another
    shape, dtype or device than the state, or a diffusion that does not broadcast against
    the noise to the state's shape, is a ``ValueError`` naming the field and the shapes.

    ``dw`` gives the Brownian increments instead of drawing them: a tensor of shape
    ``(steps, *noise_shape)`` (``noise_shape`` = ``field.noise_shape(x0)``; Gaussian
    ``N(0, Δt)`` values, e.g. differences of a sampled Brownian path) or a callable
    ``dw(n, t, dt)`` returning step ``n``'s increment over ``[t, t + dt]`` (e.g.
    ``lambda n, t, dt: bm(t, t + dt)`` for a ``torchsde.BrownianInterval`` ``bm``). A
    scheme that declares ``space_time`` (:class:`~sdenet.srk.SRK`) also takes the pair
    ``dw=(ΔW, ΔZ)`` — two such tensors, or a callable returning a pair — with ``ΔZ`` the
    integral ``∫ (W(s) − W(t)) ds`` over each step. A
    scheme with a non-Gaussian law derives its increments from them
    (:meth:`~sdenet.NoiseLaw.from_gaussian`: sign for Rademacher, the 1/6 and 5/6 normal
    quantiles for three-point…), so one Brownian path drives every law. Randomness a
    scheme needs beyond ``ΔW`` (Platen's two-point ``V`` for general noise) still comes
    from ``generator``.
    """
    if not is_scheme(scheme):
        raise ValueError(f"integrate: scheme must be an sdenet Scheme, got {type(scheme).__name__}")
    scheme.check(field)
    if save not in ("last", "all"):
        raise ValueError(f"integrate: save must be 'last' or 'all', got {save!r}")
    x = _check_state(field, x0)
    t0, dt, steps = make_grid(t0, t1, steps, dt)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(
                f"integrate: generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        device = (x[0] if isinstance(x, tuple) else x).device
        if generator.device.type != device.type:
            raise ValueError(
                f"integrate: generator is on {generator.device} but x0 is on {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )

    increments = _check_increments(dw, field, scheme, x, steps) if dw is not None else None

    # the one loop (sdenet.loop): the first step sees the field through the boundary checks, the
    # others run it plainly — in place, on reused buffers, where autograd does not record
    state = scheme.init(field, t0, x, dt)
    path: list[Any] | None = [x] if save == "all" else None
    x, state = run_steps(
        field,
        scheme,
        x,
        state,
        t0=t0,
        dt=dt,
        steps=steps,
        check_field=FieldCheck(field, x, "integrate"),
        tensor_time=getattr(field, "tensor_time", True),
        generator=generator,
        dw=increments,
        save=path,
    )
    out: torch.Tensor | tuple[torch.Tensor, ...]
    if path is None:
        out = x
    elif field.coupled:
        out = torch.stack([p[0] for p in path]), torch.stack([p[1] for p in path])
    else:
        out = torch.stack(path)
    return cast(State, out)


def _check_increments(dw: Any, field: Field, scheme: Scheme, x: Any, steps: int) -> Callable[..., Any]:
    """``dw`` as a function ``(n, t, dt) -> increment`` whose values are checked against the noise shape."""
    if not scheme.stochastic or not field.stochastic:
        raise ValueError(
            f"integrate: dw= gives Brownian increments, but {type(scheme).__name__} on this field draws none"
        )
    if field.coupled:
        raise ValueError("integrate: dw= is not supported for coupled fields")
    shape = tuple(field.noise_shape(x))

    def checked(value: Any, where: str) -> Any:
        if isinstance(value, (tuple, list)) and len(value) == 2 and getattr(scheme, "space_time", False):
            return tuple(checked(v, f"{where}[{i}]") for i, v in enumerate(value))
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"integrate: {where} must be a torch.Tensor, got {type(value).__name__}")
        if tuple(value.shape) != shape:
            raise ValueError(
                f"integrate: {where} has shape {tuple(value.shape)}, expected the noise shape {shape}"
            )
        if value.dtype != x.dtype or value.device != x.device:
            value = value.to(device=x.device, dtype=x.dtype)
        return value

    if isinstance(dw, (tuple, list)) and len(dw) == 2 and getattr(scheme, "space_time", False):
        # (ΔW, ΔZ): the increments with their space-time integrals, for schemes that take them (SRK)
        pair = [_check_increments(v, field, scheme, x, steps) for v in dw]
        return lambda n, t, dt: (pair[0](n, t, dt), pair[1](n, t, dt))
    if isinstance(dw, torch.Tensor):
        if dw.dim() < 1 or dw.shape[0] != steps or tuple(dw.shape[1:]) != shape:
            raise ValueError(
                f"integrate: dw has shape {tuple(dw.shape)}, expected (steps, *noise_shape) = {(steps,) + shape}"
            )
        if not dw.is_floating_point():
            raise ValueError(f"integrate: dw must be a floating-point tensor, got dtype {dw.dtype}")
        dw = dw.to(device=x.device, dtype=x.dtype)
        return lambda n, t, dt: dw[n]
    if callable(dw):
        return lambda n, t, dt: checked(dw(n, t, dt), f"dw({n}, t, dt)")
    raise ValueError(
        f"integrate: dw must be a tensor (steps, *noise_shape) or a callable dw(n, t, dt), got {type(dw).__name__}"
    )
