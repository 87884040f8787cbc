"""Reproducibility: every recorded result states what produced it, and --deterministic gives
bit-identical runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdenet import provenance as P

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "experiments" / "results").rglob("*.json"))


def test_there_are_recorded_results():
    assert len(RESULTS) >= 20


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: str(p.relative_to(ROOT / "experiments" / "results")))
def test_every_recorded_result_states_its_provenance(path):
    doc = json.loads(path.read_text())
    assert P.missing(doc) == [], f"{path}: no {', '.join(P.missing(doc))} in its provenance block"
    block = doc["provenance"]
    for field in P.FIELDS:  # a value, or 'unknown: <a reason>'
        v = block[field]
        assert v is not None and v != "" and (not P.is_unknown(v) or len(v) > len("unknown: ") + 10), (
            field,
            v,
        )


def test_provenance_of_a_result_made_now():
    block = P.provenance(seed=3, command="sdenet train --model tiny_resnet")
    assert P.missing({"provenance": block}) == []
    assert block["seed"] == 3 and block["threads"] == torch.get_num_threads()
    assert block["torch"] == torch.__version__ and "torch" in block["hardware"]
    assert block["commit"] and (len(block["commit"].split("+")[0]) == 40 or P.is_unknown(block["commit"]))
    assert P.missing({}) == list(P.FIELDS)
    assert P.missing({"provenance": {**block, "seed": None}}) == ["seed"]


def _strip(m: dict) -> dict:
    drop = {"wall_time", "run_dir", "provenance", "epoch_time", "epoch_cpu_time", "elapsed", "time", "date"}
    return {k: v for k, v in m.items() if k not in drop}


def test_deterministic_runs_are_bit_identical(tmp_path):
    from sdenet.train import checkpoint as ck
    from sdenet.train import loop

    kw = dict(
        model="tiny_lm_sd_resnet",
        dataset="sample",
        epochs=1,
        limit_train=64,
        limit_test=32,
        batch_size=16,
        device="cpu",
        quiet=True,
        seed=5,
        deterministic=True,
        mc_samples=2,
    )
    threads = torch.get_num_threads()
    try:
        a = loop.train(out=str(tmp_path / "a"), **kw)
        b = loop.train(out=str(tmp_path / "b"), **kw)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    assert _strip(a) == _strip(b)
    ma = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [_strip(x) for x in ma] == [_strip(x) for x in mb]
    wa, wb = (
        ck.load_checkpoint(tmp_path / "a" / "last.pt")["model"],
        ck.load_checkpoint(tmp_path / "b" / "last.pt")["model"],
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["deterministic"] is True and cfg["provenance"]["deterministic"] is True
    assert P.missing(cfg) == [] and P.missing(a) == []


def test_cli_takes_deterministic():
    from sdenet.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--model", "tiny_resnet", "--deterministic"]).deterministic
    assert parser.parse_args(["eval", "x.pt", "--deterministic"]).deterministic
