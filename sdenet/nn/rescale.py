"""Move a trained network between image resolutions (Haber, Ruthotto, Holtham, *Learning across
scales — multiscale methods for convolution neural networks*, AAAI 2018, arXiv:1703.02009).

Two maps, :func:`rescale`'s ``method``:

* ``"atrous"`` (the default): keep what each kernel sees. Dilate every convolution wider than
  one pixel by the factor (its padding too), so its taps keep their physical offsets; weights
  unchanged; exact on nearest-upsampled input (:func:`rescale` says precisely what holds
  with strides). On a ``tiny_resnet`` trained at 16×16 on the CIFAR-10 subset it keeps
  0.89–0.97 of the accuracy at 32×32 (3 seeds) (``experiments/results/transfer_resolution.md``).
* ``"moments"``: keep the differential operator each kernel discretises (below). Exact on
  polynomials, but trained kernels are pixel-scale detectors, not smooth operators: the
  same network falls to chance at 32×32 (docs/resolution.md has the numbers).

The rest of this docstring derives the moment map.

A convolution is read as a discretised differential operator. A kernel ``w`` of ``k`` taps
(offsets ``j = −r … r``, ``r = (k − 1)/2``), applied by cross-correlation on a grid of spacing
``h``, acts on a smooth image ``u`` as (Taylor expansion of ``u(x + j h)``)::

    Σ_j w_j u(x + j h) = Σ_{q=0}^{k−1} m_q h^q ∂^q u(x) + O(h^k),    m_q = Σ_j w_j j^q / q!

so the kernel is the operator ``L = Σ_q m_q h^q ∂^q``: its moment ``m_0`` is the order-0 part
(mean/identity), ``m_1`` the first-difference part, ``m_2`` the second-difference part, and
so on. The ``k`` moments determine the ``k`` taps (a Vandermonde system), so this is a change
of basis, not an approximation. To keep the *same operator* ``L`` on the grid of spacing
``h' = h / factor`` (``factor = 2``: twice the resolution, a prolongation; ``factor = ½``: half,
a restriction) the moments are re-weighted::

    m'_q = factor^q · m_q,        i.e.   w' = T_factor w,   T_factor = V⁻¹ diag(factor^q) V,

with ``V_{qj} = j^q / q!``. A 2-D kernel ``W`` (``k_h × k_w``) is transformed along each axis,
``W' = T W Tᵀ``: the moment of order ``(p, q)`` (the ``h^{p+q} ∂x^p ∂y^q`` part) is scaled by
``factor^{p+q}``. For the 3×3 kernels of a CIFAR ResNet this is the decomposition in the
stencils ``[0, 1, 0]`` (order 0, kept), ``[−1, 0, 1]/2`` (order 1, ×factor) and ``[1, −2, 1]``
(order 2, ×factor²) along each axis. Properties:

* exact on polynomials: for ``u`` of degree ``< k`` per axis the rescaled kernel on the new
  grid gives the same ``L u`` as the original on the old grid;
* for a smooth image the outputs agree to ``O(h²)`` (central stencils are second order);
* ``T_{1/f} T_f = I``: ``rescale(rescale(m, f), 1/f)`` gives ``m``'s weights back (to
  rounding); ``T_1 = I``;
* 1×1 convolutions (order 0 only), biases, batch norm, linear layers are untouched.

Haber et al. build the coarse-grid operator as the Galerkin product ``R K_h P`` (linear
interpolation ``P``, full weighting ``R = ½Pᵀ`` per axis). Per axis that product maps
``[−1, 0, 1]/2 → ½·[−1, 0, 1]/2`` and ``[1, −2, 1] → ¼·[1, −2, 1]``, exactly the moment map
at factor ½, but ``[0, 1, 0] → [⅛, ¾, ⅛]``: it also smooths the order-0 part (``R P ≠ I``),
so it has no exact inverse on 3×3 stencils. The moment form chosen here is exactly invertible
(the round trip is the identity) and works for any kernel size and any positive factor.

What else in a network depends on the resolution, and what :func:`rescale` does to it:

* strides and dilation: a strided convolution is still a stencil on its *input* grid, so it
  is rescaled the same way (its output grid scales with its input); the dilation cancels out
  of ``T``. Zero padding: the operator reading holds in the interior; the boundary layer is
  one pixel at either resolution.
* the head: sdenet networks (and torchvision ResNets) end with a global average over the
  feature map, which accepts any size and averages the same continuous feature at any
  resolution — left as is. A head that flattens a fixed-size map into a linear layer would be
  resolution dependent; :func:`rescale` changes no linear layer, so such a model accepts only
  its own size.
* batch norm: the running mean and variance are statistics of feature maps that, once the
  kernels keep their operators, are samples of the same continuous features, so they are
  kept (they agree up to the discretisation error and the image content at the new scale).
* parameter-free pooling (max/average pools) and the PadShortcut's subsampling are kept.
* the smallest usable resolution is the product of the strides (each feature map must keep
  at least one pixel).

Prolongation amplifies the high-order moments (``factor^{p+q}``, up to ×16 for the ``∂x²∂y²``
part of a 3×3 kernel at factor 2): a kernel that is not operator-like (a pixel-scale detector)
is mapped to the operator it discretises, which is what this reading asks for, not
necessarily what classifies best; ``experiments/multiscale.py`` measures it.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import cast

import torch
from torch import nn

__all__ = ["rescale", "rescale_kernel", "moment_transform", "dilate_", "atrous_factor", "METHODS"]


def _check_factor(factor, where: str) -> float:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
        raise ValueError(
            f"{where}: factor must be a positive number (2 prolongs to twice the "
            f"resolution, 0.5 restricts to half), got {factor!r}"
        )
    f = float(factor)
    if not math.isfinite(f) or f <= 0:
        raise ValueError(
            f"{where}: factor must be a positive finite number (2 prolongs to "
            f"twice the resolution, 0.5 restricts to half), got {factor!r}"
        )
    return f


def moment_transform(k: int, factor: float, dtype=torch.float64) -> torch.Tensor:
    """``T = V⁻¹ diag(factor^q) V`` (``k × k``) with ``V_{qj} = j^q / q!`` for the centred
    offsets ``j = i − (k − 1)/2``: the map of a ``k``-tap stencil at spacing ``h`` to the stencil
    of the same operator at spacing ``h / factor``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"moment_transform: k must be a positive integer, got {k!r}")
    f = _check_factor(factor, "moment_transform")
    j = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    q = torch.arange(k, dtype=torch.float64)
    fact = torch.exp(torch.lgamma(q + 1))
    V = j[None, :] ** q[:, None] / fact[:, None]
    V[0, :] = 1.0  # 0**0
    D = torch.diag(f**q)
    T = torch.linalg.solve(V, D @ V)
    return T.to(dtype)


def _moment_matrix(k: int) -> torch.Tensor:
    j = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    q = torch.arange(k, dtype=torch.float64)
    V = j[None, :] ** q[:, None] / torch.exp(torch.lgamma(q + 1))[:, None]
    V[0, :] = 1.0  # 0**0
    return V


def _check_order(order, where: str):
    if order is None:
        return None
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 0:
        raise ValueError(f"{where}: order must be None (every moment) or an integer >= 0, got {order!r}")
    return int(order)


def rescale_kernel(weight: torch.Tensor, factor: float, order: int | None = None) -> torch.Tensor:
    """The kernel ``weight`` (``(C_out, C_in/groups, k_1, …, k_d)``, cross-correlation as in
    ``torch.nn.Conv{d}d``) re-weighted for a grid ``factor`` times finer: the moment of orders
    ``(q_1, …, q_d)`` is multiplied by ``factor^{q_1+…+q_d}`` (computed in float64, returned
    in ``weight``'s dtype). ``order``: moments of total order above it are kept as they are
    (read as tied to the grid, see :func:`rescale`); None scales every moment."""
    f = _check_factor(factor, "rescale_kernel")
    cap = _check_order(order, "rescale_kernel")
    if not isinstance(weight, torch.Tensor) or weight.dim() < 3:
        raise ValueError(
            f"rescale_kernel: expected a convolution weight (C_out, C_in, k...), "
            f"got {getattr(weight, 'shape', type(weight).__name__)}"
        )
    w = weight.detach().to(torch.float64)
    axes = [a for a in range(2, w.dim()) if w.shape[a] > 1]
    if cap is None:  # separable: T = V^-1 diag(f^q) V along each axis
        for axis in axes:
            T = moment_transform(w.shape[axis], f).to(w.device)
            w = torch.movedim(torch.tensordot(w, T, dims=([axis], [1])), -1, axis)
        return w.to(weight.dtype)
    # moments M = V w along every axis, scaled by f^(total order) up to the cap, mapped back
    total = torch.zeros([w.shape[a] if a in axes else 1 for a in range(2, w.dim())], dtype=torch.float64)
    for _i, axis in enumerate(axes):
        V = _moment_matrix(w.shape[axis]).to(w.device)
        w = torch.movedim(torch.tensordot(w, V, dims=([axis], [1])), -1, axis)
        shape = [1] * total.dim()
        shape[axis - 2] = w.shape[axis]
        total = total + torch.arange(w.shape[axis], dtype=torch.float64).reshape(shape)
    scale = torch.where(total <= cap, f**total, torch.ones_like(total)).to(w.device)
    w = w * scale
    for axis in axes:
        Vinv = torch.linalg.inv(_moment_matrix(w.shape[axis])).to(w.device)
        w = torch.movedim(torch.tensordot(w, Vinv, dims=([axis], [1])), -1, axis)
    return w.to(weight.dtype)


METHODS = ("atrous", "moments")


def _convs(model: nn.Module):
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            yield name, m


def _operator_layers(model: nn.Module):
    """Layers that carry their own grid spacing (:class:`sdenet.nn.operators.DiffConv2d`): they
    are rebuilt for the new spacing by every method."""
    for name, m in model.named_modules():
        if callable(getattr(m, "set_spacing", None)) and hasattr(m, "spacing"):
            yield name, m


def atrous_factor(factor, where: str = "rescale") -> tuple[int, int]:
    """``(up, down)`` for an à trous factor: ``(F, 1)`` for an integer ``F ≥ 1`` (refinement),
    ``(1, F)`` for ``1/F`` (coarsening). ValueError for any other factor (the moment map,
    ``method="moments"``, takes any positive factor)."""
    f = _check_factor(factor, where)
    if abs(f - round(f)) < 1e-9 and round(f) >= 1:
        return int(round(f)), 1
    inv = 1.0 / f
    if abs(inv - round(inv)) < 1e-9 * inv:
        return 1, int(round(inv))
    raise ValueError(
        f"{where}: the à trous map takes an integer factor (2: twice the "
        f"resolution) or the inverse of one (0.5: half), got {factor!r}; "
        f"method='moments' takes any positive factor"
    )


def _spatial(m) -> list[int]:
    return [a for a, k in enumerate(m.kernel_size) if k > 1]


def _wide_kernel(m: nn.Module) -> bool:
    # torch's _AvgPoolNd does not annotate kernel_size (mypy reads it as Tensor | Module)
    k = cast("int | tuple[int, ...]", m.kernel_size)
    return any(v > 1 for v in (k if isinstance(k, tuple) else (k,)))


def dilate_(model: nn.Module, factor) -> nn.Module:
    """The à trous map, in place: every convolution and max pool with a kernel wider than one
    pixel along an axis gets its dilation and padding along that axis multiplied by ``factor``
    (an integer, refinement) or divided by ``1/factor`` (coarsening; each must then be
    divisible). Weights, strides, 1×1 convolutions, batch norm and every other layer are left
    as they are; operator layers (:mod:`sdenet.nn.operators`) are rebuilt for the spacing
    ``h / factor``. Returns ``model``. See :func:`rescale` for what this keeps exactly."""
    up, down = atrous_factor(factor, "rescale")
    convs = list(_convs(model))
    ops = list(_operator_layers(model))
    pools = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.pooling._MaxPoolNd)]
    avg = [
        n or type(m).__name__
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.pooling._AvgPoolNd) and _wide_kernel(m)
    ]
    if avg:
        raise ValueError(
            f"rescale: average pool(s) {', '.join(avg[:4])} have no dilation, so "
            f"the à trous map cannot keep what they see; use method='moments'"
        )
    plan = []
    for name, m in convs:
        axes = _spatial(m)
        pad: str | list[int]
        if isinstance(m.padding, str):  # 'same' follows the dilation, 'valid' stays 0
            pad = m.padding
        else:
            pad = list(m.padding)
        dil = list(m.dilation)
        for a in axes:
            if down > 1:
                if dil[a] % down or (not isinstance(pad, str) and pad[a] % down):
                    raise ValueError(
                        f"rescale: coarsening by {down} with the à trous map needs dilation and "
                        f"padding divisible by {down}; {name or type(m).__name__} has dilation "
                        f"{tuple(m.dilation)} and padding {m.padding} (it was not refined à "
                        f"trous); use method='moments'"
                    )
                dil[a] //= down
                if not isinstance(pad, str):
                    pad[a] //= down
            else:
                dil[a] *= up
                if not isinstance(pad, str):
                    pad[a] *= up
        plan.append((m, tuple(dil), pad if isinstance(pad, str) else tuple(pad)))
    pool_plan = []
    for name, m in pools:
        d = m.dilation if isinstance(m.dilation, int) else tuple(m.dilation)
        p = m.padding if isinstance(m.padding, int) else tuple(m.padding)
        k = m.kernel_size
        if (k if isinstance(k, int) else max(k)) > 1:
            ds, ps = (d,) if isinstance(d, int) else d, (p,) if isinstance(p, int) else p
            if up > 1 and any(ps):
                raise ValueError(
                    f"rescale: max pool {name or type(m).__name__} pads its input, "
                    f"and torch caps a max pool's padding at half its kernel, so it "
                    f"cannot be dilated à trous; use method='moments'"
                )
            if down > 1 and any(v % down for v in ds + ps):
                raise ValueError(
                    f"rescale: coarsening by {down} with the à trous map needs the "
                    f"dilation and padding of {name} divisible by {down}; use "
                    f"method='moments'"
                )
            fd = (lambda v: v // down) if down > 1 else (lambda v: v * up)
            d = fd(d) if isinstance(d, int) else tuple(fd(v) for v in d)
            p = fd(p) if isinstance(p, int) else tuple(fd(v) for v in p)
        pool_plan.append((m, d, p))
    for name, m in ops:
        if down > 1 and m.dilation % down:
            raise ValueError(
                f"rescale: coarsening by {down} with the à trous map needs the "
                f"dilation of {name} divisible by {down}; use method='moments'"
            )
    for m, new_dil, new_pad in plan:  # checked everything first: no half-dilated model on an error
        m.dilation = new_dil
        m.padding = new_pad
        if not isinstance(new_pad, str):
            m._reversed_padding_repeated_twice = [x for x in reversed(new_pad) for _ in range(2)]
    for m, d, p in pool_plan:
        m.dilation, m.padding = d, p
    for _, m in ops:  # same difference step: taps F pixels apart on the grid h/F
        m.dilation = m.dilation * up // down
        m.set_spacing(float(m.spacing) * down / up)
    return model


def rescale(model: nn.Module, factor: float, order: int | None = None, method: str = "atrous") -> nn.Module:
    """A copy of ``model`` for images ``factor`` times the resolution it was trained on
    (``factor = 2``: 16×16 → 32×32, a prolongation; ``factor = 0.5``: 32×32 → 16×16, a
    restriction; 1 is a plain copy). ``model`` itself is not modified.

    ``method="atrous"`` (default; integer factors and their inverses): keep what each kernel
    *sees*. Every convolution (and max pool) with a kernel wider than one pixel along an axis
    is dilated by ``factor`` along it, its zero padding multiplied by ``factor`` (Holschneider
    et al.'s *algorithme à trous*): the 3×3 taps that touched neighbouring pixels at 16×16
    touch the pixels two apart at 32×32, the same physical offsets. The weights are unchanged;
    strides, 1×1 convolutions, batch norm and the head are left alone. Coarsening by ``1/F``
    undoes a refinement: it needs every such dilation and padding divisible by ``F`` (a
    network refined à trous, or trained dilated), else ValueError. What holds exactly, with
    ``U`` nearest-neighbour upsampling by ``F`` and ``O_l`` / ``T_l`` a layer's output in the
    original / transferred network on ``x`` / ``U x`` (image sides divisible by the total
    stride times ``F``):

    * every feature map subsampled at stride ``F`` is the original's: ``T_l[..., ::F, ::F] =
      O_l`` for every layer, strided or not (a dilated tap ``F·t`` pixels away on ``U x``
      reads the pixel ``t`` away on ``x``; zero padding ``F·p`` meets the border where ``p``
      did);
    * up to the first strided layer, ``T_l = U O_l``, so a network with no stride gives
      exactly the original logits on ``U x`` (the global average of ``U O`` is that of ``O``);
    * after a stride, ``T_l`` is no longer ``U O_l``: its other ``F² − 1`` samples per block
      are the same layer evaluated at the positions the stride skipped (a denser sampling of
      the same feature), so a strided network's logits on ``U x`` are close to, not equal
      to, the original's. Max pools are dilated too, except those that pad (torch caps a max
      pool's padding at half its kernel: ValueError); average pools have no dilation
      (ValueError).

    ``method="moments"``: the moment map (module docstring), any positive factor. Every
    kernel ``W`` becomes ``W' = T W Tᵀ`` per spatial axis with ``T = V⁻¹ diag(factor^q) V``:
    the moment of order ``q`` (the ``h^q ∂^q`` part of the operator the stencil discretises)
    is multiplied by ``factor^q`` so that the operator stays the same on the finer grid.
    Exact on polynomials and O(h²) on smooth images, but trained kernels are not smooth
    operators: on a ``tiny_resnet`` trained at 16×16 the higher moments (×4 to ×16 at factor
    2) hold 21–27 % of the kernels' energy, operator norms grow 13–18× and the residual stages
    compound it: the network falls to chance at 32×32 (docs/resolution.md has the numbers).
    ``order`` (moments only; default None: every moment): only moments of total order ``≤
    order`` are rescaled, higher ones kept (read as tied to the grid). The round trip
    ``rescale(rescale(m, f), 1/f)`` is the identity for both methods.

    Operator layers (:class:`sdenet.nn.operators.DiffConv2d`, the ``*pde_resnet*`` models)
    are combinations of difference quotients of order ≤ 2 scaled by their step: both methods
    keep their coefficients and set the grid spacing to ``h / factor``; ``"moments"`` keeps
    the operator (the step follows the grid: each quotient re-scaled by ``factor^q``, which on
    these pure-moment stencils is exactly the moment map), ``"atrous"`` keeps the step (taps
    ``factor`` pixels apart).

    Raises ValueError for a factor that is not a positive finite number (or, à trous, not an
    integer or the inverse of one), an unknown method, a model with no convolution, or a
    transposed convolution (not a stencil on its input grid).
    """
    if method not in METHODS:
        raise ValueError(f"rescale: method must be one of {', '.join(METHODS)}, got {method!r}")
    f = _check_factor(factor, "rescale")
    cap = _check_order(order, "rescale")
    if method == "atrous" and cap is not None:
        raise ValueError(
            "rescale: order applies to method='moments' (which moments to scale); "
            "the à trous map keeps every weight"
        )
    if not isinstance(model, nn.Module):
        raise ValueError(f"rescale: expected a torch.nn.Module, got {type(model).__name__}")
    convs = list(_convs(model))
    if not convs and not list(_operator_layers(model)):
        raise ValueError(
            f"rescale: {type(model).__name__} has no convolution, so there is "
            f"nothing to carry to another resolution"
        )
    bad = [name or type(m).__name__ for name, m in convs if m.transposed]
    if bad:
        raise ValueError(
            f"rescale: transposed convolution(s) {', '.join(bad[:4])} are not "
            f"supported (only stencils on their input grid: nn.Conv1d/2d/3d)"
        )
    if method == "atrous":
        atrous_factor(f, "rescale")
        return dilate_(copy.deepcopy(model), f)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for _, m in _convs(out):
            m.weight.copy_(rescale_kernel(m.weight, f, cap))
        for _, m in _operator_layers(out):
            m.set_spacing(float(m.spacing) / f)
    return out
