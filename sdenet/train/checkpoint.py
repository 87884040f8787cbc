"""Checkpoints: atomic writes, safe reads, and the random state a run needs to continue exactly.

A checkpoint (format 1) is a dict saved with ``torch.save`` that holds nothing but tensors,
state dicts and plain Python values::

    {"format": 1, "epoch": int (finished epochs), "model": state_dict, "optimizer": ...,
     "scheduler": ..., "scaler": ..., "rng": {"torch": ..., "cuda": [...] | None,
     "noise": network noise generator state | None, "noise_ranks": [...],
     "loader": {"seed", "epoch"}}, "best_test_error": float, "best_epoch": int,
     "loss_ref": float (first training loss, the divergence reference), "elapsed": seconds
     of training so far, "metrics": dict, "config": dict}

Reading is safe: :func:`load_checkpoint` uses ``torch.load(weights_only=True)``, which rebuilds
only tensors and plain containers, so a file whose pickle would import or call anything is
refused and nothing in it runs. :func:`validate_checkpoint` then checks the structure (format,
epoch, model name, optimizer, scheduler and RNG entries) and :func:`check_model_state` /
:func:`check_optimizer_state` that the weights fit the network built from the config; every
problem is a one-line ``ValueError`` naming the file. Checkpoints of earlier releases are
format 1 too (the same plain dict without ``loss_ref``) and load unchanged.

The data loader keeps no state of its own: an epoch's permutation and augmentation are a
function of ``(seed, epoch)``, so its "state" is that pair.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import TypeGuard

import torch

__all__ = [
    "save_atomic",
    "load_checkpoint",
    "validate_checkpoint",
    "check_model_state",
    "check_optimizer_state",
    "rng_state",
    "set_rng_state",
    "FORMAT",
    "SUPPORTED_FORMATS",
]

#: the format this release writes; SUPPORTED_FORMATS are those it reads
FORMAT = 1
SUPPORTED_FORMATS = (1,)


def save_atomic(obj, path) -> Path:
    """``torch.save(obj, path)`` through a temporary file in the same folder, fsync'd and
    renamed over ``path`` with ``os.replace`` (:func:`sdenet.train.safe_io.write_atomic`): a
    reader sees the old file or the new one, never a half-written one (an interrupted save or a
    full disk leaves the old checkpoint intact), and a symbolic link at ``path`` or as its folder
    is refused, never followed."""
    from .safe_io import write_atomic

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from .safe_io import os_error

        raise os_error(e, path) from None
    return write_atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by the trainer, safely.

    The file is read with ``torch.load(weights_only=True)``: only tensors, state dicts and plain
    Python values (dict, list, tuple, str, int, float, bool, None) are accepted, so a file whose
    pickle would import or call anything else is refused with one line naming it, and nothing in
    it runs. ValueError naming the file if it is missing, unreadable or not a checkpoint. The
    content is checked further by :func:`validate_checkpoint` before it is used.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file is missing")
    from .safe_io import check_archive

    check_archive(path)  # record sizes against the storages they hold, before inflating any
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it names {m.group(1)}" if m else "it holds objects other than tensors and plain values"
        raise ValueError(
            f"{path}: refused: not a plain checkpoint ({what}, and loading it could "
            f"run code); nothing in it was run"
        ) from None
    except Exception as e:  # truncated, not a torch file, ...
        raise ValueError(
            f"{path}: cannot read it as a checkpoint ({type(e).__name__}: {_first_line(e)})"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not an sdenet training checkpoint (no model state or config)")
    check_run_agreement(ckpt, path)
    return ckpt


#: what a run folder's config.json and its checkpoints must agree on
AGREE_KEYS = (
    "model",
    "model_overrides",
    "num_classes",
    "dataset",
    "resolution",
    "dt",
    "p_L",
    "mode",
    "seed",
    "preset",
    "batch_size",
)


def _norm(v):
    import json

    try:
        return json.loads(json.dumps(v, default=str))
    except (TypeError, ValueError):
        return repr(v)


def check_run_agreement(ckpt: dict, path) -> None:
    """ValueError naming the first difference when ``path`` is a run folder's ``last.pt`` or
    ``best.pt`` and the folder's ``config.json`` disagrees with the checkpoint's config on the
    model, its options, shapes or data (:data:`AGREE_KEYS`): one of them was altered."""
    path = Path(path)
    cfg = ckpt.get("config")
    cfg_path = path.parent / "config.json"
    if path.name not in ("last.pt", "best.pt") or not isinstance(cfg, dict) or not os.path.lexists(cfg_path):
        return
    from .safe_io import read_json

    stored = read_json(cfg_path)
    for key in AGREE_KEYS:
        if key in stored and key in cfg and _norm(stored[key]) != _norm(cfg[key]):
            raise ValueError(
                f"{path.parent}: config.json and {path.name} disagree on {key} "
                f"({_short(stored[key], 40)} against {_short(cfg[key], 40)}); the run "
                f"folder was altered, refused"
            )


def _first_line(err) -> str:
    lines = [s.strip() for s in str(err).splitlines() if s.strip()]
    return lines[0] if lines else type(err).__name__


def _is_int(v) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _byte_state(v) -> TypeGuard[torch.Tensor]:
    return isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 1 and v.numel() > 0


def _finite(v) -> bool:
    import math

    return _is_number(v) and math.isfinite(v)


#: config entries a run needs to continue, with a test of each value
_CONFIG_NEEDS = {
    "model": lambda v: isinstance(v, str) and bool(v),
    "dataset": lambda v: isinstance(v, str) and bool(v),
    "epochs": lambda v: _is_int(v) and 1 <= v <= 10_000,
    "batch_size": lambda v: _is_int(v) and 1 <= v <= 1 << 24,
    "lr": lambda v: _finite(v) and v > 0,
    "momentum": lambda v: _finite(v) and 0 <= v <= 1,
    "weight_decay": lambda v: _finite(v) and v >= 0,
    "schedule": lambda v: isinstance(v, str),
    "milestones": lambda v: isinstance(v, (list, tuple)) and len(v) <= 10_000 and all(_finite(x) for x in v),
    "gamma": lambda v: _finite(v) and v > 0,
    "seed": lambda v: _is_int(v) and 0 <= v < 2**63,
    "model_overrides": lambda v: isinstance(v, dict),
}

#: entries of a stored config that any use of a checkpoint reads, with a test of each value
_CONFIG_SHAPE = {
    "model_overrides": lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
    "num_classes": lambda v: v is None or (_is_int(v) and v >= 1),
    "resolution": lambda v: v is None or (_is_int(v) and v >= 1),
    "dataset": lambda v: v is None or (isinstance(v, str) and bool(v)),
    "data_root": lambda v: v is None or isinstance(v, str),
    "device": lambda v: v is None or isinstance(v, str),
    "eval_batch_size": lambda v: v is None or (_is_int(v) and 1 <= v <= 1 << 24),
    "batch_size": lambda v: v is None or (_is_int(v) and 1 <= v <= 1 << 24),
    "schedule_window": lambda v: (
        v is None
        or (
            isinstance(v, (list, tuple))
            and len(v) == 2
            and all(_is_int(x) and 0 <= x <= 10_000 for x in v)
            and v[0] < v[1]
        )
    ),
}


def validate_checkpoint(
    ckpt: dict, path, *, resume: bool = False, known_model=None, min_epoch: int = 1
) -> None:
    """Check a loaded checkpoint's structure before it is used; ValueError (one line naming
    ``path``) on the first problem.

    Always: a supported ``format`` version, ``epoch`` (an integer >= ``min_epoch``; 0 for a
    warm start's ``init.pt``), ``config`` (a dict
    naming a model that ``known_model(name)`` accepts) and ``model`` (a state dict: names to
    tensors). With ``resume``: the config entries a run needs, the optimizer state (``state``
    and ``param_groups`` with their parameter indices), the scheduler state and the RNG states
    (byte tensors of the sizes torch uses). That the weights fit the network is checked once
    it is built (:func:`check_model_state`, :func:`check_optimizer_state`).
    """
    fmt = ckpt.get("format")
    if not _is_int(fmt) or fmt not in SUPPORTED_FORMATS:
        raise ValueError(
            f"{path}: unsupported checkpoint format {fmt!r} (this sdenet reads "
            f"format {', '.join(map(str, SUPPORTED_FORMATS))})"
        )
    epoch = ckpt.get("epoch")
    if not _is_int(epoch) or epoch < min_epoch:
        raise ValueError(
            f"{path}: the checkpoint's epoch count is missing or not a positive integer ({epoch!r})"
        )
    cfg = ckpt.get("config")
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the checkpoint's config is not a dict")
    name = cfg.get("model")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path}: the checkpoint's config names no model")
    for key, ok in _CONFIG_SHAPE.items():
        if key in cfg and not ok(cfg[key]):
            raise ValueError(
                f"{path}: the checkpoint's config entry {key!r} is malformed ({_short(cfg[key])})"
            )
    if known_model is not None and not known_model(name):
        raise ValueError(
            f"{path}: the checkpoint is of model {name!r}, which this sdenet does not "
            f"know (sdenet models lists the known ones)"
        )
    state = ckpt.get("model")
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise ValueError(f"{path}: the checkpoint's model entry is not a state dict of tensors")
    if not resume:
        return
    for key, ok in _CONFIG_NEEDS.items():
        if key not in cfg or not ok(cfg[key]):
            raise ValueError(
                f"{path}: the checkpoint's config entry {key!r} is missing or "
                f"malformed ({_short(cfg.get(key))})"
            )
    if cfg["model_overrides"] and not all(isinstance(k, str) for k in cfg["model_overrides"]):
        raise ValueError(f"{path}: the checkpoint's config entry 'model_overrides' is malformed")
    if epoch > cfg["epochs"]:
        raise ValueError(f"{path}: the checkpoint holds epoch {epoch} of a {cfg['epochs']}-epoch run")
    opt = ckpt.get("optimizer")
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    if (
        not isinstance(opt, dict)
        or not isinstance(opt.get("state"), dict)
        or not isinstance(groups, list)
        or not groups
        or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and all(_is_int(i) for i in g["params"])
            for g in groups
        )
    ):
        raise ValueError(f"{path}: the checkpoint's optimizer state is missing or malformed")
    if not isinstance(ckpt.get("scheduler"), dict):
        raise ValueError(f"{path}: the checkpoint's scheduler state is missing or malformed")
    rng = ckpt.get("rng")
    if not isinstance(rng, dict):
        raise ValueError(f"{path}: the checkpoint's RNG state is missing")
    size = torch.get_rng_state().numel()
    t = rng.get("torch")
    if not _byte_state(t) or t.numel() != size:
        raise ValueError(
            f"{path}: the checkpoint's torch RNG state is malformed (expected "
            f"{size} bytes, got {_describe(t)})"
        )
    # a network noise generator's state: a CPU generator's (as the global one) or a CUDA one's
    noise_sizes = (size, _CUDA_GENERATOR_STATE_BYTES)
    v = rng.get("noise")
    if v is not None and not (_byte_state(v) and v.numel() in noise_sizes):
        raise ValueError(f"{path}: the checkpoint's noise RNG state is malformed ({_describe(v)})")
    for key, sizes in (("noise_ranks", noise_sizes), ("cuda", None)):
        v = rng.get(key)
        if v is not None and (
            not isinstance(v, (list, tuple))
            or not all(_byte_state(s) and (sizes is None or s.numel() in sizes) for s in v)
        ):
            raise ValueError(f"{path}: the checkpoint's {key} RNG states are malformed")
    for key in ("best_test_error", "elapsed"):
        if key in ckpt and not _is_number(ckpt[key]):
            raise ValueError(f"{path}: the checkpoint's {key!r} is not a number ({ckpt[key]!r})")
    if "best_epoch" in ckpt and not (_is_int(ckpt["best_epoch"]) and 0 <= ckpt["best_epoch"] <= epoch):
        raise ValueError(f"{path}: the checkpoint's best epoch {ckpt['best_epoch']!r} is not in 0..{epoch}")


#: bytes of a CUDA (Philox) generator's state: seed and offset
_CUDA_GENERATOR_STATE_BYTES = 16


def _short(v, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _describe(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"a {v.dtype} tensor of shape {tuple(v.shape)}"
    return type(v).__name__ if v is not None else "nothing"


def _names(keys, limit=3) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_model_state(model: torch.nn.Module, state: dict, path, name: str = "the model") -> None:
    """ValueError (one line naming ``path`` and ``name``) unless ``state`` has exactly the keys of
    ``model.state_dict()`` with the same shapes."""
    own = model.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} entries missing ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
        raise ValueError(
            f"{path}: its weights are not those of {name}: "
            f"{'; '.join(parts)}; is it a checkpoint of another model?"
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(
                f"{path}: its weights are not those of {name}: {k} has shape "
                f"{tuple(state[k].shape)}, the model's {tuple(v.shape)}"
            )


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, path) -> None:
    """ValueError (one line) unless the saved optimizer state has the optimizer's parameter
    groups and sizes and its per-parameter tensors (momentum buffers) the parameters' shapes."""
    own = optimizer.param_groups
    groups = state["param_groups"]
    if len(groups) != len(own) or any(len(g["params"]) != len(o["params"]) for g, o in zip(groups, own)):
        raise ValueError(
            f"{path}: its optimizer state does not fit the model (parameter groups "
            f"of {[len(g['params']) for g in groups]} against "
            f"{[len(o['params']) for o in own]} parameters)"
        )
    params: dict[int, torch.Tensor] = {}
    for g, o in zip(groups, own):
        params.update(zip(g["params"], o["params"]))
    for idx, entry in state["state"].items():
        if idx not in params or not isinstance(entry, dict):
            raise ValueError(
                f"{path}: its optimizer state names parameter {idx!r}, which the model does not have"
            )
        p = params[idx]
        for key, v in entry.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and tuple(v.shape) != tuple(p.shape):
                raise ValueError(
                    f"{path}: its optimizer state {key!r} of parameter {idx} has shape "
                    f"{tuple(v.shape)}, the parameter {tuple(p.shape)}"
                )


def rng_state(noise_generator: torch.Generator | None = None) -> dict:
    """The global torch CPU (and CUDA) RNG states and the network noise generator's."""
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "noise": None if noise_generator is None else noise_generator.get_state().cpu(),
    }


def set_rng_state(state: dict, noise_generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only when the counts match)."""
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    if noise_generator is not None and state.get("noise") is not None:
        noise_generator.set_state(state["noise"].cpu())
