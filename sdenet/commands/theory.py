"""``sdenet theory [--out DIR] [--quick] [--items a,b]``: run the theory items, write REPORT.md.

The same as ``python -m theory``: modified equations, LM stability, Table 1 as networks, weak
convergence of each law, shake-shake/stochastic-depth families for Δt ≠ 1 and the LM stochastic
scheme; figures go to ``DIR/figures`` and the report to ``DIR/REPORT.md`` (default: the
``theory`` package folder). Progress is printed per item.
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "theory",
        help="run the paper's numerical-analysis arguments and write theory/REPORT.md",
        description="Run every theory item (modified equations, LM stability, Table 1, weak convergence "
        "of each law, Δt families, LM stochastic scheme) and write REPORT.md with its figures.",
    )
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for REPORT.md and figures/ (default: the theory package folder)")
    p.add_argument("--quick", action="store_true", help="short ladders and few Monte Carlo paths (about a minute)")
    p.add_argument("--items", default=None, metavar="LIST",
                   help="comma-separated subset: modified, stability, table1, weak, dt_families, stochastic_lm")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import UsageError

    try:
        import theory
    except ImportError as err:
        raise UsageError(
            "theory: the 'theory' package is not importable "
            f"({err}); run from a checkout of sdenet (the folder holding theory/) or install sdenet with it"
        ) from None
    items = None
    if args.items is not None:
        items = [s.strip() for s in args.items.split(",") if s.strip()]
        unknown = [s for s in items if s not in theory.ITEMS]
        if unknown or not items:
            raise UsageError(f"theory: unknown item(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(theory.ITEMS)}")
    if args.out is not None:
        from pathlib import Path

        try:
            (Path(args.out) / "figures").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"theory: cannot write to --out {args.out!r}: {err.strerror or err}") from None
    try:
        path = theory.run_all(args.out, quick=args.quick, items=items)
    except RuntimeError as err:
        print(f"sdenet theory: {err}")
        return 1
    print(f"wrote {path}")
    return 0
