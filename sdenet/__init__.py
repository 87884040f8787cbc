"""sdenet: deep networks as discretizations of (stochastic) differential equations.

The numerical core — noise laws, fields, schemes, :func:`integrate` and the weak
convergence toolkit — is importable from the top level::

    import sdenet as sn
    field = sn.SDEField(drift=lambda t, x: mu * x, diffusion=lambda t, x: sigma * x)
    xT = sn.integrate(field, sn.WeakEuler(sn.Rademacher()), x0, t1=1.0, steps=100)
"""

from . import weak
from .fields import NOISE_TYPES, CoupledField, Field, ODEField, SDEField
from .fast import LinearSDEField
from .integrate import integrate, make_grid
from .laws import LAW_NAMES, DropBernoulli, Gaussian, NoiseLaw, Rademacher, ThreePoint, Uniform, get_law
from .schemes import (
    SCHEME_NAMES,
    CoupledEuler,
    Euler,
    EulerMaruyama,
    Heun,
    LinearMultistep,
    NeumannEuler,
    Scheme,
    StochasticLM,
    WeakEuler,
    get_scheme,
)

__version__ = "0.1.0"

__all__ = [
    "weak",
    "NOISE_TYPES", "Field", "SDEField", "ODEField", "CoupledField", "LinearSDEField",
    "integrate", "make_grid",
    "LAW_NAMES", "NoiseLaw", "Gaussian", "Uniform", "Rademacher", "ThreePoint", "DropBernoulli", "get_law",
    "SCHEME_NAMES", "Scheme", "Euler", "Heun", "NeumannEuler", "LinearMultistep", "CoupledEuler",
    "EulerMaruyama", "WeakEuler", "StochasticLM", "get_scheme",
]
