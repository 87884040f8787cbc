"""Helpers of the hostile suite (tests/test_hostile.py): run folders and checkpoints made hostile,
a byte-for-byte snapshot of a folder tree, and the ``sdenet`` command in this process or in a
child process under an address-space limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: a tiny run on the bundled sample: 32 train / 16 test images
TINY = [
    "--dataset",
    "sample",
    "--limit-train",
    "32",
    "--limit-test",
    "16",
    "--batch-size",
    "16",
    "--device",
    "cpu",
    "--quiet",
]
#: address space of a child that may meet a memory bomb
CHILD_MEMORY = 3 << 30


def snapshot(root) -> dict:
    """Every entry under ``root`` (links not followed): its kind and its bytes' digest, or the
    link's target. Two snapshots are equal only when nothing was created, removed or changed."""
    root = Path(root)
    out = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            elif p.is_file():
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[rel] = ("other",)
    return out


def diff(before: dict, after: dict) -> list:
    keys = sorted(set(before) | set(after))
    return [k for k in keys if before.get(k) != after.get(k)]


def one_line(code, err: str, expected: int = 2) -> str:
    """The one error line of a refused command; asserts exit status and no traceback."""
    lines = [s for s in err.splitlines() if s.strip()]
    assert code == expected, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("sdenet"), lines[0]
    return lines[0]


def _limit_memory():  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def child(args, cwd, *, env=None, timeout=120, limit=True, wait=True):
    """``python -m sdenet ARGS`` in a child process (address space limited to CHILD_MEMORY), with
    this checkout first on the path and one thread."""
    e = {k: v for k, v in os.environ.items() if k != "SDENET_FAULT"}
    e.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, "-m", "sdenet", *args]
    kw = dict(cwd=cwd, env=e, text=True, preexec_fn=_limit_memory if limit else None)
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)


_DRIVER = """
import contextlib, io, json, sys
from sdenet.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    out.append([code, err.getvalue()])
print(json.dumps(out))
"""


def child_cases(cases, cwd, timeout=300) -> list:
    """Several ``sdenet`` command lines, one after another in ONE child process under the
    address-space limit (one torch import for all); ``[(exit status, stderr)]`` per case."""
    e = {k: v for k, v in os.environ.items() if k != "SDENET_FAULT"}
    e.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps([[str(a) for a in c] for c in cases])],
        cwd=cwd,
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
    )
    assert r.returncode == 0, r.stderr
    return [tuple(x) for x in json.loads(r.stdout.splitlines()[-1])]


def lock_holder(run_dir, cwd):
    """A child process that holds ``run_dir``'s run lock until killed (a live run, as far as any
    other command can tell); returns it once the lock is held."""
    code = (
        "import sys, time\nfrom sdenet.train.runfolder import RunLock\n"
        f"RunLock({str(run_dir)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(300)\n"
    )
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "held", p.stderr.read()
    return p


def copy_run(src, dst) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return Path(dst)


def edit_checkpoint(path, fn) -> None:
    c = torch.load(path, weights_only=True)
    fn(c)
    torch.save(c, path)


def edit_json(path, fn) -> None:
    d = json.loads(Path(path).read_text())
    fn(d)
    Path(path).write_text(json.dumps(d))


def set_config(run, **entries) -> None:
    """Set ``entries`` in the run's config.json and in the config of each of its checkpoints (a
    consistent hostile folder, so that what is tested is the entries themselves)."""
    run = Path(run)
    if (run / "config.json").exists():
        edit_json(run / "config.json", lambda d: d.update(entries))
    for name in ("last.pt", "best.pt"):
        if (run / name).exists():
            edit_checkpoint(run / name, lambda c: c["config"].update(entries))


def rewrite_zip(path, fn) -> None:
    """Rewrite the zip archive ``path`` record by record: ``fn(name, data) -> (data, compression)``."""
    with zipfile.ZipFile(path) as z:
        items = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in items:
            data, how = fn(name, data)
            z.writestr(zipfile.ZipInfo(name), data, compress_type=how)


EVIL_MODULE = """\
from pathlib import Path
Path({marker!r}).write_text("the module ran")
def make(num_classes=10, **kw):
    Path({marker!r}).write_text("the factory ran")
    raise SystemExit(0)
"""
