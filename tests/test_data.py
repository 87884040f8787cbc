"""Data: loaders for the official batch format and npz, validation errors, device augmentation."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch

from sdenet.train import data as D
from sdenet.train.data import (
    ArrayDataset,
    DatasetError,
    DeviceLoader,
    augment_batch,
    crop_flip,
    load_dataset,
    make_loaders,
)

# ---------------------------------------------------------------------------------------------
# helpers: tiny files in the official formats
# ---------------------------------------------------------------------------------------------


def _images(rng, n, h=32, w=32, c=3):
    return rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def _rows(x_nhwc):
    """NHWC images -> the official (N, 3072) rows: R plane, G plane, B plane, each row-major."""
    return np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2).reshape(len(x_nhwc), -1))


def _dump(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(folder, rng, per_batch=(3, 2, 4, 1, 2), n_test=3):
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i, n in enumerate(per_batch, 1):
        x, y = _images(rng, n), rng.integers(0, 10, size=n)
        _dump(
            folder / f"data_batch_{i}",
            {
                b"batch_label": b"training batch",
                b"data": _rows(x),
                b"labels": [int(v) for v in y],
                b"filenames": [b"f.png"] * n,
            },
        )
        xs.append(x)
        ys.append(y)
    xt, yt = _images(rng, n_test), rng.integers(0, 10, size=n_test)
    _dump(folder / "test_batch", {b"data": _rows(xt), b"labels": [int(v) for v in yt]})
    _dump(
        folder / "batches.meta", {b"label_names": [n.encode() for n in D.CIFAR10_CLASSES], b"num_vis": 3072}
    )
    return np.concatenate(xs), np.concatenate(ys), xt, yt


def write_cifar100(folder, rng, n_train=5, n_test=4):
    folder.mkdir(parents=True, exist_ok=True)
    x, y = _images(rng, n_train), rng.integers(0, 100, size=n_train)
    xt, yt = _images(rng, n_test), rng.integers(0, 100, size=n_test)
    # a newer protocol than the official files' (numpy arrays pickle differently): both must load
    _dump(
        folder / "train",
        {b"data": _rows(x), b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist()},
        protocol=5,
    )
    _dump(
        folder / "test",
        {b"data": _rows(xt), b"fine_labels": yt.tolist(), b"coarse_labels": (yt // 5).tolist()},
        protocol=4,
    )
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [f"c{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"s{i}".encode() for i in range(20)],
        },
    )
    return x, y, xt, yt


def write_npz(path, rng, n=12, n_test=5, labels=10, **overrides):
    arrays = dict(
        x_train=_images(rng, n),
        y_train=rng.integers(0, labels, size=n),
        x_test=_images(rng, n_test),
        y_test=rng.integers(0, labels, size=n_test),
    )
    arrays.update(overrides)
    np.savez(path, **arrays)
    return arrays


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def test_cifar10_batches_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    x, y, xt, yt = write_cifar10(folder, rng)
    for spec in (folder, tmp_path):  # the folder itself, or the folder that contains it
        ds = load_dataset(str(spec))
        assert ds.name == str(spec)
        assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (12, 32, 32, 3)
        np.testing.assert_array_equal(ds.x_train, x)
        np.testing.assert_array_equal(ds.y_train, y)
        np.testing.assert_array_equal(ds.x_test, xt)
        np.testing.assert_array_equal(ds.y_test, yt)
        assert ds.y_train.dtype == np.int64
        assert ds.num_classes == 10 and ds.classes == D.CIFAR10_CLASSES
        assert "data_batch_1" in ds.source
    # one pixel by hand: row layout is [R plane | G plane | B plane], each 32x32 row-major
    rows = _rows(x)
    assert ds.x_train[4, 7, 11, 2] == rows[4, 2 * 1024 + 7 * 32 + 11]
    np.testing.assert_allclose(ds.mean, (x / 255.0).mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(ds.std, (x / 255.0).std(axis=(0, 1, 2)), rtol=1e-12)


def test_cifar100_batches_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x, y, xt, yt = write_cifar100(tmp_path / "cifar-100-python", rng)
    ds = load_dataset(str(tmp_path))
    np.testing.assert_array_equal(ds.x_train, x)
    np.testing.assert_array_equal(ds.y_train, y)
    np.testing.assert_array_equal(ds.x_test, xt)
    np.testing.assert_array_equal(ds.y_test, yt)
    assert ds.num_classes == 100 and ds.classes[:2] == ("c0", "c1")


def test_named_cifar_from_root_and_archive(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    x, y, xt, yt = write_cifar10(tmp_path / "src" / "cifar-10-batches-py", rng)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    # the archive itself as a path
    np.testing.assert_array_equal(load_dataset(str(archive)).x_train, x)
    # "cifar10" with the archive in root: extracted there, then read
    root = tmp_path / "root"
    root.mkdir()
    (root / archive.name).write_bytes(archive.read_bytes())
    monkeypatch.setenv("SDENET_DATA", str(root))
    ds = load_dataset("cifar10")
    assert ds.name == "cifar10" and (root / "cifar-10-batches-py" / "test_batch").is_file()
    np.testing.assert_array_equal(ds.x_test, xt)
    np.testing.assert_array_equal(ds.y_train, y)


def test_named_cifar_missing_says_where_and_how(tmp_path):
    with pytest.raises(ValueError) as e:
        load_dataset("cifar100", root=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "cifar-100-python") in msg and "--dataset" in msg and ".npz" in msg


def test_download_without_torchvision_checks_md5(tmp_path, monkeypatch):
    """The urllib route (used when torchvision does not import), fed a local file:// URL."""
    rng = np.random.default_rng(3)
    x, *_ = write_cifar10(tmp_path / "src" / "cifar-10-batches-py", rng)
    archive = tmp_path / "served.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *a, **k):
        if name.startswith("torchvision"):
            raise ImportError("no torchvision in this test")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    off = D._OFFICIAL["cifar10"]
    good = D._Official(**{**off.__dict__, "url": archive.as_uri(), "md5": D._md5(archive)})
    monkeypatch.setitem(D._OFFICIAL, "cifar10", good)
    ds = load_dataset("cifar10", root=str(tmp_path / "root"), download=True)
    np.testing.assert_array_equal(ds.x_train, x)
    assert "urllib" in ds.source
    bad = D._Official(**{**good.__dict__, "md5": "0" * 32})
    monkeypatch.setitem(D._OFFICIAL, "cifar10", bad)
    with pytest.raises(ValueError, match="MD5"):
        load_dataset("cifar10", root=str(tmp_path / "root2"), download=True)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    a = write_npz(tmp_path / "d.npz", rng)
    ds = load_dataset(str(tmp_path / "d.npz"))
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(ds, k), a[k])
    assert ds.num_classes == max(a["y_train"].max(), a["y_test"].max()) + 1
    assert ds.source == str(tmp_path / "d.npz")


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize(
    "case", ["missing", "truncated", "label_range", "negative_label", "length", "shape", "dtype", "keys"]
)
def test_npz_errors_name_the_file(tmp_path, case):
    rng = np.random.default_rng(5)
    path = tmp_path / f"bad_{case}.npz"
    if case == "missing":
        pass
    elif case == "truncated":
        write_npz(path, rng)
        _truncate(path)
    elif case == "label_range":  # num_classes given in the file, a label beyond it
        write_npz(path, rng, y_train=np.array([0, 1, 2, 12] * 3), num_classes=np.array(10))
    elif case == "negative_label":
        write_npz(path, rng, y_test=np.array([0, 1, -1, 2, 3]))
    elif case == "length":
        write_npz(path, rng, y_train=np.zeros(11, dtype=np.int64))
    elif case == "shape":  # channels first instead of NHWC
        write_npz(path, rng, x_train=_images(rng, 12).transpose(0, 3, 1, 2).copy())
    elif case == "dtype":
        write_npz(path, rng, x_test=_images(rng, 5).astype(np.float32))
    elif case == "keys":
        np.savez(path, x_train=_images(rng, 2), y_train=np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError) as e:
        load_dataset(str(path))
    assert path.name in str(e.value)
    assert isinstance(e.value, DatasetError)


@pytest.mark.parametrize(
    "case",
    [
        "missing_batch",
        "truncated",
        "label_range",
        "length",
        "shape",
        "wrong_release",
        "not_a_dict",
        "hostile",
    ],
)
def test_batch_errors_name_the_file(tmp_path, case):
    rng = np.random.default_rng(6)
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, rng)
    target = folder / "data_batch_3"
    if case == "missing_batch":
        target.unlink()
    elif case == "truncated":
        _truncate(target)
    elif case == "label_range":
        _dump(target, {b"data": _rows(_images(rng, 2)), b"labels": [3, 10]})
    elif case == "length":
        _dump(target, {b"data": _rows(_images(rng, 3)), b"labels": [3, 1]})
    elif case == "shape":
        _dump(target, {b"data": _images(rng, 2), b"labels": [3, 1]})
    elif case == "wrong_release":  # a CIFAR-100 file among CIFAR-10 batches
        _dump(target, {b"data": _rows(_images(rng, 2)), b"fine_labels": [3, 1]})
    elif case == "not_a_dict":
        _dump(target, [1, 2, 3])
    elif case == "hostile":  # would call os.system on load with a plain pickle.load

        class Evil:
            def __reduce__(self):
                import os

                return (os.system, ("echo pwned",))

        _dump(target, {b"data": Evil(), b"labels": []})
    with pytest.raises(ValueError) as e:
        load_dataset(str(folder))
    assert "data_batch_3" in str(e.value)
    if case == "wrong_release":
        assert "cifar100" in str(e.value)
    if case == "label_range":
        assert "out of range" in str(e.value)


def test_bad_spec_and_array_dataset_validation(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no CIFAR data"):
        load_dataset(str(tmp_path))
    rng = np.random.default_rng(7)
    x = _images(rng, 4)
    ds = ArrayDataset.from_arrays("toy", x, [0, 1, 2, 1], x[:2], [2, 0])
    assert ds.num_classes == 3 and ds.y_train.dtype == np.int64 and ds.image_shape == (3, 32, 32)
    with pytest.raises(ValueError, match="out of range"):
        ArrayDataset.from_arrays("toy", x, [0, 1, 2, 1], x[:2], [2, 3], num_classes=3)


def test_bundled_sample():
    ds = load_dataset("sample")
    assert ds.name == "sample" and ds.num_classes == 10
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.x_train.dtype == np.uint8
    assert len(ds.x_train) >= 1000 and len(ds.x_test) >= 200
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert D.SAMPLE_PATH.stat().st_size < 8e6
    np.testing.assert_allclose(ds.mean, (ds.x_train / 255.0).mean(axis=(0, 1, 2)), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------


def _reference(x_nchw, dy, dx, flip, pad):
    """Crop-then-flip one image by slicing an explicitly padded copy (numpy)."""
    c, h, w = x_nchw.shape
    p = np.zeros((c, h + 2 * pad, w + 2 * pad), dtype=x_nchw.dtype)
    p[:, pad : pad + h, pad : pad + w] = x_nchw
    out = p[:, dy : dy + h, dx : dx + w]
    return out[:, :, ::-1] if flip else out


def _identify(out, x, pad):
    """All (dy, dx, flip) whose reference crop equals ``out`` (one image)."""
    return [
        (dy, dx, f)
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        for f in (False, True)
        if np.array_equal(_reference(x, dy, dx, f, pad), out)
    ]


def test_crop_flip_matches_reference():
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.integers(1, 256, size=(6, 3, 8, 10), dtype=np.uint8))
    dy = torch.tensor([0, 8, 4, 3, 1, 7])
    dx = torch.tensor([0, 8, 4, 0, 6, 2])
    fl = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(x, dy, dx, fl, pad=4)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for b in range(6):
        ref = _reference(x[b].numpy(), int(dy[b]), int(dx[b]), bool(fl[b]), 4)
        np.testing.assert_array_equal(out[b].numpy(), ref)
    # window at the top-left corner of the padded image: 4 zero rows on top, 4 zero columns
    # on the left, the rest is the image's top-left part
    assert (out[0, :, :4, :] == 0).all() and (out[0, :, :, :4] == 0).all()
    np.testing.assert_array_equal(out[0, :, 4:, 4:].numpy(), x[0, :, :4, :6].numpy())
    # centred window, no flip: the image itself
    np.testing.assert_array_equal(out[2].numpy(), x[2].numpy())
    # float input works too (zero padding in any dtype)
    np.testing.assert_array_equal(crop_flip(x.float(), dy, dx, fl, 4).numpy(), out.float().numpy())


def test_augment_batch_shifts_flips_and_is_seeded():
    rng = np.random.default_rng(9)
    pad = 4
    # strictly positive pixels, so the padding is recognisable and every crop is distinct
    x = torch.from_numpy(rng.integers(1, 256, size=(64, 3, 32, 32), dtype=np.uint8))
    out = augment_batch(x, torch.Generator().manual_seed(123), pad=pad)
    assert out.shape == x.shape and out.dtype == torch.uint8
    params = []
    for b in range(len(x)):
        found = _identify(out[b].numpy(), x[b].numpy(), pad)
        assert len(found) == 1, (b, found)
        params.append(found[0])
    dy, dx, fl = map(np.array, zip(*params))
    assert fl.any() and (~fl).any()  # some flipped, some not
    assert ((dy != pad) | (dx != pad)).any() and ((dy == pad) & (dx == pad)).sum() < len(x)
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 10  # offsets vary
    # zero padding: a window shifted by s exposes exactly |s| zero rows/columns
    for b in range(len(x)):
        img = out[b].numpy()
        zero_rows = int((img == 0).all(axis=(0, 2)).sum())
        zero_cols = int((img == 0).all(axis=(0, 1)).sum())
        assert zero_rows == abs(int(dy[b]) - pad) and zero_cols == abs(int(dx[b]) - pad)
    # determinism under a seed, difference under another
    again = augment_batch(x, torch.Generator().manual_seed(123), pad=pad)
    other = augment_batch(x, torch.Generator().manual_seed(124), pad=pad)
    assert torch.equal(out, again) and not torch.equal(out, other)
    # no flip asked: none happens; no padding: only flips
    noflip = augment_batch(x, torch.Generator().manual_seed(5), pad=pad, flip=False)
    assert all(not _identify(noflip[b].numpy(), x[b].numpy(), pad)[0][2] for b in range(8))
    onlyflip = augment_batch(x, torch.Generator().manual_seed(5), pad=0)
    for b in range(8):
        assert torch.equal(onlyflip[b], x[b]) or torch.equal(onlyflip[b], x[b].flip(-1))


# ---------------------------------------------------------------------------------------------
# DeviceLoader
# ---------------------------------------------------------------------------------------------


def _toy(n=50, seed=10):
    rng = np.random.default_rng(seed)
    return _images(rng, n, 8, 8), np.arange(n)  # label = sample index, to track samples


def test_loader_covers_each_sample_once_per_epoch():
    x, y = _toy(50)
    ld = DeviceLoader(
        x, y, batch_size=8, train=True, mean=(0.5,) * 3, std=(0.25,) * 3, seed=0, drop_last=False
    )
    assert len(ld) == 7
    seen = []
    for xb, yb in ld:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (3, 8, 8) and yb.dtype == torch.int64
        seen.append(yb)
    seen = torch.cat(seen)
    assert sorted(seen.tolist()) == list(range(50))
    assert seen.tolist() != list(range(50))  # shuffled
    dl = DeviceLoader(x, y, batch_size=8, train=True, mean=(0.5,) * 3, std=(0.25,) * 3, seed=0)
    assert len(dl) == 6 and sum(len(b) for _, b in dl) == 48  # drop_last for training


def test_loader_shards_are_disjoint():
    x, y = _toy(50)
    kw = dict(batch_size=4, train=True, mean=(0.5,) * 3, std=(0.25,) * 3, seed=3)
    for drop_last in (True, False):
        shards = []
        for rank in range(3):
            ld = DeviceLoader(x, y, rank=rank, world_size=3, drop_last=drop_last, **kw)
            ld.set_epoch(2)
            shards.append(torch.cat([b for _, b in ld]).tolist())
        sets = [set(s) for s in shards]
        assert all(len(s) == len(shard) for s, shard in zip(sets, shards))
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        if drop_last:  # equal shares: 50 // 3 = 16 each, four full batches each
            assert [len(s) for s in shards] == [16, 16, 16]
        else:  # together every sample once
            assert sorted(sum(shards, [])) == list(range(50))


def test_loader_shards_partition_the_single_process_epoch():
    """The ranks' batches together are the single-process epoch's samples, augmented alike."""
    x, y = _toy(48)
    kw = dict(train=True, mean=(0.5,) * 3, std=(0.25,) * 3, seed=4)
    one = DeviceLoader(x, y, batch_size=8, **kw)
    ref = {int(l): xb for xs, ys in one for xb, l in zip(xs, ys)}
    for rank in range(2):
        for xs, ys in DeviceLoader(x, y, batch_size=4, rank=rank, world_size=2, **kw):
            for xb, l in zip(xs, ys):
                assert torch.equal(xb, ref[int(l)])


def test_loader_normalises_with_given_stats():
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, size=(40, 6, 6, 3), dtype=np.uint8)
    mean, std = D.channel_stats(x)
    ld = DeviceLoader(x, np.zeros(40), batch_size=40, train=False, mean=mean, std=std)
    assert not ld.augment and not ld.shuffle and len(ld) == 1
    ((xb, _),) = list(ld)
    assert xb.abs().max() > 0.5
    torch.testing.assert_close(xb.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(xb.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    expected = (
        torch.from_numpy(x).permute(0, 3, 1, 2).double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)
    ) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(xb.double(), expected, atol=1e-5, rtol=0)
    # half precision and channels_last
    ld16 = DeviceLoader(
        x,
        np.zeros(40),
        batch_size=40,
        train=False,
        mean=mean,
        std=std,
        dtype=torch.bfloat16,
        channels_last=True,
    )
    ((xh, _),) = list(ld16)
    assert xh.dtype == torch.bfloat16 and xh.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xh.float(), xb, atol=0.05, rtol=0.01)


def test_loader_epochs_are_deterministic():
    x, y = _toy(40)
    kw = dict(batch_size=10, train=True, mean=(0.5,) * 3, std=(0.25,) * 3)

    def epoch(loader, e):
        loader.set_epoch(e)
        batches = list(loader)
        return torch.cat([b for b, _ in batches]), torch.cat([l for _, l in batches])

    a, b = DeviceLoader(x, y, seed=7, **kw), DeviceLoader(x, y, seed=7, **kw)
    xa0, ya0 = epoch(a, 0)
    xb0, yb0 = epoch(b, 0)
    assert torch.equal(xa0, xb0) and torch.equal(ya0, yb0)  # same (seed, epoch)
    xa1, ya1 = epoch(a, 1)
    assert not torch.equal(ya0, ya1)  # another epoch: another order
    assert sorted(ya1.tolist()) == sorted(ya0.tolist())
    xa0b, ya0b = epoch(a, 0)  # back to epoch 0: same again
    assert torch.equal(xa0, xa0b) and torch.equal(ya0, ya0b)
    c = DeviceLoader(x, y, seed=8, **kw)
    assert not torch.equal(epoch(c, 0)[1], ya0)  # another seed
    # without set_epoch, passes advance through epochs 0, 1, ...
    d = DeviceLoader(x, y, seed=7, **kw)
    assert torch.equal(torch.cat([l for _, l in d]), ya0)
    assert torch.equal(torch.cat([l for _, l in d]), ya1)
    # the training images are augmented versions of the stored ones (crop/flip, then normalise)
    raw = torch.from_numpy(x).permute(0, 3, 1, 2)
    unnorm = torch.round(xa0 * 0.25 * 255 + 0.5 * 255).to(torch.uint8)
    changed = sum(not torch.equal(unnorm[k], raw[int(ya0[k])]) for k in range(len(ya0)))
    assert changed > len(ya0) // 2


def test_make_loaders_on_sample():
    ds = load_dataset("sample")
    tr, te = make_loaders(ds, batch_size=256, device="cpu", seed=0, eval_batch_size=500)
    assert len(tr) == len(ds.x_train) // 256 and len(te) == 1
    xb, yb = next(iter(tr))
    assert xb.shape == (256, 3, 32, 32) and yb.shape == (256,)
    ((xt, yt),) = list(te)
    assert torch.equal(yt, torch.from_numpy(ds.y_test))
    assert abs(float(xt.mean())) < 0.2


def test_loader_rejects_bad_input():
    x, y = _toy(10)
    with pytest.raises(ValueError, match="batch"):
        DeviceLoader(x, y, batch_size=16, train=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(ValueError, match="labels"):
        DeviceLoader(x, y[:5], batch_size=2, train=False, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(x.astype(np.float32), y, batch_size=2, train=False, mean=(0.5,) * 3, std=(0.25,) * 3)


# ---------------------------------------------------------------------------------------------
# ImageNet-style folders
# ---------------------------------------------------------------------------------------------


def _torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401

        return True
    except Exception:
        return False


@pytest.mark.skipif(not _torchvision_imports(), reason="torchvision does not import here")
def test_imagefolder_loaders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(12)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(_images(rng, 1, 40, 50)[0]).save(tmp_path / split / cls / f"{i}.png")
    tr, va = D.imagefolder_loaders(tmp_path, batch_size=2, workers=0, seed=1)
    assert tr.num_classes == 2 and len(tr) == 3 and len(va) == 3
    xb, yb = next(iter(tr))
    assert xb.shape == (2, 3, 224, 224) and yb.dtype == torch.int64
    xv, _ = next(iter(va))
    assert xv.shape == (2, 3, 224, 224)
    tr.set_epoch(0)
    first = torch.cat([x for x, _ in tr])
    tr.set_epoch(0)
    assert torch.equal(first, torch.cat([x for x, _ in tr]))
    with pytest.raises(ValueError, match="val"):
        D.imagefolder_loaders(tmp_path, batch_size=2, workers=0, val_dir="nope")


@pytest.mark.skipif(_torchvision_imports(), reason="torchvision imports here")
def test_imagefolder_without_torchvision_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="torchvision"):
        D.imagefolder_loaders(tmp_path, batch_size=2)
