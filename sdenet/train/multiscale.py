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

__all__ = ["checkpoint_resolution", "checkpoint_dilation", "apply_dilation", "init_weights"]


def checkpoint_resolution(ckpt: dict, native: int) -> int:
    """The image height a checkpoint's network was trained at: its config's ``resolution``,
    else ``native`` (the height of the data, for runs from before ``--resolution``)."""
    r = (ckpt.get("config") or {}).get("resolution")
    return int(r) if isinstance(r, int) and not isinstance(r, bool) and r > 0 else int(native)


def checkpoint_dilation(config: dict, path="checkpoint") -> int:
    """The à trous dilation a run's network carries (config ``dilation``: 1 for a network as
    registered, F after ``--init --rescale`` by F with the à trous map); ValueError when the
    entry is not a positive integer (a file does not get to shape the network arbitrarily)."""
    d = (config or {}).get("dilation", 1)
    if d is None:
        return 1
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 64:
        raise ValueError(f"{path}: the config entry 'dilation' must be an integer from 1 to 64, got {d!r}")
    return d


def apply_dilation(model: torch.nn.Module, dilation: int) -> torch.nn.Module:
    """Give a freshly built ``model`` the à trous dilation its checkpoint was trained with
    (:func:`sdenet.nn.rescale.dilate_`, in place; no-op for 1)."""
    if dilation != 1:
        from ..nn.rescale import dilate_

        dilate_(model, dilation)
    return model


def init_weights(
    model: torch.nn.Module,
    ckpt: dict,
    path,
    *,
    resolution: int | None,
    native: int | None,
    rescale: bool = False,
    method: str = "atrous",
) -> dict:
    """Load the weights of the checkpoint ``ckpt`` (read from ``path`` by
    :func:`sdenet.train.checkpoint.load_checkpoint`) into ``model``, which will see images of
    height ``resolution`` (``native``: the data's own height, what a checkpoint without a
    recorded resolution was trained at).

    ``rescale``: carry the network from the checkpoint's resolution R₀ to ``resolution`` with
    :func:`sdenet.nn.rescale` (factor ``resolution / R₀``, ``method`` "atrous" or "moments");
    otherwise the weights are used as they are. The à trous map changes the network's
    dilations, not its weights: ``model`` is dilated in place and the returned ``dilation``
    (the checkpoint's own times the factor) goes into the new run's config, so that resuming
    or evaluating it rebuilds the same network.
    Returns ``{"init": path, "init_resolution": R₀, "init_rescale": factor or None,
    "init_rescale_method": method or None, "dilation": D}``.
    ValueError when the checkpoint's network does not fit ``model``
    (:func:`~sdenet.train.checkpoint.check_model_state`).
    """
    from ..nn import rescale as rescale_model
    from ..nn.rescale import METHODS, atrous_factor, dilate_

    src = (ckpt.get("config") or {}).get("model", "?")
    ck.check_model_state(
        model, ckpt["model"], path, f"this model (the checkpoint's network, {src}, does not fit it)"
    )
    if rescale and (resolution is None or native is None):
        raise ValueError(
            f"{path}: rescaling a warm start needs images of a known resolution "
            f"(CIFAR-style arrays, not image folders)"
        )
    if method not in METHODS:
        raise ValueError(f"rescale method must be one of {', '.join(METHODS)}, got {method!r}")
    r0 = None if native is None else checkpoint_resolution(ckpt, native)
    d = checkpoint_dilation(ckpt.get("config") or {}, path)
    factor = None
    if rescale:
        assert resolution is not None and r0 is not None  # both known when rescaling (checked above)
        factor = resolution / r0
        if factor != 1 and method == "atrous":
            up, down = atrous_factor(factor, f"{path}: rescaling from {r0} to {resolution}")
            if (d * up) % down:
                raise ValueError(
                    f"{path}: its network (dilation {d}) cannot be coarsened by "
                    f"{down} with the à trous map; use the moment map (--rescale-method moments)"
                )
    apply_dilation(model, d)
    model.load_state_dict(ckpt["model"])
    if rescale and factor != 1:
        if method == "atrous":
            dilate_(model, factor)
            d = d * up // down
        else:
            assert factor is not None  # set above whenever rescale is
            model.load_state_dict(rescale_model(model, factor, method="moments").state_dict())
    return {
        "init": str(path),
        "init_resolution": r0,
        "init_rescale": factor,
        "init_rescale_method": method if rescale else None,
        "dilation": d,
    }
