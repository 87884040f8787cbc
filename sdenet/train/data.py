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
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import shutil
import tarfile
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, ContextManager, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

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

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "data" / "cifar10-sample.npz"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
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
            raise DatasetError(f"{where}: x_train images are {self.x_train.shape[1:]} but x_test "
                               f"images are {self.x_test.shape[1:]}; both splits must match")
        self.y_train = _check_labels(self.y_train, len(self.x_train), self.num_classes, "y_train", where)
        self.y_test = _check_labels(self.y_test, len(self.x_test), self.num_classes, "y_test", where)
        c = self.x_train.shape[-1]
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise DatasetError(f"{where}: mean/std must have {c} entries (one per channel) and "
                               f"std > 0; got mean={self.mean}, std={self.std}")
        self.classes = tuple(str(s) for s in self.classes)
        if self.classes and len(self.classes) != self.num_classes:
            raise DatasetError(f"{where}: {len(self.classes)} class names for "
                               f"{self.num_classes} classes")

    @classmethod
    def from_arrays(cls, name: str, x_train, y_train, x_test, y_test, *,
                    num_classes: int | None = None, source: str = "",
                    classes: Sequence[str] = ()) -> "ArrayDataset":
        """Validate the arrays, infer ``num_classes`` (max label + 1) if not given, compute stats."""
        where = source or name
        x_train = _check_images(x_train, "x_train", where)
        if num_classes is None:
            num_classes = len(classes) or _infer_num_classes(y_train, y_test, where)
        mean, std = channel_stats(x_train)
        return cls(name, x_train, y_train, x_test, y_test, int(num_classes), mean, std,
                   source or name, tuple(classes))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image, as a network sees it."""
        _, h, w, c = self.x_train.shape
        return (c, h, w)

    def __str__(self) -> str:
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test images "
                f"{self.x_train.shape[1:]} uint8, {self.num_classes} classes (from {self.source})")


def channel_stats(x_uint8_nhwc: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of ``x / 255``, from byte histograms.

    Works in chunks so a 50,000-image set needs only a few tens of MB of scratch memory.
    """
    x = np.asarray(x_uint8_nhwc)
    c = x.shape[-1]
    counts = np.zeros((c, 256), dtype=np.int64)
    for i in range(0, len(x), chunk):
        flat = x[i:i + chunk].reshape(-1, c)
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
        raise DatasetError(f"{where}: {what} has shape {tuple(x.shape)}; expected (N, H, W, C) "
                           f"with C = 1 or 3 (channels last, NHWC)")
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
        raise DatasetError(f"{where}: {what} has {len(y)} labels but there are {n} images; "
                           f"the lengths must match")
    if len(y):
        bad = np.flatnonzero((y < 0) | (y >= num_classes))
        if bad.size:
            i = int(bad[0])
            raise DatasetError(f"{where}: {what}[{i}] = {int(y[i])} is out of range "
                               f"[0, {num_classes}) ({bad.size} such labels)")
    return np.ascontiguousarray(y)


def _infer_num_classes(y_train, y_test, where: str) -> int:
    top = -1
    for what, y in (("y_train", y_train), ("y_test", y_test)):
        y = _as_label_array(y, what, where)
        if len(y):
            if y.min() < 0:
                i = int(np.argmin(y))
                raise DatasetError(f"{where}: {what}[{i}] = {int(y[i])} is out of range: labels "
                                   f"must be >= 0")
            top = max(top, int(y.max()))
    if top < 0:
        raise DatasetError(f"{where}: no labels")
    return top + 1


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Official:
    key: str
    folder: str
    archive: str
    url: str
    md5: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    num_classes: int


_OFFICIAL = {
    "cifar10": _Official(
        "cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
        "labels", "label_names", 10),
    "cifar100": _Official(
        "cifar100", "cifar-100-python", "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",), ("test",), "meta", "fine_labels", "fine_label_names", 100),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch: dicts, lists, bytes, ints and numpy arrays, nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"), ("codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}, which a CIFAR batch "
                                         f"file does not contain")
        if module.startswith("numpy.core"):  # numpy-1 pickles under numpy 2: skip the shim
            try:
                return super().find_class("numpy._core" + module[len("numpy.core"):], name)
            except Exception:
                pass
        return super().find_class(module, name)


def _unpickle(f: IO[bytes], where: str) -> dict:
    try:
        obj = _CifarUnpickler(f, encoding="bytes").load()
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{where}: cannot read it as a CIFAR python batch file (truncated or "
                           f"corrupt?): {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: holds a {type(obj).__name__}, not the dict of a CIFAR "
                           f"python batch file")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _parse_batch(d: dict, off: _Official, where: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in d:
        raise DatasetError(f"{where}: no 'data' entry, so not a CIFAR python batch file "
                           f"(entries: {sorted(d)})")
    if off.label_key not in d:
        other = next(o for o in _OFFICIAL.values() if o is not off)
        hint = (f"; it looks like a {other.key} file" if other.label_key in d else "")
        raise DatasetError(f"{where}: no '{off.label_key}' entry, which a {off.key} batch has"
                           f"{hint} (entries: {sorted(d)})")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = (f"{data.dtype} {tuple(data.shape)}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DatasetError(f"{where}: 'data' is {desc}; expected uint8 (N, 3072) rows of "
                           f"32x32 RGB planes")
    if len(data) == 0:
        raise DatasetError(f"{where}: 'data' holds no images")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y = _check_labels(d[off.label_key], len(x), off.num_classes, f"'{off.label_key}'", where)
    return x, y


def _parse_meta(d: dict, off: _Official, where: str) -> tuple[str, ...]:
    names = d.get(off.names_key)
    if names is None:
        raise DatasetError(f"{where}: no '{off.names_key}' entry, which the {off.key} meta file "
                           f"has (entries: {sorted(d)})")
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    if len(names) != off.num_classes:
        raise DatasetError(f"{where}: {len(names)} class names; {off.key} has {off.num_classes}")
    return names


def _load_official(off: _Official, opener: Callable[[str], ContextManager[IO[bytes]]],
                   describe: Callable[[str], str], exists: Callable[[str], bool],
                   name: str, source: str) -> ArrayDataset:
    """Read the official batches through ``opener(member)``; ``describe(member)`` names it."""
    def read(member: str) -> dict:
        if not exists(member):
            raise DatasetError(f"{describe(member)}: file is missing (a {off.key} python release "
                               f"has {', '.join(off.train + off.test)} and {off.meta})")
        with opener(member) as f:
            return _unpickle(f, describe(member))

    parts = {}
    for split, members in (("train", off.train), ("test", off.test)):
        xs, ys = [], []
        for m in members:
            x, y = _parse_batch(read(m), off, describe(m))
            xs.append(x)
            ys.append(y)
        parts[split] = (np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys))
    classes: tuple[str, ...] = ()
    if exists(off.meta):  # optional: only the class names come from it
        classes = _parse_meta(read(off.meta), off, describe(off.meta))
    return ArrayDataset.from_arrays(name, *parts["train"], *parts["test"],
                                    num_classes=off.num_classes, source=source, classes=classes)


def _load_official_folder(folder: Path, off: _Official, name: str) -> ArrayDataset:
    @contextmanager
    def opener(member):
        with open(folder / member, "rb") as f:
            yield f
    files = f"{off.train[0]}..{off.train[-1][-1]}" if len(off.train) > 1 else off.train[0]
    return _load_official(off, opener, lambda m: str(folder / m), lambda m: (folder / m).is_file(),
                          name, f"official {off.key} python batches in {folder} "
                                f"({files}, {', '.join(off.test)})")


def _load_official_archive(path: Path, name: str) -> ArrayDataset:
    try:
        tar = tarfile.open(path, "r:*")
        names = tar.getnames()
    except Exception as e:
        raise DatasetError(f"{path}: cannot read it as a tar archive (truncated or corrupt?): "
                           f"{type(e).__name__}: {e}") from e
    with tar:
        for off in _OFFICIAL.values():
            if any(n.startswith(off.folder + "/") for n in names):
                break
        else:
            raise DatasetError(f"{path}: holds neither cifar-10-batches-py/ nor cifar-100-python/; "
                               f"not an official CIFAR python archive")
        members = set(names)

        @contextmanager
        def opener(member):
            try:
                f = tar.extractfile(f"{off.folder}/{member}")
                data = f.read() if f is not None else None
            except Exception as e:
                raise DatasetError(f"{path}:{off.folder}/{member}: cannot read it from the "
                                   f"archive (truncated?): {type(e).__name__}: {e}") from e
            if data is None:
                raise DatasetError(f"{path}:{off.folder}/{member}: not a regular file")
            yield io.BytesIO(data)

        return _load_official(off, opener, lambda m: f"{path}:{off.folder}/{m}",
                              lambda m: f"{off.folder}/{m}" in members, name,
                              f"official {off.key} python archive {path}")


def _load_npz(path: Path, name: str) -> ArrayDataset:
    where = str(path)
    if not path.is_file():
        raise DatasetError(f"{where}: file is missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            missing = [k for k in _NPZ_KEYS if k not in files]
            if missing:
                raise DatasetError(f"{where}: lacks {', '.join(missing)}; an .npz dataset holds "
                                   f"x_train, y_train, x_test, y_test (found: {', '.join(files)})")
            arrays = {k: z[k] for k in _NPZ_KEYS}
            num_classes = int(z["num_classes"]) if "num_classes" in files else None
            classes = tuple(str(s) for s in z["classes"]) if "classes" in files else ()
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{where}: cannot read it as an .npz of arrays (truncated or "
                           f"corrupt?): {type(e).__name__}: {e}") from e
    return ArrayDataset.from_arrays(name, arrays["x_train"], arrays["y_train"], arrays["x_test"],
                                    arrays["y_test"], num_classes=num_classes, source=where,
                                    classes=classes)


def _official_in(folder: Path) -> _Official | None:
    """Which official release's files ``folder`` holds directly, if any."""
    for off in _OFFICIAL.values():
        if any((folder / m).is_file() for m in off.train + off.test + (off.meta,)):
            return off
    return None


def _load_folder(folder: Path, name: str) -> ArrayDataset:
    off = _official_in(folder)
    if off is not None:
        return _load_official_folder(folder, off, name)
    found = [o for o in _OFFICIAL.values() if (folder / o.folder).is_dir()]
    if len(found) > 1:
        raise DatasetError(f"{folder}: holds both {found[0].folder}/ and {found[1].folder}/; "
                           f"give the one you mean")
    if found:
        return _load_official_folder(folder / found[0].folder, found[0], name)
    archives = [o for o in _OFFICIAL.values() if (folder / o.archive).is_file()]
    if len(archives) == 1:
        return _load_official_archive(folder / archives[0].archive, name)
    raise DatasetError(f"{folder}: no CIFAR data found: expected the official python batches "
                       f"(data_batch_1..5, test_batch, batches.meta or train, test, meta), a "
                       f"cifar-10-batches-py/ or cifar-100-python/ folder, or the official "
                       f".tar.gz archive in it")


# --------------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------------


def default_root() -> Path:
    """Where ``"cifar10"``/``"cifar100"`` are looked for: ``$SDENET_DATA`` or ``~/.cache/sdenet``."""
    env = os.environ.get("SDENET_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/sdenet").expanduser()


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _extract(archive: Path, off: _Official, root: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers()
                       if (m.name == off.folder or m.name.startswith(off.folder + "/"))
                       and (m.isfile() or m.isdir())]
            if not members:
                raise DatasetError(f"{archive}: holds no {off.folder}/; not the official archive")
            try:
                tar.extractall(root, members=members, filter="data")
            except TypeError:  # Python without extraction filters; members are vetted above
                tar.extractall(root, members=[m for m in members if ".." not in m.name.split("/")])
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{archive}: cannot extract it (truncated or corrupt?): "
                           f"{type(e).__name__}: {e}") from e


def _download(off: _Official, root: Path) -> str:
    """Fetch and extract the official archive into ``root``; returns how it was done."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import torchvision  # noqa: F401
        tv = True
    except Exception:
        tv = False
    if tv:
        try:
            from torchvision import datasets
            cls = datasets.CIFAR10 if off.key == "cifar10" else datasets.CIFAR100
            for train in (True, False):
                cls(str(root), train=train, download=True)
            return "torchvision"
        except Exception as e:
            raise DatasetError(f"{root / off.archive}: torchvision could not download "
                               f"{off.url}: {type(e).__name__}: {e}") from e
    archive = root / off.archive
    if not (archive.is_file() and _md5(archive) == off.md5):
        part = archive.with_name(archive.name + ".part")
        try:
            with urllib.request.urlopen(off.url, timeout=60) as r, open(part, "wb") as f:
                shutil.copyfileobj(r, f)
        except Exception as e:
            part.unlink(missing_ok=True)
            raise DatasetError(f"{archive}: could not download {off.url}: {type(e).__name__}: "
                               f"{e}") from e
        digest = _md5(part)
        if digest != off.md5:
            part.unlink(missing_ok=True)
            raise DatasetError(f"{archive}: download of {off.url} has MD5 {digest}, expected "
                               f"{off.md5} (truncated?)")
        part.replace(archive)
    _extract(archive, off, root)
    return "urllib"


def load_dataset(spec: str, root: str | os.PathLike | None = None,
                 download: bool = False) -> ArrayDataset:
    """Load a dataset into host memory as an :class:`ArrayDataset`.

    ``spec`` is ``"cifar10"``, ``"cifar100"``, ``"sample"`` (the bundled quick-start npz), or a
    path: an ``.npz``, a folder of the official python batches (or one containing
    ``cifar-10-batches-py/`` / ``cifar-100-python/``), or the official ``.tar.gz`` archive.
    A named spec wins over a file of the same name in the working directory (write
    ``./cifar10`` for the file).  ``root`` and ``download`` only matter for the named CIFAR
    specs.  Every failure is a :class:`DatasetError` (a ``ValueError``) naming the file.
    """
    key = str(spec).strip()
    named = key.lower().replace("-", "").replace("_", "")
    if named in ("sample", "cifar10sample"):
        ds = _load_npz(SAMPLE_PATH, "sample")
        if not ds.classes and ds.num_classes == 10:
            ds.classes = CIFAR10_CLASSES
        ds.source = f"bundled CIFAR-10 sample {SAMPLE_PATH}"
        return ds
    if named in _OFFICIAL:
        return _load_named(_OFFICIAL[named], Path(root).expanduser() if root else default_root(),
                           download)
    path = Path(key).expanduser()
    if path.is_dir():
        return _load_folder(path, key)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _load_npz(path, key)
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return _load_official_archive(path, key)
        return _load_npz(path, key)  # try it; the error will say what is wrong
    if path.suffix.lower() == ".npz":
        raise DatasetError(f"{path}: file is missing")
    raise DatasetError(f"{path}: no such file or folder; a dataset is 'cifar10', 'cifar100', "
                       f"'sample', an .npz with x_train, y_train, x_test, y_test, or a folder "
                       f"of the official CIFAR python batches")


def _load_named(off: _Official, root: Path, download: bool) -> ArrayDataset:
    folder = root / off.folder
    if _official_in(folder) is off:
        return _load_official_folder(folder, off, off.key)
    archive = root / off.archive
    if archive.is_file():
        _extract(archive, off, root)
        return _load_official_folder(folder, off, off.key)
    how = None
    if download:
        how = _download(off, root)  # raises DatasetError naming what failed
        if _official_in(folder) is off:
            ds = _load_official_folder(folder, off, off.key)
            ds.source += f" (downloaded with {how})"
            return ds
    try:
        import torchvision  # noqa: F401
        tv = "torchvision imports, so download=True (--download) fetches it"
    except Exception:
        tv = "download=True (--download) fetches it from the official URL"
    raise DatasetError(
        f"{folder}: {off.key} not found (looked for {folder}/ and {archive}). {tv} when the "
        f"network allows. Otherwise put the official python release there (or set "
        f"$SDENET_DATA / root to the folder holding it), or pass the dataset as a path: "
        f"--dataset PATH to the {off.folder} folder, its .tar.gz, or an .npz with "
        f"x_train, y_train, x_test, y_test (uint8 NHWC, integer labels); "
        f"--dataset sample trains on the bundled CIFAR-10 sample.")


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
    rows = dy[:, None] + torch.arange(h, device=dev)                   # (B, H)
    cols = dx[:, None] + cols                                          # (B, W)
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w)
    out = torch.gather(xp.reshape(b, c, hp * wp), 2, index.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def augment_batch(x_uint8_nchw: Tensor, generator: torch.Generator, pad: int = 4,
                  flip: bool = True) -> Tensor:
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
        raise ValueError(f"resolution must be a positive integer (the new image height), got "
                         f"{resolution!r}")
    r = int(resolution)
    if r > height:
        raise ValueError(f"resolution {r} is larger than the images ({height}x{width}); area "
                         f"downsampling only goes down")
    if height % r or width % (height // r):
        ok = [d for d in range(1, height + 1) if height % d == 0 and width % (height // d) == 0]
        raise ValueError(f"resolution {r} does not divide the images' {height}x{width} into whole "
                         f"pixels; choose one of {', '.join(map(str, ok))}")
    return height // r


def downsample(x_uint8_nchw: Tensor, resolution: int) -> Tensor:
    """Area downsampling of a uint8 ``(N, C, H, W)`` batch to height ``resolution`` on its own
    device: each new pixel is the mean of an ``s × s`` block (``s = H / resolution``), rounded
    back to uint8 (an error of at most 1/510 of the range). ``resolution == H`` returns ``x``."""
    if not isinstance(x_uint8_nchw, Tensor) or x_uint8_nchw.ndim != 4:
        raise ValueError(f"downsample: expected a (N, C, H, W) tensor, got "
                         f"{tuple(getattr(x_uint8_nchw, 'shape', ()))}")
    s = check_resolution(resolution, x_uint8_nchw.shape[2], x_uint8_nchw.shape[3])
    if s == 1:
        return x_uint8_nchw
    out = torch.empty((*x_uint8_nchw.shape[:2], x_uint8_nchw.shape[2] // s,
                       x_uint8_nchw.shape[3] // s), dtype=torch.uint8, device=x_uint8_nchw.device)
    step = 4096  # in chunks: the float copy of a whole CIFAR split would be 600 MB
    for i in range(0, len(x_uint8_nchw), step):
        xb = x_uint8_nchw[i:i + step].to(torch.float32)
        out[i:i + step] = torch.nn.functional.avg_pool2d(xb, s).round_().clamp_(0, 255).to(torch.uint8)
    return out


def scaled_pad(pad: int, height: int, resolution: int | None) -> int:
    """The crop padding for images downsampled from ``height`` to ``resolution``: ``pad`` scaled
    by ``resolution / height`` and rounded half up (4 pixels at 32 → 2 at 16, 1 at 8)."""
    if resolution is None:
        return int(pad)
    return int(math.floor(pad * resolution / height + 0.5))


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

    def __init__(self, images_uint8_nhwc: np.ndarray | Tensor, labels, *, batch_size: int,
                 train: bool, mean: Sequence[float], std: Sequence[float], device="cpu",
                 dtype: torch.dtype = torch.float32, seed: int = 0, drop_last: bool | None = None,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1,
                 augment: bool | None = None, shuffle: bool | None = None, pad: int = 4,
                 flip: bool = True, resolution: int | None = None):
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
            raise ValueError(f"DeviceLoader: images must be uint8 (N, H, W, C); got "
                             f"{getattr(x, 'dtype', type(x).__name__)} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        y = labels if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))
        y = y.reshape(-1).to(torch.int64)
        if len(y) != len(x):
            raise ValueError(f"DeviceLoader: {len(x)} images but {len(y)} labels")
        c = x.shape[-1]
        mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        if mean_t.numel() != c or std_t.numel() != c or (std_t <= 0).any():
            raise ValueError(f"DeviceLoader: mean/std need {c} entries and std > 0; got "
                             f"{list(mean)}, {list(std)}")
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
            raise ValueError(f"DeviceLoader: rank {self.rank} gets {len(self._positions)} of the "
                             f"{n} samples, fewer than batch_size={self.batch_size}, and drop_last "
                             f"leaves no batch; lower the batch size")

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
        return order[pos], (offs[pos] if offs is not None else None), \
            (fl[pos] if fl is not None else None)

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
                xb = crop_flip(xb, offs[sl, 0], offs[sl, 1], None if fl is None else fl[sl],
                               self.pad)
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
        return (f"DeviceLoader({len(self.images)} images on {self.device}, batch_size="
                f"{self.batch_size}, batches={len(self)}, train={self.train}, augment="
                f"{self.augment}, rank={self.rank}/{self.world_size})")


def make_loaders(ds: ArrayDataset, *, batch_size: int, device, seed: int,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False, rank: int = 0,
                 world_size: int = 1, eval_batch_size: int | None = None,
                 resolution: int | None = None) -> tuple[DeviceLoader, DeviceLoader]:
    """(train, test) loaders for ``ds``: training shuffles, augments and drops the last partial
    batch; testing does none of these and covers every test image once across the ranks.

    ``resolution``: both splits area-downsampled to that height once on the device
    (:func:`downsample`), the crop padding scaled with it (:func:`scaled_pad`); the
    normalisation keeps the full-resolution statistics (area averaging keeps the mean), so a
    network sees the same input scale at every resolution."""
    _, h, w = ds.image_shape
    if resolution is not None:
        check_resolution(resolution, h, w)
    common = dict(mean=ds.mean, std=ds.std, device=device, dtype=dtype, seed=seed,
                  channels_last=channels_last, rank=rank, world_size=world_size,
                  resolution=resolution)
    train = DeviceLoader(ds.x_train, ds.y_train, batch_size=batch_size, train=True,
                         pad=scaled_pad(4, h, resolution), **common)
    test = DeviceLoader(ds.x_test, ds.y_test, batch_size=eval_batch_size or batch_size,
                        train=False, **common)
    return train, test


# --------------------------------------------------------------------------------------------
# ImageNet-style folders (torchvision)
# --------------------------------------------------------------------------------------------


class _FolderLoader:
    """A torch DataLoader over an ImageFolder with the DeviceLoader interface
    (``set_epoch``, ``len``, iteration yielding normalised batches on ``device``)."""

    def __init__(self, dataset, *, batch_size: int, train: bool, workers: int, device,
                 dtype: torch.dtype, channels_last: bool, seed: int, rank: int, world_size: int):
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
        if train:
            self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                              shuffle=True, seed=seed, drop_last=True)
        else:
            self.sampler = list(range(rank, len(dataset), world_size))
        self._gen = torch.Generator()
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler,
                                 num_workers=workers, pin_memory=self.device.type == "cuda",
                                 drop_last=train, generator=self._gen)

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


def imagefolder_loaders(root, *, batch_size: int, workers: int = 4, device="cpu",
                        dtype: torch.dtype = torch.float32, channels_last: bool = False,
                        seed: int = 0, rank: int = 0, world_size: int = 1,
                        eval_batch_size: int | None = None, image_size: int = 224,
                        resize_size: int = 256, mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD, train_dir: str = "train",
                        val_dir: str = "val"):
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
        raise ValueError(f"ImageNet-style folders need torchvision, which does not import here "
                         f"({type(e).__name__}: {e}); install the 'vision' extra "
                         f"(pip install torchvision matching your torch)") from e
    root = Path(root).expanduser()
    norm = transforms.Normalize(list(mean), list(std))
    tf = {
        train_dir: transforms.Compose([transforms.RandomResizedCrop(image_size),
                                       transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                       norm]),
        val_dir: transforms.Compose([transforms.Resize(resize_size),
                                     transforms.CenterCrop(image_size), transforms.ToTensor(),
                                     norm]),
    }
    sets = {}
    for sub in (train_dir, val_dir):
        folder = root / sub
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder is missing; an image-folder dataset has "
                               f"{train_dir}/ and {val_dir}/, each with one folder per class")
        try:
            sets[sub] = datasets.ImageFolder(str(folder), transform=tf[sub])
        except Exception as e:
            raise DatasetError(f"{folder}: cannot read it as class folders of images: "
                               f"{type(e).__name__}: {e}") from e
    if sets[train_dir].classes != sets[val_dir].classes:
        raise DatasetError(f"{root / val_dir}: its class folders differ from {root / train_dir}'s")
    common = dict(workers=workers, device=device, dtype=dtype, channels_last=channels_last,
                  seed=seed, rank=rank, world_size=world_size)
    train = _FolderLoader(sets[train_dir], batch_size=batch_size, train=True, **common)
    val = _FolderLoader(sets[val_dir], batch_size=eval_batch_size or batch_size, train=False,
                        **common)
    return train, val
