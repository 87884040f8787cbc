r"""Depth is a step size: refine and coarsen a network's stages at fixed T.

A stage of ``N`` steps at ``Δt`` integrates over ``T = NΔt``, block ``n`` being the field at
``t_n = t_0 + nΔt``. :func:`refine` makes every stage take ``F·N`` steps of ``Δt/F`` over the
same ``T`` (prolongation of the field in time); :func:`coarsen` takes ``N/F`` steps of
``F·Δt`` (restriction). Transitions, stem and head sit outside the ODE and are kept as they are.

Prolongation of the blocks (new block ``i`` sits at ``t'_i = t_0 + iΔt/F``, i.e. at position
``s = i/F`` on the old block grid):

* ``mode="constant"``: block ``⌊s⌋`` (block ``n``'s weights repeated over its ``F``
  sub-steps). The refined network is the same piecewise-constant field integrated with a
  ``F``× finer step, so it approximates the coarse network to the scheme's order in Δt
  (O(Δt) for Euler) and both converge to the same limit as ``F → ∞``.
* ``mode="linear"``: the weights (and batch-norm statistics) interpolated linearly between
  blocks ``⌊s⌋`` and ``⌊s⌋ + 1`` on the ``t_n`` grid (held at the last block past it) — a
  field continuous in t.

Every floating tensor of a block's ``state_dict`` is prolonged, so batch-norm running means
and variances are carried; integer buffers (``num_batches_tracked``) come from block ``⌊s⌋``.
Restriction (:func:`coarsen`) injects the blocks at ``t_{nF}`` (``mode="inject"``) or averages
the ``F`` blocks of each coarse step (``mode="average"``); injection makes
``coarsen(refine(m, F), F)`` return ``m``'s weights exactly, for both prolongations (the
weight of block ``n`` at ``s = n`` is ``1·w_n + 0·w_{n+1}``).

What is prolonged is read from the stage and its field, not from the model's class: every
``nn.ModuleList`` of the field whose length is the field's number of blocks is a list of
blocks in time (``blocks``; ``blocks1``/``blocks2`` of shake-shake and RevNet; those of any new
field); a scheme that evaluates past ``t_n`` (Heun's look-ahead: ``N + 1`` blocks for ``N``
steps) keeps its extra blocks (``F·N + 1``); per-step schemes, LM coefficients and
stochastic-depth laws are resampled step by step.

LM coefficients — the map that keeps the continuous limit. ``LinearMultistep``'s step
``u_{n+1} = (1 − k) u_n + k u_{n−1} + Δt f`` has the modified equation
``(1 + k) u' + (1 − k) Δt/2 u'' = f``: to leading order ``u' = f/(1 + k)``, the inertia term
being O(Δt). A refined stage with coefficient ``k'`` at ``Δt/F`` has the limit
``u' = f/(1 + k')``, so keeping the coarse stage's limit is ``1 + k' = 1 + k``: ``k`` is a
*function of t* and is resampled like the weights (``k'(t'_m) = k(t'_m)``); the O(Δt) inertia
``(1 − k) Δt/2`` cannot be kept by any constant ``k'`` (it would need ``(1 − k') Δt/F =
(1 − k) Δt`` and ``1 + k' = 1 + k`` at once) and vanishes in the limit anyway. The
parasitic root ``−k`` (``|k| < 1``) of the two-step recursion decays geometrically per step,
so the start-up transient spans O(Δt) of time. ``StochasticLM`` stores the continuous-time
damping ``g`` of ``dX = Y dt, dY = p f dt + σ f dB + g Y dt``; its per-step factors
``2 + gΔt`` and ``−(1 + gΔt)`` carry the Δt themselves, so keeping the system is keeping
``g(t)`` — whereas copying the Δt = 1 *step* weights (``k = −1 − gΔt``) would make
``g' = F g`` and lose the limit. Both therefore map as functions of t; the Δt enters through
the scheme. The transition's history is handed over by :meth:`sdenet.Scheme.start` with the
rule that has a limit (``X_{−1} = X_0 + Δt (S(x) − X_0)``).

Stochastic depth: the survival probabilities at Δt = 1 (``DropField.p_base``) are
interpolated linearly in t (extrapolated past the last block, clipped to (0, 1]; Huang et
al.'s linear decay is reproduced exactly), and the probability used at the new Δt is the
field's ``p_schedule`` rule (:func:`sdenet.laws.survival_at`): the same ``p`` with
``"fixed"``, ``½ + (p − ½)√Δt`` with ``"sqrt"``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .stage import Stage, Transition, mean_scheme

__all__ = ["refine", "coarsen", "resample_values", "REFINE_MODES", "COARSEN_MODES"]

REFINE_MODES = ("constant", "linear")
COARSEN_MODES = ("inject", "average")
_EPS = 1e-9


def _factor(factor, what) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"{what}: factor must be a positive integer, got {factor!r}")
    return factor


def _weights(s: float, n_old: int, mode: str) -> list[tuple[int, float]]:
    """Old indices and weights whose combination is the value at position ``s`` (old-index units)."""
    j = int(math.floor(s + _EPS))
    j = min(max(j, 0), n_old - 1)
    if mode == "constant" or j == n_old - 1:
        return [(j, 1.0)]
    frac = s - j
    if frac <= _EPS:
        return [(j, 1.0)]
    return [(j, 1.0 - frac), (j + 1, frac)]


def _restrict(i: int, factor: int, n_old: int, mode: str) -> list[tuple[int, float]]:
    j = i * factor
    if mode == "inject" or j + factor > n_old:
        return [(min(j, n_old - 1), 1.0)]
    return [(j + q, 1.0 / factor) for q in range(factor)]


def resample_values(values, n_new: int, ratio: float, lo: float = 1e-6, hi: float = 1.0) -> list[float]:
    """Linear interpolation in t of per-block numbers (new block ``i`` at old position ``i/ratio``),
    extrapolated past the ends and clipped to ``[lo, hi]``: reproduces a linear law exactly."""
    v = [float(x) for x in values]
    n = len(v)
    out = []
    for i in range(n_new):
        s = i / ratio
        if n == 1:
            y = v[0]
        else:
            j = min(max(int(math.floor(s + _EPS)), 0), n - 2)
            frac = s - j
            y = v[j] if abs(frac) <= _EPS else v[j] + (v[j + 1] - v[j]) * frac
        out.append(min(max(y, lo), hi))
    return out


def _combine_modules(blocks, pairs):
    """A copy of ``blocks[pairs[0][0]]`` whose floating state is ``Σ w_j · state(blocks[j])``."""
    j0, w0 = pairs[0]
    new = copy.deepcopy(blocks[j0])
    if len(pairs) == 1 and w0 == 1.0:
        return new
    states = {j: blocks[j].state_dict() for j, _ in pairs}
    out = {}
    for key, value in states[j0].items():
        if torch.is_tensor(value) and value.is_floating_point():
            acc = None
            for j, w in pairs:
                term = states[j][key] * w
                acc = term if acc is None else acc + term
            out[key] = acc
        else:
            out[key] = value
    new.load_state_dict(out)
    return new


def _combine_tensor(t: torch.Tensor, plan) -> torch.Tensor:
    rows = []
    for pairs in plan:
        acc = None
        for j, w in pairs:
            term = t[j] if w == 1.0 and len(pairs) == 1 else t[j] * w
            acc = term if acc is None else acc + term
        assert acc is not None  # _weights and _restrict never give an empty row
        rows.append(acc)
    return torch.stack(rows)


def _time_lists(field, n_blocks):
    """The field's lists of blocks in time: its ``nn.ModuleList`` children of length ``n_blocks``."""
    return [
        name
        for name, child in field.named_children()
        if isinstance(child, nn.ModuleList) and len(child) == n_blocks
    ]


def _resample_stage(
    stage: Stage, new_steps: int, block_plan, step_plan, ratio: float, p_schedule: str | None = None
) -> Stage:
    field = stage.field
    n_old = len(field)
    extra = n_old - stage.steps  # blocks evaluated past the last step (Heun's look-ahead)
    n_new = new_steps + extra
    names = _time_lists(field, n_old)
    # copy the stage but not its blocks (they are rebuilt below from the originals)
    new = copy.deepcopy(stage, {id(getattr(field, name)): nn.ModuleList() for name in names})
    nf = new.field
    if not names:
        raise ValueError(
            f"refine: stage {stage.name!r} has a {type(field).__name__} with no list of blocks in "
            f"time (an nn.ModuleList of its {n_old} blocks) to prolong"
        )
    plan = [block_plan(i, n_old) for i in range(n_new)]
    for name in names:
        old_list = getattr(field, name)
        setattr(nf, name, nn.ModuleList(_combine_modules(old_list, pairs) for pairs in plan))
    dt_new = stage.dt / ratio
    nf.dt = dt_new
    new.dt = dt_new
    new.steps = new_steps
    if hasattr(nf, "set_survival") and hasattr(nf, "p_base"):
        if p_schedule is not None:
            nf.p_schedule = p_schedule
        nf.set_survival(resample_values(nf.p_base, n_new, ratio))
    if getattr(nf, "records_noise", False):
        device = field._sums.device
        nf._init_stats(n_new)
        nf._sums = nf._sums.to(device)
        nf._powers = nf._powers.to(device)
        nf._generator = field._generator
    splan = [step_plan(m, stage.steps) for m in range(new_steps)]
    schemes = []
    for m, pairs in enumerate(splan):
        # the deep copy's scheme (bound to the copy's coefficients), re-lawed for the new block
        s = new.schemes[pairs[0][0]]
        law = getattr(s, "law", None)
        if law is not None and law.drops and getattr(nf, "p", None) is not None:
            s = copy.copy(s)
            s.law = law.with_survival(nf.p[m])
        schemes.append(s)
    coeffs = getattr(new, "coefficients", None)
    if isinstance(coeffs, torch.Tensor):
        with torch.no_grad():
            new.coefficients = nn.Parameter(
                _combine_tensor(coeffs.detach(), splan), requires_grad=coeffs.requires_grad
            )
    for s in schemes:
        s.check(nf)
    new.schemes = schemes
    new._eval_schemes = [mean_scheme(s) for s in schemes]
    new.train(stage.training)
    return new


def _stages(model):
    return [
        (path, m)
        for path, m in model.named_modules()
        if isinstance(m, Stage) and not isinstance(m, Transition)
    ]


def _replace(root, path, new):
    *head, last = path.split(".")
    parent = root
    for part in head:
        parent = getattr(parent, part)
    setattr(parent, last, new)


def _check_schedule(p_schedule, what):
    from ..laws import P_SCHEDULES

    if p_schedule is not None and p_schedule not in P_SCHEDULES:
        raise ValueError(f"{what}: p_schedule must be one of {', '.join(P_SCHEDULES)}, got {p_schedule!r}")
    return p_schedule


def _transform(model, what, ratio, block_plan, step_plan, check_steps, p_schedule=None):
    if not isinstance(model, nn.Module):
        raise ValueError(f"{what}: expected an nn.Module, got {type(model).__name__}")
    stages = _stages(model)
    if not stages:
        raise ValueError(
            f"{what}: {type(model).__name__} has no sdenet Stage to {what} (build it with "
            f"sdenet.models.create, or convert a torchvision ResNet with sdenet.nn.to_lm)"
        )
    for path, stage in stages:
        check_steps(stage, path)
    if isinstance(model, Stage) and not isinstance(model, Transition):
        stage = model
        return _resample_stage(
            stage, int(round(stage.steps * ratio)), block_plan, step_plan, ratio, p_schedule
        )
    out = copy.deepcopy(model)
    for path, _ in _stages(out):
        stage = out.get_submodule(path)
        _replace(
            out,
            path,
            _resample_stage(stage, int(round(stage.steps * ratio)), block_plan, step_plan, ratio, p_schedule),
        )
    cfg = getattr(out, "config", None)
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        cfg["refine"] = float(cfg.get("refine", 1) or 1) * ratio
        if float(cfg["refine"]).is_integer():
            cfg["refine"] = int(cfg["refine"])
        if p_schedule is not None and "p_schedule" in cfg:
            cfg["p_schedule"] = p_schedule
        out.config = cfg
    return out


def refine(
    model: nn.Module, factor: int = 2, mode: str = "constant", p_schedule: str | None = None
) -> nn.Module:
    """A new network whose every stage integrates the same T with ``factor``× the steps at Δt/``factor``.

    ``mode``: ``"constant"`` (block n's weights over its sub-steps) or ``"linear"`` (weights
    interpolated between neighbouring blocks in t). See the module docstring for what is
    prolonged and the map of the LM coefficients. ``model`` is left untouched. Works on any
    module holding sdenet stages (networks of :mod:`sdenet.models`, a torchvision ResNet after
    :func:`sdenet.nn.to_lm`, a single :class:`~sdenet.nn.Stage`); a network's ``config``
    records the accumulated ``refine`` factor so ``create(name, **config)`` rebuilds the
    architecture.

    ``p_schedule`` (``"fixed"`` or ``"sqrt"``; default: each stochastic-depth field's own) is the
    rule giving the survival probabilities at the new Δt from those at Δt = 1
    (:func:`sdenet.laws.survival_at`): ``"sqrt"`` keeps condition (5) as Δt shrinks.
    """
    factor = _factor(factor, "refine")
    _check_schedule(p_schedule, "refine")
    if mode not in REFINE_MODES:
        raise ValueError(f"refine: mode must be one of {', '.join(REFINE_MODES)}, got {mode!r}")

    def block_plan(i, n_old):
        return _weights(i / factor, n_old, mode)

    def step_plan(m, steps_old):
        return _weights(m / factor, steps_old, mode)

    return _transform(model, "refine", float(factor), block_plan, step_plan, lambda s, p: None, p_schedule)


def coarsen(
    model: nn.Module, factor: int = 2, mode: str = "inject", p_schedule: str | None = None
) -> nn.Module:
    """The restriction: every stage takes ``steps/factor`` steps of ``factor·Δt`` over the same T.

    ``mode="inject"`` keeps the blocks (and LM coefficients, survival probabilities) at
    ``t_{nF}``, so ``coarsen(refine(m, F), F)`` has ``m``'s weights exactly; ``"average"``
    averages the ``F`` blocks of each coarse step. Every stage's number of steps must be a
    multiple of ``factor`` (``ValueError`` naming the stage otherwise). ``p_schedule`` as in
    :func:`refine`.
    """
    factor = _factor(factor, "coarsen")
    _check_schedule(p_schedule, "coarsen")
    if mode not in COARSEN_MODES:
        raise ValueError(f"coarsen: mode must be one of {', '.join(COARSEN_MODES)}, got {mode!r}")

    def check(stage, path):
        if stage.steps % factor:
            raise ValueError(
                f"coarsen: stage {stage.name or path!r} takes {stage.steps} steps, not a multiple "
                f"of factor={factor}"
            )

    def block_plan(i, n_old):
        return _restrict(i, factor, n_old, mode)

    def step_plan(m, steps_old):
        return _restrict(m, factor, steps_old, mode)

    return _transform(model, "coarsen", 1.0 / factor, block_plan, step_plan, check, p_schedule)
