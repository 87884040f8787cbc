"""Run folders: a usable ``--out``, one run at a time per folder, no stale temporary files.

* :func:`check_out_dir` refuses, before any work, a run folder that cannot be one: an existing
  file (``/dev/null`` included), a path below a file, or a place where nothing can be created
  or written (``/proc``, ``/sys``, a read-only mount). Each is a one-line ``ValueError``.
* :class:`RunLock` (defined in :mod:`sdenet.train.safe_io`, whose checks it shares, and
  re-exported here) is an exclusive lock on ``RUN_DIR/.lock`` (``fcntl.flock``) that holds the
  owner's pid. A second run in the same folder is refused with a message naming that pid. The
  kernel drops a ``flock`` when its process dies (``kill -9`` included), so a dead process's
  lock is simply taken over; the file's stale pid is overwritten.
* :func:`remove_stale_temporaries` deletes the ``.last.pt.*.tmp`` (and ``best.pt``, json)
  files an interrupted atomic write left behind; it runs under the lock at the start of a run.
"""

from __future__ import annotations

import os
from pathlib import Path

from .safe_io import LOCK_NAME, RunLock, RunLocked, _reason, check_output_path

__all__ = ["check_out_dir", "RunLock", "RunLocked", "remove_stale_temporaries", "LOCK_NAME"]

_TEMP_PATTERNS = (
    ".last.pt.*.tmp",
    ".best.pt.*.tmp",
    ".config.json.*tmp",
    ".metrics.json.*tmp",
    ".metrics.jsonl.*tmp",
)


def check_out_dir(path, live: bool = True) -> Path:
    """``path`` as a :class:`~pathlib.Path` if a run folder can live there (it exists as a folder
    or can be created); ValueError (one line naming the path and the reason) otherwise: an empty
    path, a symbolic link, an existing file or device, a path below a file, a kernel file system
    or a place where nothing can be written (:func:`sdenet.train.safe_io.check_output_path`).

    Nothing is created here: the first existing ancestor must be a writable folder. ``live``:
    refuse a folder a live run holds (off on the ranks of a run other than the one that locks)."""
    if (
        path is not None
        and str(path).strip()
        and Path(path).expanduser().exists()
        and not Path(path).expanduser().is_symlink()
        and not Path(path).expanduser().is_dir()
    ):
        raise ValueError(f"--out {path}: exists and is not a folder")
    path = check_output_path(path, "--out", folder=True, make_parents=True, live=live)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"--out {path}: {probe} is a file, so no folder can be made below it")
    for special in ("/proc", "/sys"):
        try:
            resolved = path.resolve()
        except OSError:
            resolved = path
        if str(resolved) == special or str(resolved).startswith(special + "/"):
            raise ValueError(f"--out {path}: {special} is a kernel file system, not a place for a run folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path}: {probe} is not writable")
    return path


def make_run_dir(path: Path) -> bool:
    """Create the run folder (and parents); True when it did not exist. ValueError on failure."""
    existed = path.is_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {path}: cannot create the run folder ({_reason(e)})") from None
    return not existed


def remove_stale_temporaries(run_dir) -> list[str]:
    """Delete the temporary files interrupted atomic writes left in ``run_dir``; their names."""
    run_dir = Path(run_dir)
    gone = []
    for pattern in _TEMP_PATTERNS:
        for p in run_dir.glob(pattern):
            try:
                p.unlink()
                gone.append(p.name)
            except OSError:
                pass
    return sorted(gone)
