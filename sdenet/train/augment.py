"""Augmentation and resolution on the device: crop (zero padding, random window) and flip of a
batch with one gather (:func:`crop_flip`, :func:`augment_batch`), and area downsampling of
images to a coarser resolution (:func:`downsample`, :func:`check_resolution`,
:func:`scaled_pad`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["crop_flip", "augment_batch", "check_resolution", "downsample", "scaled_pad"]


# --------------------------------------------------------------------------------------------
# Augmentation on the device
# --------------------------------------------------------------------------------------------


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor | None, pad: int = 4) -> Tensor:
    """Crop and flip a batch with given per-sample parameters, in one gather.

    ``x`` is ``(B, C, H, W)`` of any dtype; ``dy, dx`` are integer ``(B,)`` window offsets in
    ``[0, 2 * pad]`` into ``x`` zero-padded by ``pad`` on every side; ``flip`` a bool ``(B,)``
    (or None).  The result is ``(B, C, H, W)`` with
    ``out[b, :, i, j] = padded[b, :, dy[b] + i, dx[b] + (W - 1 - j if flip[b] else j)]``,
    i.e. the window is cut out, then mirrored left-right.
    """
    if x.ndim != 4:
        raise ValueError(f"crop_flip: expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if pad < 0:
        raise ValueError(f"crop_flip: pad must be >= 0, got {pad}")
    dev = x.device
    dy = dy.to(dev, torch.int64)
    dx = dx.to(dev, torch.int64)
    hp, wp = h + 2 * pad, w + 2 * pad
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad)) if pad else x
    cols = torch.arange(w, device=dev)
    cols = cols.expand(b, w)
    if flip is not None:
        cols = torch.where(flip.to(dev, torch.bool)[:, None], (w - 1) - cols, cols)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols = dx[:, None] + cols  # (B, W)
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w)
    out = torch.gather(xp.reshape(b, c, hp * wp), 2, index.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def augment_batch(
    x_uint8_nchw: Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True
) -> Tensor:
    """Random crop (zero padding ``pad``, window of the image's size) and horizontal flip
    (p = 1/2) of each image of a ``(B, C, H, W)`` batch, vectorised, on the batch's device.

    Draws, in this order and on ``generator``'s device, offsets ``randint(0, 2*pad+1, (B, 2))``
    (rows then columns) and, if ``flip``, ``rand(B) < 0.5``; see :func:`crop_flip`.
    """
    b = x_uint8_nchw.shape[0]
    gdev = generator.device
    offs = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=gdev)
    fl = (torch.rand(b, generator=generator, device=gdev) < 0.5) if flip else None
    return crop_flip(x_uint8_nchw, offs[:, 0], offs[:, 1], fl, pad)


# --------------------------------------------------------------------------------------------
# Resolution (Haber et al.: train on coarser images, move the network across resolutions)
# --------------------------------------------------------------------------------------------


def check_resolution(resolution, height: int, width: int) -> int:
    """The integer area-downsampling factor ``s = height / resolution`` for images of
    ``height × width``; ValueError unless ``resolution`` is a positive integer that divides
    ``height`` with ``s`` dividing ``width`` too (``resolution`` is the new height)."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer (the new image height), got {resolution!r}")
    r = int(resolution)
    if r > height:
        raise ValueError(
            f"resolution {r} is larger than the images ({height}x{width}); area downsampling only goes down"
        )
    if height % r or width % (height // r):
        ok = [d for d in range(1, height + 1) if height % d == 0 and width % (height // d) == 0]
        raise ValueError(
            f"resolution {r} does not divide the images' {height}x{width} into whole "
            f"pixels; choose one of {', '.join(map(str, ok))}"
        )
    return height // r


def downsample(x_uint8_nchw: Tensor, resolution: int) -> Tensor:
    """Area downsampling of a uint8 ``(N, C, H, W)`` batch to height ``resolution`` on its own
    device: each new pixel is the mean of an ``s × s`` block (``s = H / resolution``), rounded
    back to uint8 (an error of at most 1/510 of the range). ``resolution == H`` returns ``x``."""
    if not isinstance(x_uint8_nchw, Tensor) or x_uint8_nchw.ndim != 4:
        raise ValueError(
            f"downsample: expected a (N, C, H, W) tensor, got {tuple(getattr(x_uint8_nchw, 'shape', ()))}"
        )
    s = check_resolution(resolution, x_uint8_nchw.shape[2], x_uint8_nchw.shape[3])
    if s == 1:
        return x_uint8_nchw
    out = torch.empty(
        (*x_uint8_nchw.shape[:2], x_uint8_nchw.shape[2] // s, x_uint8_nchw.shape[3] // s),
        dtype=torch.uint8,
        device=x_uint8_nchw.device,
    )
    step = 4096  # in chunks: the float copy of a whole CIFAR split would be 600 MB
    for i in range(0, len(x_uint8_nchw), step):
        xb = x_uint8_nchw[i : i + step].to(torch.float32)
        out[i : i + step] = torch.nn.functional.avg_pool2d(xb, s).round_().clamp_(0, 255).to(torch.uint8)
    return out


def scaled_pad(pad: int, height: int, resolution: int | None) -> int:
    """The crop padding for images downsampled from ``height`` to ``resolution``: ``pad`` scaled
    by ``resolution / height`` and rounded half up (4 pixels at 32 → 2 at 16, 1 at 8)."""
    if resolution is None:
        return int(pad)
    return int(math.floor(pad * resolution / height + 0.5))
