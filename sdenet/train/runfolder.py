"""Run folders: a usable ``--out``, one run at a time per folder, no stale temporary files.

* :func:`check_out_dir` refuses, before any work, a run folder that cannot be one: an existing
  file (``/dev/null`` included), a path below a file, or a place where nothing can be created
  or written (``/proc``, ``/sys``, a read-only mount). Each is a one-line ``ValueError``.
* :class:`RunLock` is an exclusive lock on ``RUN_DIR/.lock`` (``fcntl.flock``) that holds the
  owner's pid. A second run in the same folder is refused with a message naming that pid. The
  kernel drops a ``flock`` when its process dies (``kill -9`` included), so a dead process's
  lock is simply taken over; the file's stale pid is overwritten.
* :func:`remove_stale_temporaries` deletes the ``.last.pt.*.tmp`` (and ``best.pt``, json)
  files an interrupted atomic write left behind; it runs under the lock at the start of a run.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["check_out_dir", "RunLock", "RunLocked", "remove_stale_temporaries", "LOCK_NAME"]

LOCK_NAME = ".lock"

_TEMP_PATTERNS = (
    ".last.pt.*.tmp",
    ".best.pt.*.tmp",
    ".config.json.*tmp",
    ".metrics.json.*tmp",
    ".metrics.jsonl.*tmp",
)


class RunLocked(ValueError):
    """Another live process holds the run folder's lock."""


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def check_out_dir(path, live: bool = True) -> Path:
    """``path`` as a :class:`~pathlib.Path` if a run folder can live there (it exists as a folder
    or can be created); ValueError (one line naming the path and the reason) otherwise: an empty
    path, a symbolic link, an existing file or device, a path below a file, a kernel file system
    or a place where nothing can be written (:func:`sdenet.train.safe_io.check_output_path`).

    Nothing is created here: the first existing ancestor must be a writable folder. ``live``:
    refuse a folder a live run holds (off on the ranks of a run other than the one that locks)."""
    from .safe_io import check_output_path

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


def _read_pid(path: Path) -> int | None:
    """The pid in a lock file (its first 32 bytes, no link followed), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        return int(text) if text.isdigit() and len(text) < 12 else None
    except (OSError, ValueError):
        return None


class RunLock:
    """Exclusive lock of a run folder for the life of one run (or until :meth:`release`).

    ``RunLock(run_dir).acquire()`` creates ``run_dir/.lock``, takes ``flock(LOCK_EX | LOCK_NB)``
    on it and writes the pid; a folder locked by a live process raises :class:`RunLocked` naming
    its pid. On release the lock file is removed. A lock file whose owner died holds no
    ``flock`` and is taken over.
    """

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        from .safe_io import check_folder_links

        if self.run_dir.is_dir():  # a folder holding a link is refused before anything is written
            check_folder_links(self.run_dir)
        for _ in range(10):  # retried only when the file was replaced while we locked it
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise ValueError(
                        f"{self.path}: the lock file is a symbolic link; sdenet "
                        f"follows no link in a run folder (remove it)"
                    ) from None
                raise ValueError(
                    f"--out {self.run_dir}: cannot write in the run folder ({_reason(e)})"
                ) from None
            import stat

            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise ValueError(f"{self.path}: the lock file is not a regular file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ValueError(f"{self.run_dir}: cannot lock the run folder ({_reason(e)})") from None
                pid = None
                for _ in range(20):  # the owner writes its pid right after locking
                    pid = _read_pid(self.path)
                    if pid is not None:
                        break
                    import time

                    time.sleep(0.01)
                who = f"pid {pid}" if pid is not None else "a process whose pid it has not written yet"
                raise RunLocked(
                    f"{self.run_dir}: another sdenet run is using this folder "
                    f"({who}); wait for it to end or choose another --out"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
            except OSError:
                same = False
            if not same:  # released and removed by its owner between our open and our lock
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                os.fsync(fd)
            except OSError as e:
                os.close(fd)
                raise ValueError(
                    f"--out {self.run_dir}: cannot write in the run folder ({_reason(e)})"
                ) from None
            self.fd = fd
            return self
        raise RunLocked(
            f"{self.run_dir}: the lock file keeps changing; another process is "
            f"starting and stopping runs in this folder"
        )

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


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
