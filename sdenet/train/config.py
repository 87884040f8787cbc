"""The configuration of a training run: :class:`TrainConfig`, its validation and its
resolution against a preset into the dict ``config.json`` holds (:func:`_resolve`).

A model is named either by the registry (``sdenet.models.names()``) or as a user's
``package.module:factory`` spec; this module only checks the spelling of a spec
(:func:`_check_user_spec`): importing it is :mod:`sdenet.train.usermodel`'s.
"""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .monitor import parse_weak_K
from .presets import default_preset, get_preset, scale_milestones
from .safe_io import MAX_DT

if TYPE_CHECKING:
    import torch

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "RUN_FILES",
    "MAX_EPOCHS",
    "MAX_MC_SAMPLES",
    "DIVERGENCE_FACTOR",
    "is_user_model",
]

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "metrics.json")


#: bounds on sizes, refused before any work (a typo like --epochs 1000000000 would otherwise
#: run for ever)
MAX_EPOCHS = 10_000


MAX_MC_SAMPLES = 10_000


#: a training loss above this multiple of the run's first training loss counts as diverged
DIVERGENCE_FACTOR = 1e6


class TrainingDiverged(RuntimeError):
    """The training or test loss became NaN or infinite, or the training loss exploded past
    :data:`DIVERGENCE_FACTOR` times its first value; the message names the epoch and the last
    good checkpoint."""


@dataclass
class TrainConfig:
    """Everything a run needs. ``None`` means "the preset's value" (or the model's default for
    ``dt``, ``p_L`` and ``mode``).

    model, dataset:   a name of ``sdenet.models.names()``; ``cifar10``, ``cifar100``, ``sample``
                      or a path (see :func:`sdenet.train.data.load_dataset`).
    preset:           a name of :data:`sdenet.train.presets.PRESETS`; default picked from the
                      model and dataset (:func:`~sdenet.train.presets.default_preset`).
    epochs:           with a step preset, the milestones are rescaled proportionally.
    dt, p_L, mode:    passed to the model constructor as overrides (``mode`` is the noise
                      structure: ``sample`` or ``batch``); ``overrides`` adds any others.
    weak_K:           warn when a stochastic stage's exact ``K = C/Δt²`` exceeds it; default
                      ``"law"``: the K of the stage's own law at Δt = 1 (see
                      :mod:`sdenet.train.monitor`); ``strict_weak`` makes that an error
                      (:class:`WeakConditionError`).
    limit_train/test: keep only the first N training / test images.
    mc_samples:       Monte Carlo draws for the final test error of a stochastic network (0: none).
    deterministic:    ``torch.use_deterministic_algorithms(True)``, every generator seeded, the
                      thread count kept as set: two runs with the same config, thread count and
                      machine give bit-identical metrics and weights
                      (:func:`sdenet.provenance.set_deterministic`, ``docs/reproducibility.md``).
    resume:           a run folder to continue from its ``last.pt`` (the rest of the config
                      comes from the checkpoint; ``device``, ``quiet`` apply).
    resolution:       train and test on images area-downsampled to this height, on the device
                      (:func:`sdenet.train.data.downsample`; crop padding scaled with it).
    init, init_rescale: start from the weights of a checkpoint (a warm start: fresh optimizer
                      and schedule; a file from multilevel training may also carry
                      ``momentum``: parameter name -> SGD momentum buffer); ``init_rescale`` carries its kernels from the resolution it
                      was trained at to this run's with :func:`sdenet.nn.rescale`
                      (:mod:`sdenet.train.multiscale`); ``init_rescale_method``: "atrous"
                      (default: dilate the kernels) or "moments" (the moment map).
    random_depth:     depth-robust training: depth factors like ``"0.5,1,2"``; each batch runs
                      the network's stages at one of them, drawn uniformly (the same draws on
                      resume), with the network's own weights (:func:`sdenet.nn.at_depth`:
                      ``F`` = 2 refines, ½ coarsens each stage; a stage whose steps are not a
                      multiple of ``1/F`` keeps its Δt for that batch).
    schedule_window:  ``(offset, total)``: this run's epochs are epochs ``offset`` …
                      ``offset + epochs`` of the preset's schedule stretched over ``total``
                      epochs (multilevel training's ``schedule="continue"``: one schedule over
                      all cycles); ``None``: the schedule spans this run's own epochs.
    """

    model: str = "tiny_resnet"
    dataset: str = "sample"
    preset: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    seed: int = 0
    out: str | None = None
    device: str = "auto"
    dt: float | None = None
    p_L: float | None = None
    mode: str | None = None
    overrides: dict = field(default_factory=dict)
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    weak_K: float | str | None = None
    strict_weak: bool = False
    quiet: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    mc_samples: int = 0
    eval_batch_size: int | None = None
    data_root: str | None = None
    download: bool = False
    resume: str | None = None
    command: str | None = None
    deterministic: bool = False
    resolution: int | None = None
    init: str | None = None
    init_rescale: bool = False
    random_depth: str | list | None = None
    init_rescale_method: str = "atrous"
    schedule_window: tuple | list | None = None

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return cls(**d)


def _positive_int(name, v, allow_none=True):
    if v is None and allow_none:
        return None
    if isinstance(v, bool):
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {v!r}") from None
    if i != v and not (isinstance(v, str) and str(i) == v.strip()):
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if i < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return i


def _number(name, v, *, lo=None, lo_open=False, hi=None, allow_none=True):
    if v is None and allow_none:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if math.isnan(x) or (math.isinf(x) and name != "weak_K"):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {v!r}")
    if hi is not None and x > hi:
        raise ValueError(f"{name} must be <= {hi:g}, got {v!r}")
    return x


def _known_models() -> list[str] | None:
    """Names of the model registry (None when it cannot be imported)."""
    try:
        from .. import models
    except ImportError:
        return None
    return list(models.names())


def is_user_model(name) -> bool:
    """True for a ``package.module:factory`` spec (a user's network), False for a registry name."""
    return isinstance(name, str) and ":" in name


def _check_user_spec(spec: str) -> tuple[str, str]:
    module, _, attr = spec.partition(":")
    if "/" in module or "\\" in module or module.endswith(".py"):
        raise ValueError(
            f"--model {spec}: name an importable module (package.module:factory), "
            f"not a file; sdenet imports only module paths you name"
        )
    parts = module.split(".")
    if (
        not module
        or not all(p.isidentifier() for p in parts)
        or not attr
        or not all(a.isidentifier() for a in attr.split("."))
    ):
        raise ValueError(
            f"--model {spec}: expected package.module:factory (a module path, a "
            f"colon, the name of a function that returns an nn.Module)"
        )
    return module, attr


def _random_depth(spec, compiled: bool):
    """``random_depth`` as a list of numbers (``None``: off); refused with ``compile``."""
    if spec is None:
        return None
    from ..nn.depth import factor_float, parse_depth_factors

    try:
        factors = parse_depth_factors(spec)
    except ValueError as e:
        raise ValueError(f"random_depth: {e}") from None
    if factors == [1]:
        raise ValueError("random_depth: give at least one factor other than 1, e.g. 0.5,1,2")
    if compiled:
        raise ValueError(
            "random_depth changes the network's depth from batch to batch; it does not combine with compile"
        )
    return [factor_float(f) for f in factors]


def _schedule_window(spec, epochs: int) -> list[int] | None:
    """``schedule_window`` checked: ``[offset, total]`` integers with ``0 <= offset`` and
    ``offset + epochs <= total <= MAX_EPOCHS`` (``None``: off)."""
    if spec is None:
        return None
    if not isinstance(spec, (list, tuple)) or len(spec) != 2:
        raise ValueError(f"schedule_window must be a pair (offset, total), got {spec!r}")
    offset, total = spec
    for name, v in (("offset", offset), ("total", total)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"schedule_window: {name} must be an integer, got {v!r}")
    if offset < 0 or total > MAX_EPOCHS or offset + epochs > total:
        raise ValueError(
            f"schedule_window ({offset}, {total}) does not hold the run's {epochs} epochs "
            f"(need 0 <= offset and offset + epochs <= total <= {MAX_EPOCHS:,})"
        )
    return [offset, total]


def _resolve(cfg: TrainConfig, device: torch.device, world_size: int) -> dict:
    """The fully resolved run configuration (what config.json holds)."""
    if not isinstance(cfg.model, str) or not cfg.model:
        raise ValueError(f"model must be a model name, got {cfg.model!r}")
    known = _known_models()
    if is_user_model(cfg.model):
        _check_user_spec(cfg.model)
    elif known is not None and cfg.model not in known:
        raise ValueError(
            f"unknown model {cfg.model!r}; choose one of {', '.join(known)} "
            f"(sdenet models lists them), or package.module:factory for your own"
        )
    preset = get_preset(cfg.preset or default_preset(cfg.model, cfg.dataset))
    epochs = _positive_int("epochs", cfg.epochs) or preset.epochs
    if epochs > MAX_EPOCHS:
        raise ValueError(f"epochs={epochs} is above the bound of {MAX_EPOCHS:,} epochs")
    batch_size = _positive_int("batch_size", cfg.batch_size) or preset.batch_size
    lr = _number("lr", cfg.lr, lo=0.0, lo_open=True)
    momentum = _number("momentum", cfg.momentum, lo=0.0, hi=1.0)
    wd = _number("weight_decay", cfg.weight_decay, lo=0.0)
    ls = _number("label_smoothing", cfg.label_smoothing, lo=0.0, hi=1.0)
    dt = _number("dt", cfg.dt, lo=0.0, lo_open=True, hi=MAX_DT)
    p_L = _number("p_L", cfg.p_L, lo=0.0, lo_open=True, hi=1.0)
    weak_K = parse_weak_K(cfg.weak_K)
    seed = int(_number("seed", cfg.seed, allow_none=False))
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must lie in 0 .. 2^63 - 1, got {cfg.seed!r}")
    mc = int(_number("mc_samples", cfg.mc_samples or 0, lo=0.0))
    if mc > MAX_MC_SAMPLES:
        raise ValueError(
            f"mc_samples={mc} is above the bound of {MAX_MC_SAMPLES:,} Monte Carlo "
            f"draws (each is a pass over the test set)"
        )
    _positive_int("limit_train", cfg.limit_train)
    _positive_int("limit_test", cfg.limit_test)
    _positive_int("eval_batch_size", cfg.eval_batch_size)
    _positive_int("resolution", cfg.resolution)
    if cfg.init_rescale and not cfg.init:
        raise ValueError("init_rescale rescales the weights of init; give init (a checkpoint)")
    from ..nn.rescale import METHODS as _RESCALE_METHODS

    if cfg.init_rescale_method not in _RESCALE_METHODS:
        raise ValueError(
            f"init_rescale_method must be one of {', '.join(_RESCALE_METHODS)}, "
            f"got {cfg.init_rescale_method!r}"
        )
    if cfg.mode is not None and cfg.mode not in ("sample", "batch"):
        raise ValueError(f"mode must be 'sample' or 'batch', got {cfg.mode!r}")
    random_depth = _random_depth(cfg.random_depth, cfg.compile)
    overrides = dict(cfg.overrides or {})
    if dt is not None:
        overrides["dt"] = dt
    if p_L is not None:
        overrides["p_L"] = p_L
    if cfg.mode is not None:
        overrides["mode"] = cfg.mode
    window = _schedule_window(cfg.schedule_window, epochs)
    span = epochs if window is None else window[1]
    milestones = scale_milestones(preset.milestones, preset.epochs, span) if preset.schedule == "step" else []
    cuda = device.type == "cuda"
    return {
        "model": cfg.model,
        "dataset": str(cfg.dataset),
        "num_classes": None,  # filled in once the data are loaded
        "preset": preset.name,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": preset.lr if lr is None else lr,
        "momentum": preset.momentum if momentum is None else momentum,
        "weight_decay": preset.weight_decay if wd is None else wd,
        "nesterov": preset.nesterov,
        "label_smoothing": preset.label_smoothing if ls is None else ls,
        "schedule": preset.schedule,
        "milestones": milestones,
        "gamma": preset.gamma,
        "warmup": preset.warmup,
        "dt": dt,
        "p_L": p_L,
        "mode": cfg.mode,
        "seed": seed,
        "device": str(device),
        "amp": bool(cuda if cfg.amp is None else cfg.amp),
        "amp_dtype": "bfloat16",
        "channels_last": bool(cuda if cfg.channels_last is None else cfg.channels_last),
        "compile": bool(cfg.compile),
        "weak_K": weak_K,
        "strict_weak": bool(cfg.strict_weak),
        "world_size": int(world_size),
        "model_overrides": overrides,
        "limit_train": cfg.limit_train,
        "limit_test": cfg.limit_test,
        "eval_batch_size": cfg.eval_batch_size,
        "mc_samples": mc,
        "data_root": cfg.data_root,
        "sdenet_version": _version(),
        "git_commit": _git_commit(),
        "command": cfg.command
        if cfg.command is not None
        else " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "run_dir": None,
        "resolution": cfg.resolution,
        "init": None if cfg.init is None else str(cfg.init),
        "init_rescale": bool(cfg.init_rescale),
        "random_depth": random_depth,
        "init_rescale_method": cfg.init_rescale_method if cfg.init_rescale else None,
        "dilation": 1,
        "deterministic": bool(cfg.deterministic),
        "schedule_window": window,
    }


def _dataset_tag(spec: str) -> str:
    s = str(spec)
    if os.sep in s or "/" in s or s.endswith((".npz", ".tar.gz", ".tgz")):
        name = Path(s.rstrip("/")).name
        for suffix in (".tar.gz", ".tgz", ".npz", ".tar"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        return name or "data"
    return s


def _default_run_dir(model: str, dataset: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{model}-{_dataset_tag(dataset)}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=3
        )
    except Exception:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _version() -> str:
    from .. import __version__

    return __version__
