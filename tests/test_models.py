"""The model registry: every name builds, runs forward and backward; counts; errors; the CLI."""

import json

import pytest
import torch

import sdenet.models as M
from sdenet import cli
from sdenet.nn.models import REGISTRY

REQUIRED = (
    [f"resnet{d}" for d in (20, 32, 44, 56, 110)]
    + [f"preact_resnet{d}" for d in (20, 32, 44, 56, 110, 164)]
    + [f"lm_resnet{d}" for d in (20, 32, 44, 56, 110, 164)]
    + [
        "resnext29_8x64d",
        "resnext29_16x64d",
        "lm_resnext29_8x64d",
        "lm_resnext29_16x64d",
        "sd_resnet56",
        "sd_resnet110",
        "lm_sd_resnet56",
        "lm_sd_resnet110",
        "shake_shake26_2x32d",
        "shake_shake26_2x96d",
        "polynet",
        "fractalnet",
        "revnet",
        "resnet50",
        "resnet101",
        "lm_resnet50",
        "lm_resnet101",
        "tiny_resnet",
        "tiny_lm_resnet",
        "tiny_sd_resnet",
        "tiny_lm_sd_resnet",
        "tiny_shake_shake",
    ]
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions: one thread is faster than two fighting over a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registry_has_every_required_name():
    assert set(REQUIRED) <= set(M.names())


def _small(name):
    """Overrides that shrink a registered model to a few thousand parameters, same structure."""
    cfg = REGISTRY[name]["cfg"]
    n = len(cfg["widths"])
    least = 3 if cfg["method"] == "heun" else 2
    kw = {"blocks": tuple(min(b, least) for b in cfg["blocks"]), "stem_width": 8}
    if cfg["arch"] == "resnext":
        kw.update(widths=(16, 32, 64), cardinality=2, base_width=2)
    elif cfg["arch"] in ("imagenet", "preact_bottleneck"):
        kw.update(widths=tuple(4 * 2**i for i in range(n)))
    else:
        kw.update(widths=tuple(8 * 2**i for i in range(n)))
    return kw


@pytest.mark.parametrize("name", M.names())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = M.create(name, num_classes=7, **_small(name)).train()
    model.set_generator(torch.Generator().manual_seed(0))
    x = torch.randn(3, 3, 32, 32)
    y = model(x)
    assert y.shape == (3, 7) and torch.isfinite(y).all()
    y.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        z = model(x)
    assert z.shape == (3, 7) and torch.isfinite(z).all()
    assert isinstance(model.lm_coefficients(), dict) and isinstance(model.weak_report(), list)
    i = M.info(name)
    assert set(i) == {"name", "params", "dataset", "scheme", "law"}
    assert (i["law"] is not None) == bool(model.weak_report())
    assert bool(model.lm_coefficients()) == (i["scheme"] in ("lm", "stochastic_lm"))


@pytest.mark.parametrize(
    "name", ["tiny_resnet", "preact_resnet20", "resnet20", "sd_resnet56", "polynet", "revnet"]
)
def test_registered_default_model_runs(name):
    model = M.create(name)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


# paper (Table 2) / original papers; ResNeXt on CIFAR-100, ResNet-50/101 on ImageNet
COUNTS = [
    ("resnet20", 10, 0.27e6),
    ("resnet32", 10, 0.46e6),
    ("resnet44", 10, 0.66e6),
    ("resnet56", 10, 0.85e6),
    ("resnet110", 10, 1.7e6),
    ("preact_resnet20", 10, 0.27e6),
    ("preact_resnet110", 10, 1.7e6),
    ("preact_resnet164", 10, 1.7e6),
    ("lm_resnet56", 10, 0.85e6),
    ("sd_resnet110", 10, 1.7e6),
    ("resnext29_8x64d", 100, 34.4e6),
    ("resnext29_16x64d", 100, 68.1e6),
    ("shake_shake26_2x32d", 10, 2.9e6),
    ("shake_shake26_2x96d", 10, 26.2e6),
    ("resnet50", 1000, 25.6e6),
    ("resnet101", 1000, 44.5e6),
]


@pytest.mark.parametrize("name,classes,expected", COUNTS)
def test_parameter_counts_match_papers(name, classes, expected):
    got = M.count_params(name, num_classes=classes)
    assert abs(got / expected - 1) < 0.02, (name, got)


@pytest.mark.parametrize(
    "base,lm",
    [
        ("preact_resnet56", "lm_resnet56"),
        ("preact_resnet164", "lm_resnet164"),
        ("resnext29_8x64d", "lm_resnext29_8x64d"),
        ("resnet50", "lm_resnet50"),
        ("sd_resnet110", "lm_sd_resnet110"),
    ],
)
def test_lm_adds_one_parameter_per_stage_block(base, lm):
    # one coefficient per block of each ODE stage; transitions sit outside the ODE
    with torch.device("meta"):
        m = M.create(base)
    extra = sum(layer.stage.steps for layer in m.layers if layer.stage is not None)
    assert extra == sum(REGISTRY[base]["cfg"]["blocks"]) - sum(
        layer.transition is not None for layer in m.layers
    )
    assert M.count_params(lm) - M.count_params(base) == extra


def test_info_matches_built_model_and_counts_are_cached():
    i = M.info("tiny_lm_resnet")
    built = M.create("tiny_lm_resnet")
    assert i["params"] == sum(p.numel() for p in built.parameters())
    assert i == {
        "name": "tiny_lm_resnet",
        "params": i["params"],
        "dataset": "cifar",
        "scheme": "lm",
        "law": None,
    }
    assert M.info("sd_resnet56")["law"] == "drop" and M.info("shake_shake26_2x32d")["law"] == "uniform"
    assert M.info("resnet50")["dataset"] == "imagenet"


def test_dt_scales_the_network():
    torch.manual_seed(0)
    a = M.create("tiny_resnet").eval()
    b = M.create("tiny_resnet", dt=0.5).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(a(x), b(x))
    stage = b.layers[0].stage
    assert stage.dt == 0.5
    with torch.no_grad():
        h = b.stem(x)
        ref = h
        for blk in stage.field.blocks:
            ref = ref + 0.5 * blk(ref)
        torch.testing.assert_close(stage(h), ref, rtol=0, atol=1e-6)


def test_stochastic_overrides():
    m = M.create("sd_resnet110", p_L=0.2, mode="batch")
    rows = m.weak_report()
    assert (
        len(rows) == 54
        and rows[-1]["p"] == pytest.approx(0.2)
        and rows[0]["p"] == pytest.approx(1 - 0.8 / 54)
    )
    assert all(s.field.noise == "batch" for s in m.modules() if hasattr(s, "field") and s.field.noise)
    lm = M.create("tiny_lm_resnet", k_init=(-0.3, -0.2), per_channel=True)
    vals = [v for ks in lm.lm_coefficients().values() for v in ks]
    assert all(-0.3 <= v <= -0.2 for v in vals)
    sh = M.create("tiny_shake_shake", forward="even", backward="keep", level="batch")
    assert sh(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("resnet_20", {}, "unknown model"),
        ("resnet20", {"p_L": 0.5}, "unknown override"),
        ("sd_resnet56", {"p_L": 0.0}, "p_L"),
        ("sd_resnet56", {"p_L": 1.5}, "p_L"),
        ("sd_resnet56", {"mode": "pixel"}, "mode"),
        ("tiny_resnet", {"dt": -1.0}, "dt"),
        ("tiny_resnet", {"dt": "x"}, "dt"),
        ("tiny_resnet", {"widths": (8, 16)}, "widths"),
        ("tiny_resnet", {"blocks": (2, 0, 2)}, "blocks"),
        ("tiny_lm_resnet", {"k_init": (0.1, -0.1)}, "k_init"),
        ("tiny_lm_resnet", {"per_channel": "yes"}, "per_channel"),
        ("tiny_shake_shake", {"backward": "wild"}, "backward"),
        ("fractalnet", {"blocks": (2, 2, 2)}, "Heun"),
        ("tiny_resnet", {"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_names_and_arguments_raise_clear_errors(name, kw, match):
    with pytest.raises(ValueError, match=match):
        M.create(name, **kw)


def test_unknown_name_suggests_close_match():
    with pytest.raises(ValueError, match="resnet20"):
        M.create("resnet2O")
    with pytest.raises(ValueError, match="unknown model"):
        M.info(42)


def test_cli_models_json(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == M.names()
    for r in rows:
        assert set(r) == {"name", "params", "dataset", "scheme", "law"} and r["params"] > 0
    assert cli.main(["models", "--dataset", "imagenet"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "resnet20 " not in out
    assert cli.main(["models", "--dataset", "mnist"]) == 2


def test_law_override_swaps_the_increments_on_the_same_field():
    m = M.create("tiny_sd_resnet", law="uniform")
    rows = m.weak_report()
    assert {r["law"] for r in rows} == {"uniform"} and all(r["p"] is None for r in rows)
    m.train()
    m.set_generator(torch.Generator().manual_seed(0))
    with torch.no_grad():
        m(torch.randn(8, 3, 16, 16))
    assert all(r["n"] == 8 for r in m.weak_report())
    # the field still carries the decayed survival probabilities: the drift p_n f is unchanged
    assert M.create("tiny_sd_resnet").layers[2].stage.field.p == m.layers[2].stage.field.p
    assert {r["law"] for r in M.create("tiny_shake_shake", law="rademacher").weak_report()} == {"rademacher"}
    with pytest.raises(ValueError, match="unknown noise law"):
        M.create("tiny_sd_resnet", law="cauchy")
    with pytest.raises(ValueError, match="unknown override"):
        M.create("tiny_resnet", law="uniform")


def test_every_registered_architecture_and_method_builds_a_registered_model():
    """The registries are filled by decorators (``register_arch``, ``register_method``): each entry
    is used by some named model (so ``test_forward_backward`` builds it), and each named model's
    architecture and method are registered."""
    from sdenet.nn.models import ARCHS, METHODS

    used_arch = {REGISTRY[n]["cfg"]["arch"] for n in M.names()}
    used_method = {REGISTRY[n]["cfg"]["method"] for n in M.names()}
    assert used_arch == set(ARCHS)
    assert used_method == set(METHODS)
    for n in M.names():
        assert REGISTRY[n]["scheme"] == METHODS[REGISTRY[n]["cfg"]["method"]]["scheme"]
