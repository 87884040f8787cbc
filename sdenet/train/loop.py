"""The training loop: SGD with momentum on a named model and dataset, writing a run folder.

``train(config) -> dict`` runs one training job and returns the final metrics (the content of
``metrics.json``); ``evaluate(checkpoint) -> dict`` measures a saved network's test error, with
Monte Carlo draws for stochastic networks. The run folder holds ``config.json``,
``metrics.jsonl`` (one line per finished epoch), ``last.pt``/``best.pt`` (atomic checkpoints)
and ``metrics.json`` (written at the end).

Efficiency: the data live on the device (:mod:`sdenet.train.data`); loss and accuracy are
summed on the device and read once per epoch (and every ``progress_every`` steps when the
progress bar is shown). On CUDA the forward pass runs under bf16 autocast with channels-last
tensors, optionally through ``torch.compile``.

Several processes: started by ``torchrun`` (environment ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), each process trains a DistributedDataParallel replica on its share of every
batch (backend nccl on CUDA, gloo on CPU); rank 0 alone writes the run folder.

Exactness: a run stopped after epoch k and resumed with ``resume=RUN_DIR`` ends with the same
weights as an uninterrupted run: the checkpoint holds the model, optimizer and scheduler
states, the global torch RNG states, the network noise generator's state (of every rank), and
the data loader needs only ``(seed, epoch)``.

Test hook: the environment variable ``SDENET_FAULT`` injects faults — ``nan@E`` makes the
loss NaN throughout epoch E, ``testnan@E`` makes epoch E's test loss NaN, ``interrupt@E`` /
``interrupt@E:S`` raises KeyboardInterrupt at step S (default 0) of epoch E, ``kill@E:S`` sends
the process SIGKILL at step S of epoch E, ``killsave@E`` sends it SIGKILL between the
``last.pt`` and ``best.pt`` writes of epoch E.

Crashes: the run folder is locked (:class:`~sdenet.train.runfolder.RunLock`) while a run uses
it; a run that stops before its first checkpoint leaves ``config.json``, from which
``resume`` starts it over (and a new run may take the folder over, saying so); ``best.pt`` is
written after ``last.pt`` and the best epoch is always read from ``best.pt`` itself (repaired
from ``last.pt`` on resume when a kill fell between the two writes). A NaN or infinite train or
test loss, or a training loss above :data:`DIVERGENCE_FACTOR` times the run's first one, stops
the run (:class:`TrainingDiverged`) before that epoch is written anywhere.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint as ck
from .hardware import describe
from .monitor import (DEFAULT_WEAK_K, WeakConditionError, format_table, model_is_stochastic,
                      model_weak_report, normalize_report, parse_weak_K, reduce_report,
                      reset_model_weak_stats, violations, warning_message)
from .runfolder import RunLock, check_out_dir, make_run_dir, remove_stale_temporaries
from .safe_io import MAX_DT
from .presets import default_preset, get_preset, lr_factor, scale_milestones

__all__ = ["TrainConfig", "train", "evaluate", "TrainingDiverged", "WeakConditionError",
           "resolve_device", "RUN_FILES", "MAX_EPOCHS", "MAX_MC_SAMPLES", "DIVERGENCE_FACTOR"]

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

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(names))}")
        return cls(**d)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


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


def resolve_device(spec="auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is present, else ``cpu``; ``cuda`` ->
    ``cuda:LOCAL_RANK``; ``cuda:N``, ``cpu`` as given. ValueError when CUDA is asked for and
    absent."""
    s = str(spec if spec is not None else "auto").strip().lower()
    if s == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: CUDA is not available on this machine (use --device cpu)")
        if s == "cuda":
            return torch.device(f"cuda:{local_rank}")
        try:
            index = int(s.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"device {spec!r}: expected cuda:N with an integer N") from None
        if not 0 <= index < torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: there are {torch.cuda.device_count()} CUDA devices")
        return torch.device(f"cuda:{index}")
    raise ValueError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


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
        raise ValueError(f"--model {spec}: name an importable module (package.module:factory), "
                         f"not a file; sdenet imports only module paths you name")
    parts = module.split(".")
    if not module or not all(p.isidentifier() for p in parts) or not attr or not all(
            a.isidentifier() for a in attr.split(".")):
        raise ValueError(f"--model {spec}: expected package.module:factory (a module path, a "
                         f"colon, the name of a function that returns an nn.Module)")
    return module, attr


def _create_user_model(spec: str, num_classes: int, overrides: dict):
    """``factory(num_classes=..., **overrides)`` of a ``package.module:factory`` spec.

    The module is imported by its path (the current folder is searched last, after
    ``sys.path``), never from a file name, and only when the user named it."""
    import importlib

    module_name, attr = _check_user_spec(spec)
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--model {spec}: cannot import module {module_name!r} "
                         f"({type(e).__name__}: {_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ValueError(f"--model {spec}: module {module_name!r} fails to import: "
                         f"{_where_failed(e)}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    factory = module
    for a in attr.split("."):
        factory = getattr(factory, a, None)
    if not callable(factory):
        raise ValueError(f"--model {spec}: module {module_name!r} has no callable {attr!r}")
    try:
        model = factory(num_classes=num_classes, **overrides)
    except TypeError as e:
        raise ValueError(f"--model {spec}: {attr}(num_classes={num_classes}"
                         f"{''.join(f', {k}=...' for k in sorted(overrides))}) failed: "
                         f"{_first_line(e)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--model {spec}: {attr}() returned {type(model).__name__!r}, not a "
                         f"torch.nn.Module")
    return model


_first_line = ck._first_line


def _where_failed(err: BaseException) -> str:
    """``file:line: SyntaxError: ...`` (or the last frame of the traceback) of an exception raised
    while importing a user's module."""
    import traceback

    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}: {type(err).__name__}: {err.msg}"
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if "importlib" not in f.filename and not f.filename.startswith("<frozen")]
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(err).__name__}: {_first_line(err)}"


def _model_known(name) -> bool:
    if is_user_model(name):
        return True
    known = _known_models()
    return known is None or name in known


def _create_model_check(name, num_classes, overrides, where: str) -> None:
    """The checks :func:`_create_model` makes before building, for a config that is only read
    (a warm start's): its options are the registry's and its sizes fit."""
    from .safe_io import check_model_size

    check_model_size(name, num_classes, overrides, where=where, train=False)


def _create_model(name: str, num_classes: int, overrides: dict, *, where: str = "model",
                  batch: int = 0, image: int | None = None, train: bool = True, device=None):
    """Build a registered model, or a user's ``package.module:factory`` one (indirection so tests
    can substitute a stand-in). A registered model's size is checked first against this
    machine's memory (:func:`sdenet.train.safe_io.check_model_size`): its sizes may come from a
    stored config."""
    from .safe_io import check_model_size

    check_model_size(name, num_classes, overrides, where=where, batch=batch, image=image,
                     train=train, device=device)
    if is_user_model(name):
        return _create_user_model(name, num_classes, overrides)
    try:
        from .. import models
    except ImportError as e:
        raise ValueError(f"cannot build model {name!r}: the model registry sdenet.models does "
                         f"not import ({e})") from None

    try:
        return models.create(name, num_classes=num_classes, **overrides)
    except TypeError as e:
        raise ValueError(f"model {name!r} does not take the option(s) "
                         f"{', '.join(sorted(overrides)) or '(none)'}: {e}") from None


def _load_data(spec: str, root=None, download=False, limit_train=None, limit_test=None):
    from .data import load_dataset

    ds = load_dataset(spec, root=root, download=download)
    if limit_train is not None or limit_test is not None:
        ntr = len(ds.x_train) if limit_train is None else min(int(limit_train), len(ds.x_train))
        nte = len(ds.x_test) if limit_test is None else min(int(limit_test), len(ds.x_test))
        ds = replace(ds, x_train=ds.x_train[:ntr], y_train=ds.y_train[:ntr],
                     x_test=ds.x_test[:nte], y_test=ds.y_test[:nte])
    return ds


def is_image_folder(spec) -> bool:
    """True for an ImageNet-style root: ``train/`` and ``val/`` folders, one sub-folder per class."""
    try:
        path = Path(str(spec)).expanduser()
        return path.is_dir() and (path / "train").is_dir() and (path / "val").is_dir()
    except OSError:
        return False


def _image_folder_loaders(spec, *, limit_train=None, limit_test=None, **kwargs):
    """``(train, val)`` loaders of an image-folder dataset (torchvision's ``ImageFolder`` with the
    paper's scale augmentation, :func:`sdenet.train.data.imagefolder_loaders`)."""
    if limit_train is not None or limit_test is not None:
        raise ValueError(f"{spec}: --limit-train/--limit-test apply to CIFAR-style arrays, "
                         f"not to image folders")
    from .data import imagefolder_loaders

    return imagefolder_loaders(Path(str(spec)).expanduser(), **kwargs)


def _dataset_tag(spec: str) -> str:
    s = str(spec)
    if os.sep in s or "/" in s or s.endswith((".npz", ".tar.gz", ".tgz")):
        name = Path(s.rstrip("/")).name
        for suffix in (".tar.gz", ".tgz", ".npz", ".tar"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        return name or "data"
    return s


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=3)
    except Exception:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _version() -> str:
    from .. import __version__

    return __version__


def _set_generator(model, generator) -> None:
    """Hand the network noise generator to the model: its own ``set_generator``, or, for a
    user's module, to every sdenet stage and stochastic field inside it."""
    if hasattr(model, "set_generator"):
        model.set_generator(generator)
        return
    try:
        from ..nn import set_generator
    except ImportError:  # pragma: no cover
        return
    set_generator(model, generator)


def _is_stochastic(model) -> bool:
    return model_is_stochastic(model)


def _weak_report(model) -> list[dict]:
    return model_weak_report(model)


def _lm_coefficients(model) -> dict:
    fn = getattr(model, "lm_coefficients", None)
    if fn is None:
        return {}
    out = {}
    for k, v in (fn() or {}).items():
        if isinstance(v, torch.Tensor):
            v = v.detach().float().cpu().reshape(-1).tolist()
        out[str(k)] = [float(x) for x in v]
    return out


def _fault():
    """Parse ``SDENET_FAULT`` (test hook): returns (kind, epoch, step) or None."""
    spec = os.environ.get("SDENET_FAULT", "").strip()
    if not spec:
        return None
    try:
        kind, _, where = spec.partition("@")
        epoch, _, step = where.partition(":")
        return kind.strip(), int(epoch), int(step or 0)
    except ValueError:
        return None


class _Dist:
    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank = int(os.environ.get("RANK", "0") or 0)
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)) or 0)
        self.owned = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device):
        if self.world_size <= 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    rank=self.rank, world_size=self.world_size)
            self.owned = True

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def all_gather(self, obj):
        if self.world_size <= 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, model):
        import torch.distributed as dist

        for b in model.buffers():
            dist.broadcast(b, 0)

    def barrier(self):
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False


def _seed(*parts) -> int:
    import numpy as np

    state = np.random.SeedSequence([int(p) % (1 << 63) for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


# --------------------------------------------------------------------------------------------
# The resolved configuration
# --------------------------------------------------------------------------------------------


def _resolve(cfg: TrainConfig, device: torch.device, world_size: int) -> dict:
    """The fully resolved run configuration (what config.json holds)."""
    if not isinstance(cfg.model, str) or not cfg.model:
        raise ValueError(f"model must be a model name, got {cfg.model!r}")
    known = _known_models()
    if is_user_model(cfg.model):
        _check_user_spec(cfg.model)
    elif known is not None and cfg.model not in known:
        raise ValueError(f"unknown model {cfg.model!r}; choose one of {', '.join(known)} "
                         f"(sdenet models lists them), or package.module:factory for your own")
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
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must lie in 0 .. 2^63 - 1, got {cfg.seed!r}")
    mc = int(_number("mc_samples", cfg.mc_samples or 0, lo=0.0))
    if mc > MAX_MC_SAMPLES:
        raise ValueError(f"mc_samples={mc} is above the bound of {MAX_MC_SAMPLES:,} Monte Carlo "
                         f"draws (each is a pass over the test set)")
    _positive_int("limit_train", cfg.limit_train)
    _positive_int("limit_test", cfg.limit_test)
    _positive_int("eval_batch_size", cfg.eval_batch_size)
    _positive_int("resolution", cfg.resolution)
    if cfg.init_rescale and not cfg.init:
        raise ValueError("init_rescale rescales the weights of init; give init (a checkpoint)")
    from ..nn.rescale import METHODS as _RESCALE_METHODS

    if cfg.init_rescale_method not in _RESCALE_METHODS:
        raise ValueError(f"init_rescale_method must be one of {', '.join(_RESCALE_METHODS)}, "
                         f"got {cfg.init_rescale_method!r}")
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
    milestones = (scale_milestones(preset.milestones, preset.epochs, epochs)
                  if preset.schedule == "step" else [])
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
        "command": cfg.command if cfg.command is not None else " ".join(
            shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "run_dir": None,
        "resolution": cfg.resolution,
        "init": None if cfg.init is None else str(cfg.init),
        "init_rescale": bool(cfg.init_rescale),
        "random_depth": random_depth,
        "init_rescale_method": cfg.init_rescale_method if cfg.init_rescale else None,
        "dilation": 1,
        "deterministic": bool(cfg.deterministic),
    }


def _agreed_data_root(rc: dict, given, run_dir) -> str | None:
    """The data root of a resumed run: the one the command line gives. A root the run folder
    records is used only when the command line passes the same one (a file does not choose
    where data are read from); otherwise one line saying what to pass."""
    recorded = rc.get("data_root")
    if recorded is None:
        return given
    if given is None or Path(str(given)).expanduser().resolve() != Path(str(recorded)).expanduser().resolve():
        raise ValueError(f"{run_dir}: the run records the data root {recorded!r}; a run folder "
                         f"does not choose where data are read from, so pass --data-root "
                         f"{recorded} yourself (or move the run)")
    return given


def _read_lines(path: Path, limit: int = 1 << 28) -> list[str]:
    """The lines of a text file in a run folder (at most ``limit`` bytes; undecodable bytes
    replaced)."""
    with open(path, "rb") as f:
        data = f.read(limit)
    return data.decode("utf-8", "replace").splitlines()


#: float32's unit roundoff: a step whose update dt * f is below it relative to the state is lost
_ROUNDOFF = 2.0 ** -24


def _check_step_precision(model, rc: dict, log) -> None:
    """Warn (refuse under ``strict_weak``) when a stage's step is so small that ``x + dt f(x)``
    rounds to ``x`` at working precision (float32's unit roundoff, for ``|f| ~ |x|``): the stage
    is then the identity and its blocks learn nothing."""
    dts = []
    for m in model.modules():
        dt = getattr(m, "dt", None)
        if isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0 and hasattr(m, "steps"):
            dts.append(float(dt))
    if not dts:
        return
    eps = _ROUNDOFF
    small = min(dts)
    if small >= eps:
        return
    msg = (f"a stage steps with dt = {small:.3g}, below float32's resolution {eps:.3g}: x + dt f(x) "
           f"rounds to x, so the stage is the identity at working precision; use a larger dt or "
           f"fewer refinements")
    if rc.get("strict_weak"):
        raise ValueError(msg + " (--strict-weak)")
    log(f"sdenet: warning: {msg}", err=True)


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
        raise ValueError("random_depth changes the network's depth from batch to batch; it does not "
                         "combine with compile")
    return [factor_float(f) for f in factors]


def _depth_of_step(rc: dict, step: int):
    """The depth factor of global training step ``step`` (a function of the seed and the step,
    so an interrupted run draws the same on resume)."""
    factors = rc.get("random_depth")
    if not factors:
        return 1
    return factors[_seed(rc["seed"], 19, step) % len(factors)]


def _check_random_depth(model, factors) -> None:
    """Refuse a coarsening factor that coarsens no stage of ``model``."""
    from ..nn.depth import _stages, parse_depth_factor

    steps = [s.steps for _, s in _stages(model)]
    if not steps:
        raise ValueError("random_depth: the model has no sdenet Stage to run at another depth")
    for f in factors:
        k = parse_depth_factor(f).denominator
        if k > 1 and not any(n % k == 0 for n in steps):
            raise ValueError(f"random_depth: factor {f} coarsens no stage of the model (steps per "
                             f"stage {steps}, none a multiple of {k}); refine the model first, "
                             f"e.g. overrides refine=2")


def _default_run_dir(model: str, dataset: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{model}-{_dataset_tag(dataset)}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else (1e308 if x > 0 else -1e308)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    return str(x)


def _write_json(path: Path, obj) -> None:
    from .safe_io import write_text_atomic

    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


def _log(msg: str, quiet_ok: bool = True, file=None) -> None:
    print(msg, file=file or sys.stdout, flush=True)


def _loss_fn(out, y, label_smoothing):
    return F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)


@torch.no_grad()
def _eval_sums(fwd, loader, device, amp: bool, dist: _Dist):
    """Summed test loss, number correct and count over this rank's share, all-reduced."""
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for x, y in loader:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = fwd(x)
        loss += F.cross_entropy(out.float(), y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
        count += y.shape[0]
    t = torch.stack([loss, correct.double(), torch.tensor(float(count), dtype=torch.float64,
                                                          device=device)])
    t = dist.all_reduce(t).cpu()
    n = max(t[2].item(), 1.0)
    return t[0].item() / n, 1.0 - t[1].item() / n, int(t[2].item())


def _mc_predict_fn():
    try:
        from ..nn import mc_predict

        return mc_predict
    except ImportError:  # sdenet.nn without it: the same thing here
        return _mc_predict


@torch.no_grad()
def _mc_predict(model, x, samples=10, generator=None):
    """Mean of the softmax over ``samples`` noisy passes, batch norm in eval mode."""
    if generator is not None and hasattr(model, "set_generator"):
        model.set_generator(generator)
    was = model.training
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    try:
        prob = None
        for _ in range(int(samples)):
            p = torch.softmax(model(x).float(), dim=1)
            prob = p if prob is None else prob.add_(p)
        return prob.div_(int(samples))
    finally:
        model.train(was)


@torch.no_grad()
def _mc_sums(model, loader, device, samples: int, generator, dist: _Dist, amp: bool):
    """Test loss and error of the Monte Carlo average of ``samples`` noisy passes."""
    mc_predict = _mc_predict_fn()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for x, y in loader:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            prob = mc_predict(model, x, samples=samples, generator=generator)
        prob = prob.float()
        loss += -(prob.gather(1, y[:, None]).clamp_min(1e-12).log()).sum().double()
        correct += (prob.argmax(1) == y).sum()
        count += y.shape[0]
    t = torch.stack([loss, correct.double(), torch.tensor(float(count), dtype=torch.float64,
                                                          device=device)])
    t = dist.all_reduce(t).cpu()
    n = max(t[2].item(), 1.0)
    return t[0].item() / n, 1.0 - t[1].item() / n


def _checkpoint_error(c: dict) -> float:
    """The test error of the epoch a checkpoint holds."""
    m = c.get("metrics")
    if isinstance(m, dict) and isinstance(m.get("test_error"), (int, float)):
        return float(m["test_error"])
    return float(c.get("best_test_error", float("inf")))


def _check_fits(model, image_shape, num_classes: int, rc: dict, device, noise=None) -> None:
    """Refuse, before training, a dataset whose images the model cannot take: the channels
    against the first convolution's, then one forward pass of two blank images (eval mode, no
    gradient, random states restored) that must give ``(2, num_classes)`` logits."""
    h, w, c = image_shape
    what = f"{rc['dataset']}: its images are {c}-channel {h}x{w}"
    name = rc["model"]
    for path, m in model.named_modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            if m.in_channels != c:
                raise ValueError(f"{what}, but {name}'s first convolution ({path or 'the model'}) "
                                 f"takes {m.in_channels}-channel images")
            break
    x = torch.zeros(2, c, h, w, device=device)
    if rc.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    cpu_state = torch.get_rng_state()
    noise_state = noise.get_state() if noise is not None else None
    was = model.training
    model.eval()
    try:
        # the same autocast as the training pass, so the probe runs the code training will run
        amp = bool(rc.get("amp")) and (device.type != "cuda" or torch.cuda.is_bf16_supported())
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                             enabled=amp):
            out = model(x)
    except Exception as e:
        raise ValueError(f"{what}, and {name} cannot take them ({type(e).__name__}: "
                         f"{_first_line(e)})") from None
    finally:
        model.train(was)
        torch.set_rng_state(cpu_state)
        if noise is not None:
            noise.set_state(noise_state)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{what}, and {name} returns {got} for 2 of them; expected logits of "
                         f"shape (2, {num_classes}) for its {num_classes} classes")


def train(config: TrainConfig | dict | None = None, /, *, callback=None, **kwargs) -> dict:
    """Train a network; return the final metrics (the content of ``metrics.json`` plus
    ``run_dir``).

    ``config`` is a :class:`TrainConfig`, a dict of its fields, or None with the fields as
    keyword arguments (keywords override the config's fields). ``callback(info)`` is called on
    every rank after each epoch's checkpoint with ``info = {"epoch", "metrics", "model",
    "run_dir", "rank"}``.

    Raises ValueError for bad settings (unknown model, missing dataset file, bad numbers),
    :class:`WeakConditionError` (a ValueError) when ``strict_weak`` is set and a stochastic
    stage's K exceeds ``weak_K``, :class:`TrainingDiverged` when the loss turns NaN.
    KeyboardInterrupt leaves ``last.pt`` of the last finished epoch.
    """
    if config is None:
        cfg = TrainConfig.from_dict(kwargs)
    elif isinstance(config, TrainConfig):
        cfg = replace(config, **kwargs) if kwargs else config
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict({**config, **kwargs})
    else:
        raise ValueError(f"train() takes a TrainConfig or a dict, got {type(config).__name__}")
    dist = _Dist()
    device = resolve_device(cfg.device, dist.local_rank)
    dist.init(device)
    try:
        return _Trainer(cfg, device, dist, callback).run()
    finally:
        dist.close()


class _Trainer:
    def __init__(self, cfg: TrainConfig, device: torch.device, dist: _Dist, callback):
        self.cfg, self.device, self.dist, self.callback = cfg, device, dist, callback
        self.quiet = bool(cfg.quiet)
        self.main = dist.main
        self.lock = None
        self.created_dir = False
        self.run_dir = None
        self.loss_ref = None
        self.image_shape = None

    def log(self, msg: str, err: bool = False):
        if self.main:
            print(msg, file=sys.stderr if err else sys.stdout, flush=True)

    # -- set-up ---------------------------------------------------------------------------
    def _lock(self, run_dir: Path, created: bool = False):
        """Take the run folder's lock (rank 0). Stale temporaries are removed only once set-up
        has succeeded (:meth:`_run`): a refused command removes nothing."""
        if not self.main:
            return
        self.lock = RunLock(run_dir).acquire()
        self.created_dir = created  # removed again if set-up fails (never another run's folder)

    def _resume_source(self, cfg: TrainConfig):
        """``(run_dir, checkpoint or None, config)`` of ``cfg.resume``, under the folder's lock."""
        target = Path(cfg.resume)
        if not target.exists():
            raise ValueError(f"{target}: no such run folder to resume (it should hold last.pt)")
        run_dir = target if target.is_dir() else target.parent
        path = run_dir / "last.pt" if target.is_dir() else target
        self._lock(run_dir)
        if path.is_file():
            ckpt = ck.load_checkpoint(path)
            ck.validate_checkpoint(ckpt, path, resume=True, known_model=_model_known)
            return run_dir, ckpt, dict(ckpt["config"])
        cfg_path = run_dir / "config.json"
        if target.is_dir() and cfg_path.is_file() and not (run_dir / "best.pt").exists():
            # stopped before its first checkpoint (killed, diverged or failed in epoch 1)
            try:
                from .safe_io import read_json

                rc = read_json(cfg_path)
                ck.validate_checkpoint({"format": ck.FORMAT, "epoch": 1, "config": rc,
                                        "model": {"-": torch.zeros(0)}}, cfg_path,
                                       known_model=_model_known)
            except (OSError, ValueError) as e:
                raise ValueError(f"{cfg_path}: cannot continue the run from it: {_first_line(e)}") from None
            for key, ok in ck._CONFIG_NEEDS.items():
                if key not in rc or not ok(rc[key]):
                    raise ValueError(f"{cfg_path}: config entry {key!r} is missing or malformed "
                                     f"({rc.get(key)!r})")
            if not isinstance(rc.get("weak_K"), (int, float, str)) or isinstance(rc.get("weak_K"), bool):
                rc["weak_K"] = "law"
            self.log(f"sdenet: {run_dir} stopped before its first checkpoint; starting the run "
                     f"over from epoch 1 with its config.json", err=True)
            return run_dir, None, rc
        raise ValueError(f"{path}: checkpoint file is missing")

    def _setup(self):
        cfg, device, dist = self.cfg, self.device, self.dist
        self.ckpt = None
        if cfg.resume:
            run_dir, self.ckpt, rc = self._resume_source(cfg)
            where = run_dir / "last.pt" if self.ckpt is not None else run_dir / "config.json"
            if is_user_model(rc["model"]) or is_user_model(cfg.model):
                if cfg.model != rc["model"]:
                    raise ValueError(f"{where}: the run trains the user model {rc['model']!r}; "
                                     f"importing it runs its code, so name it yourself with "
                                     f"--model {rc['model']}" if is_user_model(rc["model"]) else
                                     f"{where}: the run trains {rc['model']!r}, not "
                                     f"{cfg.model!r}")
            elif cfg.model != TrainConfig.model and cfg.model != rc["model"]:
                raise ValueError(f"{where}: the run trains {rc['model']!r}, not {cfg.model!r}")
            if torch.device(rc.get("device", "cpu")).type != device.type:
                cuda = device.type == "cuda"  # the defaults of the device it now runs on
                rc["amp"], rc["channels_last"] = cuda, cuda
            rc["device"] = str(device)
            if rc.get("world_size", 1) != dist.world_size:
                self.log(f"sdenet: warning: resuming a {rc.get('world_size', 1)}-process run with "
                         f"{dist.world_size} process(es): the network noise of the other ranks "
                         f"is reseeded, so the result will not match an uninterrupted run", err=True)
            rc["world_size"] = dist.world_size
            rc.setdefault("amp", device.type == "cuda")
            rc.setdefault("channels_last", device.type == "cuda")
            rc.setdefault("label_smoothing", 0.0)
            rc.setdefault("nesterov", False)
            rc.setdefault("warmup", 0)
            rc.setdefault("strict_weak", False)
            rc.setdefault("weak_K", "law")
            rc.setdefault("compile", False)
            rc.setdefault("mc_samples", 0)
            rc.setdefault("random_depth", None)
            self.run_dir = run_dir
            if self.ckpt is not None and self.ckpt["epoch"] >= rc["epochs"]:
                if (run_dir / "metrics.json").exists() or not isinstance(
                        self.ckpt.get("metrics"), dict):
                    raise ValueError(f"{run_dir}: the run already finished its {rc['epochs']} "
                                     f"epochs; nothing to resume")
                # stopped after its last checkpoint, before metrics.json: finish it
                self.log(f"sdenet: {run_dir} trained all {rc['epochs']} epochs but stopped before "
                         f"writing metrics.json; finishing it", err=True)
        else:
            rc = _resolve(cfg, device, dist.world_size)
            self.run_dir = check_out_dir(cfg.out if cfg.out is not None else
                                         _default_run_dir(rc["model"], rc["dataset"]), live=self.main)
            created = make_run_dir(self.run_dir) if self.main else False
            self._lock(self.run_dir, created)
            if (self.run_dir / "last.pt").exists() or (self.run_dir / "best.pt").exists():
                raise ValueError(f"{self.run_dir}: already holds a run; use --resume {self.run_dir} "
                                 f"to continue it or choose another --out")
            if (self.run_dir / "config.json").exists() or (self.run_dir / "metrics.jsonl").exists():
                self.log(f"sdenet: {self.run_dir} holds a run that stopped before its first "
                         f"checkpoint; this run takes the folder over", err=True)
        rc["run_dir"] = str(self.run_dir)
        if rc.get("deterministic"):  # before any generator is seeded or the model is built
            from ..provenance import set_deterministic

            set_deterministic(rc["seed"], threads=torch.get_num_threads())
        from ..provenance import provenance

        rc["provenance"] = provenance(rc["seed"], rc.get("command"), device, dist.world_size)
        self.rc = rc
        amp = rc["amp"]
        if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            amp = rc["amp"] = False
        self.amp = amp

        # batch_size is the global batch of one optimizer step, split over the processes
        if rc["batch_size"] % dist.world_size:
            raise ValueError(f"batch size {rc['batch_size']} does not split over "
                             f"{dist.world_size} processes; use a multiple of {dist.world_size}")
        loader_kw = dict(batch_size=rc["batch_size"] // dist.world_size, device=device, seed=rc["seed"],
                         channels_last=rc["channels_last"], rank=dist.rank, world_size=dist.world_size,
                         eval_batch_size=rc.get("eval_batch_size"))
        native = None  # the data's image height (arrays only)
        if is_image_folder(rc["dataset"]):
            if rc.get("resolution") is not None:
                raise ValueError(f"{rc['dataset']}: resolution applies to CIFAR-style arrays, "
                                 f"not to image folders")
            self.train_loader, self.test_loader = _image_folder_loaders(
                rc["dataset"], limit_train=rc.get("limit_train"), limit_test=rc.get("limit_test"),
                **loader_kw)
            num_classes = self.train_loader.num_classes
            rc["dataset_source"] = f"ImageFolder {rc['dataset']}"
            rc["n_train"] = len(self.train_loader.dataset)
            rc["n_test"] = len(self.test_loader.dataset)
        else:
            root = _agreed_data_root(rc, cfg.data_root, self.run_dir) if cfg.resume else cfg.data_root
            ds = _load_data(rc["dataset"], root=root,
                            download=cfg.download, limit_train=rc.get("limit_train"),
                            limit_test=rc.get("limit_test"))
            num_classes = ds.num_classes
            rc["dataset_source"] = ds.source
            rc["n_train"], rc["n_test"] = len(ds.x_train), len(ds.x_test)
            self.image_shape = tuple(int(v) for v in ds.x_train.shape[1:])  # H, W, C
            from .data import make_loaders

            self.train_loader, self.test_loader = make_loaders(
                ds, resolution=rc.get("resolution"), **loader_kw)
            native = ds.image_shape[1]
            if rc.get("resolution") is None:
                rc["resolution"] = native
        if rc.get("num_classes") not in (None, num_classes):
            raise ValueError(f"{rc['dataset']}: {num_classes} classes, but the checkpoint was "
                             f"trained on {rc['num_classes']}")
        rc["num_classes"] = num_classes

        torch.manual_seed(rc["seed"])
        n_train = rc.get("n_train") or rc["batch_size"]
        model = _create_model(rc["model"], num_classes, dict(rc["model_overrides"]),
                              where=str(self.run_dir / "config.json") if cfg.resume else "train",
                              batch=min(rc["batch_size"], n_train) // dist.world_size,
                              image=rc.get("resolution"), device=device)
        if self.ckpt is None and rc.get("init"):  # warm start (sdenet.train.multiscale)
            from .multiscale import init_weights

            self.init_ckpt = ck.load_checkpoint(rc["init"])  # read once: weights here, momentum below
            ck.validate_checkpoint(self.init_ckpt, rc["init"], known_model=_model_known, min_epoch=0)
            ic = self.init_ckpt["config"]  # its stored config, checked as data
            _create_model_check(ic["model"], ic.get("num_classes"), ic.get("model_overrides") or {},
                                str(rc["init"]))
            rc.update(init_weights(model, self.init_ckpt, rc["init"], resolution=rc["resolution"],
                                   native=native, rescale=bool(rc.get("init_rescale")),
                                   method=rc.get("init_rescale_method") or "atrous"))
        elif rc.get("dilation", 1) != 1:  # a resumed run of a network refined a trous
            from .multiscale import apply_dilation, checkpoint_dilation

            apply_dilation(model, checkpoint_dilation(rc))
        model = model.to(device)
        if rc["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.params = sum(p.numel() for p in model.parameters())
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(_seed(rc["seed"], dist.rank, 7))
        if getattr(self, "image_shape", None) is not None:
            _check_fits(model, self.image_shape, num_classes, rc, device, self.noise)
        _set_generator(model, self.noise)
        self.stochastic = _is_stochastic(model)
        _check_step_precision(model, rc, self.log)
        if rc.get("dt") is None:
            mdt = (getattr(model, "config", None) or {}).get("dt", getattr(model, "dt", None)) \
                if isinstance(getattr(model, "config", None), dict) else getattr(model, "dt", None)
            if isinstance(mdt, (int, float)):  # the stages' step: the model's dt over its refine factor
                rc["dt"] = float(mdt) / float((getattr(model, "config", None) or {}).get("refine", 1) or 1)
            else:
                dts = sorted({d["dt"] for d in _weak_report(model) if d.get("dt") is not None})
                rc["dt"] = dts[0] if len(dts) == 1 else (dts or None)
        rc["params"] = self.params
        if rc.get("random_depth"):
            _check_random_depth(model, rc["random_depth"])

        self.optimizer = torch.optim.SGD(model.parameters(), lr=rc["lr"], momentum=rc["momentum"],
                                         weight_decay=rc["weight_decay"],
                                         nesterov=bool(rc["nesterov"]) and rc["momentum"] > 0)
        spe = len(self.train_loader)
        self.steps_per_epoch = spe
        shift = 0.5 if rc["schedule"] == "onecycle" else 0.0
        sched = dict(schedule=rc["schedule"], epochs=rc["epochs"], milestones=rc["milestones"],
                     gamma=rc["gamma"], warmup=rc["warmup"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_factor((k + shift) / spe, **sched))

        self.start_epoch, self.best, self.best_epoch, self.elapsed0 = 0, float("inf"), 0, 0.0
        if self.ckpt is None and rc.get("init"):
            self._init_from(self.init_ckpt, rc["init"])
        if self.ckpt is not None:
            c = self.ckpt
            path = self.run_dir / "last.pt"
            ck.check_model_state(model, c["model"], path, repr(rc["model"]))
            ck.check_optimizer_state(self.optimizer, c["optimizer"], path)
            try:
                model.load_state_dict(c["model"])
                self.optimizer.load_state_dict(c["optimizer"])
                self.scheduler.load_state_dict(c["scheduler"])
            except (RuntimeError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: its state does not load into the run "
                                 f"({type(e).__name__}: {_first_line(e)})") from None
            self.start_epoch = int(c["epoch"])
            self.best, self.best_epoch = self._best_on_resume(c)
            self.elapsed0 = float(c.get("elapsed", 0.0))
            ref = c.get("loss_ref")
            self.loss_ref = float(ref) if isinstance(ref, (int, float)) and math.isfinite(ref) \
                and ref > 0 else math.log(max(num_classes, 2))
            rng = dict(c["rng"])
            noise_ranks = rng.get("noise_ranks")
            if noise_ranks and len(noise_ranks) == dist.world_size:
                rng["noise"] = noise_ranks[dist.rank]
            elif dist.rank != 0:
                rng["noise"] = None
                self.noise.manual_seed(_seed(rc["seed"], dist.rank, 7, self.start_epoch))
            saved_on = torch.device(self.ckpt["config"].get("device", "cpu")).type
            if saved_on != device.type:  # a CUDA generator state does not fit a CPU generator
                self.log(f"sdenet: warning: resuming a {saved_on} run on {device.type}: the "
                         f"network noise is reseeded, so the result will not match an "
                         f"uninterrupted run", err=True)
                rng["noise"] = None
                self.noise.manual_seed(_seed(rc["seed"], dist.rank, 7, self.start_epoch))
            try:
                ck.set_rng_state(rng, self.noise)
            except (RuntimeError, ValueError, TypeError) as e:
                raise ValueError(f"{self.run_dir / 'last.pt'}: its RNG state does not fit "
                                 f"({_first_line(e)})") from None

        # wrappers: DDP for several processes, torch.compile on request
        self.fwd_train = self.fwd_eval = model
        if dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # a stochastic network with batch noise skips dropped blocks: their parameters get
            # no gradient in that step (and on that rank only), which DDP must be told about
            mcfg = getattr(model, "config", None)
            mode = mcfg.get("mode") if isinstance(mcfg, dict) else None
            unused = self.stochastic and (mode is None or mode == "batch")
            unused = unused or bool(rc.get("random_depth"))  # coarsened: every other block idle
            self.fwd_train = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                                 find_unused_parameters=unused)
        if rc["compile"]:
            self.fwd_train = torch.compile(self.fwd_train)
            self.fwd_eval = self.fwd_train if dist.world_size == 1 else model

    def _init_from(self, init: dict, path):
        """SGD momentum by parameter name from the warm-start checkpoint ``init`` read from
        ``path`` (multilevel training's cycles carry it). The weights themselves were loaded,
        and rescaled if asked, by :func:`sdenet.train.multiscale.init_weights` when the model
        was built."""
        momentum = init.get("momentum") or {}
        if not isinstance(momentum, dict):
            raise ValueError(f"{path}: its 'momentum' entry is not a dict of tensors")
        if momentum and self.rc["momentum"] > 0:
            for name, p in self.model.named_parameters():
                buf = momentum.get(name)
                if buf is None:
                    continue
                if not isinstance(buf, torch.Tensor) or tuple(buf.shape) != tuple(p.shape):
                    raise ValueError(f"{path}: its momentum of {name} does not fit the model")
                self.optimizer.state[p]["momentum_buffer"] = buf.to(p.device, p.dtype).clone()

    # -- condition (5) --------------------------------------------------------------------
    def _check_weak(self, report, warned: set):
        rc = self.rc
        bad = violations(report, rc["weak_K"])
        if not bad:
            return
        msg = warning_message(bad, rc["weak_K"])
        if rc["strict_weak"]:
            raise WeakConditionError(msg + " (--strict-weak)")
        if msg not in warned:
            warned.add(msg)
            self.log(f"sdenet: warning: {msg}", err=True)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
            if self.created_dir and self.run_dir is not None:
                try:  # a folder this run created and left empty (it failed in set-up)
                    self.run_dir.rmdir()
                except OSError:
                    pass

    def _best_on_resume(self, c: dict) -> tuple[float, int]:
        """``(best test error, its epoch)`` from ``best.pt`` itself. When a kill fell between the
        ``last.pt`` and ``best.pt`` writes of an improving epoch, ``best.pt`` is repaired first
        from ``last.pt`` (which records that it was the best)."""
        best_path = self.run_dir / "best.pt"
        epoch = int(c["epoch"])
        b = None
        if best_path.is_file():
            b = ck.load_checkpoint(best_path)
            ck.validate_checkpoint(b, best_path, known_model=_model_known)
        if c.get("best_epoch") == epoch and (b is None or b["epoch"] != epoch) and self.main:
            self.log(f"sdenet: {best_path} did not hold epoch {epoch}, the best so far (a write "
                     f"was interrupted); writing it from last.pt", err=True)
            self._save(c, best_path)
            b = c
        if b is None:
            return float("inf"), 0
        return _checkpoint_error(b), int(b["epoch"])

    def _save(self, state: dict, path: Path) -> None:
        try:
            ck.save_atomic(state, path)
        except OSError as e:
            raise ValueError(f"{path}: cannot write the checkpoint ({e.strerror or e})") from None

    def _run(self) -> dict:
        self._setup()
        rc, dist, device = self.rc, self.dist, self.device
        warned: set = set()
        if self.stochastic:
            self._check_weak(_weak_report(self.model), warned)

        metrics_path = self.run_dir / "metrics.jsonl"
        if self.main:
            gone = remove_stale_temporaries(self.run_dir)
            if gone:
                self.log(f"sdenet: removed {len(gone)} temporary file(s) an interrupted write left "
                         f"in {self.run_dir}: {', '.join(gone)}", err=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            from .safe_io import write_text_atomic

            if self.ckpt is None:
                _write_json(self.run_dir / "config.json", rc)
                write_text_atomic(metrics_path, "")
            else:  # drop lines of epochs the checkpoint does not hold
                keep = []
                if metrics_path.is_file() and not metrics_path.is_symlink():
                    for line in _read_lines(metrics_path):
                        try:
                            if json.loads(line)["epoch"] <= self.start_epoch:
                                keep.append(line)
                        except (ValueError, KeyError, TypeError):
                            continue
                write_text_atomic(metrics_path, "".join(k + "\n" for k in keep))
        self.log(f"run {self.run_dir}: {rc['model']} ({self.params:,} parameters) on "
                 f"{rc['dataset']} ({rc['n_train']} train / {rc['n_test']} test), "
                 f"{rc['epochs']} epochs, preset {rc['preset']}, device {device}"
                 + (f" x {dist.world_size}" if dist.world_size > 1 else "")
                 + (f", resuming after epoch {self.start_epoch}" if self.ckpt is not None else ""))

        t_start = time.perf_counter()
        epoch = self.start_epoch
        last = None
        if self.ckpt is not None and self.start_epoch >= rc["epochs"]:
            last = dict(self.ckpt["metrics"])  # only the final evaluation and metrics.json left
        try:
            for epoch in range(self.start_epoch + 1, rc["epochs"] + 1):
                last = self._epoch(epoch, t_start, warned)
        except KeyboardInterrupt:
            done = epoch - 1
            where = (f"{self.run_dir / 'last.pt'} holds epoch {done}; continue with "
                     f"--resume {self.run_dir}") if done > 0 else (
                f"no checkpoint was written yet; --resume {self.run_dir} starts it over")
            self.log(f"sdenet: interrupted in epoch {epoch}: {where}", err=True)
            raise
        return self._finish(last, t_start)

    def _epoch(self, epoch: int, t_start: float, warned: set) -> dict:
        rc, dist, device, model = self.rc, self.dist, self.device, self.model
        t0 = time.perf_counter()
        model.train()
        if self.stochastic:
            reset_model_weak_stats(model)
        self.train_loader.set_epoch(epoch - 1)
        lr = self.optimizer.param_groups[0]["lr"]
        fault = _fault()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        count = 0
        bar = None
        show = self.main and not self.quiet and sys.stderr.isatty()
        if show:
            try:
                from tqdm import tqdm

                bar = tqdm(total=len(self.train_loader), desc=f"epoch {epoch}/{rc['epochs']}",
                           file=sys.stderr, leave=False, dynamic_ncols=True)
            except Exception:
                bar = None
        every = max(1, len(self.train_loader) // 20)
        ls = rc["label_smoothing"]
        try:
            for i, (x, y) in enumerate(self.train_loader):
                if fault and fault[1] == epoch and fault[0] == "interrupt" and i == fault[2]:
                    raise KeyboardInterrupt
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.amp):
                    if rc.get("random_depth"):
                        out = self._at_random_depth(x, (epoch - 1) * len(self.train_loader) + i)
                    else:
                        out = self.fwd_train(x)
                loss = _loss_fn(out, y, ls)
                if fault and fault[0] == "nan" and fault[1] == epoch:
                    loss = loss * float("nan")
                if fault and fault[0] == "kill" and fault[1] == epoch and i == fault[2]:
                    os.kill(os.getpid(), 9)
                if self.loss_ref is None:  # the divergence reference: the run's first loss
                    self.loss_ref = loss.detach().float().item()
                    if not math.isfinite(self.loss_ref):
                        self._diverged(epoch, f"the training loss is {self.loss_ref}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                b = y.shape[0]
                loss_sum += loss.detach().double() * b
                correct += (out.detach().argmax(1) == y).sum()
                count += b
                if bar is not None:
                    bar.update(1)
                if (i + 1) % every == 0 and (bar is not None or dist.world_size == 1):
                    # one host read every 1/20 epoch: a blown-up run stops without finishing
                    # the epoch (one process only: the ranks would not agree)
                    running = loss_sum.item() / count
                    if bar is not None:
                        bar.set_postfix(loss=f"{running:.4f}")
                    if dist.world_size == 1:
                        self._check_train_loss(epoch, running)
        finally:
            if bar is not None:
                bar.close()
        if dist.world_size > 1:  # every rank evaluates and saves rank 0's BN statistics
            dist.broadcast_buffers(model)
        t = torch.stack([loss_sum, correct.double(),
                         torch.tensor(float(count), dtype=torch.float64, device=device)])
        t = dist.all_reduce(t).cpu()
        n = max(t[2].item(), 1.0)
        train_loss, train_error = t[0].item() / n, 1.0 - t[1].item() / n
        self._check_train_loss(epoch, train_loss)

        weak = reduce_report(_weak_report(model), dist.world_size, device) if self.stochastic else []
        model.eval()  # drift only: the expected increment, BN running statistics
        test_loss, test_error, _ = _eval_sums(self.fwd_eval, self.test_loader, device, self.amp, dist)
        if fault and fault[0] == "testnan" and fault[1] == epoch:
            test_loss = float("nan")
        if not (math.isfinite(test_loss) and math.isfinite(test_error)):
            self._diverged(epoch, f"the test loss is {test_loss}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_error": train_error,
            "test_error": test_error,
            "test_loss": test_loss,
            "lr": lr,
            "epoch_time": now - t0,
            "elapsed": self.elapsed0 + (now - t_start),
            "lm_coefficients": _lm_coefficients(model),
            "weak": weak,
        }
        improved = test_error < self.best
        if improved:
            self.best, self.best_epoch = test_error, epoch
        noise_ranks = dist.all_gather(self.noise.get_state().cpu())
        if self.main:
            from .safe_io import open_append, os_error

            try:
                with open_append(self.run_dir / "metrics.jsonl") as f:
                    f.write(json.dumps(_jsonable(metrics)) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise os_error(e, self.run_dir / "metrics.jsonl") from None
            state = {
                "format": ck.FORMAT,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": {},
                "rng": {**ck.rng_state(self.noise), "noise_ranks": noise_ranks,
                        "loader": {"seed": rc["seed"], "epoch": epoch}},
                "best_test_error": self.best,
                "best_epoch": self.best_epoch,
                "loss_ref": self.loss_ref,
                "elapsed": metrics["elapsed"],
                "metrics": metrics,
                "config": rc,
            }
            self._save(state, self.run_dir / "last.pt")
            if fault and fault[0] == "killsave" and fault[1] == epoch:
                os.kill(os.getpid(), 9)
            if improved:  # after last.pt: a kill in between is repaired on --resume
                self._save(state, self.run_dir / "best.pt")
            self.log(f"epoch {epoch}/{rc['epochs']}  train loss {train_loss:.4f} err "
                     f"{100 * train_error:.2f}%  test loss {test_loss:.4f} err "
                     f"{100 * test_error:.2f}%  lr {lr:.4g}  {metrics['epoch_time']:.1f}s")
        if weak:
            self._check_weak(weak, warned)
        if self.callback is not None:
            self.callback({"epoch": epoch, "metrics": metrics, "model": model,
                           "run_dir": str(self.run_dir), "rank": dist.rank})
        return metrics

    def _at_random_depth(self, x, step: int):
        from ..nn.depth import at_depth

        with at_depth(self.model, _depth_of_step(self.rc, step), strict=False):
            return self.fwd_train(x)

    def _check_train_loss(self, epoch: int, loss: float) -> None:
        """TrainingDiverged when ``loss`` is not finite or above DIVERGENCE_FACTOR x the first."""
        if not math.isfinite(loss):
            self._diverged(epoch, f"the training loss is {loss}")
        ref = self.loss_ref
        if ref is not None and ref > 0 and loss > DIVERGENCE_FACTOR * ref:
            self._diverged(epoch, f"the training loss {loss:.4g} exploded past "
                           f"{DIVERGENCE_FACTOR:.0e} x its first value {ref:.4g}")

    def _diverged(self, epoch: int, reason: str = "the loss became NaN or infinite"):
        good = epoch - 1
        last = self.run_dir / "last.pt"
        where = (f"the last good checkpoint is {last} (epoch {good})" if good > 0
                 else "no checkpoint was written (--resume would start the run over)")
        raise TrainingDiverged(f"training diverged: {reason} in epoch {epoch}; {where}. Lower "
                               f"the learning rate (--lr) and try again")

    def _finish(self, last: dict | None, t_start: float) -> dict:
        rc, dist, device = self.rc, self.dist, self.device
        if last is None:  # nothing left to run
            raise ValueError(f"{self.run_dir}: no epoch to run")
        if self.main and (self.run_dir / "best.pt").is_file():  # recorded from the file itself
            b = ck.load_checkpoint(self.run_dir / "best.pt")
            self.best, self.best_epoch = _checkpoint_error(b), int(b["epoch"])
        final = {
            "test_error": last["test_error"],
            "best_test_error": self.best,
            "best_epoch": self.best_epoch,
            "test_loss": last["test_loss"],
            "train_loss": last["train_loss"],
            "train_error": last["train_error"],
            "params": self.params,
            "epochs": rc["epochs"],
            "wall_time": None,
            "hardware": describe(device, dist.world_size),
            "model": rc["model"],
            "dataset": rc["dataset"],
            "dt": rc["dt"],
            "seed": rc["seed"],
            "stochastic": self.stochastic,
            "lm_coefficients": last["lm_coefficients"],
            "weak": last["weak"],
        }
        if self.stochastic and rc.get("mc_samples", 0) > 0:
            g = torch.Generator(device=device)
            g.manual_seed(_seed(rc["seed"], dist.rank, 11))
            mc_loss, mc_err = _mc_sums(self.model, self.test_loader, device, rc["mc_samples"], g,
                                       dist, self.amp)
            final["test_error_mc"] = mc_err
            final["test_loss_mc"] = mc_loss
            final["mc_samples"] = rc["mc_samples"]
        final["wall_time"] = self.elapsed0 + (time.perf_counter() - t_start)
        final["run_dir"] = str(self.run_dir)
        final["provenance"] = rc["provenance"]
        if self.main:
            _write_json(self.run_dir / "metrics.json", final)
            line = (f"done: test error {100 * final['test_error']:.2f}% (best "
                    f"{100 * self.best:.2f}% at epoch {self.best_epoch})")
            if "test_error_mc" in final:
                line += f", {final['mc_samples']}-sample MC {100 * final['test_error_mc']:.2f}%"
            self.log(line + f", {final['wall_time']:.1f}s; run folder {self.run_dir}")
            if final["weak"]:
                self.log("condition (5) per stochastic stage (exact C, K = C/dt^2; empirical "
                         "moments of the last epoch's increments):\n" + format_table(final["weak"]))
        return _jsonable(final)


# --------------------------------------------------------------------------------------------
# Evaluation of a checkpoint
# --------------------------------------------------------------------------------------------


#: a weight of a trained float network beyond this magnitude is broken, not learned
ABSURD_WEIGHT = 1e8


def _check_finite_weights(state: dict, path) -> None:
    """ValueError when a checkpoint's weights hold NaN or infinite values, or values beyond
    :data:`ABSURD_WEIGHT`: no test error of such a network means anything."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path}: its weights hold NaN or infinite values ({len(bad)} tensors, "
                         f"e.g. {bad[0]}); the network is broken, nothing to evaluate")
    big = [(k, float(v.abs().max())) for k, v in state.items()
           if v.is_floating_point() and v.numel() and float(v.abs().max()) > ABSURD_WEIGHT]
    if big:
        raise ValueError(f"{path}: its weights are absurd ({big[0][0]} reaches {big[0][1]:.3g}, "
                         f"beyond {ABSURD_WEIGHT:.0e}); the network is broken, nothing to evaluate")


def _check_sane_loss(loss: float, num_classes: int, path) -> str | None:
    """ValueError instead of a number when the test loss is NaN or infinite; a warning (returned)
    when it is absurd: above :data:`DIVERGENCE_FACTOR` times the loss of a uniform guess,
    ``log(classes)`` (a network applied to images it does not suit can do that)."""
    ref = math.log(max(int(num_classes), 2))
    if not math.isfinite(loss):
        raise ValueError(f"{path}: its test loss is {loss}: the network overflows on these "
                         f"images, so no test error is reported")
    if loss > DIVERGENCE_FACTOR * ref:
        return (f"{path}: its test loss {loss:.4g} is absurd against {ref:.3g} for a uniform guess: "
                f"the weights are broken or do not suit these images; read the error with care")
    return None


def _depth_context(model, depth):
    """``(context manager, result fields)`` running ``model`` at depth factor ``depth`` (None: as it is)."""
    import contextlib

    if depth is None:
        return contextlib.nullcontext(), {}
    from ..nn.depth import at_depth, depth_compute, depth_steps, factor_float, parse_depth_factor

    f = parse_depth_factor(depth)
    # at_depth refuses (ValueError) a stage it cannot coarsen when entered, before any work
    return at_depth(model, f), {"depth": factor_float(f), "steps": depth_steps(model, f),
                                "steps_trained": depth_steps(model, 1),
                                "relative_compute": depth_compute(model, f)}


def _binomial_se(error: float, n: int) -> float:
    """Standard error ``sqrt(e(1 - e)/n)`` of an error rate measured on ``n`` independent images."""
    return math.sqrt(max(error * (1.0 - error), 0.0) / n) if n > 0 else float("nan")


def _eval_precision(rc: dict, dev: torch.device) -> tuple[bool, bool]:
    """``(amp, channels_last)`` for evaluating a run on ``dev``: the run's own settings on the
    device type it trained on (so an explicit CPU bf16 run evaluates under CPU autocast), the
    defaults of ``dev`` otherwise (CUDA: both; CPU: neither)."""
    if torch.device(rc.get("device", "cpu")).type == dev.type:
        amp, channels_last = bool(rc.get("amp")), bool(rc.get("channels_last"))
    else:
        amp = channels_last = dev.type == "cuda"
    if amp and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        amp = False
    return amp, channels_last


def evaluate(checkpoint, *, dataset: str | None = None, samples: int | None = None,
             device="auto", batch_size: int | None = None, limit_test: int | None = None,
             data_root=None, seed: int = 0, model: str | None = None,
             resolution: int | None = None, rescale: bool = False,
             rescale_method: str = "atrous", depth=None) -> dict:
    """Test error of a saved network.

    The checkpoint's config names the model and dataset (``dataset`` overrides). Returns
    ``test_error``/``test_loss`` of the drift-only (eval-mode) network and, for a stochastic
    network with ``samples > 0`` (default 10), ``test_error_mc``/``test_loss_mc`` of the average
    of the softmax over ``samples`` noisy passes (:func:`sdenet.nn.mc_predict`).

    ``test_error_se`` / ``test_error_mc_se`` are binomial standard errors over the test images,
    ``sqrt(e(1 - e)/n)``: with the weights fixed, whether an image is misclassified (by the
    drift, or by the average of ``samples`` noisy passes) is a Bernoulli variable, independent
    across images and draws, so this is the standard error of the measured error as an estimate
    of the expected error over images and network noise.

    A checkpoint of a user's network (``package.module:factory``) is evaluated only when
    ``model`` names the same spec: importing a module runs its code, and a file does not get to
    choose which module is imported.

    ``resolution``: the test images' height (area-downsampled; default: the resolution the
    network was trained at); ``rescale``: carry the network from that resolution to
    ``resolution`` first (:func:`sdenet.nn.rescale` with ``rescale_method``: "atrous", the
    default, or "moments"), else the kernels are applied as they are.

    ``depth``: run the network's stages at this depth factor with its own weights
    (:func:`sdenet.nn.at_depth`: 2 is ``refine(net, 2)``, 0.5 is ``coarsen(net, 2)``); the
    result then also holds ``depth``, ``steps`` and ``relative_compute``
    (:func:`sdenet.train.depth.evaluate_depths` evaluates several).
    """
    from ..nn.rescale import METHODS as _RESCALE_METHODS

    if rescale_method not in _RESCALE_METHODS:
        raise ValueError(f"rescale_method must be one of {', '.join(_RESCALE_METHODS)}, got "
                         f"{rescale_method!r}")
    samples = None if samples is None else int(_number("samples", samples, lo=0.0, allow_none=False))
    if samples is not None and samples > MAX_MC_SAMPLES:
        raise ValueError(f"samples={samples} is above the bound of {MAX_MC_SAMPLES:,} Monte Carlo "
                         f"draws (each is a pass over the test set)")
    batch_size = _positive_int("batch_size", batch_size)
    limit_test = _positive_int("limit_test", limit_test)
    dev = resolve_device(device)
    c = ck.load_checkpoint(checkpoint)
    path = Path(checkpoint) / "last.pt" if Path(checkpoint).is_dir() else Path(checkpoint)
    ck.validate_checkpoint(c, path, known_model=_model_known)
    rc = c["config"]
    if is_user_model(rc["model"]) and model != rc["model"]:
        raise ValueError(f"{path}: a checkpoint of the user model {rc['model']!r}; importing it "
                         f"runs its code, so name it yourself with --model {rc['model']}")
    if model is not None and model != rc["model"]:
        raise ValueError(f"{path}: a checkpoint of {rc['model']!r}, not {model!r}")
    if not isinstance(rc.get("model_overrides", {}), dict):
        raise ValueError(f"{path}: the checkpoint's config entry 'model_overrides' is malformed")
    from .data import DeviceLoader, load_dataset

    spec = dataset or rc.get("dataset")
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{path}: the checkpoint's config names no dataset; give --dataset")
    _positive_int("resolution", resolution)
    r0 = res = None
    eval_batch = batch_size or rc.get("eval_batch_size") or max(rc.get("batch_size", 128), 256)
    if is_image_folder(spec):
        if resolution is not None or rescale:
            raise ValueError(f"{spec}: resolution and rescale apply to CIFAR-style arrays, not "
                             f"to image folders")
        _, loader = _image_folder_loaders(spec, limit_test=limit_test, batch_size=eval_batch,
                                          device=dev, seed=seed)
        num_classes = loader.num_classes
        n_images = eval_batch
    else:
        ds = load_dataset(spec, root=_agreed_data_root(rc, data_root, path) if dataset is None
                          else data_root)
        num_classes = ds.num_classes
        image_shape = tuple(int(v) for v in ds.x_test.shape[1:])
        x_test, y_test = ds.x_test, ds.y_test
        if limit_test is not None:
            x_test, y_test = x_test[:limit_test], y_test[:limit_test]
        n_images = len(x_test)
        from .multiscale import checkpoint_resolution

        r0 = checkpoint_resolution(c, ds.image_shape[1])
        res = r0 if resolution is None else resolution
        # normalise with the statistics of the training data the network saw
        loader = DeviceLoader(x_test, y_test, batch_size=eval_batch, train=False, mean=ds.mean,
                              std=ds.std, device=dev, seed=seed, resolution=res,
                              channels_last=_eval_precision(rc, dev)[1])
    if rc.get("num_classes") not in (None, num_classes):
        raise ValueError(f"{spec}: {num_classes} classes, but {checkpoint} was trained on "
                         f"{rc['num_classes']}")
    torch.manual_seed(seed)
    spec_model = rc["model"]
    model = _create_model(spec_model, num_classes, dict(rc.get("model_overrides") or {}),
                          where=str(path), batch=min(eval_batch, n_images), image=res,
                          train=False, device=dev)
    from .multiscale import apply_dilation, checkpoint_dilation

    apply_dilation(model, checkpoint_dilation(rc, path))
    ck.check_model_state(model, c["model"], path, repr(spec_model))
    _check_finite_weights(c["model"], path)
    try:
        model.load_state_dict(c["model"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: its weights do not load into {spec_model!r} "
                         f"({type(e).__name__}: {_first_line(e)})") from None
    amp, channels_last = _eval_precision(rc, dev)
    if rescale and res != r0:
        from ..nn import rescale as rescale_model

        model = rescale_model(model, res / r0, method=rescale_method)
    model.to(dev).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if not is_image_folder(spec):
        _check_fits(model, image_shape, num_classes,
                    {**rc, "dataset": spec, "amp": amp, "channels_last": channels_last}, dev)
    stochastic = _is_stochastic(model)
    one = _Dist.__new__(_Dist)
    one.world_size, one.rank, one.local_rank, one.owned = 1, 0, 0, False
    depth_cm, depth_info = _depth_context(model, depth)
    with depth_cm:
        test_loss, test_error, n = _eval_sums(model, loader, dev, amp, one)
    warning = _check_sane_loss(test_loss, num_classes, path)
    out = {
        "checkpoint": str(checkpoint),
        "model": rc["model"],
        "dataset": spec,
        "epoch": int(c.get("epoch", 0)),
        "n_test": n,
        "test_error": test_error,
        "test_error_se": _binomial_se(test_error, n),
        "test_loss": test_loss,
        "stochastic": stochastic,
        "device": str(dev),
        "hardware": describe(dev),
        "resolution": res,
        "trained_resolution": r0,
        "rescaled": bool(rescale and res != r0),
        **depth_info,
        "rescale_method": rescale_method if rescale and res != r0 else None,
    }
    if warning:
        out["warning"] = warning
    if samples is None:
        samples = 10 if stochastic else 0
    if stochastic and samples > 0:
        g = torch.Generator(device=dev)
        g.manual_seed(_seed(seed, 0, 11))
        _set_generator(model, g)
        with _depth_context(model, depth)[0]:
            mc_loss, mc_err = _mc_sums(model, loader, dev, samples, g, one, amp)
        out.update(test_error_mc=mc_err, test_error_mc_se=_binomial_se(mc_err, n),
                   test_loss_mc=mc_loss, mc_samples=samples)
    return _jsonable(out)
