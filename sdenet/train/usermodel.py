"""Building the network of a run: a registered model (:func:`sdenet.models.create`) or a user's
``package.module:factory`` (imported by its module path, only when the user names it; a file is
never trusted to choose it), with its size checked against this machine first
(:func:`sdenet.train.safe_io.check_model_size`); and handing the network its noise generator."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import torch

from . import checkpoint as ck
from .config import _check_user_spec, _known_models, is_user_model
from .monitor import model_is_stochastic
from .safe_io import check_model_size

__all__ = ["is_user_model"]


_first_line = ck._first_line


def _where_failed(err: BaseException) -> str:
    """``file:line: SyntaxError: ...`` (or the last frame of the traceback) of an exception raised
    while importing a user's module."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}: {type(err).__name__}: {err.msg}"
    frames = [
        f
        for f in traceback.extract_tb(err.__traceback__)
        if "importlib" not in f.filename and not f.filename.startswith("<frozen")
    ]
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(err).__name__}: {_first_line(err)}"


def _create_user_model(spec: str, num_classes: int, overrides: dict):
    """``factory(num_classes=..., **overrides)`` of a ``package.module:factory`` spec.

    The module is imported by its path (the current folder is searched last, after
    ``sys.path``), never from a file name, and only when the user named it."""
    module_name, attr = _check_user_spec(spec)
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"--model {spec}: cannot import module {module_name!r} ({type(e).__name__}: {_first_line(e)})"
        ) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ValueError(
            f"--model {spec}: module {module_name!r} fails to import: {_where_failed(e)}"
        ) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    factory: object = module
    for a in attr.split("."):
        factory = getattr(factory, a, None)
    if not callable(factory):
        raise ValueError(f"--model {spec}: module {module_name!r} has no callable {attr!r}")
    try:
        model = factory(num_classes=num_classes, **overrides)
    except TypeError as e:
        raise ValueError(
            f"--model {spec}: {attr}(num_classes={num_classes}"
            f"{''.join(f', {k}=...' for k in sorted(overrides))}) failed: "
            f"{_first_line(e)}"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--model {spec}: {attr}() returned {type(model).__name__!r}, not a torch.nn.Module")
    return model


def _model_known(name) -> bool:
    if is_user_model(name):
        return True
    known = _known_models()
    return known is None or name in known


def _create_model_check(name, num_classes, overrides, where: str) -> None:
    """The checks :func:`_create_model` makes before building, for a config that is only read
    (a warm start's): its options are the registry's and its sizes fit."""
    check_model_size(name, num_classes, overrides, where=where, train=False)


def _create_model(
    name: str,
    num_classes: int,
    overrides: dict,
    *,
    where: str = "model",
    batch: int = 0,
    image: int | None = None,
    train: bool = True,
    device=None,
):
    """Build a registered model, or a user's ``package.module:factory`` one (indirection so tests
    can substitute a stand-in). A registered model's size is checked first against this
    machine's memory (:func:`sdenet.train.safe_io.check_model_size`): its sizes may come from a
    stored config."""
    check_model_size(
        name, num_classes, overrides, where=where, batch=batch, image=image, train=train, device=device
    )
    if is_user_model(name):
        return _create_user_model(name, num_classes, overrides)
    try:
        from .. import models
    except ImportError as e:
        raise ValueError(
            f"cannot build model {name!r}: the model registry sdenet.models does not import ({e})"
        ) from None

    try:
        return models.create(name, num_classes=num_classes, **overrides)
    except TypeError as e:
        raise ValueError(
            f"model {name!r} does not take the option(s) {', '.join(sorted(overrides)) or '(none)'}: {e}"
        ) from None


def _set_generator(model, generator) -> None:
    """Hand the network noise generator to the model: its own ``set_generator``, or, for a
    user's module, to every sdenet stage and stochastic field inside it."""
    if hasattr(model, "set_generator"):
        model.set_generator(generator)
        return
    try:
        from ..nn import set_generator
    except ImportError:  # pragma: no cover
        return
    set_generator(model, generator)


def _is_stochastic(model) -> bool:
    return model_is_stochastic(model)
