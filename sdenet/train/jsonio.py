"""JSON records of a run folder: values made JSON-safe (:func:`_jsonable`), files written
atomically (:func:`_write_json`) and read back bounded (:func:`_read_lines`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .safe_io import write_text_atomic


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
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def _read_lines(path: Path, limit: int = 1 << 28) -> list[str]:
    """The lines of a text file in a run folder (at most ``limit`` bytes; undecodable bytes
    replaced)."""
    with open(path, "rb") as f:
        data = f.read(limit)
    return data.decode("utf-8", "replace").splitlines()
