"""Reading CIFAR-style data (:func:`load_dataset`): the official python batches (a folder or
the ``.tar.gz`` archive, downloaded on request with its MD5 checked), an ``.npz`` file, or the
bundled sample. The batch files are pickles, read with an unpickler that accepts only the
few numpy globals a CIFAR batch needs."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from .arrays import _NPZ_KEYS, CIFAR10_CLASSES, SAMPLE_PATH, ArrayDataset, DatasetError, _check_labels

__all__ = ["load_dataset", "default_root"]


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
        "cifar10",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        10,
    ),
    "cifar100": _Official(
        "cifar100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",),
        ("test",),
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
    ),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch: dicts, lists, bytes, ints and numpy arrays, nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}, which a CIFAR batch file does not contain"
            )
        if module.startswith("numpy.core"):  # numpy-1 pickles under numpy 2: skip the shim
            try:
                return super().find_class("numpy._core" + module[len("numpy.core") :], name)
            except Exception:
                pass
        return super().find_class(module, name)


def _unpickle(f: IO[bytes], where: str) -> dict:
    try:
        obj = _CifarUnpickler(f, encoding="bytes").load()
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(
            f"{where}: cannot read it as a CIFAR python batch file (truncated or "
            f"corrupt?): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{where}: holds a {type(obj).__name__}, not the dict of a CIFAR python batch file"
        )
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _parse_batch(d: dict, off: _Official, where: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in d:
        raise DatasetError(
            f"{where}: no 'data' entry, so not a CIFAR python batch file (entries: {sorted(d)})"
        )
    if off.label_key not in d:
        other = next(o for o in _OFFICIAL.values() if o is not off)
        hint = f"; it looks like a {other.key} file" if other.label_key in d else ""
        raise DatasetError(
            f"{where}: no '{off.label_key}' entry, which a {off.key} batch has{hint} (entries: {sorted(d)})"
        )
    data = d["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        desc = f"{data.dtype} {tuple(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{where}: 'data' is {desc}; expected uint8 (N, 3072) rows of 32x32 RGB planes")
    if len(data) == 0:
        raise DatasetError(f"{where}: 'data' holds no images")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y = _check_labels(d[off.label_key], len(x), off.num_classes, f"'{off.label_key}'", where)
    return x, y


def _parse_meta(d: dict, off: _Official, where: str) -> tuple[str, ...]:
    names = d.get(off.names_key)
    if names is None:
        raise DatasetError(
            f"{where}: no '{off.names_key}' entry, which the {off.key} meta file has (entries: {sorted(d)})"
        )
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    if len(names) != off.num_classes:
        raise DatasetError(f"{where}: {len(names)} class names; {off.key} has {off.num_classes}")
    return names


def _load_official(
    off: _Official,
    opener: Callable[[str], AbstractContextManager[IO[bytes]]],
    describe: Callable[[str], str],
    exists: Callable[[str], bool],
    name: str,
    source: str,
) -> ArrayDataset:
    """Read the official batches through ``opener(member)``; ``describe(member)`` names it."""

    def read(member: str) -> dict:
        if not exists(member):
            raise DatasetError(
                f"{describe(member)}: file is missing (a {off.key} python release "
                f"has {', '.join(off.train + off.test)} and {off.meta})"
            )
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
    return ArrayDataset.from_arrays(
        name, *parts["train"], *parts["test"], num_classes=off.num_classes, source=source, classes=classes
    )


def _load_official_folder(folder: Path, off: _Official, name: str) -> ArrayDataset:
    @contextmanager
    def opener(member):
        with open(folder / member, "rb") as f:
            yield f

    files = f"{off.train[0]}..{off.train[-1][-1]}" if len(off.train) > 1 else off.train[0]
    return _load_official(
        off,
        opener,
        lambda m: str(folder / m),
        lambda m: (folder / m).is_file(),
        name,
        f"official {off.key} python batches in {folder} ({files}, {', '.join(off.test)})",
    )


def _load_official_archive(path: Path, name: str) -> ArrayDataset:
    try:
        tar = tarfile.open(path, "r:*")
        names = tar.getnames()
    except Exception as e:
        raise DatasetError(
            f"{path}: cannot read it as a tar archive (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from e
    with tar:
        for off in _OFFICIAL.values():
            if any(n.startswith(off.folder + "/") for n in names):
                break
        else:
            raise DatasetError(
                f"{path}: holds neither cifar-10-batches-py/ nor cifar-100-python/; "
                f"not an official CIFAR python archive"
            )
        members = set(names)

        @contextmanager
        def opener(member):
            try:
                f = tar.extractfile(f"{off.folder}/{member}")
                data = f.read() if f is not None else None
            except Exception as e:
                raise DatasetError(
                    f"{path}:{off.folder}/{member}: cannot read it from the "
                    f"archive (truncated?): {type(e).__name__}: {e}"
                ) from e
            if data is None:
                raise DatasetError(f"{path}:{off.folder}/{member}: not a regular file")
            yield io.BytesIO(data)

        return _load_official(
            off,
            opener,
            lambda m: f"{path}:{off.folder}/{m}",
            lambda m: f"{off.folder}/{m}" in members,
            name,
            f"official {off.key} python archive {path}",
        )


def _load_npz(path: Path, name: str) -> ArrayDataset:
    where = str(path)
    if not path.is_file():
        raise DatasetError(f"{where}: file is missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            missing = [k for k in _NPZ_KEYS if k not in files]
            if missing:
                raise DatasetError(
                    f"{where}: lacks {', '.join(missing)}; an .npz dataset holds "
                    f"x_train, y_train, x_test, y_test (found: {', '.join(files)})"
                )
            arrays = {k: z[k] for k in _NPZ_KEYS}
            num_classes = int(z["num_classes"]) if "num_classes" in files else None
            classes = tuple(str(s) for s in z["classes"]) if "classes" in files else ()
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(
            f"{where}: cannot read it as an .npz of arrays (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from e
    return ArrayDataset.from_arrays(
        name,
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        num_classes=num_classes,
        source=where,
        classes=classes,
    )


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
        raise DatasetError(
            f"{folder}: holds both {found[0].folder}/ and {found[1].folder}/; give the one you mean"
        )
    if found:
        return _load_official_folder(folder / found[0].folder, found[0], name)
    archives = [o for o in _OFFICIAL.values() if (folder / o.archive).is_file()]
    if len(archives) == 1:
        return _load_official_archive(folder / archives[0].archive, name)
    raise DatasetError(
        f"{folder}: no CIFAR data found: expected the official python batches "
        f"(data_batch_1..5, test_batch, batches.meta or train, test, meta), a "
        f"cifar-10-batches-py/ or cifar-100-python/ folder, or the official "
        f".tar.gz archive in it"
    )


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
            members = [
                m
                for m in tar.getmembers()
                if (m.name == off.folder or m.name.startswith(off.folder + "/")) and (m.isfile() or m.isdir())
            ]
            if not members:
                raise DatasetError(f"{archive}: holds no {off.folder}/; not the official archive")
            try:
                tar.extractall(root, members=members, filter="data")
            except TypeError:  # Python without extraction filters; members are vetted above
                tar.extractall(root, members=[m for m in members if ".." not in m.name.split("/")])
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(
            f"{archive}: cannot extract it (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from e


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
            raise DatasetError(
                f"{root / off.archive}: torchvision could not download {off.url}: {type(e).__name__}: {e}"
            ) from e
    archive = root / off.archive
    if not (archive.is_file() and _md5(archive) == off.md5):
        part = archive.with_name(archive.name + ".part")
        try:
            with urllib.request.urlopen(off.url, timeout=60) as r, open(part, "wb") as f:
                shutil.copyfileobj(r, f)
        except Exception as e:
            part.unlink(missing_ok=True)
            raise DatasetError(f"{archive}: could not download {off.url}: {type(e).__name__}: {e}") from e
        digest = _md5(part)
        if digest != off.md5:
            part.unlink(missing_ok=True)
            raise DatasetError(
                f"{archive}: download of {off.url} has MD5 {digest}, expected {off.md5} (truncated?)"
            )
        part.replace(archive)
    _extract(archive, off, root)
    return "urllib"


def load_dataset(spec: str, root: str | os.PathLike | None = None, download: bool = False) -> ArrayDataset:
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
        return _load_named(_OFFICIAL[named], Path(root).expanduser() if root else default_root(), download)
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
    raise DatasetError(
        f"{path}: no such file or folder; a dataset is 'cifar10', 'cifar100', "
        f"'sample', an .npz with x_train, y_train, x_test, y_test, or a folder "
        f"of the official CIFAR python batches"
    )


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
        f"--dataset sample trains on the bundled CIFAR-10 sample."
    )
