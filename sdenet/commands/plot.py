"""``sdenet plot RUN_DIR [RUN_DIR ...] [--out DIR] [--labels ...]``: figures of training runs.

Draws training/test error against epoch for all runs on one figure (the paper's Figures 3
and 5), the learned LM coefficients ``k_n`` per block (Figure 4) and, per stochastic stage,
the condition-(5) figures; see :mod:`sdenet.train.plots`. Prints each PNG path.
"""

from __future__ import annotations

from ..errors import UsageError


# the same registration header as every command (eval, refine): alike in shape only, see eval.py
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot",
        help="draw error curves, LM coefficients and condition-(5) figures of run folders",
        description="Draw train/test error against epoch for several runs on one figure, the "
        "learned k_n per block of LM models, and the condition-(5) figures of every stochastic "
        "stage. PNG files; each path is printed.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (with metrics.jsonl)")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="folder for the PNG files (default: the run folder for one run, plots/ for several)",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="legend label per run folder (default: model name, made unique)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.plots import RunFolderError, plot_runs

    if args.labels is not None and len(args.labels) != len(args.runs):
        raise UsageError(f"--labels got {len(args.labels)} labels for {len(args.runs)} run folders")
    try:
        plot_runs(args.runs, out_dir=args.out, labels=args.labels, log=print)
    except RunFolderError as err:
        raise UsageError(str(err)) from None
    return 0
