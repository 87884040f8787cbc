"""Chang et al.'s families: the registry's tables, parameter counts, schemes, and `sdenet train --memory`."""

import json

import pytest
import torch

import sdenet as sn
import sdenet.models as M
from sdenet.cli import main
from sdenet.nn import Stage
from sdenet.nn.models import REGISTRY
from test_train import clean, tiny_npz  # noqa: F401 (fixture)

# name: (units per stage, widths) from the authors' configurations / tables
TABLE = {
    "hamiltonian74": (6, (32, 64, 112)), "hamiltonian218": (18, (32, 64, 128)),
    "hamiltonian1202": (100, (32, 64, 128)),
    "midpoint62": (5, (32, 64, 112)), "midpoint200": (16, (32, 64, 128)),
    "leapfrog62": (5, (32, 64, 112)), "leapfrog200": (16, (32, 64, 128)),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_table_and_parameter_count(name):
    units, widths = TABLE[name]
    cfg = REGISTRY[name]["cfg"]
    assert cfg["blocks"] == (units,) * 3 and cfg["widths"] == widths
    scheme = name.rstrip("0123456789")
    assert M.info(name)["scheme"] == scheme
    if scheme == "hamiltonian":  # four conv layers per unit, stem and classifier: depth = 4·3·units + 2
        assert int(name[len(scheme):]) == 12 * units + 2
    # closed form: per unit two tied 3x3 kernels on c/2 channels (+ their batch norms, 2·(c/2) each),
    # a conv-bn stem, a bn-fc head; transitions are parameter free
    expect = 3 * 3 * 3 * widths[0] + 2 * widths[0] + 2 * widths[-1] + widths[-1] * 10 + 10
    expect += sum(units * 2 * (9 * (c // 2) ** 2 + 2 * (c // 2)) for c in widths)
    assert M.count_params(name) == expect


@pytest.mark.parametrize("name, scheme", [("tiny_hamiltonian", sn.Hamiltonian), ("tiny_midpoint", sn.Midpoint),
                                          ("tiny_leapfrog", sn.Leapfrog)])
def test_tiny_models_use_their_scheme_and_are_invertible(name, scheme):
    net = M.create(name, memory="reversible")
    stages = [m for m in net.modules() if isinstance(m, Stage)]
    assert len(stages) == 3 and all(type(s.schemes[0]) is scheme and s.memory == "reversible" for s in stages)
    y = net(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert net.config["memory"] == "reversible"


def test_dt_override_reaches_the_stages():
    net = M.create("tiny_leapfrog", dt=0.5)
    assert all(s.dt == 0.5 for s in net.modules() if isinstance(s, Stage))


def test_train_cli_reversible_and_refusal(clean, tmp_path, capsys):
    data = tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "run"
    code = main(["train", "--model", "tiny_hamiltonian", "--memory", "reversible", "--dataset", data,
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert "reversible" in json.dumps(cfg)
    capsys.readouterr()
    code = main(["train", "--model", "tiny_resnet", "--memory", "reversible", "--dataset", data, "--epochs", "1",
                 "--batch-size", "16", "--device", "cpu", "--quiet", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Euler is not invertible" in err[0] and err[0].startswith("sdenet")
