"""``sdenet theory [--out DIR] [--quick] [--items a,b] [--threads N]``: run the theory items.

The same as ``python -m sdenet.theory`` (``python -m theory`` from a checkout): the nine items of :data:`ITEMS` (modified equations, LM
stability, Table 1 as networks, weak convergence of each law, shake-shake/stochastic-depth
families for Δt ≠ 1, the LM stochastic scheme, weak order 2, refinement at fixed T, reversible
architectures); figures go to ``DIR/figures`` and the report to ``DIR/REPORT.md``. Without ``--out`` a
fresh folder ``theory-<time>/`` in the current directory is used, so the report committed with
the repository (``theory/REPORT.md``) is rewritten only on request (``--out theory`` from a
checkout). Progress is printed per item.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from ..errors import UsageError
from ._args import add_threads_option, apply_threads, writable_dir

#: the items ``sdenet theory`` runs (the keys of ``theory.report.ITEMS``, in report order; a test
#: checks that the two agree), each with what it shows
ITEMS = {
    "modified": "1. modified equations of forward Euler and the LM scheme",
    "stability": "2. stability of the LM scheme",
    "table1": "3. the paper's Table 1 as networks",
    "weak": "4. weak convergence of each noise law",
    "dt_families": "5. shake-shake and stochastic-depth families at dt != 1",
    "stochastic_lm": "6. the LM stochastic scheme",
    "weak2": "7. weak order 2: Platen, extrapolation, Milstein, networks",
    "refinement": "8. refinement at fixed T",
    "reversible": "9. stability of reversible architectures",
}


def fresh_out_dir(base=".", prefix: str = "theory") -> Path:
    """``base/<prefix>-YYYYmmdd-HHMMSS`` (with ``-2``, ``-3``, … when that exists)."""
    stem = f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, n = Path(base) / stem, 1
    while path.exists():
        n += 1
        path = Path(base) / f"{stem}-{n}"
    return path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "theory",
        help="run the paper's numerical-analysis arguments and write REPORT.md with its figures",
        description="Run every theory item and write REPORT.md with its figures. The items, in report "
        "order: " + "; ".join(f"{key} ({what})" for key, what in ITEMS.items()) + ".",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="folder for REPORT.md and figures/ (default: a fresh theory-<time>/ in the "
        "current directory; --out theory rewrites the report committed in a checkout)",
    )
    p.add_argument(
        "--quick", action="store_true", help="short ladders and few Monte Carlo paths (about a minute)"
    )
    p.add_argument(
        "--items",
        default=None,
        metavar="LIST",
        help=f"comma-separated subset of: {', '.join(ITEMS)} (default: all {len(ITEMS)})",
    )
    add_threads_option(p, None, "torch CPU threads (default: torch's choice; the report names the count)")
    p.set_defaults(func=run)


def run(args) -> int:
    import importlib
    import sys

    try:
        theory = importlib.import_module("sdenet.theory")
    except ImportError as err:
        raise UsageError(
            f"the theory items are not importable ({err}); install them with pip install 'sdenet[theory]'"
        ) from None
    items = None
    if args.items is not None:
        items = [s.strip() for s in args.items.split(",") if s.strip()]
        unknown = [s for s in items if s not in theory.ITEMS]
        if unknown or not items:
            raise UsageError(
                f"unknown item(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(theory.ITEMS)}"
            )
    out = Path(args.out) if args.out is not None else fresh_out_dir()
    writable_dir(args.out if args.out is not None else out, "--out")
    writable_dir(out / "figures", "--out")
    apply_threads(args)
    try:
        path = theory.run_all(out, quick=args.quick, items=items)
    except RuntimeError as err:  # an item failed; the report (naming it) was written
        print(f"sdenet theory: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
