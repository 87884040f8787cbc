"""Multiscale resolution (issue 9, item 6): ``sdenet.nn.rescale`` carries convolution kernels
between image resolutions; ``--resolution`` trains on area-downsampled images; ``--init
--rescale`` warm-starts across resolutions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_train import clean  # noqa: F401 (fixture)
from torch import nn

from sdenet import models
from sdenet.cli import main
from sdenet.nn import rescale
from sdenet.nn.rescale import moment_transform, rescale_kernel
from sdenet.train.data import check_resolution, downsample, load_dataset, make_loaders, scaled_pad

# ----------------------------------------------------------------------------- the kernel map


def _moment_basis_kernel(coef: dict, h: float) -> torch.Tensor:
    """The 3×3 stencil (cross-correlation, spacing h) of L = Σ c_pq ∂x^p ∂y^q, p, q ≤ 2: the
    tensor product of the 1-D stencils with moments δ_{q·}: [0,1,0], [-1,0,1]/2, [1,-2,1],
    each divided by h^q. Axis 2 of the kernel is y (rows), axis 3 is x (columns)."""
    e = [torch.tensor([0.0, 1.0, 0.0]), torch.tensor([-0.5, 0.0, 0.5]), torch.tensor([1.0, -2.0, 1.0])]
    k = torch.zeros(3, 3, dtype=torch.float64)
    for (p, q), c in coef.items():  # p: order in x, q: order in y
        k += c * torch.outer(e[q], e[p]).double() / h ** (p + q)
    return k[None, None]


def test_moment_transform_keeps_order_0_and_scales_differences():
    T = moment_transform(3, 2.0)
    ident, diff, second = torch.tensor([0.0, 1, 0]), torch.tensor([-0.5, 0, 0.5]), torch.tensor([1.0, -2, 1])
    assert torch.allclose(T.float() @ ident, ident)
    assert torch.allclose(T.float() @ diff, 2 * diff)
    assert torch.allclose(T.float() @ second, 4 * second)
    assert torch.equal(moment_transform(5, 1.0), torch.eye(5, dtype=torch.float64)) or torch.allclose(
        moment_transform(5, 1.0), torch.eye(5, dtype=torch.float64), atol=1e-13
    )


@pytest.mark.parametrize(
    "shape",
    [(4, 3, 3, 3), (2, 2, 5, 5), (3, 1, 7, 7), (2, 3, 3, 1), (2, 2, 1, 1), (2, 2, 3), (1, 2, 3, 3, 3)],
)
@pytest.mark.parametrize("factor", [2, 4, 3])
def test_round_trip_restores_the_kernel(shape, factor):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    # rounding grows with the condition number of T (factor^(k-1) per axis: 4^6 for 7 taps)
    tol = 1e-13
    for k in shape[2:]:
        tol *= float(torch.linalg.cond(moment_transform(k, factor)))
    back = rescale_kernel(rescale_kernel(w, factor), 1 / factor)
    assert torch.allclose(back, w, atol=tol, rtol=0), ((back - w).abs().max(), tol)
    back = rescale_kernel(rescale_kernel(w, 1 / factor), factor)
    assert torch.allclose(back, w, atol=tol, rtol=0)
    capped = rescale_kernel(rescale_kernel(w, factor, order=1), 1 / factor, order=1)
    assert torch.allclose(capped, w, atol=tol, rtol=0)
    if len(shape) == 4 and max(shape[2:]) <= 3:  # the bound is not vacuous
        assert tol < 1e-9


def test_exact_on_quadratics():
    """For u of degree ≤ 2 per axis the Taylor expansion of the stencil terminates, so the
    rescaled kernel on the grid h/2 gives exactly the original's output on the grid h at the
    shared nodes (vertex-centred grids x = i·h and x = i·h/2)."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64)
    c = torch.randn(9, generator=g, dtype=torch.float64)

    def u(n, h):
        y, x = torch.meshgrid(
            torch.arange(n, dtype=torch.float64) * h, torch.arange(n, dtype=torch.float64) * h, indexing="ij"
        )
        mono = [x**p * y**q for p in range(3) for q in range(3)]
        return sum(ci * m for ci, m in zip(c, mono))[None, None]

    h = 0.1
    coarse = F.conv2d(u(12, h), w)  # nodes 1..10 of the coarse grid
    fine = F.conv2d(u(23, h / 2), rescale_kernel(w, 2))[..., 1::2, 1::2]  # fine nodes 2, 4, ..., 20
    assert torch.allclose(fine, coarse, atol=1e-9, rtol=1e-11)
    # and the unchanged kernel does not
    assert not torch.allclose(F.conv2d(u(23, h / 2), w)[..., 1::2, 1::2], coarse, atol=1e-3)


def test_galerkin_restriction_agrees_on_differences_and_smooths_the_identity():
    """Haber et al.'s coarse operator R A P (1-D, linear interpolation P, full weighting
    R = ½Pᵀ, periodic) against rescale_kernel(·, ½): equal on the first and second differences;
    on the identity the Galerkin product adds ⅛ of a second difference (R P ≠ I)."""
    n = 16
    P = torch.zeros(n, n // 2, dtype=torch.float64)
    for j in range(n // 2):
        P[2 * j, j] = 1.0
        P[2 * j + 1, j] += 0.5
        P[(2 * j - 1) % n, j] += 0.5
    R = 0.5 * P.T

    def galerkin(w):
        A = sum(w[k] * torch.roll(torch.eye(n, dtype=torch.float64), k - 1, dims=1) for k in range(3))
        return (R @ A @ P)[4, 3:6]

    for w in ([-0.5, 0.0, 0.5], [1.0, -2.0, 1.0]):
        w = torch.tensor(w, dtype=torch.float64)
        ours = rescale_kernel(w.reshape(1, 1, 3), 0.5).reshape(3)
        assert torch.allclose(galerkin(w), ours, atol=1e-14)
    ident = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(rescale_kernel(ident.reshape(1, 1, 3), 0.5).reshape(3), ident)
    assert torch.allclose(galerkin(ident), ident + torch.tensor([1.0, -2.0, 1.0]) / 8)


def _smooth_errors(transform, sizes=(16, 32, 64, 128)):
    """max |avgpool(K_h ⋆ u) − K'_{2h} ⋆ avgpool(u)| / max |K_h ⋆ u| for the stencil K_h of a
    fixed operator with all nine terms, a smooth periodic u and K' = transform(K_h)."""
    rng = np.random.default_rng(3)
    coef = {
        (p, q): float(rng.uniform(0.5, 1.5) * rng.choice([-1, 1])) / (2 * math.pi) ** (p + q)
        for p in range(3)
        for q in range(3)
    }
    errs = []
    for n in sizes:
        h = 1.0 / n
        t = (torch.arange(n, dtype=torch.float64) + 0.5) * h  # cell centres
        y, x = torch.meshgrid(t, t, indexing="ij")
        u = (
            torch.sin(2 * math.pi * x + 0.3) * torch.cos(2 * math.pi * y)
            + 0.5 * torch.cos(2 * math.pi * (x + 2 * y) - 1.0)
        )[None, None]
        k = _moment_basis_kernel(coef, h)
        fine = F.avg_pool2d(F.conv2d(F.pad(u, (1, 1, 1, 1), mode="circular"), k), 2)
        uc = F.avg_pool2d(u, 2)
        coarse = F.conv2d(F.pad(uc, (1, 1, 1, 1), mode="circular"), transform(k))
        errs.append(float((fine - coarse).abs().max() / fine.abs().max()))
    slope = np.polyfit(np.log(1.0 / np.array(sizes)), np.log(errs), 1)[0]
    return errs, slope


def test_smooth_operator_kernel_agrees_to_second_order():
    """A kernel discretising L = Σ c_pq ∂x^p ∂y^q at 1/N, restricted by rescale(·, ½) and applied
    to the area-downsampled image, agrees with the fine output (area-downsampled) to O(h²):
    the fitted order is 2. The kernel used as it is, or with its second moments not rescaled
    (order=1), keeps an O(1) error."""
    errs, slope = _smooth_errors(lambda k: rescale_kernel(k, 0.5))
    assert 1.8 < slope < 2.3, (errs, slope)
    assert errs[-1] < 5e-3, errs
    errs, slope = _smooth_errors(lambda k: k)
    assert min(errs) > 0.1 and abs(slope) < 0.3, (errs, slope)
    errs, slope = _smooth_errors(lambda k: rescale_kernel(k, 0.5, order=1))
    assert min(errs) > 0.05 and abs(slope) < 0.3, (errs, slope)


# ----------------------------------------------------------------------------- whole networks


@pytest.mark.parametrize("name", ["tiny_resnet", "tiny_lm_resnet", "tiny_shake_shake"])
def test_network_round_trip_and_what_is_kept(name):
    torch.manual_seed(0)
    m = models.create(name).double()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    up = rescale(m, 2, method="moments")
    assert up is not m
    for k, v in m.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    convs = {n + ".weight" for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)}
    spatial = {
        n + ".weight"
        for n, mod in m.named_modules()
        if isinstance(mod, nn.Conv2d) and mod.kernel_size != (1, 1)
    }
    assert spatial
    s_up = up.state_dict()
    for k, v in before.items():
        if k in spatial:
            assert not torch.allclose(s_up[k], v)
        else:  # 1×1 convolutions, batch norm (weights and running statistics), fc, LM k_n
            assert torch.equal(s_up[k], v), k
    back = rescale(up, 0.5, method="moments").state_dict()
    for k in convs:
        assert torch.allclose(back[k], before[k], atol=1e-10, rtol=0), k
    # global average head: any resolution runs, before and after
    m.eval(), up.eval()
    with torch.no_grad():
        for r in (8, 16, 32):
            assert torch.isfinite(up(torch.randn(2, 3, r, r, dtype=torch.float64))).all()
        assert rescale(m, 1, method="moments").state_dict().keys() == m.state_dict().keys()


def test_strided_and_imagenet_stem_kernels():
    """Strides, padding and the 7×7 ImageNet stem: the same moment map on the input grid."""
    conv = nn.Conv2d(3, 4, 7, stride=2, padding=3, bias=True).double()
    net = nn.Sequential(
        conv,
        nn.BatchNorm2d(4).double(),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2).double(),
    )
    up = rescale(net, 2, method="moments")
    assert torch.equal(up[0].bias, conv.bias)
    assert torch.allclose(rescale(up, 0.5, method="moments")[0].weight, conv.weight, atol=1e-8, rtol=0)
    assert up(torch.randn(1, 3, 64, 64, dtype=torch.float64)).shape == (1, 2)


@pytest.mark.parametrize("factor", [0, -2, -0.5, float("nan"), float("inf"), True, "2", None])
def test_bad_factors(factor):
    with pytest.raises(ValueError, match="factor"):
        rescale(models.create("tiny_resnet"), factor)
    with pytest.raises(ValueError, match="factor"):
        rescale_kernel(torch.zeros(1, 1, 3, 3), factor)


def test_bad_models_and_orders():
    with pytest.raises(ValueError, match="no convolution"):
        rescale(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), 2)
    with pytest.raises(ValueError, match="transposed"):
        rescale(nn.Sequential(nn.ConvTranspose2d(3, 3, 3)), 2)
    with pytest.raises(ValueError, match="Module"):
        rescale(torch.zeros(3, 3, 3, 3), 2)
    for order in (-1, 1.5, True):
        with pytest.raises(ValueError, match="order"):
            rescale(models.create("tiny_resnet"), 2, order=order, method="moments")
    with pytest.raises(ValueError, match="convolution weight"):
        rescale_kernel(torch.zeros(3, 3), 2)


# ----------------------------------------------------------------------------- data


def test_downsample_is_the_block_mean_on_the_device():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    d = downsample(x, 8)
    ref = x.double().reshape(5, 3, 8, 4, 8, 4).mean(dim=(3, 5))
    assert d.dtype == torch.uint8 and d.shape == (5, 3, 8, 8)
    assert (d.double() - ref).abs().max() <= 0.5 + 1e-9
    assert downsample(x, 32) is x


@pytest.mark.parametrize(
    "r, needle",
    [
        (0, "positive integer"),
        (-4, "positive integer"),
        (12, "does not divide"),
        (64, "larger than"),
        (2.0, "positive integer"),
        (True, "positive integer"),
    ],
)
def test_bad_resolutions(r, needle):
    with pytest.raises(ValueError, match=needle):
        check_resolution(r, 32, 32)


def test_loaders_at_a_resolution():
    ds = load_dataset("sample")
    train, test = make_loaders(ds, batch_size=50, device="cpu", seed=0, resolution=16)
    assert train.pad == scaled_pad(4, 32, 16) == 2 and scaled_pad(4, 32, 8) == 1
    assert scaled_pad(4, 32, None) == 4
    xb, yb = next(iter(train))
    assert xb.shape == (50, 3, 16, 16) and test.images.shape[2:] == (16, 16)
    with pytest.raises(ValueError, match="does not divide"):
        make_loaders(ds, batch_size=50, device="cpu", seed=0, resolution=10)


# ----------------------------------------------------------------------------- the CLI

SHORT = [
    "--dataset",
    "sample",
    "--epochs",
    "1",
    "--limit-train",
    "128",
    "--limit-test",
    "64",
    "--batch-size",
    "32",
    "--device",
    "cpu",
    "--quiet",
]


def test_train_at_16_then_warm_start_at_32_and_eval(clean, tmp_path, capsys):
    a, b, c = tmp_path / "r16", tmp_path / "warm", tmp_path / "asis"
    assert main(["train", "--model", "tiny_resnet", "--resolution", "16", "--out", str(a), *SHORT]) == 0
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["resolution"] == 16 and cfg["init"] is None
    assert len((a / "metrics.jsonl").read_text().splitlines()) == 1
    assert (
        main(["train", "--model", "tiny_resnet", "--init", str(a), "--rescale", "--out", str(b), *SHORT]) == 0
    )
    cfg = json.loads((b / "config.json").read_text())
    assert cfg["resolution"] == 32 and cfg["init_resolution"] == 16 and cfg["init_rescale"] == 2.0
    assert (
        main(["train", "--model", "tiny_resnet", "--init", str(a / "last.pt"), "--out", str(c), *SHORT]) == 0
    )
    assert json.loads((c / "config.json").read_text())["init_rescale"] is None
    capsys.readouterr()
    # the 16×16 network at 32×32, as it is and rescaled: eval agrees with rescale by hand
    from sdenet.train.checkpoint import load_checkpoint
    from sdenet.train.data import DeviceLoader

    assert (
        main(
            [
                "eval",
                str(a),
                "--resolution",
                "32",
                "--rescale",
                "--json",
                "--device",
                "cpu",
                "--limit-test",
                "64",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["resolution"] == 32 and r["trained_resolution"] == 16 and r["rescaled"]
    m = models.create("tiny_resnet", num_classes=10)
    m.load_state_dict(load_checkpoint(a)["model"])
    ds = load_dataset("sample")
    xb, yb = next(
        iter(
            DeviceLoader(ds.x_test[:64], ds.y_test[:64], batch_size=64, train=False, mean=ds.mean, std=ds.std)
        )
    )
    with torch.no_grad():
        err = float((rescale(m, 2).eval()(xb).argmax(1) != yb).float().mean())
    assert r["test_error"] == pytest.approx(err)
    assert main(["eval", str(a), "--device", "cpu", "--limit-test", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resolution"] == 16


def _one_line(capsys, code):
    cap = capsys.readouterr()
    assert code == 2, cap
    lines = [s for s in cap.err.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith("sdenet") and "Traceback" not in cap.err, cap.err
    return lines[0]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--resolution", "12"], "does not divide"),
        (["--resolution", "64"], "larger than"),
        (["--resolution", "0"], "--resolution"),
        (["--resolution", "x"], "--resolution"),
        (["--rescale"], "--init"),
        (["--init", "NOPE", "--rescale"], "missing"),
    ],
)
def test_cli_user_errors(clean, tmp_path, capsys, extra, needle):
    extra = [str(tmp_path / "nope") if e == "NOPE" else e for e in extra]
    line = _one_line(
        capsys, main(["train", "--model", "tiny_resnet", "--out", str(tmp_path / "run"), *SHORT, *extra])
    )
    assert needle in line, line


def test_init_from_another_architecture_is_one_line(clean, tmp_path, capsys):
    a = tmp_path / "a"
    assert main(["train", "--model", "tiny_resnet", "--resolution", "8", "--out", str(a), *SHORT]) == 0
    capsys.readouterr()
    line = _one_line(
        capsys,
        main(
            ["train", "--model", "tiny_shake_shake", "--init", str(a), "--out", str(tmp_path / "b"), *SHORT]
        ),
    )
    assert "does not fit" in line


@pytest.mark.slow
def test_multiscale_experiment_script_writes_its_results(tmp_path):
    """experiments/multiscale.py end to end on a slice of the bundled sample (1 + 1 epochs)."""
    import importlib.util
    from pathlib import Path

    import numpy as np

    ds = load_dataset("sample")
    npz = tmp_path / "small.npz"
    np.savez(
        npz, x_train=ds.x_train[:256], y_train=ds.y_train[:256], x_test=ds.x_test[:64], y_test=ds.y_test[:64]
    )
    path = Path(__file__).resolve().parents[1] / "experiments" / "multiscale.py"
    spec = importlib.util.spec_from_file_location("multiscale_experiment", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "res"
    assert (
        mod.main(
            [
                "--dataset",
                str(npz),
                "--epochs16",
                "1",
                "--epochs32",
                "1",
                "--runs",
                str(tmp_path / "runs"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads((out / "multiscale.json").read_text())
    s = r["seeds"][0]
    assert set(s["runs"]) == {"cold", "warm", "warm_rescaled"}
    assert 0 <= s["error_at_high"]["rescaled"] <= 1 and "as_is+bn" in s["cold_at_low"]
    assert (out / "multiscale.png").stat().st_size > 0
    assert "How little this shows" in (out / "multiscale.md").read_text()
