"""The rooms of sdenet.train: one concern per module, dependencies flowing one way, the old
import paths (``sdenet.train.loop``, ``sdenet.train.data``) still holding every name, and the
``SDENET_FAULT`` hook parsed once per epoch into at most one check per step."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import sdenet.train.data as data_mod
import sdenet.train.loop as loop_mod
from sdenet.train import faults

TRAIN = Path(__file__).resolve().parents[1] / "sdenet" / "train"

#: the modules loop.py and data.py were split into, each importing only modules before it
ORDER = [
    "arrays",
    "augment",
    "cifar",
    "loaders",
    "imagefolder",
    "data",
    "jsonio",
    "faults",
    "config",
    "distributed",
    "usermodel",
    "datasource",
    "evaluation",
    "trainsetup",
    "trainer",
    "loop",
]


def _sibling_imports(name: str) -> set[str]:
    """The sibling modules of sdenet.train that ``name`` imports, at module level or inside a
    function."""
    tree = ast.parse((TRAIN / f"{name}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("name", ORDER)
def test_split_modules_import_only_earlier_ones(name):
    later = set(ORDER[ORDER.index(name) + 1 :])
    assert not (_sibling_imports(name) & later), (name, _sibling_imports(name) & later)


@pytest.mark.parametrize("name", [n for n in ORDER if n not in ("loop", "data")])
def test_split_modules_stay_small(name):
    assert len((TRAIN / f"{name}.py").read_text().splitlines()) <= 500


def _top_level_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names - {"__all__"}


def test_loop_and_data_keep_their_names():
    # every name data.py defined before the split, and the public and test-used names of loop.py
    for name in (
        "ArrayDataset",
        "DatasetError",
        "DeviceLoader",
        "load_dataset",
        "make_loaders",
        "imagefolder_loaders",
        "downsample",
        "scaled_pad",
        "check_resolution",
        "crop_flip",
        "augment_batch",
        "channel_stats",
        "default_root",
        "SAMPLE_PATH",
        "CIFAR10_CLASSES",
        "IMAGENET_MEAN",
        "IMAGENET_STD",
        "_OFFICIAL",
        "_Official",
        "_md5",
        "_mix_seed",
        "_FolderLoader",
        "_load_npz",
        "_download",
    ):
        assert hasattr(data_mod, name), name
    for name in (
        *loop_mod.__all__,
        "_Trainer",
        "_create_model",
        "_depth_of_step",
        "_mc_predict_fn",
        "is_image_folder",
        "is_user_model",
        "_model_known",
        "_default_run_dir",
        "_read_lines",
        "_resolve",
        "_seed",
        "_Dist",
        "_jsonable",
    ):
        assert hasattr(loop_mod, name), name
    # one Monte Carlo prediction: loop.py's own copy is gone, evaluation uses sdenet.nn's
    from sdenet.nn import mc_predict
    from sdenet.train import evaluation

    assert not hasattr(loop_mod, "_mc_predict") and evaluation._mc_predict_fn() is mc_predict


def test_fault_hook_is_read_per_epoch(monkeypatch):
    loss = torch.tensor(2.0)
    monkeypatch.delenv("SDENET_FAULT", raising=False)
    assert faults.epoch_faults(1) == faults.EpochFaults()
    for spec in ("nan", "nan@x", "bogus@1", "interrupt@"):
        monkeypatch.setenv("SDENET_FAULT", spec)
        assert faults.epoch_faults(1) == faults.EpochFaults(), spec
    monkeypatch.setenv("SDENET_FAULT", "nan@2")
    assert faults.epoch_faults(1).step is None
    f = faults.epoch_faults(2)
    assert torch.isnan(f.step(0, loss)) and torch.isnan(f.step(7, loss)) and not f.test_nan
    monkeypatch.setenv("SDENET_FAULT", "interrupt@3:2")
    f = faults.epoch_faults(3)
    assert f.step(0, loss) is loss and f.step(1, loss) is loss
    with pytest.raises(KeyboardInterrupt):
        f.step(2, loss)
    monkeypatch.setenv("SDENET_FAULT", "interrupt@3")
    with pytest.raises(KeyboardInterrupt):
        faults.epoch_faults(3).step(0, loss)
    monkeypatch.setenv("SDENET_FAULT", " testnan@4 ")
    f = faults.epoch_faults(4)
    assert f.step is None and f.test_nan and not f.kill_after_save
    monkeypatch.setenv("SDENET_FAULT", "killsave@5")
    f = faults.epoch_faults(5)
    assert f.step is None and f.kill_after_save and not f.test_nan
    monkeypatch.setenv("SDENET_FAULT", "kill@6:3")
    f = faults.epoch_faults(6)
    assert f.step is not None and f.step(2, loss) is loss  # step 3 would SIGKILL the process


def test_the_step_loop_checks_faults_once():
    source = (TRAIN / "trainer.py").read_text()
    tree = ast.parse(source)
    epoch = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_epoch")
    loop = next(n for n in ast.walk(epoch) if isinstance(n, ast.For))
    text = ast.get_source_segment(source, loop)
    code = "\n".join(line.split("#")[0] for line in text.splitlines())
    # one check and the call it guards; nothing else of fault injection in the loop
    assert code.count("step_fault is not None") == 1 and code.count("fault") == 2, code
