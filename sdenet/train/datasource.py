"""The data a run reads: CIFAR-style arrays (:func:`sdenet.train.cifar.load_dataset`, optionally
cut to the first images) or an ImageNet-style image folder, and the data root of a resumed
run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

__all__ = ["is_image_folder"]


def _load_data(spec: str, root=None, download=False, limit_train=None, limit_test=None):
    from .cifar import load_dataset

    ds = load_dataset(spec, root=root, download=download)
    if limit_train is not None or limit_test is not None:
        ntr = len(ds.x_train) if limit_train is None else min(int(limit_train), len(ds.x_train))
        nte = len(ds.x_test) if limit_test is None else min(int(limit_test), len(ds.x_test))
        ds = replace(
            ds,
            x_train=ds.x_train[:ntr],
            y_train=ds.y_train[:ntr],
            x_test=ds.x_test[:nte],
            y_test=ds.y_test[:nte],
        )
    return ds


def is_image_folder(spec) -> bool:
    """True for an ImageNet-style root: ``train/`` and ``val/`` folders, one sub-folder per class."""
    try:
        path = Path(str(spec)).expanduser()
        return path.is_dir() and (path / "train").is_dir() and (path / "val").is_dir()
    except OSError:
        return False


def _image_folder_loaders(spec, *, limit_train=None, limit_test=None, **kwargs):
    """``(train, val)`` loaders of an image-folder dataset (torchvision's ``ImageFolder`` with the
    paper's scale augmentation, :func:`sdenet.train.data.imagefolder_loaders`)."""
    if limit_train is not None or limit_test is not None:
        raise ValueError(
            f"{spec}: --limit-train/--limit-test apply to CIFAR-style arrays, not to image folders"
        )
    from .imagefolder import imagefolder_loaders

    return imagefolder_loaders(Path(str(spec)).expanduser(), **kwargs)


def _agreed_data_root(rc: dict, given, run_dir) -> str | None:
    """The data root of a resumed run: the one the command line gives. A root the run folder
    records is used only when the command line passes the same one (a file does not choose
    where data are read from); otherwise one line saying what to pass."""
    recorded = rc.get("data_root")
    if recorded is None:
        return given
    if given is None or Path(str(given)).expanduser().resolve() != Path(str(recorded)).expanduser().resolve():
        raise ValueError(
            f"{run_dir}: the run records the data root {recorded!r}; a run folder "
            f"does not choose where data are read from, so pass --data-root "
            f"{recorded} yourself (or move the run)"
        )
    return given
