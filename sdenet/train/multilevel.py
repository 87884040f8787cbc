r"""Multilevel training: train shallow, refine ×2 at fixed T, continue (Chang et al., ICLR 2018).

``train_multilevel(levels=L, model=..., epochs=E, ...)`` trains the requested architecture at
``1/2^L`` of its steps per stage (each stage's Δt ``2^L`` times larger, the same T: the
model's ``refine`` override times ``2^{−L}``), then ``L`` times: prolongs the trained network
with :func:`sdenet.nn.refine` (``mode="constant"``: each block's weights over its two
half-steps, so the refined network starts as an O(Δt) approximation of the trained one) and
continues training, ending at the requested depth.

Choices (Chang et al. train in cycles, interpolating at the end of each and restarting the
learning-rate schedule): the ``E`` epochs are split evenly over the ``L + 1`` cycles (the
remainder goes to the last, deepest cycle), and with ``schedule="restart"`` (the default) each
cycle runs the preset's schedule over its own epochs (warm-up and decay per cycle: a restart);
``schedule="continue"`` runs one schedule over all ``E`` epochs instead, each cycle its window
of it (``TrainConfig.schedule_window``), so that the deepest network gets the final decay
and no prolongation is followed by a warm-up back to the peak rate. The SGD momentum buffers are
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
from .safe_io import read_json, refuse_link, write_atomic, write_text_atomic

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
    return {
        "steps": [s.steps for s in stages],
        "dt": [s.dt for s in stages],
        "blocks": transitions + sum(len(s.field) for s in stages),
    }


def _write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def _copy_atomic(src: Path, dst: Path) -> None:
    refuse_link(src, "read through")
    with open(src, "rb") as f:
        write_atomic(dst, lambda out: shutil.copyfileobj(f, out))


def _main_rank() -> bool:
    """True in the process that writes the run folder (rank 0 of torchrun, or the only one)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


class _NoLock:
    def release(self):
        pass


#: most levels of a multilevel run (2^30 times the steps of the coarsest network)
MAX_LEVELS = 30


#: entries of a plan's "train" that are passed on to each cycle's training
def _train_keys() -> frozenset:
    """Every training option a plan may carry: the fields of :class:`TrainConfig` except those a
    plan decides itself (epochs and overrides per cycle; where it writes, what it resumes or
    warm-starts from), plus the recorded command line. Derived, so a new option needs no edit here."""
    from dataclasses import fields

    from .config import TrainConfig

    return frozenset(f.name for f in fields(TrainConfig)) - {
        "epochs",
        "overrides",
        "out",
        "resume",
        "init",
        "schedule_window",
    } | {"command"}


def _check_plan(run_dir: Path, state, *, model=None, data_root=None, download=False) -> dict:
    """The plan read from ``multilevel.json``, checked as data: its shape, numbers and cycle
    folders (relative, inside the run folder), and the code and data it names agreeing with the
    command line (``model``, ``data_root``; downloads only when ``download``)."""
    from ..nn.refine import REFINE_MODES
    from .config import is_user_model
    from .safe_io import safe_subfolder

    where = run_dir / PLAN_FILE

    def bad(what):
        return ValueError(f"{where}: {what}; not a plan sdenet wrote, refused")

    if not isinstance(state, dict) or state.get("format") != 1:
        raise bad("unsupported plan format")
    levels = state.get("levels")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= MAX_LEVELS:
        raise bad(f"levels is {levels!r}, not an integer in 1..{MAX_LEVELS}")
    if state.get("prolong") not in REFINE_MODES:
        raise bad(f"prolong is {state.get('prolong')!r}")
    if not isinstance(state.get("schedule", "restart"), str):  # older plans: a sentence (a restart)
        raise bad(f"schedule is {state.get('schedule')!r}")
    cycles = state.get("cycles")
    if not isinstance(cycles, list) or len(cycles) != levels + 1:
        raise bad(f"it lists {len(cycles) if isinstance(cycles, list) else 'no'} cycles for {levels} levels")
    dirs = set()
    for i, c in enumerate(cycles):
        if not isinstance(c, dict) or c.get("cycle") != i:
            raise bad(f"cycle {i} is malformed")
        r, ep = c.get("refine"), c.get("epochs")
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0 < r < 1 << 20):
            raise bad(f"cycle {i} has refine {r!r}")
        if isinstance(ep, bool) or not isinstance(ep, int) or not 1 <= ep <= 10_000:
            raise bad(f"cycle {i} has epochs {ep!r}")
        safe_subfolder(run_dir, c.get("dir"), where)
        if c["dir"] in dirs:
            raise bad(f"two cycles share the folder {c['dir']!r}")
        dirs.add(c["dir"])
    overrides, train = state.get("overrides"), state.get("train")
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise bad("its overrides are not a dict")
    keys = _train_keys()
    if not isinstance(train, dict) or set(train) - keys:
        extra = sorted(set(train) - keys) if isinstance(train, dict) else "?"
        raise bad(f"its training options are malformed (unknown: {extra})")
    recorded = train.get("model")
    if not isinstance(recorded, str) or recorded != state.get("model"):
        raise bad("its model entries disagree")
    if is_user_model(recorded) and model != recorded:
        raise ValueError(
            f"{where}: the run trains the user model {recorded!r}; importing it runs "
            f"its code, so name it yourself with --model {recorded}"
        )
    if model is not None and model != recorded:
        raise ValueError(f"{where}: the run trains {recorded!r}, not {model!r}")
    root = train.get("data_root")
    if root is not None and (
        data_root is None
        or Path(str(data_root)).expanduser().resolve() != Path(str(root)).expanduser().resolve()
    ):
        raise ValueError(
            f"{where}: the run records the data root {root!r}; a run folder does "
            f"not choose where data are read from, so pass --data-root {root} "
            f"yourself"
        )
    train["download"] = bool(download)  # the command line alone decides on downloads
    return state


def _split_epochs(epochs: int, cycles: int) -> list[int]:
    base = epochs // cycles
    out = [base] * cycles
    out[-1] += epochs - base * cycles
    return out


SCHEDULES = ("restart", "continue")


def train_multilevel(
    levels: int,
    *,
    out=None,
    prolong: str = "constant",
    schedule: str = "restart",
    callback=None,
    **train_kwargs,
) -> dict:
    """Train ``train_kwargs["model"]`` in ``levels + 1`` cycles of doubling depth (see the module).

    ``train_kwargs`` are :func:`sdenet.train.train`'s (``epochs`` is the total over all cycles,
    default the preset's; ``overrides`` may hold the final network's ``refine``); ``prolong`` is
    :func:`sdenet.nn.refine`'s mode between cycles; ``schedule`` is ``"restart"`` (the preset's
    schedule in every cycle) or ``"continue"`` (one schedule over all cycles). Returns the
    final metrics (``metrics.json``) with ``run_dir``. ``ValueError`` for bad levels (a stage
    whose steps are not divisible by ``2^levels``, fewer epochs than cycles, …).
    """
    from ..nn.refine import REFINE_MODES
    from .config import _default_run_dir
    from .presets import default_preset, get_preset

    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"multilevel: levels must be a positive integer, got {levels!r}")
    if levels > MAX_LEVELS:
        raise ValueError(
            f"multilevel: {levels} levels is above the bound of {MAX_LEVELS} "
            f"(2^{MAX_LEVELS} times the steps of the coarsest network)"
        )
    if prolong not in REFINE_MODES:
        raise ValueError(f"multilevel: prolong must be one of {', '.join(REFINE_MODES)}, got {prolong!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"multilevel: schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    for key in ("resume", "init", "out", "schedule_window"):
        if train_kwargs.get(key) is not None:
            raise ValueError(
                f"multilevel: {key}= is not an option of a multilevel run (use resume_multilevel / out=)"
            )
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
        raise ValueError(
            f"multilevel: {levels} levels need at least {cycles} epochs (one per cycle), "
            f"got epochs={epochs!r}"
        )
    overrides = dict(train_kwargs.get("overrides") or {})
    if train_kwargs.get("dt") is not None:  # the dt of the final network, before refinement
        overrides["dt"] = train_kwargs.pop("dt")
    train_kwargs.pop("dt", None)
    final_refine = overrides.get("refine", 1)
    from .safe_io import check_model_size

    check_model_size(model, None, overrides, where="multilevel")  # the deepest network fits
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
            raise ValueError(
                f"multilevel: level {c} ({levels - c} halvings of the final network) is impossible: {err}"
            ) from None
        plan.append({"cycle": c, "refine": r, "epochs": ep, "dir": f"cycle{c}", **shape})
    from .runfolder import RunLock, check_out_dir, make_run_dir

    run_dir = check_out_dir(Path(out) if out else _default_run_dir(model, dataset), live=_main_rank())
    created = make_run_dir(run_dir)
    try:
        lock = _NoLock() if not _main_rank() else RunLock(run_dir).acquire()  # one of two starts
    except BaseException:
        if created:
            try:
                run_dir.rmdir()
            except OSError:
                pass
        raise
    try:
        if _main_rank() and any(os.path.lexists(run_dir / n) for n in (PLAN_FILE, "last.pt", "config.json")):
            raise ValueError(
                f"{run_dir}: already holds a run; use --resume {run_dir} to continue "
                f"it or choose another --out"
            )
        kwargs = {k: v for k, v in train_kwargs.items() if k not in ("epochs", "overrides")}
        state = {
            "format": 1,
            "levels": levels,
            "prolong": prolong,
            "epochs": epochs,
            "model": model,
            "overrides": overrides,
            "train": kwargs,
            "cycles": plan,
            "schedule": schedule,
            "momentum": "prolonged with the weights; stage buffers divided by the factor",
        }
        if _main_rank():
            _write_json(run_dir / PLAN_FILE, state)
        return _run(run_dir, state, callback=callback)
    finally:
        lock.release()


def resume_multilevel(
    run_dir, *, device=None, quiet=None, callback=None, model=None, data_root=None, download=False
) -> dict:
    """Continue the multilevel run in ``run_dir`` where it stopped (finished cycles are skipped).

    The run folder is locked first (a live run's folder is refused and nothing in it changes).
    ``multilevel.json`` is data: its cycle folders must lie inside ``run_dir``, a user model it
    names is imported only when ``model`` names the same one, a data root it records is used only
    when ``data_root`` agrees, and data are downloaded only when ``download``."""
    from .runfolder import RunLock

    run_dir = Path(run_dir)
    if not is_multilevel(run_dir):
        raise ValueError(f"{run_dir}: not a multilevel run folder (no {PLAN_FILE})")
    lock = RunLock(run_dir).acquire() if _main_rank() else _NoLock()
    try:
        state = _check_plan(
            run_dir, read_json(run_dir / PLAN_FILE), model=model, data_root=data_root, download=download
        )
        if (run_dir / "metrics.json").exists() and all(
            (run_dir / c["dir"] / "metrics.json").exists() for c in state["cycles"]
        ):
            raise ValueError(
                f"{run_dir}: the multilevel run already finished its "
                f"{len(state['cycles'])} cycles; nothing to resume"
            )
        if device is not None:
            state["train"]["device"] = device
        if quiet is not None:
            state["train"]["quiet"] = quiet
        return _run(run_dir, state, callback=callback)
    finally:
        lock.release()


def _prolong(prev_ckpt: Path, target: Path, state: dict, cycle: dict) -> float:
    """Write ``target`` (init.pt): the previous cycle's network refined ×2, with its momentum."""
    from ..nn import models
    from ..nn.refine import refine

    t0 = time.perf_counter()
    from .safe_io import check_model_size
    from .usermodel import _model_known

    c = ck.load_checkpoint(prev_ckpt)
    ck.validate_checkpoint(c, prev_ckpt, known_model=_model_known)
    rc = c["config"]
    overrides = dict(rc.get("model_overrides") or {})
    check_model_size(
        rc["model"], rc.get("num_classes"), {**overrides, "refine": cycle["refine"]}, where=str(prev_ckpt)
    )
    net = models.create(rc["model"], num_classes=rc.get("num_classes"), **overrides)
    net.load_state_dict(c["model"])
    momentum = _momentum_by_name(net, c.get("optimizer"))
    fine = refine(net, 2, state["prolong"])
    mom = prolong_momentum(net, momentum, 2, state["prolong"]) if momentum else {}
    config = dict(rc)
    config["model_overrides"] = {**overrides, "refine": cycle["refine"]}
    ck.save_atomic(
        {
            "format": ck.FORMAT,
            "epoch": 0,
            "model": fine.state_dict(),
            "momentum": mom,
            "config": config,
            "refined_from": str(prev_ckpt),
        },
        target,
    )
    return time.perf_counter() - t0


def _collect(run_dir: Path, state: dict) -> list[dict]:
    """Every epoch line of every cycle, with the cycle, its shape and the global epoch."""
    lines, before = [], 0
    for cyc in state["cycles"]:
        path = run_dir / cyc["dir"] / "metrics.jsonl"
        if path.is_file() and not path.is_symlink():
            from .jsonio import _read_lines

            for raw in _read_lines(path):
                try:
                    m = json.loads(raw)
                except ValueError:
                    continue
                m = {
                    **m,
                    "cycle": cyc["cycle"],
                    "cycle_epoch": m.get("epoch"),
                    "refine": cyc["refine"],
                    "blocks": cyc["blocks"],
                    "steps": cyc["steps"],
                    "dt": cyc["dt"],
                }
                m["epoch"] = before + int(m["cycle_epoch"])
                lines.append(m)
        before += cyc["epochs"]
    return lines


def _write_metrics(run_dir: Path, state: dict) -> None:
    lines = _collect(run_dir, state)
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(m, default=str) + "\n" for m in lines))


def _run(run_dir: Path, state: dict, callback=None) -> dict:
    from .trainer import train

    overrides = state["overrides"]
    prolong_s = state.setdefault("prolong_seconds", {})
    summaries = []

    def on_epoch(info):
        if info.get("rank", 0) == 0:
            _write_metrics(run_dir, state)
        if callback is not None:
            callback({**info, "cycle": current[0]})

    current = [0]
    from .safe_io import safe_subfolder

    user_model = state["train"].get("model")
    user_model = user_model if isinstance(user_model, str) and ":" in user_model else None
    for cyc in state["cycles"]:
        current[0] = cyc["cycle"]
        sub = safe_subfolder(run_dir, cyc["dir"], run_dir / PLAN_FILE)
        if (sub / "metrics.json").exists():
            pass
        elif (sub / "last.pt").exists():
            model_kw = {"model": user_model} if user_model else {}
            train(
                resume=str(sub),
                device=state["train"].get("device", "auto"),
                quiet=bool(state["train"].get("quiet", False)),
                callback=on_epoch,
                data_root=state["train"].get("data_root"),
                download=bool(state["train"].get("download")),
                **model_kw,
            )
        else:
            kw = dict(state["train"])
            kw.update(out=str(sub), epochs=cyc["epochs"], overrides={**overrides, "refine": cyc["refine"]})
            if state.get("schedule") == "continue":  # this cycle's window of one schedule
                done = sum(c["epochs"] for c in state["cycles"][: cyc["cycle"]])
                kw["schedule_window"] = [done, sum(c["epochs"] for c in state["cycles"])]
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
        summaries.append(read_json(sub / "metrics.json"))
    _write_metrics(run_dir, state)
    last = state["cycles"][-1]
    sub = run_dir / last["dir"]
    for name in ("last.pt", "best.pt"):
        if (sub / name).exists():
            _copy_atomic(sub / name, run_dir / name)
    config = read_json(sub / "config.json")
    config["run_dir"] = str(run_dir)
    config["multilevel"] = {k: v for k, v in state.items() if k != "train"}
    config["epochs"] = state["epochs"]
    _write_json(run_dir / "config.json", config)
    final = dict(summaries[-1])
    final["wall_time"] = sum(float(s.get("wall_time") or 0.0) for s in summaries) + sum(
        float(v) for v in prolong_s.values()
    )
    final["epochs"] = state["epochs"]
    final["run_dir"] = str(run_dir)
    final["cycles"] = [
        {
            "cycle": c["cycle"],
            "epochs": c["epochs"],
            "blocks": c["blocks"],
            "steps": c["steps"],
            "dt": c["dt"],
            "test_error": s.get("test_error"),
            "wall_time": s.get("wall_time"),
        }
        for c, s in zip(state["cycles"], summaries)
    ]
    _write_json(run_dir / "metrics.json", final)
    return final
