"""Optional dependencies: import one, or say in one line which extra installs it.

``sdenet/`` itself imports none of them; theory scripts, benchmarks and interop examples do.
Extras (``pyproject.toml``): ``interop`` (torchsde, torchdiffeq), ``theory`` (sympy, scipy,
torchdiffeq), ``dev`` (pytest and everything the tests import).
"""

from __future__ import annotations

import importlib

__all__ = ["require", "EXTRAS"]

#: the extra that installs each optional module
EXTRAS = {"torchsde": "interop", "torchdiffeq": "interop", "sympy": "theory", "scipy": "theory"}


def require(module: str, extra: str | None = None):
    """``importlib.import_module(module)``, or an ``ImportError`` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = extra or EXTRAS.get(top, "dev")
        raise ImportError(
            f"{top} is not installed: pip install 'sdenet[{extra}]' (or pip install {top})"
        ) from err
