"""``sdenet train``: train a named network on CIFAR (or any npz) into a run folder.

A thin layer over :func:`sdenet.train.train`; see :mod:`sdenet.train.loop` for the run folder
and :mod:`sdenet.train.presets` for the schedules. Several GPUs: ``torchrun
--nproc_per_node=N -m sdenet train ...``.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys

from ..errors import UsageError
from ._args import (
    add_data_root_option,
    add_device_option,
    add_limit_test_option,
    add_p_schedule_option,
    add_threads_option,
    apply_threads,
    depth_factors,
    integer,
    nonneg_int,
    pick,
    positive_int,
)

#: most --lr and --weight-decay accepted: 1e300 overflows the first update (the API accepts any
#: finite value and stops a run that diverges)
MAX_RATE = 1e4


def _rate(text: str) -> float:
    """A learning rate or weight decay: finite, at most MAX_RATE."""
    v = _nonneg_float(text)
    if v > MAX_RATE:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_RATE:g}, got {text!r} (a rate that large overflows the first update)"
        )
    return v


def _positive_rate(text: str) -> float:
    v = _positive_float(text)
    return _rate(text) if v else v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0) or math.isnan(v) or (math.isinf(v)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return v


def _nonneg_float(text: str, allow_inf: bool = False) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if math.isnan(v) or v < 0 or (math.isinf(v) and not allow_inf):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def _momentum(text: str) -> float:
    v = _nonneg_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"expected a momentum in [0, 1], got {text!r}")
    return v


def _weak_k(text: str):
    if text.strip().lower() == "law":
        return "law"
    return _nonneg_float(text, allow_inf=True)


def _probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text!r}")
    return v


def register(subparsers) -> None:
    from ..train.presets import PRESETS

    presets = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    p = subparsers.add_parser(
        "train",
        help="train a network into a run folder (config, metrics, checkpoints)",
        description="Train a network with SGD and momentum. Writes RUN_DIR/config.json, "
        "metrics.jsonl (one line per epoch), last.pt and best.pt (atomic checkpoints) and "
        "metrics.json. Uses CUDA when present (bf16 autocast, channels-last); several GPUs "
        "with torchrun. Stochastic networks report condition (5) of their noise every epoch.",
        epilog=f"Presets -- {presets}.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model name (see: sdenet models), or package.module:factory for your own "
        "network (factory(num_classes=...) must return an nn.Module; the module is "
        "imported by its path, never from a file); required unless --resume, "
        "where it must name the run's model (and must be given for your own)",
    )
    p.add_argument(
        "--dataset",
        default="cifar10",
        help="cifar10, cifar100, sample (bundled CIFAR-10 slice) or a path to an .npz "
        "or to the official python batches (default: cifar10)",
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=list(PRESETS),
        metavar="NAME",
        help=f"schedule: {', '.join(PRESETS)} (default: quick for the sample, else the "
        f"paper's schedule for the model and dataset)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="number of epochs, at most 10000 (default: the preset's); with a step preset the "
        "milestones are rescaled proportionally (cifar10_lm with --epochs 16 "
        "divides the rate by 10 at epochs 8 and 12)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="images per optimizer step, summed over all processes (default: the preset's)",
    )
    p.add_argument("--lr", type=_positive_rate, default=None, help="base learning rate")
    p.add_argument("--momentum", type=_momentum, default=None)
    p.add_argument("--weight-decay", type=_rate, default=None)
    p.add_argument(
        "--dt",
        type=_positive_float,
        default=None,
        help="step size of the network's stages, keeping their blocks: T = N*dt "
        "changes with it (default: the model's, 1)",
    )
    p.add_argument(
        "--refine",
        type=positive_int,
        default=None,
        metavar="F",
        help="F times the steps per stage at dt/F over the same T (fixed-T refinement "
        "of the model's architecture, freshly initialised)",
    )
    # One add_argument per option, each with its own type, default and help: the calls share their
    # shape (duplicates pairs within this list), not their content. Options declared alike in
    # several commands are helpers in _args (add_device_option, add_limit_test_option, ...).
    p.add_argument(
        "--multilevel",
        type=positive_int,
        default=None,
        metavar="L",
        help="multilevel training: train at 1/2^L of the steps per stage (same T), then "
        "refine x2 and continue, L times; the epochs are split evenly over the "
        "L+1 cycles, each restarting the schedule (see --multilevel-schedule)",
    )
    p.add_argument(
        "--multilevel-schedule",
        dest="multilevel_schedule",
        choices=("restart", "continue"),
        default=None,
        help="with --multilevel: restart the preset's schedule in every cycle (default) or "
        "continue one schedule over all cycles, the deepest network getting its final decay",
    )
    add_p_schedule_option(
        p,
        "stochastic depth: survival p at every dt (fixed) or 1/2 + (p - 1/2) "
        "sqrt(dt) (sqrt: keeps condition (5) as dt -> 0)",
    )
    p.add_argument(
        "--p-L",
        dest="p_L",
        type=_probability,
        default=None,
        help="survival probability of the last block (stochastic depth)",
    )
    p.add_argument(
        "--mode",
        choices=("sample", "batch"),
        default=None,
        help="noise structure: one increment per sample or one per batch",
    )
    p.add_argument(
        "--memory",
        choices=("store", "reversible", "checkpoint"),
        default=None,
        help="what the backward pass keeps: store (every activation, the default), "
        "reversible (reconstruct each state from the next: invertible schemes "
        "only -- revnet, hamiltonian*, midpoint*, leapfrog*) or checkpoint (every "
        "ceil(sqrt(N))-th state of a stage, recompute the rest; any model)",
    )
    p.add_argument(
        "--random-depth",
        dest="random_depth",
        type=depth_factors,
        default=None,
        metavar="FACTORS",
        help="depth-robust training: each batch runs every stage at one of these depth "
        "factors, drawn at random with the network's own weights, e.g. 0.5,1,2 "
        "(2: 2N steps of dt/2, as refine; 0.5: N/2 steps of 2dt, as coarsen; a "
        "stage with an odd number of steps keeps its dt in a 0.5 batch)",
    )
    p.add_argument(
        "--reversible-arithmetic",
        dest="reversible_arithmetic",
        choices=("exact", "plain"),
        default=None,
        help="with --memory reversible: exact (the default: states on a fixed-point grid, "
        "rebuilt bit for bit) or plain (floating-point inversion: faster, drifts by "
        "rounding; see docs/memory-modes.md)",
    )
    p.add_argument("--seed", type=integer, default=0)
    p.add_argument(
        "--out", default=None, metavar="DIR", help="run folder (default: runs/<model>-<dataset>-<timestamp>)"
    )
    add_device_option(p, "auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument(
        "--resolution",
        type=positive_int,
        default=None,
        metavar="R",
        help="train and test on images area-downsampled to height R on the device "
        "(R must divide the image size; crop padding scaled by R/size)",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="warm start: begin with the weights of CHECKPOINT (a .pt file or a run "
        "folder; same architecture), with a fresh optimizer and schedule",
    )
    p.add_argument(
        "--rescale",
        action="store_true",
        help="with --init: carry the kernels from the resolution CHECKPOINT was "
        "trained at to this run's (sdenet.nn.rescale, Haber et al.)",
    )
    p.add_argument(
        "--rescale-method",
        default=None,
        choices=("atrous", "moments"),
        help="with --rescale: atrous (default; dilate each kernel by the factor) or "
        "moments (the moment map; see docs/resolution.md)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last.pt, exactly",
    )
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    p.add_argument(
        "--no-amp", dest="amp", action="store_false", default=None, help="no bf16 autocast on CUDA"
    )
    p.add_argument(
        "--weak-K",
        dest="weak_K",
        type=_weak_k,
        default=None,
        metavar="K",
        help="warn when a stochastic stage's exact K = C/dt^2 of condition (5) exceeds "
        "K (a number, or 'law', the default: the K of the stage's own law at "
        "dt = 1, the original network; stochastic depth with p != 1/2 then warns "
        "for every dt < 1, since its K grows like dt^(-1/2))",
    )
    p.add_argument(
        "--strict-weak", action="store_true", help="make the condition-(5) warning an error (exit status 2)"
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="bit-identical runs: deterministic torch algorithms, every generator seeded, "
        "1 CPU thread unless --threads (results depend on the thread count; see "
        "docs/reproducibility.md)",
    )
    p.add_argument(
        "--mc-samples",
        type=nonneg_int,
        default=0,
        metavar="N",
        help="Monte Carlo test error of a stochastic network with N draws at the end (at most 10000)",
    )
    p.add_argument(
        "--limit-train",
        type=positive_int,
        default=None,
        metavar="N",
        help="use only the first N training images",
    )
    add_limit_test_option(p)
    add_data_root_option(p, "where cifar10/cifar100 live (default $SDENET_DATA or ~/.cache/sdenet)")
    p.add_argument("--download", action="store_true", help="download cifar10/cifar100 if missing")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (one summary line per epoch is still printed)"
    )
    add_threads_option(
        p,
        None,
        "CPU threads for torch (torch.set_num_threads); on a machine shared "
        "with other jobs, 1 per process avoids oversubscribed cores",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train import TrainingDiverged, train

    if args.deterministic and args.threads is None:
        args.threads = 1
    apply_threads(args)
    command = " ".join(shlex.quote(a) for a in ["sdenet", *sys.argv[1:]])
    if args.multilevel_schedule is not None and not args.multilevel and not args.resume:
        raise UsageError("train: --multilevel-schedule needs --multilevel L")
    if args.resume:
        given = [
            k
            for k in (
                "epochs",
                "batch_size",
                "lr",
                "dt",
                "p_L",
                "mode",
                "preset",
                "out",
                "momentum",
                "weight_decay",
                "limit_train",
                "limit_test",
                "refine",
                "multilevel",
                "multilevel_schedule",
                "p_schedule",
                "resolution",
                "init",
                "memory",
                "random_depth",
                "reversible_arithmetic",
            )
            if getattr(args, k) is not None
        ]
        if given:
            raise UsageError(
                f"train: --resume continues a run with its own settings; drop "
                f"{', '.join('--' + g.replace('_', '-') for g in given)}"
            )
        if args.rescale or args.rescale_method:
            raise UsageError("train: --resume continues a run with its own settings; drop --rescale")
        kw = pick(args, "resume", "device", "quiet", "data_root", "download")
        if args.model:
            kw["model"] = args.model
    else:
        if not args.model:
            raise UsageError("train: --model is required (see: sdenet models)")
        if args.rescale and not args.init:
            raise UsageError("train: --rescale rescales the weights of --init; give --init CHECKPOINT")
        if args.rescale_method and not args.rescale:
            raise UsageError("train: --rescale-method chooses how --rescale works; give --rescale")
        kw = pick(
            args,
            "model",
            "dataset",
            "preset",
            "epochs",
            "batch_size",
            "lr",
            "momentum",
            "weight_decay",
            "dt",
            "p_L",
            "mode",
            "seed",
            "out",
            "device",
            "amp",
            "compile",
            "weak_K",
            "strict_weak",
            "mc_samples",
            "limit_train",
            "limit_test",
            "data_root",
            "download",
            "quiet",
            "resolution",
            "init",
            "deterministic",
        )
        kw.update(
            command=command, init_rescale=args.rescale, init_rescale_method=args.rescale_method or "atrous"
        )
        if args.random_depth is not None:
            kw["random_depth"] = args.random_depth
        overrides = {}
        if args.refine is not None:  # fixed T: the model's dt goes in before refinement
            overrides["refine"] = args.refine
            if args.dt is not None:
                overrides["dt"], kw["dt"] = args.dt, None
        if args.p_schedule is not None:
            overrides["p_schedule"] = args.p_schedule
        if args.memory is not None:
            overrides["memory"] = args.memory
        if args.reversible_arithmetic is not None:
            if args.memory != "reversible":
                raise UsageError("train: --reversible-arithmetic needs --memory reversible")
            if args.reversible_arithmetic == "plain":
                overrides["memory_exact"] = False
        if overrides:
            kw["overrides"] = overrides
    from ..train.multilevel import is_multilevel, resume_multilevel, train_multilevel

    try:
        if args.resume and is_multilevel(args.resume):
            resume_multilevel(args.resume, **pick(args, "device", "quiet", "model", "data_root", "download"))
        elif args.multilevel:
            out = kw.pop("out", None)
            train_multilevel(args.multilevel, out=out, schedule=args.multilevel_schedule or "restart", **kw)
        else:
            train(**kw)
    except TrainingDiverged as err:
        print(f"sdenet train: error: {err}", file=sys.stderr)
        return 1
    return 0
