"""Argument checks shared by modules that otherwise do not import each other."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["checked_float"]


def checked_float(
    value: Any, not_a_number: str, not_finite: str, *, positive: bool = False, **names: Any
) -> float:
    """``float(value)``, finite (and ``> 0`` with ``positive``), else a ``ValueError``.

    The messages are ``str.format`` templates, filled only when raised: ``not_a_number`` where
    ``float()`` fails, ``not_finite`` where the number is NaN, infinite (or not positive), with
    ``{value}`` the value given, ``{number}`` (in ``not_finite``) the float it gave and ``names``
    any further fields, e.g.
    ``checked_float(dt, "dt must be a number, got {value!r}", "dt must be finite, got dt={value!r}")``.
    """
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(not_a_number.format(value=value, **names)) from None
    if not math.isfinite(out) or (positive and not out > 0):
        raise ValueError(not_finite.format(value=value, number=out, **names))
    return out
