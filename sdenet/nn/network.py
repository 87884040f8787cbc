"""Networks assembled from stages, and the model-wide reports.

A :class:`Network` is ``head ∘ layer_L ∘ … ∘ layer_1 ∘ stem``; each :class:`Layer` is an
optional :class:`~sdenet.nn.Transition` (width/resolution change, outside the ODE)
followed by an optional :class:`~sdenet.nn.Stage` (the ODE/SDE part), which receives the
transition's shortcut ``S(x)`` as the multistep history ``u_{−1}``.

The functions :func:`lm_coefficients`, :func:`weak_report`, :func:`reset_weak_stats` and
:func:`mc_predict` work on any module containing stages (a :class:`Network`, or a
torchvision ResNet after :func:`sdenet.nn.to_lm`); :class:`Network` exposes them as methods.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .stage import Stage, noise_on, set_generator

__all__ = ["Network", "Layer", "lm_coefficients", "weak_report", "reset_weak_stats", "mc_predict"]


class Layer(nn.Module):
    """``x ↦ stage(transition(x))``, the stage getting ``S(x)`` as its multistep history."""

    # transition: a Transition or any module returning (S(x), history), such as HalfPadPool
    def __init__(self, transition: nn.Module | None, stage: Stage | None, name: str):
        super().__init__()
        if transition is None and stage is None:
            raise ValueError(f"Layer {name!r}: needs a transition, a stage, or both")
        self.transition = transition
        self.stage = stage
        self.name = name

    def forward(self, x):
        prev = None
        if self.transition is not None:
            x, prev = self.transition(x)
        if self.stage is not None:
            x = self.stage(x, prev)
        return x


class Network(nn.Module):
    """``logits = head(layers(stem(x)))``, each layer ``x ↦ stage(transition(x))`` (a stage being
    ``N`` steps of a scheme on the field of its blocks), with the sdenet reports as methods."""

    #: set by :func:`sdenet.models.create`: the registered name and its resolved configuration
    name: str
    config: dict

    def __init__(self, stem: nn.Module, layers, head: nn.Module):
        super().__init__()
        self.stem = stem
        self.layers = nn.ModuleList(layers)
        self.head = head

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)

    def lm_coefficients(self) -> dict:
        return lm_coefficients(self)

    def weak_report(self) -> list:
        return weak_report(self)

    def reset_weak_stats(self) -> None:
        reset_weak_stats(self)

    def set_generator(self, generator: torch.Generator | None):
        return set_generator(self, generator)


def _named_stages(model):
    for path, m in model.named_modules():
        if isinstance(m, Stage):
            yield (m.name or path or "stage"), m


def lm_coefficients(model: nn.Module) -> dict:
    """``{stage name: [k_n or g_n per block]}`` for every LM stage (per-channel ones averaged
    over channels); an empty dict when the model has none."""
    out = {}
    for name, stage in _named_stages(model):
        c = getattr(stage, "coefficients", None)
        if c is None:
            continue
        c = c.detach()
        if c.dim() > 1:
            c = c.mean(dim=tuple(range(1, c.dim())))
        out[name] = [float(v) for v in c.float().cpu()]
    return out


def weak_report(model: nn.Module) -> list:
    """One dict per stochastic block: ``stage, block, law, p, dt, C, K, n, m1, m2, m3``, and
    ``p1`` for a stochastic-depth block.

    ``C = law.condition(dt)`` is condition (5) at the block's Δt, ``K = C/Δt²``; ``p`` is the
    survival probability in use at that Δt and ``p1`` the block's survival at Δt = 1 (the
    original network's, before its ``p_schedule``), against whose law condition (5)'s ``K`` is
    judged (:func:`sdenet.train.monitor.reference_K`); ``n`` and
    ``m1, m2, m3`` are the count and the empirical means of ``ΔŴ, ΔŴ², ΔŴ³`` over the
    increments the block drew in training-mode forwards since the last reset.
    """
    rows = []
    for name, stage in _named_stages(model):
        field = stage.field
        if not getattr(field, "records_noise", False):
            continue
        for n, scheme in enumerate(stage.schemes):
            law = getattr(scheme, "law", None)
            if law is None:
                continue
            dt = stage.dt
            C = law.condition(dt)
            row = {
                "stage": name,
                "block": n,
                "law": law.name,
                "p": law.survival,
                "dt": dt,
                "C": C,
                "K": C / (dt * dt),
            }
            p_base = getattr(field, "p_base", None)
            if row["p"] is not None and p_base is not None and n < len(p_base):
                row["p1"] = float(p_base[n])
            row.update(field.weak_stats(n))
            rows.append(row)
    return rows


def reset_weak_stats(model: nn.Module) -> None:
    """Zero the increment statistics of every stochastic field in ``model``."""
    for m in model.modules():
        if getattr(m, "records_noise", False):  # declares reset_weak_stats (duck-typed)
            cast(Any, m).reset_weak_stats()


def mc_predict(
    model: nn.Module, x: torch.Tensor, samples: int = 16, generator: torch.Generator | None = None
):
    """Monte Carlo prediction: the mean of ``softmax(model(x))`` over ``samples`` forwards with
    batch norm in eval mode but the network noise on (see :func:`sdenet.nn.noise_on`).

    ``generator`` (on ``x``'s device) seeds the draws; the model's own generator is restored
    afterwards, and so is its train/eval mode.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"mc_predict: samples must be a positive integer, got {samples!r}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"mc_predict: x must be a tensor, got {type(x).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    gens = [
        (m, m._generator)
        for m in model.modules()
        if isinstance(m, Stage) or getattr(m, "records_noise", False)
    ]
    try:
        model.eval()
        if generator is not None:
            set_generator(model, generator)
        with torch.no_grad(), noise_on(model):
            acc = None
            for _ in range(samples):
                p = F.softmax(model(x).float(), dim=1)
                acc = p if acc is None else acc.add_(p)
        assert acc is not None  # samples >= 1 (checked above)
        return acc.div_(samples)
    finally:
        for m, mode in modes:
            m.training = mode
        for m, g in gens:
            m._generator = g
