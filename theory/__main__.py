"""``python -m theory [--out DIR] [--quick] [--items a,b]``: run every item and write REPORT.md."""

from __future__ import annotations

import argparse
import sys

from .report import ITEMS, run_all


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theory", description=__doc__)
    parser.add_argument("--out", default=None, help="output folder (default: the theory package folder)")
    parser.add_argument("--quick", action="store_true", help="smaller ladders and fewer paths (for tests)")
    parser.add_argument("--items", default=None, help=f"comma-separated subset of: {', '.join(ITEMS)}")
    args = parser.parse_args(argv)
    items = None if args.items is None else [s.strip() for s in args.items.split(",") if s.strip()]
    try:
        path = run_all(args.out, quick=args.quick, items=items)
    except ValueError as err:
        print(f"python -m theory: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"python -m theory: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
