"""The device-side loader (:class:`DeviceLoader`, airbench style): a whole split on the device
as uint8 NCHW, each epoch's batches a pure function of ``(seed, epoch)``; :func:`make_loaders`
builds the train and test loaders of an :class:`~sdenet.train.arrays.ArrayDataset`."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from .arrays import ArrayDataset
from .augment import check_resolution, crop_flip, downsample, scaled_pad

__all__ = ["DeviceLoader", "make_loaders"]


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _mix_seed(*parts: int) -> int:
    """A 63-bit torch seed from a tuple of ints (seed, epoch, ...), well spread."""
    state = np.random.SeedSequence([int(p) % (1 << 64) for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


class DeviceLoader:
    """The whole split lives on ``device`` as uint8 NCHW; each batch is cropped (pad 4, random
    window of the image's size, zero padding) and flipped (p = 1/2) on the device, then
    normalised; all randomness comes from a CPU ``torch.Generator`` seeded from ``(seed, epoch)``,
    so an epoch's batches are a pure function of ``(seed, epoch)``, whatever the device.

    ``set_epoch(e)`` picks the epoch of the next pass; a pass without a ``set_epoch`` before it
    uses the epoch after the previous pass (0, 1, 2, ... when it is never called).

    With ``world_size > 1`` rank ``r`` takes positions ``r, r + world_size, ...`` of the epoch's
    permutation.  With ``drop_last`` (the default for training) every rank gets the same number
    of samples, ``N // world_size``, and of full batches; without it the ranks together cover
    every sample once and their shares differ by at most one.  ``shuffle`` defaults to ``train``.
    """

    def __init__(
        self,
        images_uint8_nhwc: np.ndarray | Tensor,
        labels,
        *,
        batch_size: int,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        device="cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        drop_last: bool | None = None,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        augment: bool | None = None,
        shuffle: bool | None = None,
        pad: int = 4,
        flip: bool = True,
        resolution: int | None = None,
    ):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.augment = self.train if augment is None else bool(augment)
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.channels_last = bool(channels_last)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.pad, self.flip = int(pad), bool(flip)
        self.epoch = 0

        x = images_uint8_nhwc
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(
                f"DeviceLoader: images must be uint8 (N, H, W, C); got "
                f"{getattr(x, 'dtype', type(x).__name__)} "
                f"{tuple(getattr(x, 'shape', ()))}"
            )
        y = labels if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))
        y = y.reshape(-1).to(torch.int64)
        if len(y) != len(x):
            raise ValueError(f"DeviceLoader: {len(x)} images but {len(y)} labels")
        c = x.shape[-1]
        mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        if mean_t.numel() != c or std_t.numel() != c or (std_t <= 0).any():
            raise ValueError(
                f"DeviceLoader: mean/std need {c} entries and std > 0; got {list(mean)}, {list(std)}"
            )
        # the split, once, on the device; channels first for the gather in crop_flip
        self.images = x.to(self.device).permute(0, 3, 1, 2).contiguous()
        if resolution is not None:  # area-downsampled once, on the device (see downsample)
            self.images = downsample(self.images, resolution)
        self.labels = y.to(self.device)
        self._work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        self._scale = (1.0 / (255.0 * std_t)).reshape(1, c, 1, 1).to(self.device, self._work)
        self._shift = (mean_t / std_t).reshape(1, c, 1, 1).to(self.device, self._work)

        n = len(x)
        stop = (n // self.world_size) * self.world_size if self.drop_last else n
        self._positions = torch.arange(self.rank, stop, self.world_size)
        if self.drop_last and len(self._positions) < self.batch_size:
            raise ValueError(
                f"DeviceLoader: rank {self.rank} gets {len(self._positions)} of the "
                f"{n} samples, fewer than batch_size={self.batch_size}, and drop_last "
                f"leaves no batch; lower the batch size"
            )

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before dropping a last partial batch)."""
        return len(self._positions)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next pass: its permutation and augmentation follow from
        ``(seed, epoch)``."""
        self.epoch = int(epoch)

    def epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """CPU tensors for this rank and ``epoch``: sample indices in order, crop offsets
        ``(n, 2)`` and flip flags ``(n,)`` (the last two None without augmentation)."""
        n = len(self.images)
        g = torch.Generator().manual_seed(_mix_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        offs = fl = None
        if self.augment:
            offs = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
            fl = torch.rand(n, generator=g) < 0.5
            if not self.flip:
                fl = None
        pos = self._positions
        return order[pos], (offs[pos] if offs is not None else None), (fl[pos] if fl is not None else None)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        self.epoch = epoch + 1
        idx, offs, fl = self.epoch_plan(epoch)
        idx = idx.to(self.device)
        if offs is not None:
            offs = offs.to(self.device)
        if fl is not None:
            fl = fl.to(self.device)
        bs = self.batch_size
        for k in range(len(self)):
            sl = slice(k * bs, (k + 1) * bs)
            i = idx[sl]
            xb = self.images.index_select(0, i)
            if offs is not None:
                xb = crop_flip(xb, offs[sl, 0], offs[sl, 1], None if fl is None else fl[sl], self.pad)
            yield self.normalize(xb), self.labels.index_select(0, i)

    def normalize(self, x_uint8_nchw: Tensor) -> Tensor:
        """uint8 NCHW -> ``(x / 255 - mean) / std`` in ``dtype`` (computed in at least fp32)."""
        out = x_uint8_nchw.to(self._work).mul_(self._scale).sub_(self._shift)
        if out.dtype != self.dtype:
            out = out.to(self.dtype)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def __repr__(self) -> str:
        return (
            f"DeviceLoader({len(self.images)} images on {self.device}, batch_size="
            f"{self.batch_size}, batches={len(self)}, train={self.train}, augment="
            f"{self.augment}, rank={self.rank}/{self.world_size})"
        )


def make_loaders(
    ds: ArrayDataset,
    *,
    batch_size: int,
    device,
    seed: int,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    eval_batch_size: int | None = None,
    resolution: int | None = None,
) -> tuple[DeviceLoader, DeviceLoader]:
    """(train, test) loaders for ``ds``: training shuffles, augments and drops the last partial
    batch; testing does none of these and covers every test image once across the ranks.

    ``resolution``: both splits area-downsampled to that height once on the device
    (:func:`downsample`), the crop padding scaled with it (:func:`scaled_pad`); the
    normalisation keeps the full-resolution statistics (area averaging keeps the mean), so a
    network sees the same input scale at every resolution."""
    _, h, w = ds.image_shape
    if resolution is not None:
        check_resolution(resolution, h, w)
    common = dict(
        mean=ds.mean,
        std=ds.std,
        device=device,
        dtype=dtype,
        seed=seed,
        channels_last=channels_last,
        rank=rank,
        world_size=world_size,
        resolution=resolution,
    )
    train = DeviceLoader(
        ds.x_train, ds.y_train, batch_size=batch_size, train=True, pad=scaled_pad(4, h, resolution), **common
    )
    test = DeviceLoader(ds.x_test, ds.y_test, batch_size=eval_batch_size or batch_size, train=False, **common)
    return train, test
