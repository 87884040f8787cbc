"""Errors shared by the command line and its commands (a low module: ``sdenet.cli`` and
``sdenet.commands`` both import it, so neither imports the other's errors)."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Raised by a command for a user error; printed as one line, exit status 2."""
