"""Warm starts across image resolutions (Haber et al., *Learning across scales*).

A run trained with ``resolution`` R₀ (``sdenet train --resolution 16``) records R₀ in its
config. :func:`init_weights` starts another run, at resolution R, from its weights: as they
are, or (``rescale=True``) with every convolution kernel carried from R₀ to R by
:func:`sdenet.nn.rescale` (factor R / R₀). Only the weights travel: the new run starts its
optimizer, schedule and epoch count afresh (a warm start, not a resume).
"""

from __future__ import annotations

import torch

from . import checkpoint as ck

__all__ = ["checkpoint_resolution", "init_weights"]


def checkpoint_resolution(ckpt: dict, native: int) -> int:
    """The image height a checkpoint's network was trained at: its config's ``resolution``,
    else ``native`` (the height of the data, for runs from before ``--resolution``)."""
    r = (ckpt.get("config") or {}).get("resolution")
    return int(r) if isinstance(r, int) and not isinstance(r, bool) and r > 0 else int(native)


def init_weights(model: torch.nn.Module, ckpt: dict, path, *, resolution: int | None,
                 native: int | None, rescale: bool = False) -> dict:
    """Load the weights of the checkpoint ``ckpt`` (read from ``path`` by
    :func:`sdenet.train.checkpoint.load_checkpoint`) into ``model``, which will see images of
    height ``resolution`` (``native``: the data's own height, what a checkpoint without a
    recorded resolution was trained at).

    ``rescale``: carry the kernels from the checkpoint's resolution R₀ to ``resolution`` with
    :func:`sdenet.nn.rescale` (factor ``resolution / R₀``); otherwise they are used as they are.
    Returns ``{"init": path, "init_resolution": R₀, "init_rescale": factor or None}``.
    ValueError when the checkpoint's network does not fit ``model``
    (:func:`~sdenet.train.checkpoint.check_model_state`).
    """
    from ..nn import rescale as rescale_model

    src = (ckpt.get("config") or {}).get("model", "?")
    ck.check_model_state(model, ckpt["model"], path, f"this model (the checkpoint's network, {src}, does not fit it)")
    if rescale and (resolution is None or native is None):
        raise ValueError(f"{path}: rescaling a warm start needs images of a known resolution "
                         f"(CIFAR-style arrays, not image folders)")
    r0 = None if native is None else checkpoint_resolution(ckpt, native)
    factor = None
    model.load_state_dict(ckpt["model"])
    if rescale:
        factor = resolution / r0
        if factor != 1:
            model.load_state_dict(rescale_model(model, factor).state_dict())
    return {"init": str(path), "init_resolution": r0, "init_rescale": factor}
