"""Training: data on the device, the loop, checkpoints, condition-(5) monitoring.

Public API::

    from sdenet.train import TrainConfig, train, evaluate
    metrics = train(model="tiny_lm_resnet", dataset="sample", epochs=2, out="runs/demo")
    report = evaluate("runs/demo/best.pt", samples=10)

See :mod:`sdenet.train.loop` for the run folder and :mod:`sdenet.train.presets` for the
schedules.
"""

from .loop import RUN_FILES, TrainConfig, TrainingDiverged, evaluate, resolve_device, train
from .monitor import DEFAULT_WEAK_K, WeakConditionError
from .presets import PRESET_NAMES, PRESETS, get_preset

__all__ = [
    "TrainConfig",
    "train",
    "evaluate",
    "TrainingDiverged",
    "WeakConditionError",
    "resolve_device",
    "RUN_FILES",
    "DEFAULT_WEAK_K",
    "PRESETS",
    "PRESET_NAMES",
    "get_preset",
]
