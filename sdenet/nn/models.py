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
from types import SimpleNamespace

import torch
from torch import nn

from ..laws import LAW_NAMES, P_SCHEDULES, DropBernoulli, Uniform, get_law
from ..schemes import CoupledEuler, Euler, Heun, NeumannEuler, WeakEuler
from . import blocks
from .fields import CoupledBlockField, DropField, ShakeField, _check_dt
from .memory import MEMORY_MODES
from .network import Layer, Network
from .operators import DiffConv2d, PDEBasic
from .refine import resample_values
from .stage import Stage, Transition, lm_stage, set_memory

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
        return blocks.conv3x3(3, width)
    if kind == "conv_bn":
        return nn.Sequential(blocks.conv3x3(3, width), nn.BatchNorm2d(width))
    if kind == "conv_bn_relu":
        return nn.Sequential(blocks.conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    if kind == "pde":
        return DiffConv2d(3, width)
    if kind == "imagenet":
        return nn.Sequential(
            nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
    raise AssertionError(kind)


# ---------------------------------------------------------------------- architectures
#
# An architecture gives: stem kind, head activation, post, the out-width of stage i from the
# config (``expansion`` × width), a branch factory ``branch(cfg, c_in, c_out, stride, i)``
# (the function the decorator registers) and its default shortcut ``(c_in, c_out, stride)``.

#: architecture name -> its entry; filled by :func:`register_arch`
ARCHS: dict[str, dict] = {}


def register_arch(
    name, *, stem, head, post, shortcut, expansion=1, options=(), fixed_shortcut=False, even_widths=False
):
    """Register the decorated branch factory as architecture ``name`` (timm style: one decorator
    per constructor, no chain of ``arch ==`` tests). ``options`` are the extra config keys it reads;
    ``fixed_shortcut``: the shortcut is part of the paper's model (no ``shortcut`` override);
    ``even_widths``: its blocks split the channels in two halves."""

    def deco(branch):
        ARCHS[name] = {
            "stem": stem,
            "head": head,
            "post": post,
            "shortcut": shortcut,
            "expansion": expansion,
            "branch": branch,
            "options": tuple(options),
            "fixed_shortcut": bool(fixed_shortcut),
            "even_widths": bool(even_widths),
        }
        return branch

    return deco


def _pad(c_in, c_out, stride):
    return blocks.PadShortcut(c_in, c_out, stride)


def _conv(c_in, c_out, stride):
    return blocks.ConvShortcut(c_in, c_out, stride, bn=False)


def _conv_bn(c_in, c_out, stride):
    return blocks.ConvShortcut(c_in, c_out, stride, bn=True)


@register_arch("preact", stem="conv", head="bn_relu", post=None, shortcut=_pad)
@register_arch("revnet", stem="conv", head="bn_relu", post=None, shortcut=_pad, even_widths=True)
def _preact_basic(cfg, c_in, c_out, stride, i):
    return blocks.PreActBasic(c_in, c_out, stride)


@register_arch("postact", stem="conv_bn_relu", head="none", post="relu", shortcut=_pad)
def _postact_basic(cfg, c_in, c_out, stride, i):
    return blocks.PostActBasic(c_in, c_out, stride)


# sdenet/nn/operators.py: differential-operator kernels
@register_arch("pde", stem="pde", head="bn_relu", post=None, shortcut=_pad)
def _pde_basic(cfg, c_in, c_out, stride, i):
    return PDEBasic(c_in, c_out, stride)


@register_arch("preact_bottleneck", stem="conv", head="bn_relu", post=None, shortcut=_conv, expansion=4)
def _preact_bottleneck(cfg, c_in, c_out, stride, i):
    return blocks.PreActBottleneck(c_in, cfg["widths"][i], c_out, stride)


@register_arch("imagenet", stem="imagenet", head="none", post="relu", shortcut=_conv_bn, expansion=4)
def _postact_bottleneck(cfg, c_in, c_out, stride, i):
    return blocks.PostActBottleneck(c_in, cfg["widths"][i], c_out, stride)


@register_arch(
    "resnext",
    stem="conv_bn_relu",
    head="none",
    post="relu",
    shortcut=_conv_bn,
    options=("cardinality", "base_width"),
)
def _resnext(cfg, c_in, c_out, stride, i):
    inner = cfg["cardinality"] * cfg["base_width"] * 2**i
    return blocks.PostActBottleneck(c_in, inner, c_out, stride, groups=cfg["cardinality"])


@register_arch(
    "shake",
    stem="conv_bn",
    head="relu",
    post=None,
    shortcut=blocks.ShakeShortcut,
    fixed_shortcut=True,
    even_widths=True,
)
def _shake(cfg, c_in, c_out, stride, i):
    return blocks.ShakeBranch(c_in, c_out, stride)


def _out_width(cfg, i):
    return ARCHS[cfg["arch"]]["expansion"] * cfg["widths"][i]


def _branch(cfg, c_in, c_out, stride, i):
    return ARCHS[cfg["arch"]]["branch"](cfg, c_in, c_out, stride, i)


SHORTCUTS = ("pad", "projection", "conv", "conv_bn")
_SHORTCUT_KINDS = {"pad": _pad, "projection": blocks.ProjectionShortcut, "conv": _conv, "conv_bn": _conv_bn}


def _shortcut(cfg, c_in, c_out, stride):
    """The ``shortcut`` override when given, else the architecture's own."""
    kind = cfg.get("shortcut")
    make = _SHORTCUT_KINDS[kind] if kind is not None else ARCHS[cfg["arch"]]["shortcut"]
    return make(c_in, c_out, stride)


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
        raise ValueError(
            f"refine={factor:g}: {name} takes {count - lookahead} steps, and "
            f"{count - lookahead} x {factor:g} is not a positive whole number of steps"
        )
    return int(round(steps)) + lookahead


# ---------------------------------------------------------------------- methods
#
# A method (the scheme a network is a discretization of) gives the stage of ``count`` blocks
# (the function the decorator registers), the transition that changes width or resolution, its
# scheme and law for ``info``, the options it reads and its look-ahead (blocks beyond its steps).

#: method name -> its entry; filled by :func:`register_method`
METHODS: dict[str, dict] = {}


def _euler_transition(cfg, s, short, c_in, c_out, stride):
    return Transition(short, _branch(cfg, c_in, c_out, stride, s.i), Euler(), post=s.post, name=s.tname)


def _drop_transition(cfg, s, short, c_in, c_out, stride):
    p = s.ps[s.l]
    field = DropField([_branch(cfg, c_in, c_out, stride, s.i)], [p], 1.0, noise=s.noise)
    return Transition(short, field, WeakEuler(_law(cfg, p)), post=s.post, name=s.tname)


def _shake_transition(cfg, s, short, c_in, c_out, stride):
    field = ShakeField(
        [_branch(cfg, c_in, c_out, stride, s.i)],
        [_branch(cfg, c_in, c_out, stride, s.i)],
        1.0,
        noise=cfg["level_noise"],
        forward=cfg["forward"],
        backward=cfg["backward"],
    )
    return Transition(short, field, WeakEuler(_law(cfg)), post=s.post, name=s.tname)


def register_method(
    name, *, scheme, law=None, options=(), lookahead=0, stochastic_depth=False, transition=_euler_transition
):
    """Register the decorated stage builder ``stage(cfg, s)`` as method ``name`` (``s``: the stage's
    index ``i``, ``name``, block ``count`` after refinement and ``coarse_count`` before, ``c_out``,
    ``dt``, ``post``, and for stochastic depth the survival probabilities ``ps`` from block ``l``)."""

    def deco(stage):
        METHODS[name] = {
            "scheme": scheme,
            "law": law,
            "options": tuple(options),
            "lookahead": lookahead,
            "stochastic_depth": stochastic_depth,
            "transition": transition,
            "stage": stage,
        }
        return stage

    return deco


def _blocks(cfg, s):
    return [_branch(cfg, s.c_out, s.c_out, 1, s.i) for _ in range(s.count)]


@register_method("euler", scheme="euler")
def _euler_stage(cfg, s):
    return Stage(_blocks(cfg, s), Euler(), dt=s.dt, name=s.name, post=s.post)


@register_method("heun", scheme="heun", lookahead=1)
def _heun_stage(cfg, s):
    if s.count < 2:
        raise ValueError(f"fractalnet: a Heun stage needs at least 2 blocks, {s.name} has {s.count}")
    return Stage(_blocks(cfg, s), Heun(), dt=s.dt, name=s.name, post=s.post)


@register_method("neumann", scheme="neumann", options=("terms",))
def _neumann_stage(cfg, s):
    return Stage(_blocks(cfg, s), NeumannEuler(cfg["terms"]), dt=s.dt, name=s.name, post=s.post)


@register_method("lm", scheme="lm", options=("k_init", "per_channel"))
def _lm_stage(cfg, s):
    return lm_stage(
        _blocks(cfg, s),
        dt=s.dt,
        k_init=cfg["k_init"],
        per_channel=cfg["per_channel"],
        channels=s.c_out,
        post=s.post,
        name=s.name,
    )


@register_method("coupled", scheme="coupled")
def _coupled_stage(cfg, s):
    half = s.c_out // 2
    f1 = [_branch(cfg, half, half, 1, s.i) for _ in range(s.count)]
    f2 = [_branch(cfg, half, half, 1, s.i) for _ in range(s.count)]
    return Stage(CoupledBlockField(f1, f2, s.dt), CoupledEuler(), name=s.name, post=s.post)


def _drop_field(cfg, s):
    p_blocks = s.ps[s.l : s.l + s.coarse_count]
    if s.count != s.coarse_count:  # survival interpolated in t (sdenet.nn.refine)
        p_blocks = resample_values(p_blocks, s.count, s.count / s.coarse_count)
    field = DropField(_blocks(cfg, s), p_blocks, s.dt, noise=s.noise, p_schedule=cfg["p_schedule"])
    return field, [_law(cfg, p) for p in field.p]


def _stochastic_depth(name, scheme, options=()):
    """:func:`register_method` for a stochastic-depth method: the drop law, its survival options
    (with the scheme's ``options``), the drop transition."""
    return register_method(
        name,
        scheme=scheme,
        law="drop",
        options=("p_L", "mode", *options, "law", "p_schedule"),
        stochastic_depth=True,
        transition=_drop_transition,
    )


@_stochastic_depth("sd", "weak_euler")
def _sd_stage(cfg, s):
    field, laws = _drop_field(cfg, s)
    return Stage(field, [WeakEuler(law) for law in laws], name=s.name, post=s.post)


@_stochastic_depth("lm_sd", "stochastic_lm", ("k_init", "per_channel"))
def _lm_sd_stage(cfg, s):
    field, laws = _drop_field(cfg, s)
    return lm_stage(
        field,
        k_init=cfg["k_init"],
        per_channel=cfg["per_channel"],
        channels=s.c_out,
        post=s.post,
        name=s.name,
        stochastic_laws=laws,
    )


@register_method(
    "shake",
    scheme="weak_euler",
    law="uniform",
    options=("forward", "backward", "level", "law"),
    transition=_shake_transition,
)
def _shake_stage(cfg, s):
    b1, b2 = _blocks(cfg, s), _blocks(cfg, s)
    field = ShakeField(
        b1, b2, s.dt, noise=cfg["level_noise"], forward=cfg["forward"], backward=cfg["backward"]
    )
    return Stage(field, WeakEuler(_law(cfg)), name=s.name, post=s.post)


def _build(cfg) -> Network:
    arch, entry = cfg["arch"], METHODS[cfg["method"]]
    stem_kind, head_act, post = ARCHS[arch]["stem"], ARCHS[arch]["head"], ARCHS[arch]["post"]
    if entry["stage"] is None:  # Chang et al.'s families build the whole network (sdenet/nn/reversible.py)
        net = entry["network"](
            cfg, _stem(stem_kind, cfg["stem_width"]), _Head(cfg["widths"][-1], cfg["num_classes"], head_act)
        )
        net.config = {k: v for k, v in cfg.items() if k != "level_noise"}
        return net
    s = SimpleNamespace(
        dt=cfg["dt"] / cfg.get("refine", 1),
        post=post,
        noise=cfg.get("mode", "sample"),
        ps=_survival(cfg) if entry["stochastic_depth"] else None,
        l=0,
    )  # l: global block counter (stochastic depth)
    stem_width = cfg["stem_width"]
    layers = []
    c_in = stem_width
    for i in range(len(cfg["widths"])):
        c_out = _out_width(cfg, i)
        stride = cfg["strides"][i]
        s.i, s.name, s.tname, s.c_out = i, f"stage{i + 1}", f"stage{i + 1}.transition", c_out
        count = cfg["blocks"][i]
        transition = None
        if c_in != c_out or stride != 1:
            transition = entry["transition"](cfg, s, _shortcut(cfg, c_in, c_out, stride), c_in, c_out, stride)
            s.l += 1
            count -= 1
        stage = None
        if count > 0:
            s.coarse_count = count
            s.count = _refined_count(cfg, s.name, count, entry["lookahead"])
            stage = entry["stage"](cfg, s)
            s.l += count
        layers.append(Layer(transition, stage, s.name))
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
_DEFAULTS = {
    "dt": 1.0,
    "k_init": (-0.1, 0.0),
    "per_channel": False,
    "p_L": 0.5,
    "mode": "sample",
    "forward": "shake",
    "backward": "shake",
    "level": "image",
    "terms": 2,
    "law": None,
    "shortcut": None,
    "p_schedule": "fixed",
    "refine": 1,
}


def _register(name, *, arch, method, widths, blocks, stem_width, dataset="cifar", strides=None, **extra):
    cfg = dict(_DEFAULTS)
    cfg.update(
        arch=arch,
        method=method,
        widths=tuple(widths),
        blocks=tuple(blocks),
        stem_width=stem_width,
        strides=tuple(strides or ((1,) + (2,) * (len(widths) - 1))),
    )
    cfg.update(extra)
    options = _COMMON + METHODS[method]["options"] + ARCHS[arch]["options"]
    options += () if ARCHS[arch]["fixed_shortcut"] else ("shortcut",)
    scheme, law = METHODS[method]["scheme"], METHODS[method]["law"]
    REGISTRY[name] = {
        "cfg": cfg,
        "dataset": dataset,
        "scheme": scheme,
        "law": law,
        "options": options,
        "params": None,
    }


def _cifar_depths():
    return {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


def _cifar(name, arch, method, n):
    """A CIFAR network: three stages of widths 16, 32, 64 with ``n`` blocks each, a 16-channel stem."""
    _register(name, arch=arch, method=method, widths=(16, 32, 64), blocks=(n,) * 3, stem_width=16)


for _d, _n in _cifar_depths().items():
    _cifar(f"resnet{_d}", "postact", "euler", _n)
for _d, _n in _cifar_depths().items():
    _cifar(f"preact_resnet{_d}", "preact", "euler", _n)
_cifar("preact_resnet164", "preact_bottleneck", "euler", 18)
for _d, _n in _cifar_depths().items():
    _cifar(f"lm_resnet{_d}", "preact", "lm", _n)
_cifar("lm_resnet164", "preact_bottleneck", "lm", 18)
for _c in (8, 16):
    for _m in ("euler", "lm"):
        _register(
            f"{'lm_' if _m == 'lm' else ''}resnext29_{_c}x64d",
            arch="resnext",
            method=_m,
            widths=(256, 512, 1024),
            blocks=(3, 3, 3),
            stem_width=64,
            cardinality=_c,
            base_width=64,
        )
for _d in (56, 110):
    _n = _cifar_depths()[_d]
    _cifar(f"sd_resnet{_d}", "preact", "sd", _n)
    _cifar(f"lm_sd_resnet{_d}", "preact", "lm_sd", _n)
for _w in (32, 96):
    _register(
        f"shake_shake26_2x{_w}d",
        arch="shake",
        method="shake",
        widths=(_w, 2 * _w, 4 * _w),
        blocks=(4, 4, 4),
        stem_width=16,
    )
_cifar("polynet", "preact", "neumann", 3)
_cifar("fractalnet", "preact", "heun", 4)
_register("revnet", arch="revnet", method="coupled", widths=(32, 64, 128), blocks=(3, 3, 3), stem_width=32)
# tiny models for tests and quick CPU runs: widths 8/16/32, two blocks per stage
for _name, _m, _arch in (
    ("tiny_resnet", "euler", "preact"),
    ("tiny_lm_resnet", "lm", "preact"),
    ("tiny_sd_resnet", "sd", "preact"),
    ("tiny_lm_sd_resnet", "lm_sd", "preact"),
    ("tiny_shake_shake", "shake", "shake"),
):
    _register(_name, arch=_arch, method=_m, widths=(8, 16, 32), blocks=(2, 2, 2), stem_width=8)
# Ruthotto & Haber's PDE-based CNNs: every 3x3 kernel a combination of differential operators
# scaled by the grid spacing, so the network is resolution independent (sdenet/nn/operators.py)
_register("tiny_pde_resnet", arch="pde", method="euler", widths=(8, 16, 32), blocks=(2, 2, 2), stem_width=8)
_cifar("pde_resnet20", "pde", "euler", 3)
# Chang et al. (AAAI 2018): Hamiltonian, midpoint and leapfrog networks (sdenet/nn/reversible.py)
from .reversible import FAMILIES as _REV_FAMILIES  # noqa: E402
from .reversible import build_reversible as _build_reversible  # noqa: E402

# the reversible families build their own blocks (build_reversible): only stem and head come from here
ARCHS["reversible"] = {
    "stem": "conv_bn_relu",
    "head": "bn_relu",
    "post": None,
    "shortcut": None,
    "expansion": 1,
    "branch": None,
    "options": (),
    "fixed_shortcut": False,
    "even_widths": False,
}
for _m, _scheme in _REV_FAMILIES.items():  # each family builds its whole network
    METHODS[_m] = {
        "scheme": _scheme,
        "law": None,
        "options": (),
        "lookahead": 0,
        "stochastic_depth": False,
        "transition": None,
        "stage": None,
        "network": _build_reversible,
    }
for _name, _m, _widths, _units in (
    ("hamiltonian74", "hamiltonian", (32, 64, 112), 6),
    ("hamiltonian218", "hamiltonian", (32, 64, 128), 18),
    ("hamiltonian1202", "hamiltonian", (32, 64, 128), 100),
    ("midpoint62", "midpoint", (32, 64, 112), 5),
    ("midpoint200", "midpoint", (32, 64, 128), 16),
    ("leapfrog62", "leapfrog", (32, 64, 112), 5),
    ("leapfrog200", "leapfrog", (32, 64, 128), 16),
    ("tiny_hamiltonian", "hamiltonian", (8, 16, 32), 2),
    ("tiny_midpoint", "midpoint", (8, 16, 32), 2),
    ("tiny_leapfrog", "leapfrog", (8, 16, 32), 2),
):
    _register(
        _name, arch="reversible", method=_m, widths=_widths, blocks=(_units,) * 3, stem_width=_widths[0]
    )
for _d, _b in ((50, (3, 4, 6, 3)), (101, (3, 4, 23, 3))):
    for _m in ("euler", "lm"):
        _register(
            f"{'lm_' if _m == 'lm' else ''}resnet{_d}",
            arch="imagenet",
            method=_m,
            widths=(64, 128, 256, 512),
            blocks=_b,
            stem_width=64,
            dataset="imagenet",
        )


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
        raise ValueError(
            f"{name}: unknown override(s) {', '.join(unknown)}; {name} accepts {', '.join(entry['options'])}"
        )
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
        raise ValueError(
            f"{name}: refine must be a positive factor (blocks x F, dt / F at fixed T), got {r!r}"
        )
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
        raise ValueError(
            f"{name}: p_schedule must be one of {', '.join(P_SCHEDULES)}, got {cfg['p_schedule']!r}"
        )
    if cfg["p_schedule"] == "sqrt" and cfg["dt"] / cfg["refine"] > 1:
        raise ValueError(
            f"{name}: p_schedule='sqrt' needs dt <= 1 (survival 1/2 + (p - 1/2) sqrt(dt)), "
            f"got dt={cfg['dt']:g}"
        )
    if cfg["mode"] not in ("sample", "batch"):
        raise ValueError(
            f"{name}: mode must be 'sample' (per image) or 'batch' (per batch), got {cfg['mode']!r}"
        )
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
        raise ValueError(
            f"{name}: shortcut must be one of {', '.join(SHORTCUTS)} (or None for the "
            f"architecture's own), got {cfg['shortcut']!r}"
        )
    for key in ARCHS[cfg["arch"]]["options"]:  # resnext's cardinality and base_width
        cfg[key] = _positive_int(name, key, cfg[key])
    if ARCHS[cfg["arch"]]["even_widths"] and any(w % 2 for w in cfg["widths"]):
        raise ValueError(f"{name}: widths must be even, got {cfg['widths']}")
    if METHODS[cfg["method"]]["lookahead"]:  # Heun (FractalNet)
        short = [i + 1 for i, b in enumerate(cfg["blocks"]) if b < 3]
        if short:
            raise ValueError(
                f"{name}: each Heun stage needs at least 3 blocks (transition + 2), stages {short} have fewer"
            )
    return cfg


def create(
    name: str, num_classes: int | None = None, memory: str = "store", memory_exact: bool = True, **overrides
) -> Network:
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
    return {
        "name": name,
        "params": entry["params"],
        "dataset": entry["dataset"],
        "scheme": entry["scheme"],
        "law": entry["law"],
    }
