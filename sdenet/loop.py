"""The one stepping loop: every way the library steps a scheme runs :func:`run_steps`.

    state = scheme.init(...)                  (the caller: ``scheme.start`` for a stage)
    for n in first … steps − 1:
        dw = the given increment n, if any
        x, state = schemes[n].step(field, t_n, x, Δt, state, generator, dw=dw)

:func:`sdenet.integrate`, :class:`sdenet.nn.Stage` (store mode) and the memory modes of
:mod:`sdenet.nn.memory` call it (a reversible stage runs it graph-free, its fixed-point ``fp``
passed through ``step_kw``, and then its own reverse sweep; a checkpointed one runs it segment
by segment with ``first`` and ``steps``, forward and again in its backward).

Where autograd does not record (grad mode off, or nothing in the step needs a gradient) and a
scheme declares a fused in-place kernel (:meth:`sdenet.Scheme.inplace`), the loop works in
place instead: one copy of ``x`` is updated step after step and the increments are drawn into
reused buffers (:meth:`sdenet.NoiseLaw.draws`, the same generator calls as ``law.sample``), so
a user's own field gets the speed a hand-written in-place loop has (minus the drift's own
allocation). A kernel that finds the field's output recorded by autograd (a parameter that
needs a gradient, a tensor captured by a lambda) declines before touching ``x``, and the loop
runs ``step`` from there on. The in-place arithmetic may group the sum differently from
``step`` (``(x + fΔt) + gΔŴ`` against ``x + (fΔt + gΔŴ)``): results agree to rounding, and
``ENABLED = False`` here switches the in-place path off everywhere (``sdenet.fast.ENABLED`` is
the same switch, kept there for its users).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import torch

from .fields import Time, time_points
from .laws import Draw

__all__ = ["run_steps", "inplace_allowed", "ENABLED"]

#: set to False to force the generic path everywhere (benchmarks and tests compare the two);
#: the loop owns the switch, :mod:`sdenet.fast` only forwards its ``ENABLED`` here
ENABLED = True


def inplace_allowed(x: Any, post: Callable[[Any], Any] | None = None) -> bool:
    """Whether the loop may work in place on ``x``: a single tensor, no per-step ``post``, the
    in-place path enabled, and autograd not recording through ``x`` (grad mode off, or ``x``
    needs no gradient); never while ``torch.compile`` traces."""
    if not ENABLED or post is not None or not isinstance(x, torch.Tensor):
        return False
    if torch.compiler.is_compiling():
        return False
    return not (torch.is_grad_enabled() and x.requires_grad)


def run_steps(
    field: Any,
    schemes: Any,
    x: Any,
    state: Any,
    *,
    t0: float,
    dt: float,
    steps: int,
    generator: torch.Generator | None = None,
    dw: Callable[..., Any] | None = None,
    first: int = 0,
    save: list[Any] | None = None,
    post: Callable[[Any], Any] | None = None,
    check_field: Any = None,
    tensor_time: bool | None = None,
    inplace: bool | None = None,
    step_kw: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Run steps ``first … steps − 1`` of ``schemes`` on ``field`` from ``(x, state)``; return ``(x, state)``.

    ``schemes`` is one scheme or a sequence with one per step (indexed by the step number).
    ``dw`` is ``None`` (each scheme draws its own increments from ``generator``) or a callable
    ``dw(n, t, dt)`` returning step ``n``'s Brownian increment (``integrate`` checks it).
    ``save``, a list, receives every new state (``x_{n+1}``; copies on the in-place path).
    ``post`` is applied after every step (a stage's post-activation). ``check_field`` is the
    field step ``first`` sees instead of ``field`` (``FieldCheck``: the boundary checks on the
    first step). ``tensor_time`` (default ``field.tensor_time``) passes ``t`` as a 0-dim tensor.
    ``inplace``: ``None`` decides by :func:`inplace_allowed`, ``False`` never. ``x`` itself is never
    modified: the in-place path works on a copy. ``step_kw``: keyword arguments every
    ``scheme.step`` receives besides the protocol's (the reversible memory mode's ``fp=``); the
    in-place kernels take none, so it also means ``inplace=False``.
    """
    # chosen once: the plain loop pays nothing for the keywords it does not have
    step = _step if step_kw is None else _step_with(step_kw)
    per_step = isinstance(schemes, (list, tuple))
    like = x[0] if isinstance(x, tuple) else x
    if tensor_time is None:
        tensor_time = bool(getattr(field, "tensor_time", True))
    times: Iterator[Time] = time_points(t0, dt, steps, like, tensor_time, first=first)
    n = first
    if check_field is not None and n < steps:  # the first step through the boundary checks
        x, state, n = _run_generic(
            step,
            check_field,
            schemes,
            per_step,
            x,
            state,
            islice(times, 1),
            n,
            dt,
            generator,
            dw,
            t0,
            save,
            post,
        )
    if n < steps and step_kw is None and (inplace is None or inplace) and inplace_allowed(x, post):
        x, state, n, times = _run_inplace(
            field, schemes, per_step, x, state, times, n, steps, dt, generator, dw, t0, save
        )
    x, state, _ = _run_generic(
        step, field, schemes, per_step, x, state, times, n, dt, generator, dw, t0, save, post
    )
    return x, state


def _run_generic(
    step: Callable[..., tuple[Any, Any]],
    field: Any,
    schemes: Any,
    per_step: bool,
    x: Any,
    state: Any,
    times: Iterator[Time],
    n: int,
    dt: float,
    generator: torch.Generator | None,
    dw: Callable[..., Any] | None,
    t0: float,
    save: list[Any] | None,
    post: Callable[[Any], Any] | None,
) -> tuple[Any, Any, int]:
    """``step`` (:func:`_step` or :func:`_step_with`'s) at each of ``times`` from step ``n``;
    returns ``(x, state, n)`` after the last."""
    for t in times:
        s = schemes[n] if per_step else schemes
        x, state = step(s, field, t, x, dt, state, generator, dw, n, t0)
        if post is not None:
            x = post(x)
        if save is not None:
            save.append(x)
        n += 1
    return x, state, n


# _step and _step_with's inner step share their signature and body on purpose: the plain step
# is the hot path, and passing an empty **kw on every step would cost it; duplicates reports them.
def _step(
    scheme: Any,
    field: Any,
    t: Time,
    x: Any,
    dt: float,
    state: Any,
    generator: torch.Generator | None,
    dw: Callable[..., Any] | None,
    n: int,
    t0: float,
) -> tuple[Any, Any]:
    out: tuple[Any, Any]
    if dw is None:
        out = scheme.step(field, t, x, dt, state, generator)
    else:
        out = scheme.step(field, t, x, dt, state, generator, dw=dw(n, t0 + n * dt, dt))
    return out


def _step_with(kw: dict[str, Any]) -> Callable[..., tuple[Any, Any]]:
    """:func:`_step` passing ``kw`` to every ``scheme.step``."""

    def step(
        scheme: Any,
        field: Any,
        t: Time,
        x: Any,
        dt: float,
        state: Any,
        generator: torch.Generator | None,
        dw: Callable[..., Any] | None,
        n: int,
        t0: float,
    ) -> tuple[Any, Any]:
        out: tuple[Any, Any]
        if dw is None:
            out = scheme.step(field, t, x, dt, state, generator, **kw)
        else:
            out = scheme.step(field, t, x, dt, state, generator, dw=dw(n, t0 + n * dt, dt), **kw)
        return out

    return step


def _run_inplace(
    field: Any,
    schemes: Any,
    per_step: bool,
    x: torch.Tensor,
    state: Any,
    times: Iterator[Time],
    n: int,
    steps: int,
    dt: float,
    generator: torch.Generator | None,
    dw: Callable[..., Any] | None,
    t0: float,
    save: list[Any] | None,
) -> tuple[torch.Tensor, Any, int, Iterator[Time]]:
    """Steps on one copy of ``x`` while every scheme has a kernel that accepts the step; returns where it
    stopped (``x`` again a tensor the generic steps may continue from) and the remaining times."""
    kernels: dict[
        int, tuple[Any, Any, Any]
    ] = {}  # per scheme object: (kernel, drawer) — a stage may switch schemes from step to step

    def kernel_of(s: Any) -> tuple[Any, Any, Any]:
        k = kernels.get(id(s))
        if k is None:
            kern = s.inplace(field, x, dt)
            drawer = None
            if kern is not None and dw is None and s.law is not None:
                drawer = s.draws(field, x, dt, generator)
            k = kernels[id(s)] = (kern, drawer, s)
        return k

    first = kernel_of(schemes[n] if per_step else schemes)
    if first[0] is None:
        return x, state, n, times
    with torch.no_grad():
        y = x.detach().clone()
    pending: Time | None = None
    # one scheme drawing its own increments (the common case): kernel and draw fixed once
    fixed = not per_step and dw is None
    kern, drawer, s = first
    take: Callable[[], Draw | None] = _NOTHING if drawer is None else drawer.draw
    for t in times:
        if not fixed:
            s = schemes[n] if per_step else schemes
            kern, drawer, _ = kernel_of(s)
            if kern is None:
                pending = t
                break
            if s.law is None:
                take = _NOTHING
            elif dw is not None:
                take = _given(s.law, dw, n, t0 + n * dt, dt)
            else:
                take = drawer.draw
        if not kern(t, y, take):  # declined before drawing: the generic step takes it
            pending = t
            break
        if save is not None:
            save.append(y.clone())
        n += 1
    rest = times if pending is None else _chain(pending, times)
    return y, state, n, rest


def _NOTHING() -> None:
    return None


def _given(law: Any, dw: Callable[..., Any], n: int, t: float, dt: float) -> Callable[[], Draw]:
    return lambda: (law.from_gaussian(dw(n, t, dt), dt), 1.0, 0.0)


def _chain(first: Time, rest: Iterator[Time]) -> Iterator[Time]:
    yield first
    yield from rest
