"""Named networks: every architecture of Lu et al. (ICML 2018) as stages of blocks.

``create(name, num_classes=None, **overrides)`` builds a model by name; ``names()`` lists
them; ``info(name)`` gives ``{name, params, dataset, scheme, law}`` (parameter counts
computed once on the ``meta`` device, so no memory is touched).

Each model is a :class:`~sdenet.nn.Network` of layers ``transition + stage``; the stage's
scheme is what makes the architecture:

=====================  ==========================  ===================================
family                 scheme                      law
=====================  ==========================  ===================================
resnet*, preact_*,     ``Euler``                   —
resnext*, resnet50/101
lm_*                   ``LinearMultistep`` (k_n)   —
sd_*                   ``WeakEuler`` per block     ``DropBernoulli(p_n)``, linear decay
lm_sd_*                ``StochasticLM`` (g_n)      ``DropBernoulli(p_n)``
shake_shake*           ``WeakEuler``               ``Uniform``
polynet                ``NeumannEuler(2)``         —
fractalnet             ``Heun``                    —
revnet                 ``CoupledEuler``            —
hamiltonian*           ``Hamiltonian``             — (sdenet/nn/reversible.py)
midpoint*, leapfrog*   ``Midpoint``, ``Leapfrog``  — (sdenet/nn/reversible.py)
=====================  ==========================  ===================================

Overrides (each model accepts those that apply to it; others are refused by name):
``dt`` (step size, default 1: the original architecture — it keeps the blocks, so it changes
T = NΔt), ``refine`` (``F``: every ODE stage takes F× the steps at Δt/F over the same T,
the architecture :func:`sdenet.nn.refine` produces, freshly initialised; a fraction such as
¼ builds the coarser network multilevel training starts from), ``widths``, ``blocks`` (per
stage; counted with the transition), ``stem_width``; LM: ``k_init`` (range, default
(−0.1, 0)), ``per_channel``; stochastic depth: ``p_L`` (final survival probability,
default 0.5), ``mode`` (``"sample"``: one coin per image; ``"batch"``: one per batch, dropped
blocks not computed), ``p_schedule`` (``"fixed"``: the survival probabilities are those of
Δt = 1 at every Δt; ``"sqrt"``: ``½ + (p − ½)√Δt``, which keeps condition (5) as Δt → 0,
see :func:`sdenet.laws.survival_at`); shake-shake: ``forward`` (shake|even), ``backward``
(shake|even|keep), ``level`` (image|batch); stochastic depth and shake-shake: ``law``
(another increment law by name — ``uniform``, ``rademacher``, ``gaussian``, ``threepoint`` —
driving the same field: a different network, same drift and diffusion); ResNeXt:
``cardinality``, ``base_width``; PolyNet: ``terms``; every model but shake-shake:
``shortcut`` at the transitions — ``"pad"`` (option A: subsample and zero-pad, no
parameters), ``"projection"`` (the official LM-ResNet code's bn-relu-1×1 conv,
:class:`~sdenet.nn.ProjectionShortcut`), ``"conv"`` (a 1×1 conv), ``"conv_bn"`` (1×1 conv
then batch norm, option B); the default (None) is the architecture's own: ``pad`` for the
CIFAR basic-block networks, ``conv`` for the pre-activation bottleneck (ResNet-164),
``conv_bn`` for ResNeXt and the ImageNet ResNets.

Transitions (the first block of a stage whose width or stride changes) sit outside the
ODE and run at Δt = 1 whatever ``dt`` is; the stochastic models draw noise in them too
(Huang et al. drop transition branches as well).

LM models carry one coefficient per block of each ODE stage (transitions excluded), the
paper's ``k_n ~ U[k_init]``; after a transition the LM stage takes its history from the
shortcut ``S(x)`` (``u_{−1} = S(x)`` at Δt = 1, ``u_0 + Δt (S(x) − u_0)`` in general:
:meth:`sdenet.Scheme.start`), so every ``k_n`` acts. A stage with no transition before it (CIFAR stage 1)
starts from rest, so its ``k_0`` multiplies ``u_0 − u_{−1} = 0`` and stays untrained. LM
stochastic depth stores ``g_n = −(1 + k_n)`` (the paper's ``(2 + g_n, −(1 + g_n))`` form),
and ``lm_coefficients()`` reports ``g_n`` for it.
"""

from __future__ import annotations

import difflib
import math

import torch
from torch import nn

from ..laws import LAW_NAMES, P_SCHEDULES, DropBernoulli, Uniform, get_law
from ..schemes import CoupledEuler, Euler, Heun, NeumannEuler, WeakEuler
from .blocks import (
    ConvShortcut,
    PadShortcut,
    PostActBasic,
    PostActBottleneck,
    PreActBasic,
    PreActBottleneck,
    ProjectionShortcut,
    ShakeBranch,
    ShakeShortcut,
    conv3x3,
)
from .fields import BlockField, CoupledBlockField, DropField, ShakeField, _check_dt
from .network import Layer, Network
from .refine import resample_values
from .stage import Stage, Transition, lm_stage
from .memory import MEMORY_MODES, set_memory
from .operators import DiffConv2d, PDEBasic

__all__ = ["create", "names", "info", "REGISTRY"]

# ---------------------------------------------------------------------- heads and stems


class _Head(nn.Module):
    """``fc(mean_{h,w}(act(x)))`` with ``act`` = bn-relu (pre-activation), relu, or nothing."""

    def __init__(self, channels: int, num_classes: int, act: str):
        super().__init__()
        self.act = act
        self.bn = nn.BatchNorm2d(channels) if act == "bn_relu" else None
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        if self.bn is not None:
            x = torch.relu(self.bn(x))
        elif self.act == "relu":
            x = torch.relu(x)
        return self.fc(x.mean(dim=(2, 3)))


def _stem(kind: str, width: int) -> nn.Module:
    if kind == "conv":
        return conv3x3(3, width)
    if kind == "conv_bn":
        return nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width))
    if kind == "conv_bn_relu":
        return nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    if kind == "pde":
        return DiffConv2d(3, width)
    if kind == "imagenet":
        return nn.Sequential(
            nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1),
        )
    raise AssertionError(kind)


# ---------------------------------------------------------------------- architectures
#
# An architecture gives: stem kind, head activation, post, the out-width of stage i from
# the config, and factories branch(c_in, c_out, stride, i) and shortcut(c_in, c_out, stride).

_ARCH = {
    # name: (stem, head act, post)
    "preact": ("conv", "bn_relu", None),
    "postact": ("conv_bn_relu", "none", "relu"),
    "preact_bottleneck": ("conv", "bn_relu", None),
    "resnext": ("conv_bn_relu", "none", "relu"),
    "imagenet": ("imagenet", "none", "relu"),
    "shake": ("conv_bn", "relu", None),
    "revnet": ("conv", "bn_relu", None),
    "pde": ("pde", "bn_relu", None),  # sdenet/nn/operators.py: differential-operator kernels
}


def _out_width(cfg, i):
    w = cfg["widths"][i]
    return 4 * w if cfg["arch"] in ("preact_bottleneck", "imagenet") else w


def _branch(cfg, c_in, c_out, stride, i):
    arch = cfg["arch"]
    if arch in ("preact", "revnet"):
        return PreActBasic(c_in, c_out, stride)
    if arch == "postact":
        return PostActBasic(c_in, c_out, stride)
    if arch == "pde":
        return PDEBasic(c_in, c_out, stride)
    if arch == "preact_bottleneck":
        return PreActBottleneck(c_in, cfg["widths"][i], c_out, stride)
    if arch == "imagenet":
        return PostActBottleneck(c_in, cfg["widths"][i], c_out, stride)
    if arch == "resnext":
        inner = cfg["cardinality"] * cfg["base_width"] * 2**i
        return PostActBottleneck(c_in, inner, c_out, stride, groups=cfg["cardinality"])
    if arch == "shake":
        return ShakeBranch(c_in, c_out, stride)
    raise AssertionError(arch)


SHORTCUTS = ("pad", "projection", "conv", "conv_bn")


def _shortcut(cfg, c_in, c_out, stride):
    arch = cfg["arch"]
    kind = cfg.get("shortcut")
    if kind == "pad":
        return PadShortcut(c_in, c_out, stride)
    if kind == "projection":
        return ProjectionShortcut(c_in, c_out, stride)
    if kind in ("conv", "conv_bn"):
        return ConvShortcut(c_in, c_out, stride, bn=kind == "conv_bn")
    if arch in ("preact", "postact", "revnet", "pde"):
        return PadShortcut(c_in, c_out, stride)
    if arch == "preact_bottleneck":
        return ConvShortcut(c_in, c_out, stride, bn=False)
    if arch in ("resnext", "imagenet"):
        return ConvShortcut(c_in, c_out, stride, bn=True)
    if arch == "shake":
        return ShakeShortcut(c_in, c_out, stride)
    raise AssertionError(arch)


def _survival(cfg):
    """Huang et al.'s linear decay ``p_l = 1 − (l/L)(1 − p_L)``, l = 1..L over all residual blocks."""
    total = sum(cfg["blocks"])
    p_L = cfg["p_L"]
    return [1.0 - (l / total) * (1.0 - p_L) for l in range(1, total + 1)]


def _law(cfg, p=None):
    """The increment law of a stochastic block: the model's own (DropBernoulli(p_n) for stochastic
    depth, Uniform for shake-shake) unless the ``law`` override names another; ``drop`` uses the
    block's survival probability when the block has one."""
    name = cfg.get("law")
    if name is None:
        return DropBernoulli(p) if p is not None else Uniform()
    return get_law(name).with_survival(p)  # a drop law takes the block's survival p


def _refined_count(cfg, name, count, lookahead):
    """Blocks of an ODE stage of ``count`` blocks after refinement by ``cfg["refine"]`` at fixed T:
    its ``count − lookahead`` steps times the factor (an integer), plus the look-ahead blocks."""
    factor = cfg.get("refine", 1)
    if factor == 1:
        return count
    steps = (count - lookahead) * factor
    if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
        raise ValueError(f"refine={factor:g}: {name} takes {count - lookahead} steps, and "
                         f"{count - lookahead} x {factor:g} is not a positive whole number of steps")
    return int(round(steps)) + lookahead


def _build(cfg) -> Network:
    arch, method = cfg["arch"], cfg["method"]
    if method in _REVERSIBLE:  # Chang et al.'s families (sdenet/nn/reversible.py)
        stem_kind, head_act, _ = _ARCH[arch]
        net = _REVERSIBLE[method](cfg, _stem(stem_kind, cfg["stem_width"]),
                                  _Head(cfg["widths"][-1], cfg["num_classes"], head_act))
        net.config = {k: v for k, v in cfg.items() if k != "level_noise"}
        return net
    stem_kind, head_act, post = _ARCH[arch]
    dt = cfg["dt"] / cfg.get("refine", 1)
    stem_width = cfg["stem_width"]
    n_stages = len(cfg["widths"])
    strides = cfg["strides"]
    ps = _survival(cfg) if method in ("sd", "lm_sd") else None
    noise = cfg.get("mode", "sample")
    l = 0  # global block counter (stochastic depth)
    layers = []
    c_in = stem_width
    for i in range(n_stages):
        c_out = _out_width(cfg, i)
        stride = strides[i]
        name = f"stage{i + 1}"
        count = cfg["blocks"][i]
        transition = None
        if c_in != c_out or stride != 1:
            short = _shortcut(cfg, c_in, c_out, stride)
            tname = f"{name}.transition"
            if method in ("sd", "lm_sd"):
                p = ps[l]
                field = DropField([_branch(cfg, c_in, c_out, stride, i)], [p], 1.0, noise=noise)
                transition = Transition(short, field, WeakEuler(_law(cfg, p)), post=post, name=tname)
            elif method == "shake":
                field = ShakeField([_branch(cfg, c_in, c_out, stride, i)], [_branch(cfg, c_in, c_out, stride, i)],
                                   1.0, noise=cfg["level_noise"], forward=cfg["forward"], backward=cfg["backward"])
                transition = Transition(short, field, WeakEuler(_law(cfg)), post=post, name=tname)
            else:
                transition = Transition(short, _branch(cfg, c_in, c_out, stride, i), Euler(), post=post, name=tname)
            l += 1
            count -= 1
        stage = None
        coarse_count = count
        if count > 0:
            count = _refined_count(cfg, name, count, 1 if method == "heun" else 0)
            if method == "coupled":
                half = c_out // 2
                f1 = [_branch(cfg, half, half, 1, i) for _ in range(count)]
                f2 = [_branch(cfg, half, half, 1, i) for _ in range(count)]
                stage = Stage(CoupledBlockField(f1, f2, dt), CoupledEuler(), name=name, post=post)
            elif method == "shake":
                b1 = [_branch(cfg, c_out, c_out, 1, i) for _ in range(count)]
                b2 = [_branch(cfg, c_out, c_out, 1, i) for _ in range(count)]
                field = ShakeField(b1, b2, dt, noise=cfg["level_noise"], forward=cfg["forward"],
                                   backward=cfg["backward"])
                stage = Stage(field, WeakEuler(_law(cfg)), name=name, post=post)
            else:
                blocks = [_branch(cfg, c_out, c_out, 1, i) for _ in range(count)]
                if method == "euler":
                    stage = Stage(blocks, Euler(), dt=dt, name=name, post=post)
                elif method == "heun":
                    if count < 2:
                        raise ValueError(f"fractalnet: a Heun stage needs at least 2 blocks, {name} has {count}")
                    stage = Stage(blocks, Heun(), dt=dt, name=name, post=post)
                elif method == "neumann":
                    stage = Stage(blocks, NeumannEuler(cfg["terms"]), dt=dt, name=name, post=post)
                elif method == "lm":
                    stage = lm_stage(blocks, dt=dt, k_init=cfg["k_init"], per_channel=cfg["per_channel"],
                                     channels=c_out, post=post, name=name)
                elif method in ("sd", "lm_sd"):
                    p_blocks = ps[l:l + coarse_count]
                    if count != coarse_count:  # survival interpolated in t (sdenet.nn.refine)
                        p_blocks = resample_values(p_blocks, count, count / coarse_count)
                    field = DropField(blocks, p_blocks, dt, noise=noise, p_schedule=cfg["p_schedule"])
                    laws = [_law(cfg, p) for p in field.p]
                    if method == "sd":
                        stage = Stage(field, [WeakEuler(law) for law in laws], name=name, post=post)
                    else:
                        stage = lm_stage(field, k_init=cfg["k_init"], per_channel=cfg["per_channel"],
                                         channels=c_out, post=post, name=name, stochastic_laws=laws)
                else:
                    raise AssertionError(method)
            l += coarse_count
        layers.append(Layer(transition, stage, name))
        c_in = c_out
    net = Network(_stem(stem_kind, stem_width), layers, _Head(c_in, cfg["num_classes"], head_act))
    _init(net)
    net.config = {k: v for k, v in cfg.items() if k != "level_noise"}
    return net


def _init(net):
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------- registry

#: name -> {"cfg": defaults, "dataset", "scheme", "law", "options": allowed overrides}
REGISTRY: dict[str, dict] = {}

_COMMON = ("dt", "widths", "blocks", "stem_width", "refine")
_METHOD_OPTIONS = {
    "euler": (),
    "heun": (),
    "neumann": ("terms",),
    "coupled": (),
    "lm": ("k_init", "per_channel"),
    "sd": ("p_L", "mode", "law", "p_schedule"),
    "lm_sd": ("p_L", "mode", "k_init", "per_channel", "law", "p_schedule"),
    "shake": ("forward", "backward", "level", "law"),
}
_METHOD_INFO = {
    "euler": ("euler", None),
    "heun": ("heun", None),
    "neumann": ("neumann", None),
    "coupled": ("coupled", None),
    "lm": ("lm", None),
    "sd": ("weak_euler", "drop"),
    "lm_sd": ("stochastic_lm", "drop"),
    "shake": ("weak_euler", "uniform"),
}
_DEFAULTS = {
    "dt": 1.0, "k_init": (-0.1, 0.0), "per_channel": False, "p_L": 0.5, "mode": "sample",
    "forward": "shake", "backward": "shake", "level": "image", "terms": 2, "law": None, "shortcut": None,
    "p_schedule": "fixed", "refine": 1,
}


def _register(name, *, arch, method, widths, blocks, stem_width, dataset="cifar", strides=None, **extra):
    cfg = dict(_DEFAULTS)
    cfg.update(arch=arch, method=method, widths=tuple(widths), blocks=tuple(blocks), stem_width=stem_width,
               strides=tuple(strides or ((1,) + (2,) * (len(widths) - 1))))
    cfg.update(extra)
    options = _COMMON + _METHOD_OPTIONS[method] + (("cardinality", "base_width") if arch == "resnext" else ())
    options += () if arch == "shake" else ("shortcut",)
    scheme, law = _METHOD_INFO[method]
    REGISTRY[name] = {"cfg": cfg, "dataset": dataset, "scheme": scheme, "law": law, "options": options,
                      "params": None}


def _cifar_depths():
    return {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


for _d, _n in _cifar_depths().items():
    _register(f"resnet{_d}", arch="postact", method="euler", widths=(16, 32, 64), blocks=(_n,) * 3, stem_width=16)
for _d, _n in _cifar_depths().items():
    _register(f"preact_resnet{_d}", arch="preact", method="euler", widths=(16, 32, 64), blocks=(_n,) * 3,
              stem_width=16)
_register("preact_resnet164", arch="preact_bottleneck", method="euler", widths=(16, 32, 64), blocks=(18,) * 3,
          stem_width=16)
for _d, _n in _cifar_depths().items():
    _register(f"lm_resnet{_d}", arch="preact", method="lm", widths=(16, 32, 64), blocks=(_n,) * 3, stem_width=16)
_register("lm_resnet164", arch="preact_bottleneck", method="lm", widths=(16, 32, 64), blocks=(18,) * 3,
          stem_width=16)
for _c in (8, 16):
    for _m in ("euler", "lm"):
        _register(f"{'lm_' if _m == 'lm' else ''}resnext29_{_c}x64d", arch="resnext", method=_m,
                  widths=(256, 512, 1024), blocks=(3, 3, 3), stem_width=64, cardinality=_c, base_width=64)
for _d in (56, 110):
    _n = _cifar_depths()[_d]
    _register(f"sd_resnet{_d}", arch="preact", method="sd", widths=(16, 32, 64), blocks=(_n,) * 3, stem_width=16)
    _register(f"lm_sd_resnet{_d}", arch="preact", method="lm_sd", widths=(16, 32, 64), blocks=(_n,) * 3,
              stem_width=16)
for _w in (32, 96):
    _register(f"shake_shake26_2x{_w}d", arch="shake", method="shake", widths=(_w, 2 * _w, 4 * _w), blocks=(4, 4, 4),
              stem_width=16)
_register("polynet", arch="preact", method="neumann", widths=(16, 32, 64), blocks=(3, 3, 3), stem_width=16)
_register("fractalnet", arch="preact", method="heun", widths=(16, 32, 64), blocks=(4, 4, 4), stem_width=16)
_register("revnet", arch="revnet", method="coupled", widths=(32, 64, 128), blocks=(3, 3, 3), stem_width=32)
# tiny models for tests and quick CPU runs: widths 8/16/32, two blocks per stage
for _name, _m, _arch in (("tiny_resnet", "euler", "preact"), ("tiny_lm_resnet", "lm", "preact"),
                         ("tiny_sd_resnet", "sd", "preact"), ("tiny_lm_sd_resnet", "lm_sd", "preact"),
                         ("tiny_shake_shake", "shake", "shake")):
    _register(_name, arch=_arch, method=_m, widths=(8, 16, 32), blocks=(2, 2, 2), stem_width=8)
# Ruthotto & Haber's PDE-based CNNs: every 3x3 kernel a combination of differential operators
# scaled by the grid spacing, so the network is resolution independent (sdenet/nn/operators.py)
_register("tiny_pde_resnet", arch="pde", method="euler", widths=(8, 16, 32), blocks=(2, 2, 2), stem_width=8)
_register("pde_resnet20", arch="pde", method="euler", widths=(16, 32, 64), blocks=(3, 3, 3), stem_width=16)
# Chang et al. (AAAI 2018): Hamiltonian, midpoint and leapfrog networks (sdenet/nn/reversible.py)
from .reversible import FAMILIES as _REV_FAMILIES, build_reversible as _build_reversible  # noqa: E402

_ARCH["reversible"] = ("conv_bn_relu", "bn_relu", None)
_REVERSIBLE = {m: _build_reversible for m in _REV_FAMILIES}
for _m, _scheme in _REV_FAMILIES.items():
    _METHOD_OPTIONS[_m] = ()
    _METHOD_INFO[_m] = (_scheme, None)
for _name, _m, _w, _u in (("hamiltonian74", "hamiltonian", (32, 64, 112), 6),
                          ("hamiltonian218", "hamiltonian", (32, 64, 128), 18),
                          ("hamiltonian1202", "hamiltonian", (32, 64, 128), 100),
                          ("midpoint62", "midpoint", (32, 64, 112), 5),
                          ("midpoint200", "midpoint", (32, 64, 128), 16),
                          ("leapfrog62", "leapfrog", (32, 64, 112), 5),
                          ("leapfrog200", "leapfrog", (32, 64, 128), 16),
                          ("tiny_hamiltonian", "hamiltonian", (8, 16, 32), 2),
                          ("tiny_midpoint", "midpoint", (8, 16, 32), 2),
                          ("tiny_leapfrog", "leapfrog", (8, 16, 32), 2)):
    _register(_name, arch="reversible", method=_m, widths=_w, blocks=(_u,) * 3, stem_width=_w[0])
for _d, _b in ((50, (3, 4, 6, 3)), (101, (3, 4, 23, 3))):
    for _m in ("euler", "lm"):
        _register(f"{'lm_' if _m == 'lm' else ''}resnet{_d}", arch="imagenet", method=_m, widths=(64, 128, 256, 512),
                  blocks=_b, stem_width=64, dataset="imagenet")


def names() -> list:
    """Every registered model name, CIFAR models first."""
    return list(REGISTRY)


def _entry(name):
    if not isinstance(name, str) or name not in REGISTRY:
        close = difflib.get_close_matches(str(name), REGISTRY, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; `sdenet models` lists the {len(REGISTRY)} available")
    return REGISTRY[name]


def _positive_int(name, key, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: {key} must be a positive integer, got {v!r}")
    return v


def _int_tuple(name, key, v, n):
    try:
        items = tuple(v)
    except TypeError:
        raise ValueError(f"{name}: {key} must be a sequence of {n} positive integers, got {v!r}") from None
    if len(items) != n:
        raise ValueError(f"{name}: {key} needs {n} entries (one per stage), got {len(items)}")
    return tuple(_positive_int(name, key, x) for x in items)


def _resolve(name, num_classes, overrides) -> dict:
    entry = _entry(name)
    cfg = dict(entry["cfg"])
    unknown = sorted(set(overrides) - set(entry["options"]))
    if unknown:
        raise ValueError(f"{name}: unknown override(s) {', '.join(unknown)}; "
                         f"{name} accepts {', '.join(entry['options'])}")
    cfg.update(overrides)
    if num_classes is None:
        num_classes = 1000 if entry["dataset"] == "imagenet" else 10
    cfg["num_classes"] = _positive_int(name, "num_classes", num_classes)
    n = len(entry["cfg"]["widths"])
    cfg["widths"] = _int_tuple(name, "widths", cfg["widths"], n)
    cfg["blocks"] = _int_tuple(name, "blocks", cfg["blocks"], n)
    cfg["stem_width"] = _positive_int(name, "stem_width", cfg["stem_width"])
    r = cfg["refine"]
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not (r > 0 and math.isfinite(r)):
        raise ValueError(f"{name}: refine must be a positive factor (blocks x F, dt / F at fixed T), got {r!r}")
    cfg["refine"] = int(r) if float(r).is_integer() else float(r)
    try:
        cfg["dt"] = _check_dt(cfg["dt"])
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    p_L = cfg["p_L"]
    if isinstance(p_L, bool) or not isinstance(p_L, (int, float)) or not 0.0 < float(p_L) <= 1.0:
        raise ValueError(f"{name}: p_L (final survival probability) must lie in (0, 1], got {p_L!r}")
    cfg["p_L"] = float(p_L)
    if cfg["p_schedule"] not in P_SCHEDULES:
        raise ValueError(f"{name}: p_schedule must be one of {', '.join(P_SCHEDULES)}, got {cfg['p_schedule']!r}")
    if cfg["p_schedule"] == "sqrt" and cfg["dt"] / cfg["refine"] > 1:
        raise ValueError(f"{name}: p_schedule='sqrt' needs dt <= 1 (survival 1/2 + (p - 1/2) sqrt(dt)), "
                         f"got dt={cfg['dt']:g}")
    if cfg["mode"] not in ("sample", "batch"):
        raise ValueError(f"{name}: mode must be 'sample' (per image) or 'batch' (per batch), got {cfg['mode']!r}")
    try:
        lo, hi = (float(v) for v in cfg["k_init"])
    except (TypeError, ValueError):
        raise ValueError(f"{name}: k_init must be a range (low, high), got {cfg['k_init']!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name}: k_init must be a finite range with low <= high, got {cfg['k_init']!r}")
    cfg["k_init"] = (lo, hi)
    if not isinstance(cfg["per_channel"], bool):
        raise ValueError(f"{name}: per_channel must be True or False, got {cfg['per_channel']!r}")
    if cfg["forward"] not in ("shake", "even"):
        raise ValueError(f"{name}: forward must be 'shake' or 'even', got {cfg['forward']!r}")
    if cfg["backward"] not in ("shake", "even", "keep"):
        raise ValueError(f"{name}: backward must be 'shake', 'even' or 'keep', got {cfg['backward']!r}")
    if cfg["level"] not in ("image", "batch"):
        raise ValueError(f"{name}: level must be 'image' or 'batch', got {cfg['level']!r}")
    cfg["level_noise"] = "sample" if cfg["level"] == "image" else "batch"
    cfg["terms"] = _positive_int(name, "terms", cfg["terms"])
    if cfg["law"] is not None:
        if not isinstance(cfg["law"], str):
            raise ValueError(f"{name}: law must be a law name ({', '.join(LAW_NAMES)}), got {cfg['law']!r}")
        try:
            get_law(cfg["law"])
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    if cfg["shortcut"] is not None and cfg["shortcut"] not in SHORTCUTS:
        raise ValueError(f"{name}: shortcut must be one of {', '.join(SHORTCUTS)} (or None for the "
                         f"architecture's own), got {cfg['shortcut']!r}")
    if cfg["arch"] == "resnext":
        cfg["cardinality"] = _positive_int(name, "cardinality", cfg["cardinality"])
        cfg["base_width"] = _positive_int(name, "base_width", cfg["base_width"])
    if cfg["arch"] in ("shake", "revnet") and any(w % 2 for w in cfg["widths"]):
        raise ValueError(f"{name}: widths must be even, got {cfg['widths']}")
    if cfg["method"] == "heun":
        short = [i + 1 for i, b in enumerate(cfg["blocks"]) if b < 3]
        if short:
            raise ValueError(f"{name}: each Heun stage needs at least 3 blocks (transition + 2), "
                             f"stages {short} have fewer")
    return cfg


def create(name: str, num_classes: int | None = None, memory: str = "store", memory_exact: bool = True,
           **overrides) -> Network:
    """Build the registered model ``name`` (``num_classes`` defaults to 10 on CIFAR, 1000 on ImageNet).

    ``refine=F`` builds the fixed-T refinement directly: every ODE stage takes F× the steps at
    Δt/F (the architecture :func:`sdenet.nn.refine` makes of the ``refine=1`` network, with
    fresh weights); ``dt`` keeps the blocks and changes T.

    ``memory``: ``"store"``, ``"reversible"`` or ``"checkpoint"`` on every stage
    (:func:`sdenet.nn.set_memory`); a mode the model cannot use is a ``ValueError`` with the reason.
    ``memory_exact=False`` (with ``"reversible"``): invert in plain floating point instead of on
    exact fixed-point carries (``set_memory(..., exact=False)``).
    """
    if memory not in MEMORY_MODES:
        raise ValueError(f"{name}: memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
    cfg = _resolve(name, num_classes, overrides)
    net = _build(cfg)
    net.name = name
    if memory != "store":
        try:
            set_memory(net, memory, exact=memory_exact)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        net.config["memory"] = memory
        if memory_exact is not True:
            net.config["memory_exact"] = memory_exact
    return net


def count_params(name: str, num_classes: int | None = None, **overrides) -> int:
    """Number of parameters, counted on a model built on the ``meta`` device (no memory, no init cost)."""
    cfg = _resolve(name, num_classes, overrides)
    with torch.device("meta"):
        net = _build(cfg)
    return sum(p.numel() for p in net.parameters())


def info(name: str) -> dict:
    """``{"name", "params", "dataset", "scheme", "law"}`` (params at the default number of classes)."""
    entry = _entry(name)
    if entry["params"] is None:
        entry["params"] = count_params(name)
    return {"name": name, "params": entry["params"], "dataset": entry["dataset"], "scheme": entry["scheme"],
            "law": entry["law"]}
