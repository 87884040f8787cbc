"""Convolutions that are differential operators by construction (Ruthotto & Haber, *Deep
neural networks motivated by partial differential equations*, JMIV 2020; Haber, Ruthotto,
Holtham, Jun, *Learning across scales*, AAAI 2018).

A 3×3 convolution applied to samples ``u_ij = u(j h, i h)`` of an image on a grid of spacing
``h`` is a discretised differential operator. :class:`DiffConv2d` builds each of its kernels
(output channel ``o``, input channel ``c``) as a learned combination of the six centred
difference stencils of the operators of order ≤ 2::

    K_oc = a_0 I + (a_x D_x + a_y D_y) / h + (a_xx D_xx + a_yy D_yy + a_xy D_xy) / h²

with (cross-correlation; rows are y, columns are x)

* ``I``: the centre tap (the identity),
* ``D_x = [−½, 0, ½]`` along x, ``D_y`` the same along y (``∂x``, ``∂y`` to O(h²)),
* ``D_xx = [1, −2, 1]`` along x, ``D_yy`` along y (``∂xx``, ``∂yy`` to O(h²)),
* ``D_xy = D_x ⊗ D_y`` (the four corners ±¼; ``∂xy`` to O(h²)).

So ``K_oc`` is the discretisation of the operator ``L_oc = a_0 + a_x ∂x + a_y ∂y + a_xx ∂xx
+ a_yy ∂yy + a_xy ∂xy``, and the coefficients ``a`` are the parameters: they do not depend on
the grid. On the grid ``h/F`` the same coefficients give the stencil of the same operator:
a network of these layers moves to another resolution by rebuilding each layer for the new
spacing (:meth:`DiffConv2d.set_spacing`; ``sdenet.nn.rescale(m, F, method="moments")``,
which on these kernels is exactly this rebuild, since each stencil is a pure moment), with
no retraining. ``method="atrous"`` instead keeps the difference *step* (``h`` and the taps
``F`` pixels apart: ``dilation × F``), the same finite differences at the same physical
offsets. Which of the two transfers a trained network is measured in
``experiments/transfer_resolution.py`` (docs/resolution.md): natural images are not smooth
at the pixel scale, so difference quotients at the finer spacing are larger than at the
coarse one and the operator rebuild amplifies them, as the moment map does. Facts a test
checks:

* exact on quadratics: for ``u`` a polynomial of degree ≤ 2 the layer's output at a node is
  ``L u`` there, at every spacing (the Taylor expansions terminate);
* second order: for a smooth ``u`` the error against ``L u`` is O(h²);
* what the layer cannot represent: the 3 remaining directions of the 9-dimensional 3×3 space
  (the moments of order 3 and 4: ``∂xx∂y``, ``∂x∂yy``, ``∂xx∂yy``), which are the
  pixel-scale parts that make a trained plain kernel fail under the moment map.

The spacing ``h`` is kept in units of the grid the network was built for (a buffer,
``spacing = 1`` there, ½ after refining ×2): the physical coefficients are ``a_q h₀^q`` with
``h₀`` the training grid's spacing, which keeps the learned ``a`` of order one whatever the
resolution (``h₀ = 1/16`` would multiply second differences by 256). The spacing is part of
the state dict, so a checkpoint of a refined network keeps it.

:class:`PDEBasic` is the pre-activation residual block of two such layers
(``f(x) = D(relu(bn(D(relu(bn(x))))))``), the field of the ``*pde_resnet*`` models.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PreActBasic

__all__ = ["DiffConv2d", "PDEBasic", "OPERATORS", "ORDERS", "stencils"]

#: the operators, in the order of a layer's coefficients
OPERATORS = ("I", "dx", "dy", "dxx", "dyy", "dxy")
#: each operator's order (its stencil is divided by h**order)
ORDERS = (0, 1, 1, 2, 2, 2)


def stencils(dtype=torch.float64) -> torch.Tensor:
    """The six 3×3 stencils ``(6, 3, 3)`` of :data:`OPERATORS` at spacing 1 (axis 1: y, axis
    2: x; cross-correlation as in ``torch.nn.functional.conv2d``)."""
    e0 = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    e1 = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64)
    e2 = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    # outer(y-stencil, x-stencil)
    s = torch.stack(
        [
            torch.outer(e0, e0),
            torch.outer(e0, e1),
            torch.outer(e1, e0),
            torch.outer(e0, e2),
            torch.outer(e2, e0),
            torch.outer(e1, e1),
        ]
    )
    return s.to(dtype)


def _positive_int(where, name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{where}: {name} must be a positive integer, got {v!r}")
    return v


class DiffConv2d(nn.Module):
    """A 3×3 convolution whose kernels are combinations of the discrete differential
    operators of order ≤ 2, each scaled by the grid spacing (module docstring).

    ``coef``: the parameters, ``(c_out, c_in, 6)`` in the order of :data:`OPERATORS`.
    ``spacing``: the grid spacing ``h`` (a buffer; 1 on the grid the layer was built for).
    ``dilation``: the stencils' taps ``dilation`` pixels apart (the à trous map's refinement:
    the difference step ``spacing × dilation`` stays what it was on the build grid).
    Zero padding of ``dilation`` pixels, ``stride`` as in ``nn.Conv2d``, no bias.
    """

    # registered buffers (annotated so that mypy reads them as tensors, not Tensor | Module)
    spacing: torch.Tensor
    basis: torch.Tensor
    orders: torch.Tensor

    def __init__(self, c_in: int, c_out: int, stride: int = 1, spacing: float = 1.0, dilation: int = 1):
        super().__init__()
        self.c_in = _positive_int("DiffConv2d", "c_in", c_in)
        self.c_out = _positive_int("DiffConv2d", "c_out", c_out)
        self.stride = _positive_int("DiffConv2d", "stride", stride)
        self.dilation = _positive_int("DiffConv2d", "dilation", dilation)
        self.coef = nn.Parameter(torch.empty(c_out, c_in, len(OPERATORS)))
        self.register_buffer("spacing", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("basis", stencils(torch.float32), persistent=False)
        self.register_buffer("orders", torch.tensor(ORDERS, dtype=torch.float64), persistent=False)
        self.set_spacing(spacing)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He (fan-out) scale per coefficient: the six stencils' energies sum to about 8.5,
        # near the 9 taps of a plain 3×3 kernel, so kernels start at a plain conv's size
        nn.init.normal_(self.coef, 0.0, math.sqrt(2.0 / (9 * self.c_out)))

    def set_spacing(self, h: float) -> None:
        """Rebuild the layer for grid spacing ``h`` (same coefficients, same operators)."""
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0:
            raise ValueError(f"DiffConv2d: spacing must be a positive finite number, got {h!r}")
        self.spacing.fill_(float(h))

    def step(self) -> float:
        """The difference step in units of the build grid: ``spacing × dilation``."""
        return float(self.spacing) * self.dilation

    def scales(self) -> torch.Tensor:
        """``step^{-q}`` per operator (float64): the difference quotients' denominators."""
        return torch.tensor(self.step(), dtype=torch.float64) ** (-self.orders.to(torch.float64))

    def weight(self) -> torch.Tensor:
        """The layer's ``(c_out, c_in, 3, 3)`` kernel at the current spacing."""
        s = self.scales().to(device=self.coef.device, dtype=self.coef.dtype)
        return torch.einsum("oik,kab->oiab", self.coef * s, self.basis.to(self.coef.dtype))

    def forward(self, x):
        return F.conv2d(
            x, self.weight().to(x.dtype), stride=self.stride, padding=self.dilation, dilation=self.dilation
        )

    def extra_repr(self):
        return (
            f"{self.c_in}, {self.c_out}, stride={self.stride}, spacing={float(self.spacing):g}, "
            f"dilation={self.dilation}, operators={'/'.join(OPERATORS)}"
        )


class PDEBasic(PreActBasic):
    """``f(x) = D₂(relu(bn(D₁(relu(bn(x))))))`` with ``D`` :class:`DiffConv2d` layers (the
    pre-activation basic block with differential-operator kernels)."""

    def _conv(self, c_in: int, c_out: int, stride: int = 1) -> nn.Module:
        return DiffConv2d(c_in, c_out, stride)
