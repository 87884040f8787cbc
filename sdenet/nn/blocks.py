"""Residual branches: the maps ``f`` that a network integrates.

Each class here is the *branch* of a residual block, ``x ↦ f(x)``, never ``x + f(x)``:
the ``+`` belongs to the scheme (:mod:`sdenet.nn.stage`). A run of these blocks is a
field whose drift at ``t_n = nΔt`` is block ``n`` (:class:`sdenet.nn.BlockField`).

* :class:`PreActBasic` — pre-activation basic block (He et al. 2016): bn-relu-conv-bn-relu-conv.
* :class:`PostActBasic` — the original block of He et al. 2015: conv-bn-relu-conv-bn; the
  original network applies ``relu`` *after* the sum, which a stage reproduces with
  ``post=relu`` (a departure from the pure ODE reading, exactly as in the architecture).
* :class:`PreActBottleneck` — [1×1, 3×3, 1×1] with pre-activation (ResNet-164).
* :class:`PostActBottleneck` — [1×1, 3×3, 1×1] post-activation, optionally grouped
  (ResNet-50/101 with ``groups=1``; the ResNeXt block with ``groups = cardinality``).
* :class:`ShakeBranch` — one of the two branches of a shake-shake block:
  relu-conv-bn-relu-conv-bn (Gastaldi 2017). The pair lives in :class:`sdenet.nn.ShakeField`.

Shortcuts for transitions (the block that changes width or resolution, which sits outside
the ODE): :class:`PadShortcut` (option A, zero padding, parameter free), :class:`ConvShortcut`
(option B, 1×1 projection, optionally with batch norm), :class:`ProjectionShortcut` (the
official LM-ResNet code's bn-relu-1×1 conv), :class:`ShakeShortcut` (Gastaldi's
two shifted average-pool + 1×1 paths).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "conv3x3",
    "conv1x1",
    "PreActBasic",
    "PostActBasic",
    "PreActBottleneck",
    "PostActBottleneck",
    "ShakeBranch",
    "PadShortcut",
    "ConvShortcut",
    "ProjectionShortcut",
    "ShakeShortcut",
]


def conv3x3(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


def _pre_activated(x, *layers):
    """``conv(relu(bn(x)))`` through each ``(bn, conv)`` pair in turn (a pre-activation block)."""
    for bn, conv in layers:
        x = conv(F.relu(bn(x)))
    return x


class PreActBasic(nn.Module):
    """``f(x) = conv(relu(bn(conv(relu(bn(x))))))`` (pre-activation basic block)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = self._conv(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = self._conv(c_out, c_out)

    def _conv(self, c_in: int, c_out: int, stride: int = 1) -> nn.Module:
        """The block's two layers (3×3 convolutions here)."""
        return conv3x3(c_in, c_out, stride)

    def forward(self, x):
        return _pre_activated(x, (self.bn1, self.conv1), (self.bn2, self.conv2))


class PostActBasic(nn.Module):
    """``f(x) = bn(conv(relu(bn(conv(x)))))`` (He et al. 2015; the ``relu`` after the sum is the stage's ``post``)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class PreActBottleneck(nn.Module):
    """``f(x) = conv1×1(relu(bn(conv3×3(relu(bn(conv1×1(relu(bn(x)))))))))`` (He et al. 2016)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = conv1x1(c_in, c_mid)
        self.bn2 = nn.BatchNorm2d(c_mid)
        self.conv2 = conv3x3(c_mid, c_mid, stride)
        self.bn3 = nn.BatchNorm2d(c_mid)
        self.conv3 = conv1x1(c_mid, c_out)

    def forward(self, x):
        return _pre_activated(x, (self.bn1, self.conv1), (self.bn2, self.conv2), (self.bn3, self.conv3))


class PostActBottleneck(nn.Module):
    """``f(x) = bn(conv1×1(relu(bn(conv3×3_g(relu(bn(conv1×1(x))))))))``; ``g = groups``.

    ``groups=1`` is the ResNet-50 bottleneck (stride on the 3×3 as in torchvision);
    ``groups = C`` with ``c_mid = C·d`` is the ResNeXt block of cardinality ``C`` and
    width ``d``.
    """

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int = 1, groups: int = 1):
        super().__init__()
        if c_mid % groups:
            raise ValueError(f"PostActBottleneck: inner width {c_mid} is not divisible by groups={groups}")
        self.conv1 = conv1x1(c_in, c_mid)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.conv2 = conv3x3(c_mid, c_mid, stride, groups=groups)
        self.bn2 = nn.BatchNorm2d(c_mid)
        self.conv3 = conv1x1(c_mid, c_out)
        self.bn3 = nn.BatchNorm2d(c_out)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ShakeBranch(PostActBasic):
    """One shake-shake branch: ``f(x) = bn(conv(relu(bn(conv(relu(x))))))`` (Gastaldi 2017):
    the post-activation basic block applied to ``relu(x)``."""

    def forward(self, x):
        return super().forward(F.relu(x))


class PadShortcut(nn.Module):
    """Option A of He et al. 2015: ``S(x) = pad(x[:, :, ::stride, ::stride])``, subsample by ``stride``
    and zero-pad the new channels (no parameters)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        if c_out < c_in:
            raise ValueError(f"PadShortcut: cannot shrink {c_in} channels to {c_out}")
        self.stride = stride
        self.pad = c_out - c_in
        self.front = self.pad // 2

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.front, self.pad - self.front))
        return x

    def extra_repr(self):
        return f"stride={self.stride}, pad={self.pad}"


class ConvShortcut(nn.Module):
    """Option B: ``S(x) = bn(conv1×1_stride(x))`` (batch norm optional)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, bn: bool = True):
        super().__init__()
        self.conv = conv1x1(c_in, c_out, stride)
        self.bn = nn.BatchNorm2d(c_out) if bn else nn.Identity()

    def forward(self, x):
        return self.bn(self.conv(x))


class ProjectionShortcut(nn.Module):
    """The official LM-ResNet code's projection: ``S(x) = conv1×1_stride(relu(bn(x)))``.

    Pre-activation (batch norm and ReLU of the input, then a 1×1 convolution with no bias),
    as the ``Downsample`` module of Lu et al.'s released code, so that weights trained there
    map one to one (``bn`` ↔ its ``BatchNorm2d``, ``conv`` ↔ its ``Conv2d``).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = conv1x1(c_in, c_out, stride)

    def forward(self, x):
        return self.conv(F.relu(self.bn(x)))


class ShakeShortcut(nn.Module):
    """Gastaldi's shortcut: relu, then two paths ``conv1×1(avgpool_stride(·))``, the second
    shifted by one pixel, concatenated, then batch norm."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"ShakeShortcut: output width must be even, got {c_out}")
        self.stride = stride
        self.conv1 = conv1x1(c_in, c_out // 2)
        self.conv2 = conv1x1(c_in, c_out // 2)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = F.relu(x)
        a = F.avg_pool2d(x, 1, self.stride)
        b = F.avg_pool2d(F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1)), 1, self.stride)
        return self.bn(torch.cat((self.conv1(a), self.conv2(b)), dim=1))
