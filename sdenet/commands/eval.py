"""``sdenet eval CHECKPOINT``: test error of a saved network.

Drift-only (eval-mode) test error and, for a stochastic network, the test error of the
average over N noisy passes (``--samples``). A thin layer over :func:`sdenet.train.evaluate`.
"""

from __future__ import annotations

import json

from ..errors import UsageError
from ._args import (
    add_checkpoint_argument,
    add_data_root_option,
    add_device_option,
    add_json_option,
    add_limit_test_option,
    add_samples_option,
    add_threads_option,
    apply_threads,
    depth_factors,
    pick,
    positive_int,
)


# Every command registers itself the same way (sdenet.cli calls register(subparsers)): its name,
# help and description are its own text, so this header has the shape of refine's and plot's
# (duplicates pairs eval~refine, eval~plot) with nothing to share; the options they do share are
# the helpers in _args.
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="test error of a checkpoint (with Monte Carlo draws for stochastic networks)",
        description="Evaluate a checkpoint (last.pt or best.pt of a run folder, or the folder "
        "itself) on its dataset's test split: the drift-only test error and, for stochastic "
        "networks, the error of the softmax averaged over N noisy passes.",
    )
    add_checkpoint_argument(p)
    p.add_argument(
        "--dataset", default=None, help="dataset to test on (default: the one in the checkpoint's config)"
    )
    add_samples_option(
        p, None, "Monte Carlo draws for stochastic networks (default 10; 0: none; at most 10000)"
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="SPEC",
        help="package.module:factory of a run of your own network (required for such "
        "a checkpoint: sdenet imports only a module you name); for a registered "
        "model it must match the checkpoint's",
    )
    add_device_option(p)
    p.add_argument("--batch-size", type=positive_int, default=None)
    add_limit_test_option(p)
    add_data_root_option(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo draws")
    p.add_argument(
        "--resolution",
        type=positive_int,
        default=None,
        metavar="R",
        help="test on images area-downsampled to height R (default: the resolution "
        "the network was trained at)",
    )
    p.add_argument(
        "--rescale",
        action="store_true",
        help="carry the network from its training resolution to R first "
        "(sdenet.nn.rescale); without it the kernels are applied as they are",
    )
    p.add_argument(
        "--rescale-method",
        default=None,
        choices=("atrous", "moments"),
        help="with --rescale: atrous (default; dilate each kernel by R/R0, integer "
        "factors and their inverses) or moments (the moment map, any factor; "
        "fails on trained networks, see docs/resolution.md)",
    )
    p.add_argument(
        "--depths",
        type=depth_factors,
        default=None,
        metavar="FACTORS",
        help="evaluate the network at several depth factors with its own weights, e.g. "
        "0.5,1,2 (2: every stage at 2N steps of dt/2, as refine; 0.5: N/2 steps "
        "of 2dt, as coarsen) and print a table of error and relative compute",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help="with --depths: plot test accuracy against compute to FILE (.png, .pdf)",
    )
    p.add_argument(
        "--recalibrate-bn",
        dest="recalibrate_bn",
        type=positive_int,
        default=None,
        metavar="N",
        help="recompute the batch-norm statistics from the first N training images at each "
        "depth (and resolution) before testing: a network trained at several depths "
        "otherwise carries one set of statistics for all of them",
    )
    add_json_option(p)
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="bit-identical results: deterministic torch algorithms, generators seeded from "
        "--seed, 1 CPU thread unless --threads (see docs/reproducibility.md)",
    )
    add_threads_option(p, None, "CPU threads for torch (torch.set_num_threads)")
    p.set_defaults(func=run)


def _evaluate_options(args) -> dict:
    """The options ``sdenet.train.evaluate`` takes under their own names (and ``evaluate_depths``
    hands on to it)."""
    return pick(
        args,
        "dataset",
        "samples",
        "device",
        "batch_size",
        "limit_test",
        "data_root",
        "seed",
        "model",
        "resolution",
        "rescale",
        "recalibrate_bn",
    )


def _run_depths(args) -> int:
    from ..train.depth import evaluate_depths, format_depths, plot_depths

    r = evaluate_depths(args.checkpoint, args.depths, **_evaluate_options(args))
    if args.plot:
        plot_depths(r, args.plot)
    if args.json:
        print(json.dumps(r))
        return 0
    print(format_depths(r))
    if args.plot:
        print(f"  plot: {args.plot}")
    return 0


def run(args) -> int:
    from ..train import evaluate

    if args.rescale_method is not None and not args.rescale:
        raise UsageError("eval: --rescale-method chooses how --rescale works; give --rescale")
    if args.deterministic:
        from ..provenance import set_deterministic

        set_deterministic(args.seed, threads=args.threads or 1)
    apply_threads(args)
    if args.plot and args.depths is None:
        raise UsageError("eval: --plot draws accuracy against depth; give --depths too")
    if args.plot:
        from pathlib import Path

        parent = Path(args.plot).parent
        if not parent.is_dir():
            raise UsageError(f"eval: --plot {args.plot}: folder {parent} does not exist")
    if args.depths is not None:
        return _run_depths(args)
    r = evaluate(args.checkpoint, **_evaluate_options(args), rescale_method=args.rescale_method or "atrous")
    if r.get("warning"):  # an absurd test loss: said on stderr, one line
        import sys

        print(f"sdenet eval: warning: {r['warning']}", file=sys.stderr)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['model']} (epoch {r['epoch']}) on {r['dataset']}: {r['n_test']} test images")
    if r.get("resolution") is not None and r["resolution"] != r.get("trained_resolution"):
        how = f"rescaled, {r['rescale_method']}" if r.get("rescaled") else "kernels as they are"
        print(f"  at resolution {r['resolution']} (trained at {r['trained_resolution']}; {how})")
    print(
        f"  test error (drift only): {100 * r['test_error']:.2f}% +- "
        f"{100 * r['test_error_se']:.2f}%   loss {r['test_loss']:.4f}"
    )
    if "test_error_mc" in r:
        print(
            f"  test error ({r['mc_samples']}-sample Monte Carlo): "
            f"{100 * r['test_error_mc']:.2f}% +- {100 * r['test_error_mc_se']:.2f}%   "
            f"loss {r['test_loss_mc']:.4f}"
        )
    print(f"  (+- one binomial standard error over the {r['n_test']} test images, sqrt(e(1-e)/n))")
    return 0
