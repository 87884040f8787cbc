"""``python -m sdenet.theory [--out DIR] [--quick] [--items a,b] [--threads N]``: run every item and write
REPORT.md (the same as ``sdenet theory``). Without ``--out`` the report goes to a fresh
``theory-<time>/`` folder in the current directory; ``--out theory`` (from a checkout) rewrites
the committed ``theory/REPORT.md``."""

from __future__ import annotations

import argparse
import sys

from .report import ITEMS, _select, run_all


def main(argv=None, prog: str = "python -m sdenet.theory") -> int:
    from sdenet.commands._args import apply_threads, threads, writable_dir
    from sdenet.commands.theory import fresh_out_dir

    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "--out", default=None, help="output folder (default: a fresh theory-<time>/ in the current directory)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller ladders and fewer paths (for tests)")
    parser.add_argument("--items", default=None, help=f"comma-separated subset of: {', '.join(ITEMS)}")
    parser.add_argument(
        "--threads",
        type=threads,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's choice)",
    )
    args = parser.parse_args(argv)
    items = None if args.items is None else [s.strip() for s in args.items.split(",") if s.strip()]
    try:
        if items is not None:
            _select(items)  # unknown items are refused before any folder is made
        out = fresh_out_dir() if args.out is None else args.out
        writable_dir(out, "--out")
        writable_dir(f"{out}/figures", "--out")
        apply_threads(args)
        path = run_all(out, quick=args.quick, items=items)
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
