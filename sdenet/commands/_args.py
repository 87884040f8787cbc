"""Argument types and options shared by the sub-commands.

A type raises ``argparse.ArgumentTypeError``, which :mod:`sdenet.cli` turns into one line
``sdenet: error: ...`` and exit status 2.
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


def add_threads_option(parser, default: int | None, help: str) -> None:
    """``--threads N``: torch CPU threads for the command (``None``: torch's own choice)."""
    parser.add_argument("--threads", type=positive_int, default=default, metavar="N", help=help)


def apply_threads(args) -> None:
    """Set ``torch.set_num_threads`` from ``--threads`` when it was given."""
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
