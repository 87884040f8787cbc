"""The ``sdenet`` command.

Each sub-command lives in ``sdenet/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
``func(args) -> int``. Errors that are the user's (bad arguments, missing files,
invalid values) end as one line ``sdenet: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("weak", "models", "train", "eval", "plot", "theory", "quickstart", "refine")


class UsageError(Exception):
    """Raised by a command for a user error; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sdenet",
        description="Deep networks as discretizations of stochastic differential equations.",
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as err:
        msg = str(err)
        print(msg if msg.startswith("sdenet") else f"sdenet: error: {msg}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        print(f"sdenet: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdenet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
