"""DistributedDataParallel on the CPU: two processes with the gloo backend train a tiny
stochastic model (LM stochastic depth, batch noise: dropped blocks are skipped) for one short
epoch; both ranks end with identical weights (and batch-norm
statistics), rank 0 alone writes the run folder, and the metrics cover the whole test set."""

from __future__ import annotations

import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_train import tiny_npz

from sdenet.train import evaluate, loop
from sdenet.train.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, data: str, out: str, tmp: str):
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    os.environ.pop("SDENET_FAULT", None)
    torch.set_num_threads(1)

    def save(info):
        torch.save(
            {"state": info["model"].state_dict(), "run_dir": info["run_dir"], "metrics": info["metrics"]},
            os.path.join(tmp, f"rank{info['rank']}.pt"),
        )

    final = loop.train(
        model="tiny_lm_sd_resnet",
        dataset=data,
        epochs=1,
        batch_size=16,
        lr=0.05,
        seed=5,
        device="cpu",
        quiet=True,
        preset="cifar10_lm",
        mode="batch",
        out=out,
        callback=save,
    )
    torch.save(final, os.path.join(tmp, f"final{rank}.pt"))


def test_two_gloo_processes_agree_and_rank0_writes(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():  # environmental
        pytest.skip("this torch build has no torch.distributed with gloo")
    data = tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), data, str(out), str(tmp_path)), nprocs=2, join=True)

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    # both ranks report the same (all-reduced) epoch metrics
    for k in ("train_loss", "train_error", "test_error", "test_loss"):
        assert r0["metrics"][k] == r1["metrics"][k], k

    # rank 0 alone wrote the run folder: one line per epoch, not one per rank
    assert sorted(p.name for p in out.iterdir()) == sorted(loop.RUN_FILES)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["world_size"] == 2
    # the saved weights are the ranks' weights
    ck = load_checkpoint(out / "last.pt")
    for k in r0["state"]:
        assert torch.equal(ck["model"][k], r0["state"][k]), k
    assert len(ck["rng"]["noise_ranks"]) == 2
    assert not torch.equal(ck["rng"]["noise_ranks"][0], ck["rng"]["noise_ranks"][1])
    # 64 training images, a global batch of 16 split over 2 ranks: each rank sees 32 images;
    # the test error covers all 32 test images once (a multiple of 1/32)
    m = json.loads(lines[0])
    assert math.isclose(m["test_error"] * 32, round(m["test_error"] * 32), abs_tol=1e-9)
    # batch noise (one increment per block and step; a dropped block is not evaluated, so
    # DDP must allow unused parameters): 4 steps per rank, the two ranks' draws pooled
    assert all(w["n"] == 8 for w in m["weak"])
    # and a one-process evaluation of the checkpoint gives the same drift-only test error
    r = evaluate(out / "last.pt", samples=0, device="cpu")
    assert r["test_error"] == pytest.approx(m["test_error"])
    assert r["test_loss"] == pytest.approx(m["test_loss"], rel=1e-5)
