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


def init_weights(model: torch.nn.Module, path, *, resolution: int | None, native: int | None,
                 rescale: bool = False) -> dict:
    """Load the weights of the checkpoint ``path`` (a ``.pt`` file or a run folder) into
    ``model``, which will see images of height ``resolution`` (``native``: the data's own
    height, what a checkpoint without a recorded resolution was trained at).

    ``rescale``: carry the kernels from the checkpoint's resolution R₀ to ``resolution`` with
    :func:`sdenet.nn.rescale` (factor ``resolution / R₀``); otherwise they are used as they are.
    Returns ``{"init": path, "init_resolution": R₀, "init_rescale": factor or None}``.
    ValueError when the checkpoint's network does not fit ``model`` (names the first key).
    """
    from ..nn import rescale as rescale_model

    ckpt = ck.load_checkpoint(path)
    state = ckpt["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shape:
        src = (ckpt.get("config") or {}).get("model", "?")
        what = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                else f"{shape[0]} is {tuple(state[shape[0]].shape)}, not {tuple(own[shape[0]].shape)}")
        raise ValueError(f"{path}: its network ({src}) does not fit this model: {what}")
    if rescale and (resolution is None or native is None):
        raise ValueError(f"{path}: rescaling a warm start needs images of a known resolution "
                         f"(CIFAR-style arrays, not image folders)")
    r0 = None if native is None else checkpoint_resolution(ckpt, native)
    factor = None
    model.load_state_dict(state)
    if rescale:
        factor = resolution / r0
        if factor != 1:
            model.load_state_dict(rescale_model(model, factor).state_dict())
    return {"init": str(path), "init_resolution": r0, "init_rescale": factor}
