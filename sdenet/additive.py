"""Additive noise: ``dX = f(t, X) dt + g(t) dW``, a diffusion that does not depend on the state.

torchsde calls this noise type ``"additive"``; diffrax reads it off a control term whose
vector field ignores ``y``. Here it is a field that declares ``additive = True``: its
``diffusion(t, x)`` is ``g(t)``, whatever ``x``. The *increment structure* stays one of
:data:`sdenet.fields.NOISE_TYPES`:

``"diagonal"`` (default)
    one Brownian motion per element; ``g(t)`` broadcasts to the state's shape
    (a number, a per-feature tensor of shape ``(D,)``, ...);
``"sample"`` / ``"batch"``
    one Brownian motion per sample / for the whole batch, ``g(t)`` as for diagonal;
``"general"``
    ``m`` Brownian motions per sample, ``dW`` of shape ``(B, m)``; ``g(t)`` broadcasts to
    ``(*x.shape, m)`` (e.g. a ``(D, m)`` matrix), and ``g dW = Σ_j g[..., j] dW_j``.

What the declaration buys: every iterated integral ``L^j g`` vanishes, so Milstein is
Euler–Maruyama (no derivative is taken), and the stochastic Runge–Kutta scheme
:class:`sdenet.srk.SRK` takes Rößler's SRA tableaux — strong order 1.5 with two drift
evaluations per step, for diagonal *and* general (non-commutative, ``m > 1``) additive noise.
"""

from __future__ import annotations

from typing import Any

import torch

from .fields import FieldFn, Time, _as_time, _CallableDrift, _check_noise, _set_brownian_count

__all__ = ["AdditiveField"]


class AdditiveField(_CallableDrift):
    """``dX = drift(t, X) dt + g(t) dW`` with ``g`` independent of ``X``.

    Parameters
    ----------
    drift:
        a callable ``(t, x) -> tensor`` of ``x``'s shape (an ``nn.Module`` is registered).
    diffusion:
        ``g``: a callable ``t -> tensor`` (``t`` a 0-dim tensor on the state's device and
        dtype), a tensor (a buffer: it moves with ``.to()``), or a number.
    noise:
        the increment structure, ``"diagonal"`` (default), ``"sample"``, ``"batch"`` or
        ``"general"``.
    m:
        the number of Brownian motions of ``general`` noise.
    """

    additive = True

    _g_value: torch.Tensor  # the buffer of a tensor or number diffusion

    def __init__(self, drift: FieldFn, diffusion: Any, noise: str = "diagonal", m: int | None = None) -> None:
        super().__init__()
        if not callable(drift):
            raise ValueError("AdditiveField: drift must be a callable (t, x) -> tensor")
        self.noise = _check_noise(noise)
        _set_brownian_count(self, "AdditiveField", noise, m)
        self._f = drift
        self._g_fn: Any = None
        if isinstance(diffusion, torch.Tensor):
            if not diffusion.is_floating_point():
                raise ValueError(
                    f"AdditiveField: a tensor diffusion must be floating point, got {diffusion.dtype}"
                )
            self.register_buffer("_g_value", diffusion)
        elif callable(diffusion):
            self._g_fn = diffusion
        else:
            try:
                value = float(diffusion)
            except (TypeError, ValueError):
                raise ValueError(
                    f"AdditiveField: diffusion must be a callable g(t), a tensor or a number, "
                    f"got {diffusion!r}"
                ) from None
            self.register_buffer("_g_value", torch.tensor(value, dtype=torch.float64))

    def diffusion(self, t: Time, x: torch.Tensor | None = None) -> Any:  # g(t) may be a number
        """``g(t)``; ``x`` (ignored but for its device, dtype and shape) is accepted so that the
        field reads like any other. For ``general`` noise the value is expanded (a view, no
        copy) to ``(*x.shape, m)``, the shape every scheme's ``g dW`` expects."""
        if self._g_fn is None:
            g: Any = self._g_value
            if x is None:
                return g
            g = g.to(device=x.device, dtype=x.dtype)
        else:
            if x is not None and not isinstance(t, torch.Tensor):
                t = _as_time(t, x)
            g = self._g_fn(t)
        if x is None or self.noise != "general" or not isinstance(g, torch.Tensor):
            return g
        try:
            return g.expand(*x.shape, self.m)
        except RuntimeError:
            raise ValueError(
                f"AdditiveField: the diffusion g(t) has shape {tuple(g.shape)}, which does not broadcast "
                f"to (*x.shape, m) = {tuple(x.shape) + (self.m,)} for general noise"
            ) from None

    def coefficients(self, t: Time, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.drift(t, x), self.diffusion(t, x)

    def extra_repr(self) -> str:
        return f"noise={self.noise!r}, additive=True" + (f", m={self.m}" if self.noise == "general" else "")
