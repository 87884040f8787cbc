"""The dataset container of CIFAR-style data: :class:`ArrayDataset` of validated host arrays
(uint8 NHWC images, integer labels), :class:`DatasetError` and the checks every route applies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "ArrayDataset",
    "DatasetError",
    "channel_stats",
    "SAMPLE_PATH",
    "CIFAR10_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]


SAMPLE_PATH = Path(__file__).resolve().parent.parent / "data" / "cifar10-sample.npz"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or holds the wrong thing; the message names it."""


# --------------------------------------------------------------------------------------------
# The dataset container
# --------------------------------------------------------------------------------------------


@dataclass
class ArrayDataset:
    """A train/test split as host numpy arrays, validated on construction.

    Images are uint8 ``(N, H, W, C)``; labels int64 ``(N,)`` in ``[0, num_classes)``; ``mean`` and
    ``std`` are the per-channel statistics of ``x_train / 255`` (population std).
    Build one from bare arrays with :meth:`from_arrays`, which computes the statistics.
    """

    name: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = self.source or self.name
        self.num_classes = int(self.num_classes)
        if self.num_classes < 1:
            raise DatasetError(f"{where}: num_classes must be >= 1, got {self.num_classes}")
        self.x_train = _check_images(self.x_train, "x_train", where)
        self.x_test = _check_images(self.x_test, "x_test", where)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(
                f"{where}: x_train images are {self.x_train.shape[1:]} but x_test "
                f"images are {self.x_test.shape[1:]}; both splits must match"
            )
        self.y_train = _check_labels(self.y_train, len(self.x_train), self.num_classes, "y_train", where)
        self.y_test = _check_labels(self.y_test, len(self.x_test), self.num_classes, "y_test", where)
        c = self.x_train.shape[-1]
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise DatasetError(
                f"{where}: mean/std must have {c} entries (one per channel) and "
                f"std > 0; got mean={self.mean}, std={self.std}"
            )
        self.classes = tuple(str(s) for s in self.classes)
        if self.classes and len(self.classes) != self.num_classes:
            raise DatasetError(f"{where}: {len(self.classes)} class names for {self.num_classes} classes")

    @classmethod
    def from_arrays(
        cls,
        name: str,
        x_train,
        y_train,
        x_test,
        y_test,
        *,
        num_classes: int | None = None,
        source: str = "",
        classes: Sequence[str] = (),
    ) -> ArrayDataset:
        """Validate the arrays, infer ``num_classes`` (max label + 1) if not given, compute stats."""
        where = source or name
        x_train = _check_images(x_train, "x_train", where)
        if num_classes is None:
            num_classes = len(classes) or _infer_num_classes(y_train, y_test, where)
        mean, std = channel_stats(x_train)
        return cls(
            name,
            x_train,
            y_train,
            x_test,
            y_test,
            int(num_classes),
            mean,
            std,
            source or name,
            tuple(classes),
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image, as a network sees it."""
        _, h, w, c = self.x_train.shape
        return (c, h, w)

    def __str__(self) -> str:
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test images "
            f"{self.x_train.shape[1:]} uint8, {self.num_classes} classes (from {self.source})"
        )


def channel_stats(x_uint8_nhwc: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of ``x / 255``, from byte histograms.

    Works in chunks so a 50,000-image set needs only a few tens of MB of scratch memory.
    """
    x = np.asarray(x_uint8_nhwc)
    c = x.shape[-1]
    counts = np.zeros((c, 256), dtype=np.int64)
    for i in range(0, len(x), chunk):
        flat = x[i : i + chunk].reshape(-1, c)
        for k in range(c):
            counts[k] += np.bincount(flat[:, k], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum(axis=1)
    if (n == 0).any():
        raise DatasetError("channel_stats: no pixels")
    mean = (counts * values).sum(axis=1) / n
    var = (counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
    std = np.sqrt(var)
    std[std == 0] = 1.0  # a constant channel: do not divide by zero
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _check_images(x, what: str, where: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise DatasetError(f"{where}: {what} is a {type(x).__name__}, expected a numpy array")
    if x.dtype != np.uint8:
        raise DatasetError(f"{where}: {what} has dtype {x.dtype}; expected uint8 pixel values 0..255")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DatasetError(
            f"{where}: {what} has shape {tuple(x.shape)}; expected (N, H, W, C) "
            f"with C = 1 or 3 (channels last, NHWC)"
        )
    if x.shape[0] == 0:
        raise DatasetError(f"{where}: {what} holds no images")
    return x


def _as_label_array(y, what: str, where: str) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    try:
        y = np.asarray(y)
    except Exception as e:  # ragged lists and the like
        raise DatasetError(f"{where}: {what} cannot be read as an array of labels: {e}") from e
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{where}: {what} has shape {tuple(y.shape)}; expected (N,) labels")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        if y.size and np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        elif y.size:
            raise DatasetError(f"{where}: {what} has dtype {y.dtype}; expected integer class labels")
    return y.astype(np.int64, copy=False)


def _check_labels(y, n: int, num_classes: int, what: str, where: str) -> np.ndarray:
    y = _as_label_array(y, what, where)
    if len(y) != n:
        raise DatasetError(
            f"{where}: {what} has {len(y)} labels but there are {n} images; the lengths must match"
        )
    if len(y):
        bad = np.flatnonzero((y < 0) | (y >= num_classes))
        if bad.size:
            i = int(bad[0])
            raise DatasetError(
                f"{where}: {what}[{i}] = {int(y[i])} is out of range "
                f"[0, {num_classes}) ({bad.size} such labels)"
            )
    return np.ascontiguousarray(y)


def _infer_num_classes(y_train, y_test, where: str) -> int:
    top = -1
    for what, y in (("y_train", y_train), ("y_test", y_test)):
        y = _as_label_array(y, what, where)
        if len(y):
            if y.min() < 0:
                i = int(np.argmin(y))
                raise DatasetError(f"{where}: {what}[{i}] = {int(y[i])} is out of range: labels must be >= 0")
            top = max(top, int(y.max()))
    if top < 0:
        raise DatasetError(f"{where}: no labels")
    return top + 1
