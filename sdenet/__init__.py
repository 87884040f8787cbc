"""sdenet: deep networks as discretizations of (stochastic) differential equations.

The numerical core — noise laws, fields, schemes, :func:`integrate` and the weak
convergence toolkit — is importable from the top level::

    import sdenet as sn
    field = sn.SDEField(drift=lambda t, x: mu * x, diffusion=lambda t, x: sigma * x)
    xT = sn.integrate(field, sn.WeakEuler(sn.Rademacher()), x0, t1=1.0, steps=100)

The networks are one attribute away, imported on first use (so ``import sdenet`` stays as
fast as the numerical core)::

    net = sn.models.create("lm_resnet56")      # sdenet.models: the registry
    stage = sn.nn.Stage(blocks, sn.Euler())    # sdenet.nn: blocks, fields, stages
"""

from types import ModuleType

from . import linear, weak
from .additive import AdditiveField
from .extrapolation import extrapolate
from .fast import LinearSDEField
from .fields import NOISE_TYPES, CoupledField, Field, ODEField, SDEField
from .integrate import integrate, make_grid
from .laws import (
    LAW_NAMES,
    DropBernoulli,
    Gaussian,
    NoiseLaw,
    Rademacher,
    ThreePoint,
    Uniform,
    get_law,
    survival_at,
)
from .schemes import (
    SCHEME_NAMES,
    CoupledEuler,
    Euler,
    EulerMaruyama,
    Hamiltonian,
    Heun,
    Leapfrog,
    LinearMultistep,
    Midpoint,
    Milstein,
    NeumannEuler,
    Platen,
    Scheme,
    StochasticLM,
    WeakEuler,
    WeakTaylor2,
    get_scheme,
)
from .srk import SRK

__version__ = "0.1.0"

#: subpackages imported on first attribute access (PEP 562): ``sn.models``, ``sn.nn``; they are
#: not in ``__all__``, so ``from sdenet import *`` does not shadow ``torch.nn`` imported as ``nn``
_LAZY = ("models", "nn")


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sdenet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "weak",
    "NOISE_TYPES",
    "Field",
    "SDEField",
    "ODEField",
    "CoupledField",
    "LinearSDEField",
    "integrate",
    "make_grid",
    # The laws and schemes below repeat lines of sdenet.laws.__all__ and sdenet.schemes.__all__
    # (duplicates pairs) on purpose: the top level exports a chosen subset of each, and mypy checks
    # this module with no_implicit_reexport, which reads only a literal __all__ (one built from
    # the submodules' lists makes every `sdenet.Gaussian` in sdenet/theory an error).
    "LAW_NAMES",
    "NoiseLaw",
    "Gaussian",
    "Uniform",
    "Rademacher",
    "ThreePoint",
    "DropBernoulli",
    "get_law",
    "survival_at",
    # the schemes: a literal list for the same reason as the laws above
    "SCHEME_NAMES",
    "Scheme",
    "Euler",
    "Heun",
    "NeumannEuler",
    "LinearMultistep",
    "CoupledEuler",
    "EulerMaruyama",
    "WeakEuler",
    "StochasticLM",
    "get_scheme",
    "Platen",
    "WeakTaylor2",
    "Milstein",
    "extrapolate",
    "linear",
    "Hamiltonian",
    "Midpoint",
    "Leapfrog",
    "AdditiveField",
    "SRK",
]
