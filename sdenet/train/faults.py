"""Fault injection, a test hook: the environment variable ``SDENET_FAULT``.

``nan@E`` makes the training loss NaN throughout epoch E, ``testnan@E`` makes epoch E's test
loss NaN, ``interrupt@E`` / ``interrupt@E:S`` raises KeyboardInterrupt at step S (default 0) of
epoch E, ``kill@E:S`` sends the process SIGKILL at step S of epoch E, ``killsave@E`` sends it
SIGKILL between the ``last.pt`` and ``best.pt`` writes of epoch E. Anything else (or nothing)
injects nothing.

The trainer reads the hook once per epoch (:func:`epoch_faults`); its step loop then makes one
check, ``if faults.step is not None``, and calls ``faults.step(i, loss)`` only in an epoch that
has a step fault.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["EpochFaults", "epoch_faults"]


def _fault() -> tuple[str, int, int] | None:
    """Parse ``SDENET_FAULT``: returns (kind, epoch, step) or None."""
    spec = os.environ.get("SDENET_FAULT", "").strip()
    if not spec:
        return None
    try:
        kind, _, where = spec.partition("@")
        epoch, _, step = where.partition(":")
        return kind.strip(), int(epoch), int(step or 0)
    except ValueError:
        return None


@dataclass(frozen=True)
class EpochFaults:
    """The faults of one epoch. ``step(i, loss) -> loss`` (None: no step fault) runs after the
    loss of step ``i`` is computed, before its backward pass; ``test_nan``: the test loss is
    replaced by NaN; ``kill_after_save``: SIGKILL between the ``last.pt`` and ``best.pt``
    writes."""

    step: Callable[[int, torch.Tensor], torch.Tensor] | None = None
    test_nan: bool = False
    kill_after_save: bool = False


NONE = EpochFaults()


def _interrupt_at(at: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
    def step(i: int, loss: torch.Tensor) -> torch.Tensor:
        if i == at:  # before the step's backward and update: the epoch is left unfinished
            raise KeyboardInterrupt
        return loss

    return step


def _nan(i: int, loss: torch.Tensor) -> torch.Tensor:
    return loss * float("nan")


def _kill_at(at: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
    def step(i: int, loss: torch.Tensor) -> torch.Tensor:
        if i == at:
            os.kill(os.getpid(), 9)
        return loss

    return step


def epoch_faults(epoch: int) -> EpochFaults:
    """The faults ``SDENET_FAULT`` asks for in ``epoch`` (read from the environment now)."""
    fault = _fault()
    if fault is None or fault[1] != epoch:
        return NONE
    kind, _, at = fault
    if kind == "interrupt":
        return EpochFaults(step=_interrupt_at(at))
    if kind == "nan":
        return EpochFaults(step=_nan)
    if kind == "kill":
        return EpochFaults(step=_kill_at(at))
    if kind == "testnan":
        return EpochFaults(test_nan=True)
    if kind == "killsave":
        return EpochFaults(kill_after_save=True)
    return NONE
