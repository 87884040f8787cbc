r"""One network, several step sizes: run a network's stages at ``F·N`` steps of ``Δt/F`` *with
its own weights* (depth-robust training, evaluation across depths).

:func:`sdenet.nn.refine` and :func:`sdenet.nn.coarsen` build a *new* network whose stages take
``F·N`` steps of ``Δt/F`` (``F`` = 2, 3, … refines, ``F`` = ½, ⅓, … coarsens) over the same
``T = NΔt``. :func:`at_depth` runs the *same* network that way, inside a ``with`` block: every
stage is replaced, for the duration of the block, by a view that holds

* the stage's own block modules in the order the prolongation or restriction picks them —
  ``refine(·, F, mode="constant")`` (block ``n`` over its ``F`` sub-steps of ``Δt/F``) for
  ``F ≥ 1``, ``coarsen(·, 1/F, mode="inject")`` (every ``(1/F)``-th block at ``Δt/F``) for
  ``F < 1`` — the two maps in which every new block *is* one old block, so no weight is
  combined and gradients flow into the network's own parameters;
* the LM coefficients ``k_n`` / ``g_n`` gathered from the stage's own parameter by the same
  index map (a function of t, as refine maps them);
* everything else refine/coarsen derive for the new Δt, computed by their own code
  (:func:`sdenet.nn.refine._resample_stage`): the per-step schemes, the stochastic-depth
  survival probabilities at the new Δt (interpolated in t, then the field's ``p_schedule``),
  the start from a transition's history (:meth:`sdenet.Scheme.start` at the new Δt),
  Heun's look-ahead block.

So ``with at_depth(net, F): net(x)`` is the same function as ``refine(net, F)(x)`` (or
``coarsen(net, 1/F)(x)``) — a test checks it to the last bit in eval mode — while the
parameters, batch-norm statistics and optimizer state stay those of ``net``. A batch-norm
layer of a block used over ``F`` sub-steps updates its running statistics ``F`` times per
batch (as the refined copy would).

Coarsening by ``k`` needs every stage's number of steps to be a multiple of ``k``.
``strict=True`` (the default, what evaluation uses) refuses otherwise, like
:func:`~sdenet.nn.coarsen`; ``strict=False`` (what depth-robust training uses) leaves such a
stage at its own Δt for that batch and coarsens the others.

The views are built once per stage and factor and cached outside the module tree (they are
never in ``state_dict``, ``parameters()`` or a deep copy of the network). The noise
statistics of a stochastic view (:func:`sdenet.nn.weak_report`) are not added to the
stage's own.
"""

from __future__ import annotations

import contextlib
import weakref
from fractions import Fraction
from typing import cast

import torch
from torch import nn

from .refine import _stages  # the (path, stage) pairs refine and coarsen walk
from .stage import Stage, Transition

__all__ = [
    "at_depth",
    "parse_depth_factor",
    "parse_depth_factors",
    "depth_steps",
    "depth_compute",
    "MAX_DEPTH_FACTOR",
    "recalibrate_batchnorm",
]

#: the largest refinement (and coarsening) factor accepted (a typo like 2000 would build a
#: network 2000× deeper)
MAX_DEPTH_FACTOR = 16

_VIEWS: weakref.WeakKeyDictionary[Stage, dict] = weakref.WeakKeyDictionary()


def parse_depth_factor(value) -> Fraction:
    """A depth factor ``F`` as an exact fraction: an integer ``F ≥ 1`` (refine ×F) or ``1/k``
    (coarsen ×k), ``k`` an integer; ``"0.5"``, ``0.5``, ``"1/2"``, ``2`` are all accepted."""
    if isinstance(value, bool):
        raise ValueError(f"depth factor must be a number like 0.5, 1 or 2, got {value!r}")
    try:
        f = (
            Fraction(str(value).strip())
            if isinstance(value, str)
            else Fraction(value).limit_denominator(1000)
        )
    except (ValueError, TypeError, ZeroDivisionError):
        raise ValueError(f"depth factor must be a number like 0.5, 1 or 2, got {value!r}") from None
    if f <= 0:
        raise ValueError(f"depth factor must be positive, got {value!r}")
    if f.numerator != 1 and f.denominator != 1:
        raise ValueError(f"depth factor must be an integer (refine) or 1/integer (coarsen), got {value!r}")
    if max(f.numerator, f.denominator) > MAX_DEPTH_FACTOR:
        raise ValueError(
            f"depth factor {value!r} is beyond the bound of ×{MAX_DEPTH_FACTOR} (or 1/{MAX_DEPTH_FACTOR})"
        )
    return f


def parse_depth_factors(spec) -> list[Fraction]:
    """A list of depth factors from ``"0.5,1,2"`` or a sequence; no duplicates."""
    items = [s for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not items or any(isinstance(s, str) and not s.strip() for s in items):
        raise ValueError(f"depth factors must be a comma-separated list like 0.5,1,2, got {spec!r}")
    out = [parse_depth_factor(s) for s in items]
    if len(set(out)) != len(out):
        raise ValueError(f"depth factors must not repeat, got {spec!r}")
    return out


def _fits(stage: Stage, f: Fraction) -> bool:
    return f.denominator == 1 or stage.steps % f.denominator == 0


def depth_steps(model: nn.Module, factor=1) -> int:
    """Total number of steps of ``model``'s stages at depth ``factor`` (transitions excluded)."""
    f = parse_depth_factor(factor)
    return sum(int(stage.steps * f) if _fits(stage, f) else stage.steps for _, stage in _stages(model))


def depth_compute(model: nn.Module, factor=1) -> float:
    """Residual-branch evaluations per image at depth ``factor`` relative to depth 1: stage steps
    plus one per transition (stem and head, which do not change with depth, excluded)."""
    transitions = sum(1 for m in model.modules() if isinstance(m, Transition))
    base = depth_steps(model, 1) + transitions
    return (depth_steps(model, factor) + transitions) / base


def _build_view(stage: Stage, f: Fraction) -> Stage:
    from .refine import _resample_stage, _restrict, _time_lists, _weights

    if f.denominator == 1:
        factor = f.numerator

        def block_plan(i, n_old):
            return _weights(i / factor, n_old, "constant")

        step_plan = block_plan
        ratio = float(factor)
    else:
        factor = f.denominator

        def block_plan(i, n_old):
            return _restrict(i, factor, n_old, "inject")

        step_plan = block_plan
        ratio = 1.0 / factor
    new_steps = int(round(stage.steps * ratio))
    view = _resample_stage(stage, new_steps, block_plan, step_plan, ratio)
    field, vfield = stage.field, view.field
    n_old = len(field)
    n_new = len(vfield)
    for name in _time_lists(field, n_old):
        old = getattr(field, name)
        index = []
        for i in range(n_new):
            (j, w), *rest = block_plan(i, n_old)
            assert not rest and w == 1.0, "a shared-weight view takes every block from one old block"
            index.append(j)
        setattr(vfield, name, nn.ModuleList([old[j] for j in index]))  # the stage's own modules
    coeffs = getattr(stage, "coefficients", None)
    if isinstance(coeffs, torch.Tensor):
        idx = [step_plan(m, stage.steps)[0][0] for m in range(new_steps)]
        del view.coefficients  # the copy's Parameter; gathered from the stage's own per use
        view._depth_index = torch.tensor(idx, dtype=torch.long)
    else:
        # a plain attribute; mypy reads nn.Module.__setattr__ as taking tensors and modules only
        view._depth_index = None  # type: ignore[assignment]
    return view


def _view(stage: Stage, f: Fraction) -> Stage:
    cache = _VIEWS.get(stage)
    if cache is None:
        cache = _VIEWS[stage] = {}
    key = (f, stage.steps, len(stage.field) if hasattr(stage.field, "__len__") else None)
    view = cache.get(key)
    if view is None:
        view = cache[key] = _build_view(stage, f)
    # bind what may have changed since the view was built: mode, memory, noise, device
    view.train(stage.training)
    view.memory = stage.memory
    view._noise_on = stage._noise_on
    view._generator = stage._generator
    if hasattr(view.field, "_generator"):
        view.field._generator = getattr(stage.field, "_generator", None)
    sums = getattr(stage.field, "_sums", None)
    if isinstance(sums, torch.Tensor) and view.field._sums.device != sums.device:
        view.field._sums = view.field._sums.to(sums.device)
        view.field._powers = view.field._powers.to(sums.device)
    depth_index = cast("torch.Tensor | None", view._depth_index)  # set by _build_view
    if depth_index is not None:
        c = stage.coefficients  # a tensor whenever the index is
        view.__dict__["coefficients"] = c[depth_index.to(c.device)]
    return view


def _replace(root, path, new):
    *head, last = path.split(".")
    parent = root
    for part in head:
        parent = getattr(parent, part)
    setattr(parent, last, new)


@contextlib.contextmanager
def at_depth(model: nn.Module, factor=1, *, strict: bool = True):
    """Within the block, ``model``'s stages take ``F·N`` steps of ``Δt/F`` with their own weights.

    ``factor``: an integer ``F ≥ 1`` (as :func:`~sdenet.nn.refine` with ``mode="constant"``) or
    ``1/k`` (as :func:`~sdenet.nn.coarsen` with ``mode="inject"``); 1 changes nothing.
    ``strict=False`` leaves a stage whose steps are not a multiple of ``k`` at its own Δt
    instead of refusing (``ValueError`` naming the stage). Yields ``model``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"at_depth: expected an nn.Module, got {type(model).__name__}")
    f = parse_depth_factor(factor)
    if isinstance(model, Stage):
        raise ValueError(
            "at_depth: give the network that holds the stage, not a Stage itself "
            "(use sdenet.nn.refine / coarsen for a lone stage)"
        )
    stages = _stages(model)
    if not stages:
        raise ValueError(f"at_depth: {type(model).__name__} has no sdenet Stage")
    if f == 1:
        yield model
        return
    todo = []
    for path, stage in stages:
        if not _fits(stage, f):
            if strict:
                raise ValueError(
                    f"at_depth: stage {stage.name or path!r} takes {stage.steps} steps, not a "
                    f"multiple of {f.denominator} (factor {float(f):g})"
                )
            continue
        todo.append((path, stage))
    swapped = []
    try:
        for path, stage in todo:
            _replace(model, path, _view(stage, f))
            swapped.append((path, stage))
        yield model
    finally:
        for path, stage in swapped:
            _replace(model, path, stage)


def factor_label(f) -> str:
    f = Fraction(f)
    return str(f.numerator) if f.denominator == 1 else f"1/{f.denominator}"


def factor_float(f) -> float:
    v = float(Fraction(f))
    return int(v) if v.is_integer() else v


def recalibrate_batchnorm(model: nn.Module, batches) -> int:
    """Recompute every batch-norm layer's running statistics from ``batches`` (input tensors).

    The running mean and variance become the average of the batch statistics over ``batches``
    (``momentum=None`` while it runs), with the rest of the network in eval mode (a stochastic
    stage runs its drift; nothing draws noise) and no gradient; modes and momenta are restored
    after. Used at another depth (inside :func:`at_depth`) it gives the network statistics of the
    activations it sees there: a network trained at several depths otherwise carries one set of
    statistics averaged over them. Returns the number of images seen; ``ValueError`` when the
    model has no batch-norm layer or ``batches`` is empty.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError(f"recalibrate_batchnorm: {type(model).__name__} has no batch-norm layer")
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in bns]
    seen = 0
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average of the batch statistics
            m.train()
        with torch.no_grad():
            for x in batches:
                model(x)
                seen += int(x.shape[0])
    finally:
        for mod, mode in modes:
            mod.training = mode
        for bn, mo in momenta:
            bn.momentum = mo
    if seen == 0:
        raise ValueError("recalibrate_batchnorm: no batches were given")
    return seen
