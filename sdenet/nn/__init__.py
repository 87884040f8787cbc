"""Networks as schemes applied to fields (Lu, Zhong, Li, Dong, ICML 2018).

* blocks (:mod:`sdenet.nn.blocks`): residual branches ``f``;
* fields (:mod:`sdenet.nn.fields`): a run of blocks as a field — :class:`BlockField`
  (ODE), :class:`DropField` (stochastic depth), :class:`ShakeField` (shake-shake),
  :class:`CoupledBlockField` (RevNet);
* stages (:mod:`sdenet.nn.stage`): :class:`Stage` integrates a field with schemes from
  :mod:`sdenet.schemes`; :class:`Transition` is the width/resolution change outside the ODE;
* networks and reports (:mod:`sdenet.nn.network`): :class:`Network`, :func:`lm_coefficients`,
  :func:`weak_report`, :func:`reset_weak_stats`, :func:`mc_predict`, :func:`noise_on`,
  :func:`set_generator`;
* the registry (:mod:`sdenet.nn.models`, public as :mod:`sdenet.models`) and
  :func:`to_lm` (:mod:`sdenet.nn.transform`);
* depth as a step size (:mod:`sdenet.nn.refine`): :func:`refine` and :func:`coarsen` at fixed T;
  :func:`at_depth` (:mod:`sdenet.nn.depth`) runs a network at another depth with its own weights.
* :func:`rescale` (:mod:`sdenet.nn.rescale`): carry a network to another image resolution
  (``method="atrous"``, the default: dilated kernels; ``"moments"``: the moment map);
  :class:`DiffConv2d` (:mod:`sdenet.nn.operators`): 3×3 kernels built from differential
  operators scaled by the grid spacing (the ``*pde_resnet*`` models).
"""

from . import blocks
from .blocks import (  # noqa: F401 - re-exported (__all__ takes blocks.__all__)
    ConvShortcut,
    PadShortcut,
    PostActBasic,
    PostActBottleneck,
    PreActBasic,
    PreActBottleneck,
    ProjectionShortcut,
    ShakeBranch,
    ShakeShortcut,
)
from .depth import at_depth
from .fields import BlockField, CoupledBlockField, DropField, ShakeField
from .memory import MEMORY_MODES, memory_problem, saved_tensor_bytes
from .network import Layer, Network, lm_coefficients, mc_predict, reset_weak_stats, weak_report
from .operators import DiffConv2d
from .refine import coarsen, refine
from .rescale import rescale
from .reversible import AntisymmetricPair, HalfPadPool, HamiltonianBlockField, TiedBlock
from .stage import Stage, Transition, lm_stage, mean_scheme, noise_on, set_generator, set_memory
from .transform import to_lm

__all__ = [
    "blocks",
    # the residual branches and shortcuts: sdenet.nn.blocks.__all__ but its conv3x3/conv1x1 helpers
    *(name for name in blocks.__all__ if name not in ("conv3x3", "conv1x1")),
    "BlockField",
    "DropField",
    "ShakeField",
    "CoupledBlockField",
    "Stage",
    "Transition",
    "lm_stage",
    "mean_scheme",
    "noise_on",
    "set_generator",
    "Layer",
    "Network",
    "lm_coefficients",
    "weak_report",
    "reset_weak_stats",
    "mc_predict",
    "to_lm",
    "refine",
    "coarsen",
    "at_depth",
    "rescale",
    "DiffConv2d",
    "to_lm",
    "TiedBlock",
    "AntisymmetricPair",
    "HamiltonianBlockField",
    "HalfPadPool",
    "MEMORY_MODES",
    "set_memory",
    "memory_problem",
    "saved_tensor_bytes",
]
