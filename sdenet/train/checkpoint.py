"""Checkpoints: atomic writes and the random state a run needs to continue exactly.

A checkpoint is a dict saved with ``torch.save``::

    {"format": 1, "epoch": int (finished epochs), "model": state_dict, "optimizer": ...,
     "scheduler": ..., "scaler": ..., "rng": {"torch": ..., "cuda": [...] | None,
     "noise": network noise generator state | None, "loader": {"seed", "epoch"}},
     "best_test_error": float, "elapsed": seconds of training so far, "config": dict}

The data loader keeps no state of its own: an epoch's permutation and augmentation are a
function of ``(seed, epoch)``, so its "state" is that pair.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

__all__ = ["save_atomic", "load_checkpoint", "rng_state", "set_rng_state", "FORMAT"]

FORMAT = 1


def save_atomic(obj, path) -> Path:
    """``torch.save(obj, path)`` through a temporary file in the same folder, fsync'd and
    renamed over ``path`` with ``os.replace``: a reader sees the old file or the new one, never
    a half-written one (an interrupted save leaves the old checkpoint intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by the trainer; ValueError naming the file if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file is missing")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated, not a torch file, ...
        raise ValueError(f"{path}: cannot read it as a checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not an sdenet training checkpoint (no model state or config)")
    return ckpt


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
