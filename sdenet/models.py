"""The model registry: ``create(name, num_classes=None, **overrides)``, ``names()``, ``info(name)``.

A thin public face of :mod:`sdenet.nn.models`, where the architectures are assembled from
blocks, fields, stages and schemes. ``sdenet models`` prints ``info`` for every name.
"""

from .nn.models import REGISTRY, count_params, create, info, names

__all__ = ["create", "names", "info", "count_params", "REGISTRY"]
