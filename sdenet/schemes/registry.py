"""Scheme names: :func:`get_scheme` builds a scheme from its command-line name;
:func:`register_scheme` adds a scheme defined in its own module (``sdenet.srk``)."""

from __future__ import annotations

from ..laws import Gaussian, NoiseLaw
from .base import Scheme
from .deterministic import Euler, Heun, LinearMultistep, NeumannEuler
from .invertible import CoupledEuler, Hamiltonian, Leapfrog, Midpoint
from .stochastic import EulerMaruyama, StochasticLM, WeakEuler
from .weak import Milstein, Platen, WeakTaylor2

__all__ = ["get_scheme", "register_scheme", "SCHEME_NAMES"]


SCHEME_NAMES = (
    "euler",
    "heun",
    "neumann",
    "lm",
    "coupled",
    "euler_maruyama",
    "weak_euler",
    "stochastic_lm",
    "platen",
    "weak_taylor2",
    "milstein",
    "hamiltonian",
    "midpoint",
    "leapfrog",
    "srk",
)

#: schemes defined in their own modules, which register themselves on import (``sdenet.srk``):
#: name -> (class, options it takes, whether it takes only Gaussian increments)
_REGISTERED: dict = {}


def register_scheme(names, cls, options=(), gaussian_only: bool = False) -> None:
    """Make ``cls`` buildable by :func:`get_scheme` (and ``--scheme`` on the command line) under
    each of ``names``; ``options`` are the constructor's keyword arguments a caller may give."""
    for name in names:
        _REGISTERED[str(name).lower().replace("-", "_")] = (cls, tuple(options), bool(gaussian_only))


def get_scheme(name: str, law: NoiseLaw | None = None, **kwargs) -> Scheme:
    """Build a scheme from its command-line name. Stochastic schemes take ``law``.

    Options go to the scheme's constructor (``terms`` for ``neumann``, ``k`` for ``lm``,
    ``g`` for ``stochastic_lm``); an option the scheme does not take is a ``ValueError``.
    """
    key = str(name).lower().replace("-", "_")

    def build(cls, allowed=(), **extra):
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            takes = f"takes only {', '.join(allowed)}" if allowed else "takes no options"
            raise ValueError(f"scheme {name!r} {takes}; got {', '.join(unknown)}")
        return cls(**extra, **kwargs)

    if key in ("euler", "forward_euler"):
        return build(Euler)
    if key == "heun":
        return build(Heun)
    if key in ("neumann", "neumann_euler"):
        return build(NeumannEuler, ("terms",))
    if key in ("lm", "linear_multistep"):
        return build(LinearMultistep, ("k",))
    if key in ("coupled", "coupled_euler", "revnet"):
        return build(CoupledEuler)
    if key in ("euler_maruyama", "em"):
        if law is not None and law != Gaussian():
            raise ValueError("euler_maruyama uses Gaussian increments; use weak_euler for another law")
        return build(EulerMaruyama)
    if key in ("weak_euler", "weak"):
        return build(WeakEuler, (), law=law)
    if key in ("stochastic_lm", "lm_sd"):
        return build(StochasticLM, ("g",), law=law)
    if key == "platen":
        return build(Platen, (), law=law)
    if key in ("weak_taylor2", "taylor2"):
        return build(WeakTaylor2, ("time_dependent",), law=law)
    if key == "milstein":
        if law is not None and law != Gaussian():
            raise ValueError(
                "milstein uses Gaussian increments (it is a strong scheme); use platen for another law"
            )
        return build(Milstein, ("derivative",))
    if key in ("hamiltonian", "verlet"):
        return build(Hamiltonian)
    if key == "midpoint":
        return build(Midpoint, ("start",))
    if key == "leapfrog":
        return build(Leapfrog, ("start", "velocity"))
    if key in _REGISTERED:
        cls, options, gaussian_only = _REGISTERED[key]
        if gaussian_only and law is not None and law != Gaussian():
            raise ValueError(
                f"{key} uses Gaussian increments (it is a strong scheme); use platen for another law"
            )
        return build(cls, options)
    raise ValueError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEME_NAMES)}")
