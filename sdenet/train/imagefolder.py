"""ImageNet-style folders (paper, Table 3): torchvision's ``ImageFolder`` with
RandomResizedCrop(224) + flip for training and Resize(256) + CenterCrop(224) for evaluation
(:func:`imagefolder_loaders`; needs torchvision)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .arrays import IMAGENET_MEAN, IMAGENET_STD, DatasetError
from .loaders import _mix_seed

__all__ = ["imagefolder_loaders"]


# --------------------------------------------------------------------------------------------
# ImageNet-style folders (torchvision)
# --------------------------------------------------------------------------------------------


class _FolderLoader:
    """A torch DataLoader over an ImageFolder with the DeviceLoader interface
    (``set_epoch``, ``len``, iteration yielding normalised batches on ``device``)."""

    def __init__(
        self,
        dataset,
        *,
        batch_size: int,
        train: bool,
        workers: int,
        device,
        dtype: torch.dtype,
        channels_last: bool,
        seed: int,
        rank: int,
        world_size: int,
    ):
        from torch.utils.data import DataLoader, DistributedSampler

        self.dataset = dataset
        self.classes = tuple(getattr(dataset, "classes", ()))
        self.num_classes = len(self.classes)
        self.device = torch.device(device)
        self.dtype, self.channels_last = dtype, bool(channels_last)
        self.train, self.seed, self.rank = bool(train), int(seed), int(rank)
        self.batch_size = int(batch_size)
        self.workers = int(workers)
        self.epoch = 0
        self.sampler: Any  # a DistributedSampler (train) or this rank's indices (test)
        if train:
            self.sampler = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
            )
        else:
            self.sampler = list(range(rank, len(dataset), world_size))
        self._gen = torch.Generator()
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=train,
            generator=self._gen,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        self.epoch = epoch + 1
        if self.train:
            self.sampler.set_epoch(epoch)
        # the random crops follow from (seed, epoch, rank): through the workers' seeds, or, with
        # no workers, through a private copy of the global RNG state swapped in per batch (so the
        # training step's own use of the global RNG is untouched)
        mixed = _mix_seed(self.seed, epoch, self.rank)
        self._gen.manual_seed(mixed)
        it = iter(self.loader)
        state = torch.Generator().manual_seed(mixed).get_state() if self.workers == 0 else None
        while True:
            if state is not None:
                saved = torch.get_rng_state()
                torch.set_rng_state(state)
            try:
                x, y = next(it)
            except StopIteration:
                return
            finally:
                if state is not None:
                    state = torch.get_rng_state()
                    torch.set_rng_state(saved)
            x = x.to(self.device, non_blocking=True).to(self.dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


def imagefolder_loaders(
    root,
    *,
    batch_size: int,
    workers: int = 4,
    device="cpu",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    eval_batch_size: int | None = None,
    image_size: int = 224,
    resize_size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    train_dir: str = "train",
    val_dir: str = "val",
):
    """(train, val) loaders over ``root/train`` and ``root/val`` (one sub-folder per class),
    with the ImageNet scale augmentation: RandomResizedCrop(``image_size``) + horizontal flip
    for training, Resize(``resize_size``) + CenterCrop(``image_size``) for evaluation, both
    normalised with ``mean``/``std`` (ImageNet's by default).

    The loaders have the :class:`DeviceLoader` interface (``set_epoch``, ``len``, iteration
    yielding ``(x, y)`` on ``device``) plus ``classes`` and ``num_classes``.  Needs torchvision;
    raises ``ValueError`` when it does not import or a folder is missing.
    """
    try:
        from torchvision import datasets, transforms
    except Exception as e:
        raise ValueError(
            f"ImageNet-style folders need torchvision, which does not import here "
            f"({type(e).__name__}: {e}); install the 'vision' extra "
            f"(pip install torchvision matching your torch)"
        ) from e
    root = Path(root).expanduser()
    norm = transforms.Normalize(list(mean), list(std))
    tf = {
        train_dir: transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                norm,
            ]
        ),
        val_dir: transforms.Compose(
            [transforms.Resize(resize_size), transforms.CenterCrop(image_size), transforms.ToTensor(), norm]
        ),
    }
    sets = {}
    for sub in (train_dir, val_dir):
        folder = root / sub
        if not folder.is_dir():
            raise DatasetError(
                f"{folder}: folder is missing; an image-folder dataset has "
                f"{train_dir}/ and {val_dir}/, each with one folder per class"
            )
        try:
            sets[sub] = datasets.ImageFolder(str(folder), transform=tf[sub])
        except Exception as e:
            raise DatasetError(
                f"{folder}: cannot read it as class folders of images: {type(e).__name__}: {e}"
            ) from e
    if sets[train_dir].classes != sets[val_dir].classes:
        raise DatasetError(f"{root / val_dir}: its class folders differ from {root / train_dir}'s")
    common = {
        "workers": workers,
        "device": device,
        "dtype": dtype,
        "channels_last": channels_last,
        "seed": seed,
        "rank": rank,
        "world_size": world_size,
    }
    train = _FolderLoader(sets[train_dir], batch_size=batch_size, train=True, **common)
    val = _FolderLoader(sets[val_dir], batch_size=eval_batch_size or batch_size, train=False, **common)
    return train, val
