"""Argument types and options shared by the sub-commands.

A type raises ``argparse.ArgumentTypeError``, which :mod:`sdenet.cli` turns into one line
``sdenet <command>: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def nonneg_int(text: str) -> int:
    v = integer(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def positive_int(text: str) -> int:
    v = integer(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def max_threads() -> int:
    """Most ``--threads`` accepted: 4 per CPU core of this machine (torch crashes, rather than
    refuses, when asked for absurd thread counts)."""
    import os

    return 4 * (os.cpu_count() or 1)


def threads(text: str) -> int:
    """argparse type of ``--threads``: 1 to :func:`max_threads`."""
    v = positive_int(text)
    if v > max_threads():
        raise argparse.ArgumentTypeError(
            f"at most {max_threads()} threads (4 per CPU core of this machine), got {text!r}"
        )
    return v


def depth_factors(text: str) -> str:
    """argparse type of a list of depth factors such as ``0.5,1,2`` (checked by
    :func:`sdenet.nn.depth.parse_depth_factors`; the text itself is kept)."""
    from ..nn.depth import parse_depth_factors

    try:
        parse_depth_factors(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_checkpoint_argument(parser) -> None:
    """The positional ``CHECKPOINT`` of the commands that read a trained network."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file or a run folder (last.pt)")


def add_json_option(parser, help: str = "print the result as one JSON object") -> None:
    parser.add_argument("--json", action="store_true", help=help)


def add_device_option(parser, help: str = "auto, cpu, cuda or cuda:N") -> None:
    parser.add_argument("--device", default="auto", help=help)


def add_samples_option(parser, default: int | None, help: str) -> None:
    """``--samples N``: Monte Carlo draws of a stochastic network's test error."""
    parser.add_argument("--samples", type=nonneg_int, default=default, metavar="N", help=help)


def add_limit_test_option(parser, help: str = "use only the first N test images") -> None:
    parser.add_argument("--limit-test", type=positive_int, default=None, metavar="N", help=help)


def add_data_root_option(parser, help: str | None = None) -> None:
    parser.add_argument("--data-root", default=None, metavar="DIR", help=help)


def pick(args, *names: str) -> dict:
    """``{name: args.<name>}``: options handed on to the API under their own names."""
    return {name: getattr(args, name) for name in names}


def add_p_schedule_option(parser, help: str) -> None:
    """``--p-schedule fixed|sqrt``: how stochastic-depth survival probabilities follow the step
    (:data:`sdenet.laws.P_SCHEDULES`); ``None`` when not given."""
    parser.add_argument("--p-schedule", dest="p_schedule", choices=("fixed", "sqrt"), default=None, help=help)


def add_threads_option(parser, default: int | None, help: str) -> None:
    """``--threads N``: torch CPU threads for the command (``None``: torch's own choice)."""
    parser.add_argument("--threads", type=threads, default=default, metavar="N", help=help)


def default_threads(cap: int = 4) -> int:
    """A torch thread count that does not oversubscribe the machine: half the cores this process
    may use, at least 1 and at most ``cap``. torch's own default (one thread per core) stalls
    when the cores are shared: on a loaded 2-core machine a one-epoch pair took 148 s with it
    and 27 s with one thread (issue 18); on this 2-core machine, nearly idle, ten ResNet-20 epochs
    took 53.5 s with 1 thread and 52.6 s with 2, LM-ResNet-20 56.1 s and 68.6 s (the whole quick
    start 131 s against 143 s, 125 s against 205 s of CPU)."""
    from ..train.hardware import cpu_cores

    return max(1, min(int(cap), cpu_cores() // 2))


def apply_threads(args) -> None:
    """Set ``torch.set_num_threads`` from ``--threads`` when it was given."""
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)


def finite_float(text: str) -> float:
    """A finite number (``nan`` and ``inf`` refused)."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def check_device(spec, allow_auto: bool = True) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` with the device present; returns the spec
    (lower case). ``ValueError`` naming the problem otherwise (CUDA absent, index out of range,
    a device type sdenet does not run on)."""
    s = str(spec).strip().lower()
    if s == "auto" and allow_auto:
        return s
    import torch

    try:
        dev = torch.device(s)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"unknown device {spec!r}; use {'auto, ' if allow_auto else ''}cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cpu":
        return s
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return s
    raise ValueError(f"device {spec!r}: sdenet runs on cpu or cuda")


def device(text: str) -> str:
    """argparse type of ``--device``: :func:`check_device`."""
    try:
        return check_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def writable_file(path, option: str):
    """Check, before any work, that ``path`` can be written as a file (creating its folder):
    not a folder, not under a regular file, not in an unwritable place. Returns the Path;
    ``ValueError`` naming the option otherwise. Leaves no file behind that was not there."""
    import os
    from pathlib import Path

    from ..train.safe_io import check_output_path

    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        raise ValueError(f"{option} {path}: is a folder; give a file name")
    check_output_path(path, option, make_parents=True)  # no link, device or live run folder
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"{option} {path}: cannot create its folder {str(p.parent)!r} ({_reason(err)})"
        ) from None
    try:
        if p.exists():
            with open(p, "ab"):
                pass
        else:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.close(fd)
            os.unlink(p)
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot write the file ({_reason(err)})") from None
    return p


def writable_dir(path, option: str):
    """Check, before any work, that ``path`` is (or can be made) a folder we can write in.
    Returns the Path (created); ``ValueError`` naming the option otherwise."""
    import os
    import tempfile
    from pathlib import Path

    from ..train.safe_io import check_output_path

    p = Path(path)
    if p.exists() and not p.is_symlink() and not p.is_dir():
        raise ValueError(f"{option} {path}: exists and is not a folder")
    check_output_path(path, option, folder=True, make_parents=True)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".sdenet-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot write in this folder ({_reason(err)})") from None
    return p
