"""Safe input and output: every file sdenet writes, every output path it is given, every size it
allocates from a number it did not choose, and every checkpoint archive it opens.

The rule (SECURITY.md): the command line and the modules a user names are trusted; every file
in a run folder, every checkpoint and every downloaded archive is data. This module holds the
checks that make the rule true, and every writer in the package goes through it:

* :func:`write_bytes_atomic` / :func:`write_text_atomic` / :func:`save_figure` write through a
  fresh temporary file (``O_EXCL``) renamed over the target, and refuse a target or folder that
  is a symbolic link; :func:`open_append` opens with ``O_NOFOLLOW`` and refuses anything but a
  regular file. A full disk is a :class:`DiskFull` naming the folder; the old file survives.
* :func:`check_output_path` checks a user-given output path (a new or regular file, or a folder,
  whose parent exists; never a device, a symbolic link or an empty string) and
  :func:`lock_output` takes the run lock of the run folder that would receive it, so nothing is
  written into a folder a live run holds.
* :class:`RunLock` is the run lock itself: an exclusive ``flock`` on ``RUN_DIR/.lock`` holding
  the owner's pid (:mod:`sdenet.train.runfolder`, which makes run folders, re-exports it; the
  lock lives here because :func:`lock_output` and :func:`check_output_path` need it and
  :mod:`~sdenet.train.runfolder` builds on this module's checks).
* :func:`check_folder_links` refuses a run folder holding a symbolic link;
  :func:`safe_subfolder` a recorded sub-folder that is absolute, has ``..`` or leaves the folder.
* :func:`read_json` reads a JSON file of bounded size that must be a plain object.
* :func:`machine_memory`, :func:`check_memory` and :func:`check_model_size` refuse, before any
  allocation, a size whose parameters and activations cannot fit this machine.
* :func:`check_archive` inspects a checkpoint's zip records before ``torch.load``: a record that
  is compressed, larger than the machine can hold, or whose size disagrees with the tensor
  storage the pickle says it holds is refused before it is inflated.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import pickle
import stat
import tempfile
import zipfile
from pathlib import Path

__all__ = [
    "DiskFull",
    "write_bytes_atomic",
    "write_text_atomic",
    "save_figure",
    "open_append",
    "refuse_link",
    "check_folder_links",
    "safe_subfolder",
    "check_output_path",
    "enclosing_run_dir",
    "lock_output",
    "live_holder",
    "RunLock",
    "RunLocked",
    "LOCK_NAME",
    "check_refine_out",
    "read_json",
    "machine_memory",
    "check_memory",
    "estimate_model_bytes",
    "check_model_size",
    "check_archive",
    "os_error",
    "MAX_JSON_BYTES",
    "RUN_MARKERS",
]

#: largest JSON file (config.json, multilevel.json, metrics.json) sdenet reads
MAX_JSON_BYTES = 64 << 20
#: files whose presence makes a folder a run folder
RUN_MARKERS = ("config.json", "multilevel.json", "last.pt", "best.pt", "metrics.jsonl")
#: the run lock's file in a run folder (:class:`RunLock`)
LOCK_NAME = ".lock"


class DiskFull(ValueError):
    """No space left on the device holding a folder sdenet writes in."""


def os_error(err: OSError, path, what: str = "write") -> ValueError:
    """One-line ValueError for an OSError met writing ``path``: a full disk says so and names the
    folder."""
    path = Path(path)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"{path.parent}: the disk is full (no space left to {what} {path.name}); "
            f"free some space and run the command again (a previous {path.name}, if "
            f"any, is intact)"
        )
    if err.errno == errno.ELOOP:
        return ValueError(f"{path}: is a symbolic link; sdenet does not {what} through links (remove it)")
    return ValueError(f"{path}: cannot {what} it ({err.strerror or err})")


def _lstat(path) -> os.stat_result | None:
    """``os.lstat(path)`` (no link followed); None when nothing is there, another OSError as
    :func:`os_error`'s one-line ValueError."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise os_error(e, path, "inspect") from None


def refuse_link(path, what: str = "write into") -> None:
    """ValueError when ``path`` exists and is a symbolic link."""
    st = _lstat(path)
    if st is not None and stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise ValueError(
            f"{path}: is a symbolic link (to {target}); sdenet does not {what} "
            f"links in a run folder; remove it or use another folder"
        )


def _check_target(path: Path) -> None:
    """The file ``path`` may be replaced: absent or a regular file, not a link; its folder no link."""
    refuse_link(path.parent)
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        refuse_link(path, "write through")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: exists and is not a regular file; sdenet replaces only files")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_atomic(path, writer) -> Path:
    """Write ``path`` through a fresh temporary file in its folder: ``writer(f)`` fills the
    binary file, which is fsync'd and renamed over ``path``. A reader sees the old file or the new
    one; the target and its folder must not be symbolic links; a full disk is :class:`DiskFull`
    and leaves the old file."""
    path = Path(path)
    _check_target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise os_error(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        _check_target(path)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise os_error(e, path) from None
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes_atomic(path, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_figure(fig, path, **kwargs) -> Path:
    """``fig.savefig`` into memory, then :func:`write_bytes_atomic` (no link followed)."""
    buf = io.BytesIO()
    fmt = kwargs.pop("format", None) or (Path(path).suffix.lstrip(".") or "png")
    fig.savefig(buf, format=fmt, **kwargs)
    return write_bytes_atomic(path, buf.getvalue())


def open_append(path):
    """A text file opened for appending with ``O_NOFOLLOW``: a link or a non-regular file at
    ``path`` (or a linked folder) is refused."""
    path = Path(path)
    refuse_link(path.parent)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        raise os_error(e, path) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path}: exists and is not a regular file; sdenet appends only to files")
    return os.fdopen(fd, "a", encoding="utf-8")


def check_folder_links(folder, depth: int = 1) -> None:
    """ValueError naming the first symbolic link inside ``folder`` (and its sub-folders down to
    ``depth``): sdenet writes into run folders and follows no link there."""
    folder = Path(folder)
    refuse_link(folder, "write into")
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return
    except OSError as e:
        raise os_error(e, folder, "read") from None
    for entry in entries:
        if entry.is_symlink():
            refuse_link(Path(entry.path), "write through")
        if depth > 0 and entry.is_dir(follow_symlinks=False):
            check_folder_links(Path(entry.path), depth - 1)


def safe_subfolder(run_dir, name, where) -> Path:
    """``run_dir / name`` for a sub-folder name recorded in a file ``where``: relative, without
    ``..``, inside ``run_dir`` once resolved; ValueError otherwise."""
    if not isinstance(name, str) or not name or name.strip() != name:
        raise ValueError(f"{where}: records a sub-folder {name!r}, which is not a plain folder name")
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name or "\x00" in name:
        raise ValueError(
            f"{where}: records the sub-folder {name!r}, which leaves the run folder; "
            f"refused (sub-folders must be relative, without '..')"
        )
    run_dir = Path(run_dir)
    full = run_dir / p
    refuse_link(full, "write into")
    try:
        inside = full.resolve().is_relative_to(run_dir.resolve())
    except OSError:
        inside = False
    if not inside:
        raise ValueError(f"{where}: the sub-folder {name!r} resolves outside {run_dir}; refused")
    return full


def check_output_path(
    path, option: str, *, folder: bool = False, make_parents: bool = False, live: bool = True
) -> Path:
    """A user-given output path, checked before any work: not empty, not a symbolic link, not a
    device or other special file; a file must be new or regular, a folder new or a folder; its
    parent must exist (``make_parents``: its nearest existing ancestor must be a writable folder).
    Returns the Path; ValueError naming ``option`` otherwise."""
    if path is None or str(path).strip() == "":
        raise ValueError(f"{option}: an empty path; give a {'folder' if folder else 'file'} name")
    p = Path(path).expanduser()
    if not folder and p.parent.is_symlink():  # a file is written next to its folder's entries
        raise ValueError(
            f"{option} {path}: its folder {p.parent} is a symbolic link; give the "
            f"real folder (sdenet writes through no link)"
        )
    try:
        st = os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot use it ({e.strerror or e})") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise ValueError(
                f"{option} {path}: is a symbolic link; give the real "
                f"{'folder' if folder else 'file'} (sdenet writes through no link)"
            )
        if folder and not stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{option} {path}: exists and is not a folder")
        if not folder:
            if stat.S_ISDIR(st.st_mode):
                raise ValueError(f"{option} {path}: is a folder; give a file name")
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{option} {path}: is a device or special file, not a regular file; refused")
    parent = p.parent
    if make_parents:
        while not parent.exists() and parent.parent != parent:
            parent = parent.parent
    if not parent.exists():
        raise ValueError(f"{option} {path}: its folder {parent} does not exist")
    if not parent.is_dir():
        raise ValueError(
            f"{option} {path}: {parent} is a file, not a folder, so nothing can be made below it"
        )
    for special in ("/proc", "/sys", "/dev"):
        try:
            resolved = str(p.parent.resolve())
        except OSError:
            resolved = str(p.parent)
        if resolved == special or resolved.startswith(special + "/"):
            raise ValueError(f"{option} {path}: {special} is a kernel file system; refused")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {parent} is not writable")
    for run in _run_dirs_above(p if folder else p.parent) if live else ():
        pid = live_holder(run)
        if pid is not None:
            raise ValueError(
                f"{option} {path}: another sdenet run is using the run folder {run} "
                f"({pid}); nothing is written into it until that run ends; wait or "
                f"choose another {option}"
            )
    return p


def _run_dirs_above(folder: Path, levels: int = 2) -> list:
    out = []
    folder = Path(folder)
    for _ in range(levels):
        if folder.is_dir() and is_run_dir(folder, lock=True):
            out.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    return out


def live_holder(run_dir) -> str | None:
    """``"pid N"`` when a live process holds ``run_dir``'s run lock, else None. Only looks: the
    lock file is opened read-only (no link followed) and probed with a shared ``flock``."""
    import fcntl

    lock = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            if text == str(os.getpid()):  # this process's own run (a multilevel run's cycles)
                return None
            return f"pid {text}" if text.isdigit() else "a live process"
        return None
    finally:
        os.close(fd)


def check_refine_out(path, option: str = "--out") -> Path:
    """:func:`check_output_path` for a checkpoint to be written, which must moreover not be a run
    folder's own checkpoint (``last.pt``, ``best.pt``, ``init.pt`` of a run)."""
    p = check_output_path(path, option)
    if os.path.lexists(p) and p.name in ("last.pt", "best.pt", "init.pt") and is_run_dir(p.parent):
        raise ValueError(
            f"{option} {path}: is the checkpoint of the run in {p.parent}; sdenet "
            f"does not overwrite a run's checkpoints, choose a new file name"
        )
    return p


def is_run_dir(folder, lock: bool = False) -> bool:
    """True when ``folder`` holds a run's files (``lock``: or a run lock file)."""
    folder = Path(folder)
    return any(os.path.lexists(folder / m) for m in RUN_MARKERS + ((LOCK_NAME,) if lock else ()))


def enclosing_run_dir(path, levels: int = 2) -> Path | None:
    """The run folder that would receive a file at ``path``: its folder or one above (a cycle
    folder's run), when it holds a run's files; None otherwise."""
    folder = Path(path).parent
    for _ in range(levels):
        if folder.is_dir() and is_run_dir(folder):
            return folder
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


# --------------------------------------------------------------------------------------------
# The run lock
# --------------------------------------------------------------------------------------------


class RunLocked(ValueError):
    """Another live process holds the run folder's lock."""


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


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


class _Locks:
    """The run locks :func:`lock_output` took; released on exit."""

    def __init__(self, locks):
        self.locks = locks

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def release(self):
        for lock in reversed(self.locks):
            lock.release()
        self.locks = []


def lock_output(path, option: str, *, folder: bool = False) -> _Locks:
    """Take the run lock of every run folder that would receive ``path`` (the folder itself when
    ``folder``, else the file's folder, and the run above a cycle folder): a folder that a live
    run holds is refused (:class:`RunLocked`), and a run folder holding a
    symbolic link is refused (elsewhere each file written refuses a link in its own place). Use
    as a context manager around the write."""
    p = Path(path)
    start = p if folder else p.parent
    locks = []
    try:
        here = start
        for _ in range(2):
            if here.is_dir() and is_run_dir(here):
                check_folder_links(here)
                locks.append(RunLock(here).acquire())
            if here.parent == here:
                break
            here = here.parent
    except BaseException:
        for lock in reversed(locks):
            lock.release()
        raise
    return _Locks(locks)


def read_json(path, what: str | None = None, limit: int = MAX_JSON_BYTES) -> dict:
    """A JSON object read from ``path`` (no link followed, at most ``limit`` bytes); ValueError
    naming the file for anything else."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise os_error(e, path, "read") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path}: not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit >> 20} MiB; not a file sdenet wrote")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not valid JSON ({_first_line(e)})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds {type(obj).__name__}, not a JSON object")
    return obj


def _first_line(err) -> str:
    lines = [s.strip() for s in str(err).splitlines() if s.strip()]
    return lines[0] if lines else type(err).__name__


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------


def machine_memory(device=None) -> int:
    """Bytes this process may allocate: the accelerator's memory for a CUDA device, else the
    smaller of the physical memory (``os.sysconf``) and the address-space limit
    (``RLIMIT_AS``)."""
    if device is not None and str(device).startswith("cuda"):
        try:
            import torch

            return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
        except Exception:
            pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = 1 << 40
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and soft > 0:
            mem = min(mem, soft)
    except (ImportError, ValueError, OSError):
        pass
    return int(mem)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_memory(needed: float, what: str, device=None) -> None:
    """ValueError when ``needed`` bytes exceed this machine's memory (:func:`machine_memory`)."""
    have = machine_memory(device)
    if not math.isfinite(needed) or needed > have:
        need = "an unbounded amount" if not math.isfinite(needed) else f"at least {_gib(needed)}"
        raise ValueError(
            f"{what} needs {need} of memory, more than this machine's {_gib(have)}; ask for less"
        )


#: sizes above these are refused outright, before any estimate (no machine holds them)
_MAX_COUNT = 1 << 40
#: largest step of a stage: its update dt * f(x) beyond it overflows float32 within a few blocks
MAX_DT = 1e6
#: the entries of a model configuration that count something allocated
_COUNT_KEYS = (
    "num_classes",
    "refine",
    "widths",
    "blocks",
    "stem_width",
    "terms",
    "cardinality",
    "base_width",
)


def estimate_model_bytes(
    name: str, num_classes, overrides: dict, *, batch: int = 0, image: int | None = None, train: bool = True
) -> float:
    """A lower estimate of the bytes a registered model needs: its parameters (with gradient and
    momentum when ``train``) and, for ``batch`` images of height ``image``, its activations.
    Computed from the configuration alone (nothing is built): at least ``w²`` weights per block of
    width ``w``, two ``w × H × W`` states per block stored for the backward pass (measured peak
    memory of training on CPU is 2 to 4 times the estimate). ValueError for
    a configuration the registry refuses."""
    from ..nn import models as registry

    overrides = dict(overrides or {})
    memory = overrides.pop("memory", "store")  # create()'s own arguments, not overrides
    overrides.pop("memory_exact", None)
    cfg = registry._resolve(name, num_classes, overrides)
    refine = float(cfg.get("refine", 1) or 1)
    widths = [int(w) for w in cfg["widths"]]
    blocks = [int(b) for b in cfg["blocks"]]
    strides = [int(s) for s in cfg.get("strides") or [1] * len(widths)]
    terms = int(cfg.get("terms", 1) or 1)
    card = int(cfg.get("cardinality", 1) or 1) if cfg["arch"] == "resnext" else 1
    height = int(image or (224 if cfg["arch"] == "imagenet" else 32))
    if cfg["arch"] == "imagenet":
        height = max(1, height // 4)
    params = float(cfg["num_classes"]) * widths[-1] + float(cfg["stem_width"]) * 27
    acts = 0.0
    peak = 0.0
    h = float(height)
    for w, b, s in zip(widths, blocks, strides):
        h = max(1.0, h / s)
        n = b * max(refine, 1.0) * terms
        params += n * float(w) * w / card
        state = float(w) * h * h
        acts += n * state
        peak = max(peak, state)
    store = train and memory == "store"
    total = 4.0 * params * (3 if train else 1)
    # a block keeps at least its input and one inner state for the backward pass (measured on
    # CPU: training takes 2 to 4 times this estimate, which therefore only refuses what cannot fit)
    total += 4.0 * max(int(batch or 0), 0) * (2 * acts if store else 2 * peak)
    return total


def check_model_size(
    name: str,
    num_classes,
    overrides: dict,
    *,
    where: str,
    batch: int = 0,
    image: int | None = None,
    train: bool = True,
    device=None,
) -> None:
    """Refuse, before anything is allocated, a registered model (with ``num_classes`` and
    ``overrides``, from a flag, a stored config or ``model_overrides``) that cannot fit this
    machine: one line naming ``where`` and the sizes. A user's own model (``module:factory``) is
    the user's code and is not estimated."""
    if not isinstance(name, str) or ":" in name:
        return
    for key, v in [("num_classes", num_classes), *sorted((overrides or {}).items())]:
        if key not in _COUNT_KEYS:
            continue
        vals = v if isinstance(v, (list, tuple)) else [v]
        for x in vals:
            if (
                isinstance(x, (int, float))
                and not isinstance(x, bool)
                and (not math.isfinite(x) or abs(x) > _MAX_COUNT)
            ):
                raise ValueError(f"{where}: {key}={v!r} is beyond any machine's memory; refused")
    dt = (overrides or {}).get("dt")
    if isinstance(dt, (int, float)) and not isinstance(dt, bool) and not abs(dt) <= MAX_DT:
        raise ValueError(
            f"{where}: dt={dt!r} is above the bound of {MAX_DT:g} (a stage's update "
            f"dt * f(x) would overflow float32)"
        )
    try:
        need = estimate_model_bytes(name, num_classes, overrides, batch=batch, image=image, train=train)
    except (KeyError, TypeError, ValueError) as e:
        msg = _first_line(e)
        if msg.startswith(f"{where}:"):
            raise
        raise ValueError(f"{where}: {msg}") from None
    sizes = ", ".join(
        f"{k}={v}"
        for k, v in sorted((overrides or {}).items())
        if k in ("refine", "widths", "blocks", "stem_width", "terms")
    )
    what = (
        f"{where}: {name} with {num_classes or 'its default number of'} classes"
        + (f" and {sizes}" if sizes else "")
        + (f" at batch {batch}" if batch else "")
    )
    check_memory(need, what, device)


# --------------------------------------------------------------------------------------------
# Checkpoint archives
# --------------------------------------------------------------------------------------------

#: bytes per element of the storage types torch writes
_STORAGE_BYTES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
    "UntypedStorage": 1,
    "QInt8Storage": 1,
    "QUInt8Storage": 1,
    "QInt32Storage": 4,
    "Float8_e4m3fnStorage": 1,
    "Float8_e5m2Storage": 1,
    "UInt16Storage": 2,
    "UInt32Storage": 4,
    "UInt64Storage": 8,
}
#: largest data.pkl read for inspection
_MAX_PICKLE_BYTES = 256 << 20


class _Stub:
    """Stands for any global a checkpoint's pickle names: never imported, never run."""

    def __init__(self, name="", *a, **k):
        self.name = name

    def __call__(self, *a, **k):
        return _Stub(self.name)

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def __reduce__(self):  # pragma: no cover
        raise pickle.PicklingError("stub")


class _Inspector(pickle.Unpickler):
    """Walks a checkpoint's pickle without importing or calling anything; records the storages
    (key -> bytes) its persistent ids declare."""

    def __init__(self, f):
        super().__init__(f)
        self.storages: dict[str, float] = {}

    def find_class(self, module, name):
        return _Stub(f"{module}.{name}")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise pickle.UnpicklingError("unexpected persistent id")
        kind, key, numel = pid[1], pid[2], pid[4]
        tname = kind.name.rsplit(".", 1)[-1] if isinstance(kind, _Stub) else str(kind)
        size = _STORAGE_BYTES.get(tname)
        if size is None or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise pickle.UnpicklingError(f"storage {key!r} of unknown type {tname} or size {numel!r}")
        self.storages[str(key)] = float(numel) * size
        return _Stub("storage")


def check_archive(path, budget: float | None = None) -> None:
    """Inspect the zip records of the checkpoint ``path`` before it is loaded: every record stored
    (uncompressed, as torch writes them), the pickle small, every tensor record exactly the size
    of the storage the pickle declares for it, and their sum within ``budget`` bytes (default:
    this machine's memory). ValueError naming the file and the record otherwise; nothing is
    inflated. Files that are not zip archives (torch's legacy format) are bounded by their size."""
    path = Path(path)
    budget = machine_memory() if budget is None else budget
    if not zipfile.is_zipfile(path):
        if path.stat().st_size > budget:
            raise ValueError(f"{path}: {_gib(path.stat().st_size)}, more than this machine's memory")
        return
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable checkpoint archive ({_first_line(e)})") from None
    with z:
        infos = z.infolist()
        pkl = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
        for i in infos:
            if i.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"{path}: record {i.filename} is compressed (torch writes none); "
                    f"refused before inflating it"
                )
            if i.file_size > budget:
                raise ValueError(
                    f"{path}: record {i.filename} holds {_gib(i.file_size)}, more than "
                    f"this machine's memory; refused before reading it"
                )
        if len(pkl) != 1:
            raise ValueError(f"{path}: not a torch checkpoint archive ({len(pkl)} data.pkl records)")
        if pkl[0].file_size > _MAX_PICKLE_BYTES:
            raise ValueError(f"{path}: its pickle is {_gib(pkl[0].file_size)}; refused")
        prefix = pkl[0].filename[: -len("data.pkl")]
        try:
            ins = _Inspector(io.BytesIO(z.read(pkl[0])))
            ins.load()
        except RecursionError:
            raise ValueError(f"{path}: its pickle nests too deep; refused") from None
        except Exception as e:  # noqa: BLE001 - any malformed pickle
            raise ValueError(f"{path}: refused: its pickle is malformed ({_first_line(e)})") from None
        records = {
            i.filename[len(prefix) + len("data/") :]: i
            for i in infos
            if i.filename.startswith(prefix + "data/")
        }
        total = 0.0
        for key, nbytes in ins.storages.items():
            rec = records.get(key)
            if rec is None:
                raise ValueError(f"{path}: the tensor storage {key!r} has no record in the archive")
            if rec.file_size != nbytes:
                raise ValueError(
                    f"{path}: record data/{key} holds {rec.file_size} bytes, but the "
                    f"tensor storage it should hold is {int(nbytes)} bytes; refused "
                    f"before reading it"
                )
            total += nbytes
        if total > budget:
            raise ValueError(
                f"{path}: its tensors need {_gib(total)}, more than this machine's "
                f"{_gib(budget)}; refused before reading them"
            )
