"""Named training schedules: the paper's step schedules and a short one-cycle ``quick`` preset.

Every preset is SGD with momentum. A *step* preset multiplies the learning rate by ``gamma``
at each milestone epoch (``lr_e = lr · gamma^{#{m ≤ e}}`` for the 0-based epoch ``e``, as
``torch.optim.lr_scheduler.MultiStepLR``); the *one-cycle* preset rises linearly from 0 to
``lr`` over the first ``warmup`` fraction of the steps and falls linearly back to 0.

When a run asks for a different number of epochs than its step preset's, the milestones are
rescaled proportionally (``m' = round(m · epochs / preset.epochs)``, at least 1), so
``--preset cifar10_lm --epochs 16`` divides the rate by 10 at epochs 8 and 12.

Presets (Lu et al., ICML 2018, section 4 and its references):

==================  ======  =====  ====  ========  =====  =================
name                epochs  batch  lr    momentum  wd     schedule
==================  ======  =====  ====  ========  =====  =================
cifar10_lm          160     128    0.1   0.9       1e-4   ÷10 at 80, 120
cifar100_lm         300     128    0.1   0.9       1e-4   ÷10 at 150, 225
lm_resnext          300     128    0.1   0.9       5e-4   ÷10 at 150, 225
stochastic_depth    500     128    0.1   0.9       1e-4   ÷10 at 250, 375
quick               10      128    0.2   0.9       5e-4   one-cycle, 20 % warm-up
==================  ======  =====  ====  ========  =====  =================
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = [
    "Preset",
    "PRESETS",
    "PRESET_NAMES",
    "get_preset",
    "scale_milestones",
    "lr_factor",
    "default_preset",
]


@dataclass(frozen=True)
class Preset:
    """One named schedule; every field can be overridden by the run's own settings."""

    name: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    schedule: str  # "step" or "onecycle"
    milestones: tuple = ()
    gamma: float = 0.1
    warmup: float = 0.0
    nesterov: bool = False
    label_smoothing: float = 0.0
    description: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "cifar10_lm",
            160,
            128,
            0.1,
            0.9,
            1e-4,
            "step",
            (80, 120),
            description="CIFAR-10 LM-ResNet (paper): lr 0.1, /10 at epochs 80 and 120",
        ),
        Preset(
            "cifar100_lm",
            300,
            128,
            0.1,
            0.9,
            1e-4,
            "step",
            (150, 225),
            description="CIFAR-100 LM-ResNet (paper): lr 0.1, /10 at epochs 150 and 225",
        ),
        Preset(
            "lm_resnext",
            300,
            128,
            0.1,
            0.9,
            5e-4,
            "step",
            (150, 225),
            description="LM-ResNeXt (paper): weight decay 5e-4, /10 at epochs 150 and 225",
        ),
        Preset(
            "stochastic_depth",
            500,
            128,
            0.1,
            0.9,
            1e-4,
            "step",
            (250, 375),
            description="(LM) stochastic depth (paper): /10 at epochs 250 and 375",
        ),
        Preset(
            "imagenet",
            90,
            256,
            0.1,
            0.9,
            1e-4,
            "step",
            (30, 60),
            description="ImageNet ResNet/LM-ResNet (He et al. 2016, as in the paper's Table 3): "
            "lr 0.1, /10 at epochs 30 and 60, 90 epochs, batch 256",
        ),
        Preset(
            "quick",
            10,
            128,
            0.2,
            0.9,
            5e-4,
            "onecycle",
            (),
            warmup=0.2,
            nesterov=True,
            description="short one-cycle run: linear warm-up over 20% of the steps, "
            "then linearly down to 0; no label smoothing",
        ),
    )
}
PRESET_NAMES = tuple(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (``-`` and ``_`` interchangeable); ValueError if unknown."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return PRESETS[key]


def scale_milestones(milestones, preset_epochs: int, epochs: int) -> list[int]:
    """Milestones ``m`` of a ``preset_epochs``-long schedule moved to an ``epochs``-long run:
    ``max(1, round(m · epochs / preset_epochs))`` (unchanged when the lengths agree)."""
    if int(epochs) == int(preset_epochs):
        return [int(m) for m in milestones]
    return [max(1, int(math.floor(m * epochs / preset_epochs + 0.5))) for m in milestones]


def lr_factor(
    t: float, *, schedule: str, epochs: int, milestones=(), gamma: float = 0.1, warmup: float = 0.0
) -> float:
    """Multiplier of the base learning rate at training time ``t`` (in epochs, fractional).

    step:      ``gamma ** #{m in milestones : m ≤ t}``, evaluated at ``t = epoch + step/steps``
               so the rate changes at the start of the milestone epoch;
    onecycle:  ``s / warmup`` for ``s = t/epochs < warmup``, then ``(1 − s)/(1 − warmup)``.
    """
    if schedule == "step":
        return float(gamma) ** sum(1 for m in milestones if m <= t + 1e-9)
    if schedule == "onecycle":
        s = min(max(t / float(epochs), 0.0), 1.0)
        if warmup > 0 and s < warmup:
            return s / warmup
        return max(0.0, (1.0 - s) / (1.0 - warmup)) if warmup < 1 else 0.0
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; expected 'step', 'onecycle' or 'constant'")


def default_preset(model: str, dataset: str) -> str:
    """The preset a run gets without ``--preset``: ``quick`` for the bundled sample, else the
    paper's schedule for the model family and dataset."""
    m = str(model).lower()
    d = str(dataset).lower()
    if d in ("sample", "cifar10_sample", "cifar10-sample"):
        return "quick"
    if m.endswith(("resnet50", "resnet101")) or "imagenet" in d:
        return "imagenet"
    if "resnext" in m:
        return "lm_resnext"
    if "sd" in m.split("_") or "stochastic" in m or "drop" in m:
        return "stochastic_depth"
    if "100" in d:
        return "cifar100_lm"
    return "cifar10_lm"
