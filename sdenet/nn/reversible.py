"""Chang et al.'s reversible networks (AAAI 2018): Hamiltonian, midpoint and leapfrog families.

*Reversible Architectures for Arbitrarily Deep Residual Neural Networks* (Chang, Meng, Haber,
Ruthotto, Begert, Holtham) reads three stable, invertible networks off ODEs whose Jacobians
have (nearly) imaginary eigenvalues. Their building block is the *tied* branch

    T(x) = Kᵀ σ(BN(K x))        (K a 3×3 convolution, Kᵀ its transpose; their eq. (8) with BN)

and the fields here are

* :class:`HamiltonianBlockField` — ``Y' = T1_n(Z)``, ``Z' = −T2_n(Y)`` on the two channel
  halves ``(Y, Z)``, integrated by :class:`~sdenet.Hamiltonian` (Verlet-type coupled step);
* :class:`AntisymmetricPair` — the branch ``f(Y) = (T1(Y₂), −T2(Y₁))`` on the halves of a
  single state: the block-antisymmetric structure ``[[0, K1ᵀ·K1], [−K2ᵀ·K2, 0]]`` of the
  linearisation; a run of them is a :class:`~sdenet.nn.BlockField` integrated by
  :class:`~sdenet.Midpoint` (``Y_{n+1} = Y_{n−1} + 2Δt f(Y_n)``) or :class:`~sdenet.Leapfrog`
  (``Y_{n+1} = 2Y_n − Y_{n−1} + Δt² f(Y_n)``).

Between stages a parameter-free transition halves the resolution (2×2 average pooling) and
zero-pads each channel half to the new width; it hands no history to the next stage, so each
midpoint/leapfrog stage starts with its scheme's own start (forward Euler / from rest). As in the
authors' released code (github.com/changebo/revnet-public, ``hamiltonian_model.py``), the first
unit of each later stage still runs at the previous stage's width and resolution, the pooling and
padding following it: with ``blocks = (n1, n2, n3)`` the three ODE stages take ``n1 + 1``, ``n2``
and ``n3 − 1`` steps (Hamiltonian-74: 7, 6, 5 at widths 32, 64, 112). Parameter counts then agree
with the authors' code to about 0.5 % (``experiments/chang_params.py``; the rest is their extra
pre-activation batch norm in each branch).

Registered families (units per stage and widths from the authors' configurations: 6-6-6 at
32-64-112 for Hamiltonian-74, 18-18-18 at 32-64-128 for Hamiltonian-218, 100-100-100 at
32-64-128 for Hamiltonian-1202; 5-5-5 at 32-64-112 for MidPoint/Leapfrog-62, 16-16-16 at
32-64-128 for MidPoint/Leapfrog-200); each unit holds two tied kernels, four convolution
layers, so depth = 4·(units) + 2. Tiny variants (8-16-32, two units) are for tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..schemes import Hamiltonian, Leapfrog, Midpoint
from .fields import BlockField, CoupledBlockField
from .network import Layer, Network
from .stage import Stage

__all__ = [
    "TiedBlock",
    "AntisymmetricPair",
    "HamiltonianBlockField",
    "HalfPadPool",
    "build_reversible",
    "FAMILIES",
]


class TiedBlock(nn.Module):
    """``T(x) = Kᵀ σ(BN(K x))``: one 3×3 kernel ``K`` (``channels → hidden``) used forward and transposed."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = channels if hidden is None else hidden
        self.weight = nn.Parameter(torch.empty(hidden, channels, 3, 3))
        self.bn = nn.BatchNorm2d(hidden)
        # Kaiming (fan-in) for K; the pair K, Kᵀ then has gain ~ 1 per block
        nn.init.normal_(self.weight, 0.0, math.sqrt(1.0 / (9 * channels)))

    def forward(self, x):
        h = F.relu(self.bn(F.conv2d(x, self.weight, padding=1)))
        return F.conv_transpose2d(h, self.weight, padding=1)


class AntisymmetricPair(nn.Module):
    """``f(Y) = (T1(Y₂), −T2(Y₁))`` on the channel halves ``Y = (Y₁, Y₂)``."""

    def __init__(self, channels: int):
        super().__init__()
        if channels % 2:
            raise ValueError(f"AntisymmetricPair: channels must be even, got {channels}")
        self.t1 = TiedBlock(channels // 2)
        self.t2 = TiedBlock(channels // 2)

    def forward(self, x):
        y1, y2 = x.chunk(2, dim=1)
        return torch.cat([self.t1(y2), -self.t2(y1)], dim=1)


class HamiltonianBlockField(CoupledBlockField):
    """``Y' = T1_n(Z)``, ``Z' = −T2_n(Y)`` (Chang et al.'s Hamiltonian network, tied kernels)."""

    def f2(self, t, y):
        return -self.blocks2[self.index(t)](y)


class HalfPadPool(nn.Module):
    """Parameter-free transition: 2×2 average pooling (``stride`` 2) and zero padding of each
    channel half from ``c_in/2`` to ``c_out/2``; returns ``(S(x), None)`` (no history)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        if c_in % 2 or c_out % 2 or c_out < c_in:
            raise ValueError(f"HalfPadPool: need even widths with c_out >= c_in, got {c_in} -> {c_out}")
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x):
        if self.stride != 1:
            x = F.avg_pool2d(x, self.stride)
        pad = (self.c_out - self.c_in) // 2
        if pad:
            x = torch.cat([F.pad(h, (0, 0, 0, 0, 0, pad)) for h in x.chunk(2, dim=1)], dim=1)
        return x, None

    def extra_repr(self):
        return f"{self.c_in} -> {self.c_out}, stride={self.stride}"


#: method -> (scheme name reported by ``sdenet models``)
FAMILIES = {"hamiltonian": "hamiltonian", "midpoint": "midpoint", "leapfrog": "leapfrog"}


def build_reversible(cfg, stem, head) -> Network:
    """Build a Hamiltonian / midpoint / leapfrog network from a resolved registry config."""
    method = cfg["method"]
    factor = cfg.get("refine", 1)  # fixed T: factor x the units at dt / factor (create(refine=F))
    dt = cfg["dt"] / factor
    widths, strides = cfg["widths"], cfg["strides"]
    blocks = list(cfg["blocks"])
    last = len(blocks) - 1
    units = []
    for i, n in enumerate(blocks):
        # the authors' layout: the first unit of stage i > 0 still runs at stage i−1's width and
        # resolution (their pooling and padding follow it), so that stage keeps one unit more
        n_here = n - (1 if i > 0 else 0) + (1 if i < last else 0)
        if n_here < 1:
            raise ValueError(
                f"{method}: stage{i + 1} needs at least {2 if i == last else 1} units "
                f"(its first unit runs at the previous stage's width), got blocks={tuple(blocks)}"
            )
        steps = n_here * factor
        if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
            raise ValueError(
                f"refine={factor:g}: stage{i + 1} of {method} takes {n_here} steps, and {n_here} x "
                f"{factor:g} is not a positive whole number of steps"
            )
        units.append(int(round(steps)))
    if any(w % 2 for w in (cfg["stem_width"], *widths)):
        raise ValueError(f"{method} networks need even widths (two channel halves), got {widths}")
    layers = []
    c_in = cfg["stem_width"]
    for i, (c, n, stride) in enumerate(zip(widths, units, strides)):
        name = f"stage{i + 1}"
        transition = HalfPadPool(c_in, c, stride) if (c != c_in or stride != 1) else None
        if method == "hamiltonian":
            field = HamiltonianBlockField(
                [TiedBlock(c // 2) for _ in range(n)], [TiedBlock(c // 2) for _ in range(n)], dt
            )
            stage = Stage(field, Hamiltonian(), name=name)
        else:
            scheme = Midpoint() if method == "midpoint" else Leapfrog()
            stage = Stage(BlockField([AntisymmetricPair(c) for _ in range(n)], dt), scheme, name=name)
        layers.append(Layer(transition, stage, name))
        c_in = c
    return Network(stem, layers, head)
