"""The ``sdenet`` command.

Each sub-command lives in ``sdenet/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
``func(args) -> int``.

Errors. A command raises :class:`UsageError`, ``ValueError`` or ``OSError``
(``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``, …) for anything caused
by its arguments, files, devices, permissions or data; :func:`main` prints it as one line
``sdenet <command>: error: <message>`` (``<command>`` is the sub-command, e.g.
``weak check``) and returns 2. A command's message therefore carries no ``sdenet ...:``
prefix of its own (a leading ``<command>: `` is dropped). Out of memory is reported the same
way (exit 2). Any other exception is a failure the command did not foresee: one line naming
the exception and the hint ``run with --debug or SDENET_DEBUG=1 for the traceback``, exit 1.
``--debug`` (before or after the sub-command) or ``SDENET_DEBUG=1`` prints the traceback
first. Ctrl-C exits 130; a diverged training run (``TrainingDiverged``) exits 1 with its own
message.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from .errors import UsageError  # re-exported: sdenet.cli.UsageError

COMMANDS = ("weak", "models", "train", "eval", "plot", "theory", "quickstart", "refine")

#: environment variable that turns on tracebacks (any value but "", 0, false, no, off)
DEBUG_ENV = "SDENET_DEBUG"
DEBUG_HINT = f"run with --debug or {DEBUG_ENV}=1 for the traceback"

#: exit status of an error caused by the user's arguments, files, devices or data
EXIT_USAGE = 2
#: exit status of an exception no command foresaw (a bug, or a failure of the machine)
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class _ParseError(UsageError):
    """A command line argparse refused: one line, never a traceback (not even with --debug)."""


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are one line, and which accepts ``--debug`` at every level."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # SUPPRESS: a sub-command's parser does not reset the value the top level set
        self.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help=f"print the traceback of an error (also: {DEBUG_ENV}=1)",
        )

    def error(self, message):  # one line, no usage block
        raise _ParseError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sdenet",
        description="Deep networks as discretizations of stochastic differential equations.",
        epilog=f"Errors end with one line 'sdenet COMMAND: error: ...' and exit status 2; "
        f"--debug or {DEBUG_ENV}=1 shows the traceback.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"sdenet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"sdenet.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"sdenet.commands.{name}":
                continue  # command not installed in this build
            raise
        module.register(sub)
    return parser


def debug_requested(argv) -> bool:
    """``--debug`` among the options (before a ``--``) or ``SDENET_DEBUG`` set."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off"):
        return True
    argv = list(argv)
    if "--" in argv:
        argv = argv[: argv.index("--")]
    return "--debug" in argv


def _command_name(args, argv) -> str:
    """``weak check``, ``train``, …: from the parsed arguments, else guessed from ``argv``."""
    words = []
    if args is not None:
        name = getattr(args, "command", None)
        while name:
            words.append(name)
            name = getattr(args, f"{name}_command", None)
        return " ".join(words)
    tokens = [a for a in argv if not a.startswith("-")]
    if tokens and tokens[0] in COMMANDS:
        words.append(tokens[0])
        if tokens[0] == "weak" and len(tokens) > 1 and tokens[1] in ("check", "order"):
            words.append(tokens[1])
    return " ".join(words)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_message(err: OSError) -> str:
    """``Permission denied: /proc/x`` rather than ``[Errno 13] Permission denied: '/proc/x'``."""
    if err.strerror and err.filename is not None:
        msg = f"{err.strerror}: {os.fsdecode(err.filename)}"
        if getattr(err, "filename2", None) is not None:
            msg += f" -> {os.fsdecode(err.filename2)}"
        return msg
    return str(err) or type(err).__name__


def format_error(command: str, message: str) -> str:
    """One line ``sdenet <command>: error: <message>``. A message that already starts with
    ``sdenet`` (argparse's, which names the parser) is kept; a leading ``<command>: `` is
    dropped so the command is not named twice."""
    msg = _one_line(message)
    if msg.startswith("sdenet"):
        return msg
    for prefix in (command, command.split(" ")[-1] if command else ""):
        if prefix and msg.startswith(prefix + ": "):
            msg = msg[len(prefix) + 2 :]
            break
    return f"{_head(command)}: error: {msg}"


def _head(command: str) -> str:
    return f"sdenet {command}" if command else "sdenet"


def _is_training_diverged(err) -> bool:
    loop = sys.modules.get("sdenet.train.loop")
    cls = getattr(loop, "TrainingDiverged", None)
    return cls is not None and isinstance(err, cls)


def _is_out_of_memory(err) -> bool:
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch else None
    return oom is not None and isinstance(err, oom)


def _silence_stdout() -> None:
    """After a broken pipe (``sdenet ... | head``): point stdout at /dev/null so the
    interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_requested(argv)
    args = None

    def report(line: str, code: int) -> int:
        if debug and not isinstance(sys.exc_info()[1], _ParseError):
            traceback.print_exc(file=sys.stderr)
        print(line, file=sys.stderr)
        return code

    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the sub-command they were given to, not by the top level
            raise _ParseError(
                f"{_head(_command_name(args, argv))}: error: unrecognized arguments: {' '.join(extra)}"
            )
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that left shows here, inside the handler
        return code
    except KeyboardInterrupt:
        return report(f"{_head(_command_name(args, argv))}: interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:  # the reader of stdout left: not an error
        _silence_stdout()
        return 0
    except (UsageError, ValueError) as err:
        return report(format_error(_command_name(args, argv), str(err) or type(err).__name__), EXIT_USAGE)
    except OSError as err:
        return report(format_error(_command_name(args, argv), _os_message(err)), EXIT_USAGE)
    except Exception as err:  # noqa: BLE001 - the one place that turns any failure into a line
        command = _command_name(args, argv)
        if _is_training_diverged(err):
            return report(format_error(command, str(err)), EXIT_INTERNAL)
        if _is_out_of_memory(err):
            msg = _one_line(str(err)) or "no details"
            return report(
                format_error(
                    command, f"out of memory ({msg}); ask for less (smaller sizes, batches or sample counts)"
                ),
                EXIT_USAGE,
            )
        msg = _one_line(str(err))
        what = f"{type(err).__name__}: {msg}" if msg else type(err).__name__
        return report(format_error(command, f"unexpected {what} ({DEBUG_HINT})"), EXIT_INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
