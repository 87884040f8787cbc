"""What produced a recorded result: one ``provenance`` block shared by every result writer.

Every JSON result (a training run folder's ``config.json`` and ``metrics.json``, the files of
``experiments/*.py`` and ``experiments/benchmarks/*.py``) carries::

    "provenance": {"command": ..., "commit": ..., "torch": ..., "threads": ..., "hardware": ...,
                   "seed": ..., "deterministic": ..., "python": ..., "date": ...}

:data:`FIELDS` are the ones every recorded result must state (a test walks
``experiments/results``); a value that was not recorded when the result was made is the string
``"unknown: <why>"`` (:func:`unknown`), never a guess. Results depend on the thread count
(floating-point reductions are split differently, see ``docs/reproducibility.md``), which is why
``threads`` is part of it.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FIELDS",
    "provenance",
    "git_commit",
    "unknown",
    "is_unknown",
    "missing",
    "command_line",
    "set_deterministic",
]

#: the fields every recorded result states
FIELDS = ("command", "commit", "torch", "threads", "hardware", "seed")


def unknown(reason: str) -> str:
    """The value of a field that was not recorded: ``"unknown: <reason>"``."""
    return f"unknown: {reason}"


def is_unknown(value: object) -> bool:
    return isinstance(value, str) and value.startswith("unknown:")


def git_commit(short: bool = False) -> str:
    """The commit of the checkout sdenet runs from, with ``+dirty`` when its tracked files
    differ from it; ``unknown: ...`` outside a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0 or not out.stdout.strip():
            return unknown("not run from a git checkout (installed package)")
        sha = out.stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "-C", str(root), "diff", "--quiet", "HEAD", "--"], capture_output=True, timeout=10
            ).returncode
            == 1
        )
    except (OSError, subprocess.SubprocessError):
        return unknown("git is not available")
    return (sha[:12] if short else sha) + ("+dirty" if dirty else "")


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed (``sdenet ...`` for the CLI, ``python script.py ...`` otherwise)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return unknown("no command line (an interactive session)")
    head = Path(argv[0]).name
    if head in ("__main__.py", "-m") or head == "sdenet":
        head = "sdenet"
    elif head.endswith(".py"):
        head = f"python {argv[0]}"
    return " ".join([head, *(shlex.quote(a) for a in argv[1:])])


def provenance(
    seed: int | list[int] | str | None,
    command: str | None = None,
    device: Any = None,
    world_size: int = 1,
    deterministic: bool | None = None,
) -> dict[str, Any]:
    """The provenance block of a result made now: ``command`` (default: this process's command
    line), ``commit`` (:func:`git_commit`), torch version, torch CPU ``threads``, ``hardware``
    (:func:`sdenet.train.hardware.describe`), ``seed`` (an int, a list of seeds, or a string saying
    how the randomness was fixed), whether deterministic algorithms were on, Python, UTC date."""
    import torch

    from .train.hardware import describe

    if deterministic is None:
        deterministic = bool(torch.are_deterministic_algorithms_enabled())
    return {
        "command": command if command is not None else command_line(),
        "commit": git_commit(),
        "torch": str(torch.__version__),
        "threads": int(torch.get_num_threads()),
        "hardware": describe(device, world_size),
        "seed": seed if seed is not None else unknown("the writer passed no seed"),
        "deterministic": bool(deterministic),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def missing(doc: object) -> list[str]:
    """The :data:`FIELDS` a result's ``provenance`` block lacks (all of them without one). A
    field stated as unknown, with its reason, counts as stated."""
    block = doc.get("provenance") if isinstance(doc, dict) else None
    if not isinstance(block, dict):
        return list(FIELDS)
    return [f for f in FIELDS if block.get(f) in (None, "") or (is_unknown(block[f]) and len(block[f]) < 12)]


def set_deterministic(seed: int, threads: int = 1) -> None:
    """Bit-identical runs on one machine: ``torch.use_deterministic_algorithms(True)``, a fixed
    CPU thread count (``threads``: the split of every reduction depends on it), every generator
    seeded (``random``, numpy, torch, CUDA), cuDNN autotuning off and ``CUBLAS_WORKSPACE_CONFIG``
    set for deterministic cuBLAS. See ``docs/reproducibility.md`` for what is and is not promised."""
    import os
    import random

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(int(threads))
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency of torch's CPU wheels
        pass
    torch.manual_seed(seed)
