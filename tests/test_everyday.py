"""Everyday paths: ``sn.models`` / ``sn.nn`` from the top-level package, and the LM models'
``shortcut="pad"|"projection"`` option (projection = the official LM-ResNet code's
bn-relu-1×1 conv at width changes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import sdenet as sn

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=300
    ).stdout


def test_models_and_nn_are_reachable_from_the_top_level_in_a_fresh_process():
    out = _python(
        "import sys, sdenet as sn\n"
        "lazy = [m for m in ('sdenet.models', 'sdenet.nn') if m in sys.modules]\n"
        "net = sn.models.create('lm_resnet56')\n"
        "print(lazy, type(net).__name__, sn.nn.Stage.__name__, sn.models.count_params('lm_resnet20'))\n"
    )
    # `import sdenet` does not import the networks; the first attribute access does
    assert out.split() == ["[]", "Network", "Stage", "269729"]


def test_lazy_attributes_are_the_submodules_and_star_import_leaves_torch_nn_alone():
    import sdenet.models
    import sdenet.nn

    assert sn.models is sdenet.models and sn.nn is sdenet.nn
    assert "models" in dir(sn) and "nn" in dir(sn)
    with pytest.raises(AttributeError, match="no attribute 'modelz'"):
        sn.modelz  # noqa: B018
    ns = {"nn": nn}
    exec("from sdenet import *", ns)
    assert ns["nn"] is nn


# ------------------------------------------------------------------------ shortcut option


def _projection_params(widths=(16, 32, 64)):
    # bn (2 c_in) + 1×1 conv (c_in c_out, no bias) at each width change
    return sum(2 * a + a * b for a, b in zip(widths[:-1], widths[1:]))


@pytest.mark.parametrize(
    "name", ["lm_resnet20", "lm_resnet56", "lm_sd_resnet56", "resnet20", "preact_resnet20"]
)
def test_projection_shortcut_parameter_counts(name):
    pad = sn.models.count_params(name, shortcut="pad")
    assert pad == sn.models.count_params(name)  # pad is these networks' default
    assert sn.models.count_params(name, shortcut="projection") == pad + _projection_params() == pad + 2656


def test_lm_resnet20_with_projection_is_built_and_trains_a_step():
    torch.manual_seed(0)
    net = sn.models.create("lm_resnet20", shortcut="projection")
    shortcuts = [m.shortcut for m in net.modules() if isinstance(m, sn.nn.Transition)]
    assert len(shortcuts) == 2 and all(isinstance(s, sn.nn.ProjectionShortcut) for s in shortcuts)
    assert net.config["shortcut"] == "projection"
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    loss = net(x).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in shortcuts[0].parameters())


def test_projection_shortcut_is_bn_relu_conv1x1():
    torch.manual_seed(0)
    s = sn.nn.ProjectionShortcut(4, 8, stride=2).train()
    x = torch.randn(3, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    bn = nn.BatchNorm2d(4)
    conv = nn.Conv2d(4, 8, 1, stride=2, bias=False)
    conv.weight.data.copy_(s.conv.weight.data)
    assert torch.equal(s(x), conv(torch.relu(bn(x))))
    assert s(x).shape == (3, 8, 3, 3)


def test_the_lm_stage_after_a_projection_uses_its_output_as_u_minus_1():
    """Transition out, then the first LM step: (1 − k) u_0 + k S(x) + f(u_0)."""
    torch.manual_seed(0)
    net = sn.models.create("tiny_lm_resnet", shortcut="projection").eval()
    layer = net.layers[1]
    x = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        u0, s = layer.transition(x)
        stage = layer.stage
        k = stage.coefficient(0)
        expected = (1 - k) * u0 + k * s + stage.field.blocks[0](u0)
        for n in range(1, stage.steps):  # the remaining steps as the scheme gives them
            expected, u0 = (
                (1 - stage.coefficient(n)) * expected
                + stage.coefficient(n) * u0
                + stage.field.blocks[n](expected),
                expected,
            )
        out = stage(layer.transition(x)[0], prev=s)
    assert torch.allclose(out, expected, atol=1e-6)


def test_bottleneck_and_imagenet_defaults_are_kept_and_can_be_switched():
    assert sn.models.count_params("lm_resnet164") == sn.models.count_params("lm_resnet164", shortcut="conv")
    assert sn.models.count_params("lm_resnet50") == sn.models.count_params("lm_resnet50", shortcut="conv_bn")
    # the bottleneck's first stage widens 16 -> 64 at stride 1: projection there too
    assert sn.models.count_params("lm_resnet164", shortcut="projection") == sn.models.count_params(
        "lm_resnet164", shortcut="conv"
    ) + 2 * (16 + 64 + 128)


@pytest.mark.parametrize("value", ["projcetion", "A", 1, True])
def test_bad_shortcut_is_refused_by_name(value):
    with pytest.raises(ValueError, match="shortcut must be one of pad, projection, conv, conv_bn"):
        sn.models.create("lm_resnet20", shortcut=value)


def test_shake_shake_has_its_own_shortcut_and_refuses_the_option():
    with pytest.raises(ValueError, match="unknown override"):
        sn.models.create("tiny_shake_shake", shortcut="pad")
