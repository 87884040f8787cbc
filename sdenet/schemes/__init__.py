"""Schemes: stateless one-step (and multistep) maps over a field.

The package is split by concern; every public name is re-exported here, so
``from sdenet.schemes import X`` and ``sdenet.schemes.X`` work as before:

* :mod:`sdenet.schemes.base` — the :class:`Scheme` protocol (what a scheme declares) and the
  helpers every scheme shares;
* :mod:`sdenet.schemes.deterministic` — :class:`Euler`, :class:`Heun`, :class:`NeumannEuler`,
  :class:`LinearMultistep`;
* :mod:`sdenet.schemes.stochastic` — the weak Euler family: :class:`WeakEuler`,
  :class:`EulerMaruyama`, :class:`StochasticLM`;
* :mod:`sdenet.schemes.weak` — weak order 2 and Milstein: :class:`Platen`,
  :class:`WeakTaylor2`, :class:`Milstein`;
* :mod:`sdenet.schemes.invertible` — :class:`CoupledEuler`, :class:`Hamiltonian`,
  :class:`Midpoint`, :class:`Leapfrog` (memory="reversible");
* :mod:`sdenet.schemes.registry` — :func:`get_scheme`, :func:`register_scheme`,
  ``SCHEME_NAMES``.
"""

from __future__ import annotations

from .base import Scheme, is_scheme
from .deterministic import Euler, Heun, LinearMultistep, NeumannEuler
from .invertible import CoupledEuler, Hamiltonian, Leapfrog, Midpoint
from .registry import SCHEME_NAMES, get_scheme, register_scheme
from .stochastic import EulerMaruyama, StochasticLM, WeakEuler
from .weak import Milstein, Platen, WeakTaylor2

__all__ = [
    "Scheme",
    "Euler",
    "Heun",
    "NeumannEuler",
    "LinearMultistep",
    "CoupledEuler",
    "EulerMaruyama",
    "WeakEuler",
    "StochasticLM",
    "Platen",
    "WeakTaylor2",
    "Milstein",
    "Hamiltonian",
    "Midpoint",
    "Leapfrog",
    "get_scheme",
    "register_scheme",
    "SCHEME_NAMES",
    "is_scheme",
]
