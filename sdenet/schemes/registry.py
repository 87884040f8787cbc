"""Scheme names: :func:`get_scheme` builds a scheme from its command-line name.

The registry is a table from each name to the class it builds, filled from what the classes
declare (:class:`~sdenet.Scheme`: ``aliases``, ``options``, ``takes_law``, ``only_gaussian`` and
:meth:`~sdenet.Scheme.refuse_law`): the built-in schemes here, in the order ``SCHEME_NAMES``
lists them, and a scheme defined in its own module by :func:`register_scheme` there
(``sdenet.srk``). ``get_scheme`` only looks a name up and asks the class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ..laws import Gaussian, NoiseLaw
from .base import Scheme
from .deterministic import Euler, Heun, LinearMultistep, NeumannEuler
from .invertible import CoupledEuler, Hamiltonian, Leapfrog, Midpoint
from .stochastic import EulerMaruyama, StochasticLM, WeakEuler
from .weak import Milstein, Platen, WeakTaylor2

__all__ = ["get_scheme", "register_scheme", "registered", "SCHEME_NAMES"]

_S = TypeVar("_S", bound=type[Scheme])


@dataclass(frozen=True)
class Entry:
    """How :func:`get_scheme` builds one registered scheme."""

    cls: type
    #: the constructor's keyword arguments a caller may give
    options: tuple[str, ...]
    #: whether the constructor takes ``law=`` (passed on as given, ``None`` included)
    takes_law: bool
    #: ``refuse(key, law)``: the ValueError's message when ``law`` is refused, else None
    refuse: Callable[[str, NoiseLaw | None], str | None]


#: name (lower case, ``_`` for ``-``) -> its entry
_TABLE: dict[str, Entry] = {}
#: the listed name of every registered scheme, in registration order
_LISTED: list[str] = []


def _key(name: Any) -> str:
    return str(name).lower().replace("-", "_")


def _add(names: Sequence[str], entry: Entry) -> None:
    keys = [_key(n) for n in names]
    if not keys:
        raise ValueError(f"register_scheme: {entry.cls.__name__} declares no names (aliases)")
    for key in keys:
        old = _TABLE.get(key)
        if old is not None and old.cls.__qualname__ != entry.cls.__qualname__:
            raise ValueError(f"register_scheme: the name {key!r} is already {old.cls.__name__}'s")
    for key in keys:
        _TABLE[key] = entry
    if keys[0] not in _LISTED:
        _LISTED.append(keys[0])


@overload
def register_scheme(names: _S) -> _S: ...
@overload
def register_scheme(
    names: Sequence[str], cls: type, options: Sequence[str] = (), gaussian_only: bool = False
) -> None: ...
def register_scheme(names, cls=None, options=(), gaussian_only=False):
    """Make a scheme buildable by :func:`get_scheme` (and ``--scheme`` on the command line).

    ``register_scheme(cls)`` (also usable as a class decorator) registers a :class:`Scheme`
    subclass under what it declares: its own ``aliases`` (the first is the name
    ``SCHEME_NAMES`` lists), ``options``, ``takes_law`` and :meth:`~sdenet.Scheme.refuse_law`.
    ``register_scheme(names, cls, options=(), gaussian_only=False)`` registers any class under
    each of ``names``, with ``options`` the constructor's keyword arguments a caller may give
    (no law passed; ``gaussian_only`` refuses a law other than the Gaussian).
    """
    if cls is None:  # register_scheme(cls): the class's own declarations
        declared = names
        if not isinstance(declared, type) or "aliases" not in vars(declared):  # not inherited ones
            raise ValueError(
                f"register_scheme: {getattr(declared, '__name__', declared)} declares no aliases of its own"
            )
        _add(
            declared.aliases,
            Entry(
                declared,
                tuple(declared.options),
                bool(declared.takes_law),
                lambda key, law: declared.refuse_law(law),
            ),
        )
        return declared

    def refuse(key: str, law: NoiseLaw | None) -> str | None:
        if gaussian_only and law is not None and law != Gaussian():
            return f"{key} uses Gaussian increments (it is a strong scheme); use platen for another law"
        return None

    _add([str(n) for n in names], Entry(cls, tuple(options), False, refuse))
    return None


for _cls in (
    Euler,
    Heun,
    NeumannEuler,
    LinearMultistep,
    CoupledEuler,
    EulerMaruyama,
    WeakEuler,
    StochasticLM,
    Platen,
    WeakTaylor2,
    Milstein,
    Hamiltonian,
    Midpoint,
    Leapfrog,
):
    register_scheme(_cls)


class _Names(Sequence[str]):
    """``SCHEME_NAMES``: the listed name of every registered scheme, in registration order; it
    follows the registry (a scheme registered later, ``srk``, is listed too)."""

    def __getitem__(self, i):  # type: ignore[override]
        return tuple(_LISTED)[i]

    def __len__(self) -> int:
        return len(_LISTED)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_LISTED))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (tuple, list, _Names)) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(_LISTED))


SCHEME_NAMES: Sequence[str] = _Names()


def registered() -> dict[str, Entry]:
    """Every registered name (aliases included) and its :class:`Entry` (a copy)."""
    return dict(_TABLE)


def get_scheme(name: str, law: NoiseLaw | None = None, **kwargs) -> Scheme:
    """Build a scheme from its command-line name. Stochastic schemes take ``law``.

    Options go to the scheme's constructor (``terms`` for ``neumann``, ``k`` for ``lm``,
    ``g`` for ``stochastic_lm``); an option the scheme does not take is a ``ValueError``.
    """
    key = _key(name)
    entry = _TABLE.get(key)
    if entry is None:
        raise ValueError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEME_NAMES)}")
    refused = entry.refuse(key, law)
    if refused is not None:
        raise ValueError(refused)
    unknown = sorted(set(kwargs) - set(entry.options))
    if unknown:
        allowed = entry.options
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no options"
        raise ValueError(f"scheme {name!r} {takes}; got {', '.join(unknown)}")
    extra = {"law": law} if entry.takes_law else {}
    return entry.cls(**extra, **kwargs)
