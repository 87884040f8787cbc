#!/usr/bin/env python
"""Make the quick-start sample bundled with the package: ``sdenet/data/cifar10-sample.npz``.

It is a slice of real CIFAR-10 images (Krizhevsky & Hinton, 2009), taken from the project's
``cifar10-subset.npz`` (the first 1,017 images of each official training batch and of the
official test batch, pixel values and labels exactly as in the official python release):

* ``x_train`` uint8 (1500, 32, 32, 3), ``y_train`` int64 (1500,): the first 1,500 training
  images of the subset, i.e. images 0..1016 of ``data_batch_1`` then 0..482 of
  ``data_batch_2`` in official order; all ten classes, 122..163 per class;
* ``x_test`` uint8 (500, 32, 32, 3), ``y_test`` int64 (500,): the first 500 images of the
  official ``test_batch``; all ten classes, 40..57 per class.

Written with ``np.savez_compressed``: about 5.6 MB.  ``sdenet.train.data.load_dataset("sample")``
reads it, so the README's quick-start command needs no download.

Usage::

    python scripts/make_sample.py [SUBSET.npz] [--out sdenet/data/cifar10-sample.npz]
                                  [--train 1500] [--test 500]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SUBSET = REPO.parent / "shared" / "data" / "cifar10-subset.npz"
DEFAULT_OUT = REPO / "sdenet" / "data" / "cifar10-sample.npz"
KEYS = ("x_train", "y_train", "x_test", "y_test")


def make_sample(subset: Path, out: Path, n_train: int = 1500, n_test: int = 500) -> dict:
    with np.load(subset, allow_pickle=False) as z:
        missing = [k for k in KEYS if k not in z.files]
        if missing:
            raise SystemExit(f"{subset}: lacks {', '.join(missing)}")
        arrays = {k: z[k] for k in KEYS}
    sample = {
        "x_train": np.ascontiguousarray(arrays["x_train"][:n_train], dtype=np.uint8),
        "y_train": np.asarray(arrays["y_train"][:n_train], dtype=np.int64),
        "x_test": np.ascontiguousarray(arrays["x_test"][:n_test], dtype=np.uint8),
        "y_test": np.asarray(arrays["y_test"][:n_test], dtype=np.int64),
    }
    for split in ("train", "test"):
        x, y = sample[f"x_{split}"], sample[f"y_{split}"]
        assert x.shape[1:] == (32, 32, 3) and len(x) == len(y), (x.shape, y.shape)
        counts = np.bincount(y, minlength=10)
        if len(counts) != 10 or (counts == 0).any():
            raise SystemExit(f"{split}: not all ten classes present: {counts.tolist()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **sample)
    os.replace(tmp, out)
    return sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "subset", nargs="?", type=Path, default=DEFAULT_SUBSET, help=f"source npz (default: {DEFAULT_SUBSET})"
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--train", type=int, default=1500, help="training images to keep")
    ap.add_argument("--test", type=int, default=500, help="test images to keep")
    a = ap.parse_args()
    sample = make_sample(a.subset, a.out, a.train, a.test)
    for split in ("train", "test"):
        y = sample[f"y_{split}"]
        print(f"{split}: {len(y)} images, per class {np.bincount(y, minlength=10).tolist()}")
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
