r"""Multilevel training: train shallow, refine ×2 at fixed T, continue (Chang et al., ICLR 2018).

``train_multilevel(levels=L, model=..., epochs=E, ...)`` trains the requested architecture at
``1/2^L`` of its steps per stage (each stage's Δt ``2^L`` times larger, the same T: the
model's ``refine`` override times ``2^{−L}``), then ``L`` times: prolongs the trained network
with :func:`sdenet.nn.refine` (``mode="constant"``: each block's weights over its two
half-steps, so the refined network starts as an O(Δt) approximation of the trained one) and
continues training, ending at the requested depth.

Choices (Chang et al. train in cycles, interpolating at the end of each and restarting the
learning-rate schedule): the ``E`` epochs are split evenly over the ``L + 1`` cycles (the
remainder goes to the last, deepest cycle), and each cycle runs the preset's schedule over
its own epochs (warm-up and decay per cycle: a restart). The SGD momentum buffers are
prolonged with the weights (the same map) and the buffers of stage parameters are divided by
the factor: a block's gradient is proportional to its Δt, so after halving Δt each of the two
copies receives half the gradient the coarse block did, and so would its momentum.

The run folder holds ``multilevel.json`` (the plan), one ordinary training run per cycle
(``cycle0/`` … ``cycleL/``, each resumable with the trainer's own machinery, cycles after the
first starting from ``init.pt``: the previous cycle's refined weights and momentum), and at
the top the usual outputs: ``config.json`` (the final cycle's, with the plan),
``metrics.jsonl`` (every epoch of every cycle, with ``cycle``, ``blocks``, ``steps``, ``dt``
and the global ``epoch``), ``last.pt`` and ``best.pt`` (the final network, loadable by
``sdenet eval``) and ``metrics.json`` (the final cycle's metrics, ``wall_time`` summed over
cycles, and one summary per cycle). :func:`resume_multilevel` continues an interrupted run
where it stopped: finished cycles are skipped, a cycle with a ``last.pt`` resumes exactly.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path

import torch

from . import checkpoint as ck

__all__ = ["train_multilevel", "resume_multilevel", "is_multilevel", "prolong_momentum", "PLAN_FILE"]

PLAN_FILE = "multilevel.json"


def is_multilevel(run_dir) -> bool:
    """True when ``run_dir`` is a multilevel run folder (it holds ``multilevel.json``)."""
    return Path(run_dir).is_dir() and (Path(run_dir) / PLAN_FILE).is_file()


def _stage_param_names(model):
    from ..nn.stage import Stage, Transition

    names = set()
    for path, m in model.named_modules():
        if isinstance(m, Stage) and not isinstance(m, Transition):
            for n, _ in m.named_parameters():
                names.add(f"{path}.{n}" if path else n)
    return names


def prolong_momentum(model, momentum: dict, factor: int = 2, mode: str = "constant") -> dict:
    """Momentum buffers (parameter name -> tensor) of ``refine(model, factor, mode)``.

    The buffers go through the same prolongation as the weights (a shadow copy of ``model``
    holding the buffers in place of its parameters is refined); those of stage parameters are
    divided by ``factor`` (a block's gradient scales with its Δt). Parameters without a buffer
    get zeros.
    """
    from ..nn.refine import refine

    shadow = copy.deepcopy(model)
    staged = _stage_param_names(shadow)
    with torch.no_grad():
        for name, p in shadow.named_parameters():
            buf = momentum.get(name)
            p.copy_(torch.zeros_like(p) if buf is None else buf.to(p.dtype))
            if name in staged:
                p.div_(factor)
    fine = refine(shadow, factor, mode)
    return {name: p.detach().clone() for name, p in fine.named_parameters()}


def _momentum_by_name(model, optimizer_state) -> dict:
    """Parameter name -> SGD momentum buffer, from an optimizer ``state_dict`` of ``model``'s parameters."""
    if not optimizer_state:
        return {}
    names = [n for n, _ in model.named_parameters()]
    ids = [i for g in optimizer_state.get("param_groups", []) for i in g.get("params", [])]
    out = {}
    for idx, name in zip(ids, names):
        st = optimizer_state.get("state", {}).get(idx)
        if st and st.get("momentum_buffer") is not None:
            out[name] = st["momentum_buffer"]
    return out


def _steps(model):
    from ..nn.stage import Stage, Transition

    return [m for m in model.modules() if isinstance(m, Stage) and not isinstance(m, Transition)]


def _shape(model) -> dict:
    """Steps and Δt per stage and the residual block count (transitions included)."""
    from ..nn.stage import Transition

    stages = _steps(model)
    transitions = sum(1 for m in model.modules() if isinstance(m, Transition))
    return {"steps": [s.steps for s in stages], "dt": [s.dt for s in stages],
            "blocks": transitions + sum(len(s.field) for s in stages)}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _split_epochs(epochs: int, cycles: int) -> list[int]:
    base = epochs // cycles
    out = [base] * cycles
    out[-1] += epochs - base * cycles
    return out


def train_multilevel(levels: int, *, out=None, prolong: str = "constant", callback=None, **train_kwargs) -> dict:
    """Train ``train_kwargs["model"]`` in ``levels + 1`` cycles of doubling depth (see the module).

    ``train_kwargs`` are :func:`sdenet.train.train`'s (``epochs`` is the total over all cycles,
    default the preset's; ``overrides`` may hold the final network's ``refine``); ``prolong`` is
    :func:`sdenet.nn.refine`'s mode between cycles. Returns the
    final metrics (``metrics.json``) with ``run_dir``. ``ValueError`` for bad levels (a stage
    whose steps are not divisible by ``2^levels``, fewer epochs than cycles, …).
    """
    from ..nn.refine import REFINE_MODES
    from .loop import _default_run_dir
    from .presets import default_preset, get_preset

    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"multilevel: levels must be a positive integer, got {levels!r}")
    if prolong not in REFINE_MODES:
        raise ValueError(f"multilevel: prolong must be one of {', '.join(REFINE_MODES)}, got {prolong!r}")
    for key in ("resume", "init", "out"):
        if train_kwargs.get(key) is not None:
            raise ValueError(f"multilevel: {key}= is not an option of a multilevel run "
                             f"(use resume_multilevel / out=)")
    train_kwargs.pop("resume", None)
    train_kwargs.pop("init", None)
    train_kwargs.pop("out", None)
    model = train_kwargs.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("multilevel: model= (a registered name) is required")
    dataset = str(train_kwargs.get("dataset", "sample"))
    epochs = train_kwargs.get("epochs")
    if epochs is None:
        epochs = get_preset(train_kwargs.get("preset") or default_preset(model, dataset)).epochs
    cycles = levels + 1
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < cycles:
        raise ValueError(f"multilevel: {levels} levels need at least {cycles} epochs (one per cycle), "
                         f"got epochs={epochs!r}")
    overrides = dict(train_kwargs.get("overrides") or {})
    if train_kwargs.get("dt") is not None:  # the dt of the final network, before refinement
        overrides["dt"] = train_kwargs.pop("dt")
    train_kwargs.pop("dt", None)
    final_refine = overrides.get("refine", 1)
    # check every level's architecture now (a stage with too few steps fails here, not mid-run)
    from ..nn import models

    plan = []
    for c, ep in enumerate(_split_epochs(epochs, cycles)):
        r = final_refine / 2 ** (levels - c)
        r = int(r) if float(r).is_integer() else r
        try:
            with torch.device("meta"):
                shape = _shape(models.create(model, **{**overrides, "refine": r}))
        except ValueError as err:
            raise ValueError(f"multilevel: level {c} ({levels - c} halvings of the final network) is "
                             f"impossible: {err}") from None
        plan.append({"cycle": c, "refine": r, "epochs": ep, "dir": f"cycle{c}", **shape})
    run_dir = Path(out) if out else _default_run_dir(model, dataset)
    if (run_dir / PLAN_FILE).exists() or (run_dir / "last.pt").exists():
        raise ValueError(f"{run_dir}: already holds a run; use --resume {run_dir} to continue it "
                         f"or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {k: v for k, v in train_kwargs.items() if k not in ("epochs", "overrides")}
    state = {"format": 1, "levels": levels, "prolong": prolong, "epochs": epochs, "model": model,
             "overrides": overrides, "train": kwargs, "cycles": plan,
             "schedule": "the preset's schedule restarted in every cycle over its own epochs",
             "momentum": "prolonged with the weights; stage buffers divided by the factor"}
    _write_json(run_dir / PLAN_FILE, state)
    return _run(run_dir, state, callback=callback)


def resume_multilevel(run_dir, *, device=None, quiet=None, callback=None) -> dict:
    """Continue the multilevel run in ``run_dir`` where it stopped (finished cycles are skipped)."""
    run_dir = Path(run_dir)
    if not is_multilevel(run_dir):
        raise ValueError(f"{run_dir}: not a multilevel run folder (no {PLAN_FILE})")
    try:
        state = json.loads((run_dir / PLAN_FILE).read_text())
    except ValueError as e:
        raise ValueError(f"{run_dir / PLAN_FILE}: not valid JSON ({e})") from None
    if (run_dir / "metrics.json").exists() and all(
            (run_dir / c["dir"] / "metrics.json").exists() for c in state["cycles"]):
        raise ValueError(f"{run_dir}: the multilevel run already finished its {len(state['cycles'])} "
                         f"cycles; nothing to resume")
    if device is not None:
        state["train"]["device"] = device
    if quiet is not None:
        state["train"]["quiet"] = quiet
    return _run(run_dir, state, callback=callback)


def _prolong(prev_ckpt: Path, target: Path, state: dict, cycle: dict) -> float:
    """Write ``target`` (init.pt): the previous cycle's network refined ×2, with its momentum."""
    from ..nn import models
    from ..nn.refine import refine

    t0 = time.perf_counter()
    c = ck.load_checkpoint(prev_ckpt)
    rc = c["config"]
    net = models.create(rc["model"], num_classes=rc["num_classes"], **dict(rc["model_overrides"]))
    net.load_state_dict(c["model"])
    momentum = _momentum_by_name(net, c.get("optimizer"))
    fine = refine(net, 2, state["prolong"])
    mom = prolong_momentum(net, momentum, 2, state["prolong"]) if momentum else {}
    config = dict(rc)
    config["model_overrides"] = {**rc["model_overrides"], "refine": cycle["refine"]}
    ck.save_atomic({"format": ck.FORMAT, "epoch": 0, "model": fine.state_dict(), "momentum": mom,
                    "config": config, "refined_from": str(prev_ckpt)}, target)
    return time.perf_counter() - t0


def _collect(run_dir: Path, state: dict) -> list[dict]:
    """Every epoch line of every cycle, with the cycle, its shape and the global epoch."""
    lines, before = [], 0
    for cyc in state["cycles"]:
        path = run_dir / cyc["dir"] / "metrics.jsonl"
        if path.exists():
            for raw in path.read_text().splitlines():
                try:
                    m = json.loads(raw)
                except ValueError:
                    continue
                m = {**m, "cycle": cyc["cycle"], "cycle_epoch": m.get("epoch"), "refine": cyc["refine"],
                     "blocks": cyc["blocks"], "steps": cyc["steps"], "dt": cyc["dt"]}
                m["epoch"] = before + int(m["cycle_epoch"])
                lines.append(m)
        before += cyc["epochs"]
    return lines


def _write_metrics(run_dir: Path, state: dict) -> None:
    lines = _collect(run_dir, state)
    tmp = run_dir / ".metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(m, default=str) + "\n" for m in lines))
    os.replace(tmp, run_dir / "metrics.jsonl")


def _run(run_dir: Path, state: dict, callback=None) -> dict:
    from .loop import train

    overrides = state["overrides"]
    prolong_s = state.setdefault("prolong_seconds", {})
    summaries = []

    def on_epoch(info):
        if info.get("rank", 0) == 0:
            _write_metrics(run_dir, state)
        if callback is not None:
            callback({**info, "cycle": current[0]})

    current = [0]
    for cyc in state["cycles"]:
        current[0] = cyc["cycle"]
        sub = run_dir / cyc["dir"]
        if (sub / "metrics.json").exists():
            pass
        elif (sub / "last.pt").exists():
            train(resume=str(sub), device=state["train"].get("device", "auto"),
                  quiet=bool(state["train"].get("quiet", False)), callback=on_epoch)
        else:
            kw = dict(state["train"])
            kw.update(out=str(sub), epochs=cyc["epochs"], overrides={**overrides, "refine": cyc["refine"]})
            if cyc["cycle"] > 0:
                init = sub / "init.pt"
                if not init.exists():
                    prev = run_dir / state["cycles"][cyc["cycle"] - 1]["dir"] / "last.pt"
                    prolong_s[str(cyc["cycle"])] = _prolong(prev, init, state, cyc)
                    _write_json(run_dir / PLAN_FILE, state)
                kw["init"] = str(init)
            for stale in ("metrics.jsonl", "config.json"):  # an interrupted first epoch
                if (sub / stale).exists() and not (sub / "last.pt").exists():
                    (sub / stale).unlink()
            train(**kw, callback=on_epoch)
        summaries.append(json.loads((sub / "metrics.json").read_text()))
    _write_metrics(run_dir, state)
    last = state["cycles"][-1]
    sub = run_dir / last["dir"]
    for name in ("last.pt", "best.pt"):
        if (sub / name).exists():
            _copy_atomic(sub / name, run_dir / name)
    config = json.loads((sub / "config.json").read_text())
    config["run_dir"] = str(run_dir)
    config["multilevel"] = {k: v for k, v in state.items() if k != "train"}
    config["epochs"] = state["epochs"]
    _write_json(run_dir / "config.json", config)
    final = dict(summaries[-1])
    final["wall_time"] = sum(float(s.get("wall_time") or 0.0) for s in summaries) + sum(
        float(v) for v in prolong_s.values())
    final["epochs"] = state["epochs"]
    final["run_dir"] = str(run_dir)
    final["cycles"] = [{"cycle": c["cycle"], "epochs": c["epochs"], "blocks": c["blocks"], "steps": c["steps"],
                        "dt": c["dt"], "test_error": s.get("test_error"), "wall_time": s.get("wall_time")}
                       for c, s in zip(state["cycles"], summaries)]
    _write_json(run_dir / "metrics.json", final)
    return final
