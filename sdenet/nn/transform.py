"""``to_lm``: turn the residual stages of a ResNet-like model into LM stages.

Forward Euler ``u_{n+1} = u_n + Δt f_n(u_n)`` becomes the two-step
``u_{n+1} = (1 − k_n) u_n + k_n u_{n−1} + Δt f_n(u_n)`` with one trainable ``k_n`` per block,
initialised ``U[k_init]``; ``k_init=(0, 0)`` gives back the original network exactly.
Stochastic-depth stages (``WeakEuler`` with ``DropBernoulli``) become ``StochasticLM``
stages with ``g_n = −(1 + k_n)``. The blocks (and their weights) are reused, not copied
into a parallel module.

Works on models built from :mod:`sdenet.nn` and on torchvision-style ResNets
(``layer1..layer4`` of ``BasicBlock``/``Bottleneck``), whose layers are rebuilt as a
:class:`~sdenet.nn.Transition` (the block with ``downsample``) plus an LM stage of the
remaining blocks' residual branches, with ``relu`` after every step as in the original.
"""

from __future__ import annotations

import copy
from typing import cast

from torch import nn

from ..schemes import Euler
from .network import Layer
from .stage import Stage, Transition, lm_stage

__all__ = ["to_lm"]


def _channels(module: nn.Module):
    last = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            last = m.out_channels
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            last = m.num_features
    return last


def _convertible(stage: Stage) -> str | None:
    if isinstance(stage, Transition) or getattr(stage, "coefficients", None) is not None:
        return None
    # the schemes say whether a step is exactly (weak) forward Euler, and the laws whether they drop blocks
    if all(s.euler_step and s.law is None for s in stage.schemes):
        return "euler"
    if all(s.euler_step and s.law is not None and s.law.drops for s in stage.schemes):
        return "drop"
    return None


def _lm_from_stage(stage: Stage, k_init, per_channel, generator):
    field = stage.field
    new = lm_stage(
        field,
        k_init=k_init,
        per_channel=per_channel,
        channels=_channels(field) if per_channel else None,
        post=stage.post,
        name=stage.name,
        stochastic_laws=[s.law for s in stage.schemes] if _convertible(stage) == "drop" else None,
        generator=generator,
    )
    new.train(stage.training)
    return new


class _TorchvisionBranch(nn.Module):
    """The residual branch of a torchvision ``BasicBlock``/``Bottleneck`` (its own weights, shared)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.conv3 = getattr(block, "conv3", None)
        self.bn3 = getattr(block, "bn3", None)

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        if self.conv3 is not None:
            out = self.bn3(self.conv3(out.relu()))
        return out


def _is_torchvision_block(m) -> bool:
    return all(hasattr(m, a) for a in ("conv1", "bn1", "conv2", "bn2", "downsample"))


def _torchvision_layer(seq: nn.Sequential, name, k_init, per_channel, generator) -> Layer:
    blocks = list(seq)
    transition = None
    if blocks[0].downsample is not None or getattr(blocks[0].conv1, "stride", (1, 1)) != (1, 1):
        first = blocks.pop(0)
        downsample = cast("nn.Module | None", first.downsample)  # torchvision's BasicBlock/Bottleneck
        transition = Transition(
            downsample or nn.Identity(),
            _TorchvisionBranch(first),
            Euler(),
            post="relu",
            name=f"{name}.transition",
        )
    stage = None
    if blocks:
        branches = [_TorchvisionBranch(b) for b in blocks]
        channels = _channels(branches[0]) if per_channel else None
        stage = lm_stage(
            branches,
            k_init=k_init,
            per_channel=per_channel,
            channels=channels,
            post="relu",
            name=name,
            generator=generator,
        )
    layer = Layer(transition, stage, name)
    layer.train(seq.training)
    return layer


def to_lm(
    model: nn.Module,
    *,
    k_init=(-0.1, 0.0),
    per_channel: bool = False,
    layers=None,
    inplace: bool = False,
    generator=None,
) -> nn.Module:
    """Return ``model`` with every Euler (and stochastic-depth) stage made an LM stage.

    ``layers`` restricts the conversion to the named stages (an sdenet stage's ``name`` or
    module path, e.g. ``"stage2"``; a torchvision layer's attribute, e.g. ``"layer3"``);
    default: all. As in a ResNet's own layout, the first block of a torchvision layer (the
    one with ``downsample``) stays a transition outside the LM recursion.
    ``inplace=False`` (default) converts a deep copy and leaves ``model`` untouched.
    Raises ``ValueError`` when the model has no stage to convert, or a named layer is missing.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"to_lm: expected an nn.Module, got {type(model).__name__}")
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(v, str) for v in layers):
            raise ValueError(f"to_lm: layers must be a list of names, got {layers!r}")
        layers = set(layers)
    if not inplace:
        model = copy.deepcopy(model)
    converted = 0
    seen = set()

    def wanted(*keys):
        if layers is None:
            return True
        hit = layers.intersection(k for k in keys if k)
        seen.update(hit)
        return bool(hit)

    # sdenet stages
    targets = [
        (path, m)
        for path, m in model.named_modules()
        if isinstance(m, Stage) and _convertible(m) and wanted(m.name, path)
    ]
    for path, stage in targets:
        new = _lm_from_stage(stage, k_init, per_channel, generator)
        new.to(next((p.device for p in stage.parameters()), None) or "cpu")
        if path == "":
            model = new
        else:
            _replace(model, path, new)
        converted += 1
    # torchvision-style ResNets
    for name in ("layer1", "layer2", "layer3", "layer4"):
        seq = getattr(model, name, None)
        if (
            isinstance(seq, nn.Sequential)
            and len(seq)
            and all(_is_torchvision_block(b) for b in seq)
            and wanted(name)
        ):
            layer = _torchvision_layer(seq, name, k_init, per_channel, generator)
            device = next((p.device for p in seq.parameters()), None)
            if device is not None:
                layer.to(device)
            setattr(model, name, layer)
            converted += 1
    if layers is not None and layers - seen:
        raise ValueError(f"to_lm: no convertible stage named {', '.join(sorted(layers - seen))}")
    if converted == 0:
        raise ValueError(
            f"to_lm: found no residual stage to convert in {type(model).__name__} (expected sdenet Euler or "
            f"stochastic-depth stages, or torchvision-style layer1..layer4 of residual blocks)"
        )
    return model


def _replace(root: nn.Module, path: str, new: nn.Module):
    parent = root
    *head, last = path.split(".")
    for part in head:
        parent = getattr(parent, part)
    setattr(parent, last, new)
