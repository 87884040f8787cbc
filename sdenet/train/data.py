"""Datasets and device-side loaders.

Where the images come from (:func:`load_dataset`):

* ``"cifar10"`` / ``"cifar100"`` -- the official *python* release
  (``cifar-10-batches-py/`` or ``cifar-100-python/``, or the ``.tar.gz`` archive it comes in)
  found under ``root`` (default ``$SDENET_DATA`` or ``~/.cache/sdenet``).  With
  ``download=True`` the archive is fetched first: through torchvision when it imports, else
  straight from the official URL with ``urllib`` (the MD5 is checked either way).
* ``"sample"`` -- the quick-start slice of real CIFAR-10 images bundled inside the package
  (``sdenet/data/cifar10-sample.npz``; see ``scripts/make_sample.py``).  No download.
* a path -- an ``.npz`` holding ``x_train, y_train, x_test, y_test`` (uint8 NHWC images, integer
  labels; optional ``num_classes`` and ``classes``), a folder of the official python batches,
  the folder that contains such a folder, or the official ``.tar.gz`` archive itself.

Whatever the route, the result is an :class:`ArrayDataset` of validated host arrays.  Anything
wrong with a file (missing, truncated, not the expected format, wrong shape or dtype, labels out
of range, images and labels of different lengths) raises :class:`DatasetError`, a
``ValueError`` whose message starts with the offending file.

The official batch files are pickles.  They are read with an unpickler that only accepts the
few numpy globals a CIFAR batch needs, so a hostile file cannot run code.

:class:`DeviceLoader` (airbench style) keeps a whole split on the device as uint8 NCHW and
crops (4-pixel zero padding, random window) and flips each batch on the device with one
gather, then normalises with the dataset's per-channel statistics.  An epoch's batches are a
pure function of ``(seed, epoch)``: the permutation and every sample's crop offsets and flip are
drawn at the start of the epoch from a CPU ``torch.Generator`` seeded from ``(seed, epoch)``,
so they are the same on every device and for every ``world_size`` (a sample's augmentation
belongs to its position in the epoch's permutation, not to the rank that gets it).

:func:`imagefolder_loaders` is the ImageNet-style route (paper, Table 3): torchvision's
``ImageFolder`` with RandomResizedCrop(224) + flip for training and Resize(256) +
CenterCrop(224) for evaluation; it needs torchvision.

The code lives in one module per concern; this module gathers their names:
:mod:`sdenet.train.arrays` (the container and its checks), :mod:`sdenet.train.cifar` (reading
files, :func:`load_dataset`), :mod:`sdenet.train.augment` (crop, flip and resolution on the
device), :mod:`sdenet.train.loaders` (:class:`DeviceLoader`, :func:`make_loaders`) and
:mod:`sdenet.train.imagefolder` (:func:`imagefolder_loaders`).
"""

from __future__ import annotations

from .arrays import (  # noqa: F401 - re-exported
    _NPZ_KEYS,
    CIFAR10_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SAMPLE_PATH,
    ArrayDataset,
    DatasetError,
    _as_label_array,
    _check_images,
    _check_labels,
    _infer_num_classes,
    channel_stats,
)
from .augment import augment_batch, check_resolution, crop_flip, downsample, scaled_pad  # noqa: F401 - re-exported
from .cifar import (  # noqa: F401 - re-exported
    _OFFICIAL,
    _CifarUnpickler,
    _download,
    _extract,
    _load_folder,
    _load_named,
    _load_npz,
    _load_official,
    _load_official_archive,
    _load_official_folder,
    _md5,
    _Official,
    _official_in,
    _parse_batch,
    _parse_meta,
    _unpickle,
    default_root,
    load_dataset,
)
from .imagefolder import _FolderLoader, imagefolder_loaders  # noqa: F401 - re-exported
from .loaders import DeviceLoader, _mix_seed, make_loaders  # noqa: F401 - re-exported

__all__ = [
    "ArrayDataset",
    "DatasetError",
    "DeviceLoader",
    "augment_batch",
    "crop_flip",
    "channel_stats",
    "default_root",
    "load_dataset",
    "make_loaders",
    "imagefolder_loaders",
    "check_resolution",
    "downsample",
    "scaled_pad",
    "SAMPLE_PATH",
    "CIFAR10_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]
