"""Training: data on the device, the loop, checkpoints, condition-(5) monitoring.

Public API::

    from sdenet.train import TrainConfig, train, evaluate
    metrics = train(model="tiny_lm_resnet", dataset="sample", epochs=2, out="runs/demo")
    report = evaluate("runs/demo/best.pt", samples=10)

See :mod:`sdenet.train.loop` for the run folder and :mod:`sdenet.train.presets` for the
schedules.
"""

from . import loop
from .loop import RUN_FILES, TrainConfig, TrainingDiverged, evaluate, resolve_device, train  # noqa: F401
from .monitor import DEFAULT_WEAK_K, WeakConditionError  # noqa: F401 - re-exported (__all__ takes loop.__all__)
from .presets import PRESET_NAMES, PRESETS, get_preset

# the loop's public names but its limits (MAX_EPOCHS, MAX_MC_SAMPLES, DIVERGENCE_FACTOR), then
# the condition-(5) default and the presets
__all__ = [name for name in loop.__all__ if name not in ("MAX_EPOCHS", "MAX_MC_SAMPLES", "DIVERGENCE_FACTOR")]
__all__ += ["DEFAULT_WEAK_K", "PRESETS", "PRESET_NAMES", "get_preset"]
