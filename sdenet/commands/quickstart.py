"""``sdenet quickstart``: ResNet-20 against LM-ResNet-20, and a stochastic network trained as an
SDE discretization, on the bundled CIFAR-10 sample.

Trains both deterministic networks for a few epochs (default 4, batch 64) with the ``quick``
preset (one-cycle SGD) on the sample that ships with the package (1,500 training and 500 test
images), then a small LM stochastic-depth network (``tiny_lm_sd_resnet``: the weak scheme
``X_{n+1} = (2 + g_n) X_n - (1 + g_n) X_{n-1} + η_n f(X_n)`` with Bernoulli ``η_n``, one draw
per image) whose training records condition (5) of its increments every epoch. Prints the test
errors, the stochastic network's condition-(5) table from training and that of the built-in
noise laws (``sdenet weak check``, with fewer samples), and writes the figures (``sdenet
plot``) into ``OUT/plots``: error curves, learned ``k_n`` / ``g_n`` and, per stochastic stage,
the empirical ``K = C/Δt²`` per block over the epochs with the moments against their exact
values (``weak-<model>-<stage>.png``).

The change of Δt: the trained stochastic network is refined to Δt/2 at fixed T (``sdenet
refine``: twice the blocks, each block's weights over its two sub-steps) twice, with the
survival probabilities kept (``--p-schedule fixed``) and rescheduled (``sqrt``:
``p(Δt) = ½ + (p − ½)√Δt``), and both are evaluated. The table shows condition (5) at both Δt:
with a fixed ``p`` the largest ``K = C/Δt²`` grows by ``√2`` and exceeds the Δt = 1 network's
bound; the sqrt schedule keeps it below.

Threads: one per two cores (at most 4; :func:`sdenet.commands._args.default_threads`) unless
``--threads`` says otherwise, and the total time is printed at the end.

The LM network is the two-step scheme ``u_{n+1} = (1 - k_n) u_n + k_n u_{n-1} + Δt f(u_n)``
over the same blocks as the ResNet's forward Euler ``u_{n+1} = u_n + Δt f(u_n)``; the learned
``k_n`` are drawn in ``OUT/plots/lm_coefficients.png``.

Runs this short on 1,500 images say little about either network's accuracy on CIFAR-10
(the paper trains 160 epochs on 50,000); the quick start shows the workflow end to end.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path

from ..errors import UsageError
from ._args import (
    add_threads_option,
    apply_threads,
    default_threads,
    device,
    integer,
    positive_int,
    writable_dir,
)

DEFAULT_MODELS = ("resnet20", "lm_resnet20")
#: the stochastic network of the quick start: LM stochastic depth, 0.044M parameters
DEFAULT_STOCHASTIC = "tiny_lm_sd_resnet"
#: Monte Carlo draws of its final test error (the prediction of an SDE network is an expectation)
STOCHASTIC_MC_SAMPLES = 8
#: measured on 2 CPU cores (Intel Xeon, torch 2.13, load average 0.2 at the start): 10 epochs
#: took 53.5 s (ResNet-20), 56.1 s (LM-ResNet-20) and 21.2 s (tiny_lm_sd_resnet) with one
#: thread, 131 s for the whole quick start (test errors 57 %, 56 %, 71 %); with 2 threads
#: 143 s. Four epochs keep the quick start near a minute on such a machine when idle (the
#: target is at most ~90 s), with test errors near 68 %.
DEFAULT_EPOCHS = 4
DEFAULT_BATCH = 64
#: Δt ladder and sample count of the condition-(5) table in the quick start (the full
#: ``sdenet weak check`` uses more of both)
QUICK_DTS = (1.0, 0.5, 0.25, 0.1)
QUICK_SAMPLES = 200_000


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="train ResNet-20, LM-ResNet-20 and a stochastic network on the bundled sample, "
        "print errors and condition (5)",
        description="Train ResNet-20 against LM-ResNet-20 for a few epochs on the bundled CIFAR-10 "
        "sample (quick preset), then a small LM stochastic-depth network as an SDE discretization; "
        "print the test errors, the stochastic network's condition (5) recorded in training and the "
        "condition-(5) table of the built-in noise laws, and write the figures.",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULT_EPOCHS,
        help=f"epochs per network (default {DEFAULT_EPOCHS})",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="folder for the two runs and plots/ (default runs/quickstart-<time>)",
    )
    p.add_argument(
        "--device", type=device, default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ..."
    )
    p.add_argument("--dataset", default="sample", help="dataset (default: the bundled sample)")
    p.add_argument(
        "--models",
        nargs=2,
        default=list(DEFAULT_MODELS),
        metavar=("BASE", "LM"),
        help="the two networks to compare (default resnet20 lm_resnet20)",
    )
    p.add_argument(
        "--stochastic",
        default=DEFAULT_STOCHASTIC,
        metavar="MODEL",
        help=f"the stochastic network trained as an SDE discretization (default "
        f"{DEFAULT_STOCHASTIC}; 'none' to skip it)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH,
        help=f"batch size (default {DEFAULT_BATCH}: twice the steps of the preset's 128)",
    )
    p.add_argument("--limit-train", type=positive_int, default=None, help="train on the first N images only")
    p.add_argument("--limit-test", type=positive_int, default=None, help="test on the first N images only")
    p.add_argument(
        "--samples",
        type=positive_int,
        default=QUICK_SAMPLES,
        help=f"samples per row of the condition-(5) table (default {QUICK_SAMPLES:,})",
    )
    p.add_argument("--seed", type=integer, default=0)
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--no-plots", action="store_true")
    add_threads_option(
        p,
        None,
        "CPU threads for torch (default: half the cores, at least 1 and at most 4; "
        "torch's own one per core stalls when the cores are shared)",
    )
    p.set_defaults(func=run)


def _stochastic(args):
    """The stochastic model's name, or None for ``--stochastic none``."""
    name = (args.stochastic or "").strip()
    return None if name.lower() in ("", "none") else name


def _check_args(args):
    """Refuse bad arguments before any training: counts, model names, the condition-(5)
    table's size."""
    for name in ("epochs", "batch_size", "limit_train", "limit_test", "samples"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.models[0] == args.models[1]:
        raise UsageError(f"--models names {args.models[0]} twice")
    try:
        from ..models import info, names
    except ImportError:  # no registry in this build: train() names the problem
        return
    known = set(names())
    for option, name in [("--models", m) for m in args.models] + [("--stochastic", _stochastic(args))]:
        if name is not None and name not in known:
            raise UsageError(f"{option}: unknown model {name!r} (sdenet models lists them)")
    sto = _stochastic(args)
    if sto is not None:
        if not info(sto).get("law"):
            raise UsageError(
                f"--stochastic: {sto} is deterministic; choose a network with a noise "
                "law (sdenet models: the law column)"
            )
        if sto in args.models:
            raise UsageError(f"--stochastic {sto} is also one of --models")
    from .. import weak

    weak._check_draws(len(weak.default_laws()) * len(QUICK_DTS), args.samples)


def _finished(folder: Path, want: dict):
    """The final metrics of a finished run in ``folder`` trained with the settings ``want``,
    else None."""
    try:
        final = json.loads((folder / "metrics.json").read_text())
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key, value in want.items():
        if value is not None and config.get(key) != value:
            return None
    return final


def _train_one(args, out: Path, model: str, log=print, **extra) -> dict:
    """Train ``model`` into ``out/model`` (or reuse it, when already finished with the same
    settings); the final metrics with ``model`` and ``folder``."""
    from ..train import train

    folder = out / model
    want = dict(
        model=model,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        **extra,
    )
    final = _finished(folder, want)
    if final is not None:
        log(f"{model}: already trained in {folder} (delete it to train again)")
    else:
        final = train(
            model=model,
            dataset=args.dataset,
            preset="quick",
            epochs=args.epochs,
            seed=args.seed,
            out=str(folder),
            device=args.device,
            batch_size=args.batch_size,
            limit_train=args.limit_train,
            limit_test=args.limit_test,
            quiet=args.quiet,
            **extra,
        )
    return dict(final, model=model, folder=str(folder))


def train_pair(args, out: Path, log=print) -> list:
    """Train (or reuse, when already finished with the same settings) both networks."""
    return [_train_one(args, out, model, log) for model in args.models]


def stochastic_summary(final: dict) -> str:
    """The stochastic network's test errors (drift only, and the Monte Carlo average over
    noisy passes) and its condition-(5) table recorded in the last training epoch."""
    from ..train.monitor import format_table

    lines = [
        f"{final['model']} ({final.get('params', 0):,} parameters): test error "
        f"{100 * final['test_error']:.2f}% with the drift only (eval mode)"
    ]
    if "test_error_mc" in final:
        lines[0] += f", {100 * final['test_error_mc']:.2f}% averaging {final['mc_samples']} noisy passes"
    if final.get("wall_time") is not None:
        lines[0] += f"; trained in {final['wall_time']:.1f} s"
    if final.get("weak"):
        lines += [
            "",
            "condition (5) of its increments, recorded in training (last epoch; C and K "
            "exact for the block's law, m1, m2-dt, m3 empirical over n draws):",
            format_table(final["weak"]),
        ]
    return "\n".join(lines)


def error_table(finals: list) -> str:
    lines = [f"{'model':16s} {'params':>9s} {'test error':>11s} {'best':>8s} {'wall time':>10s}"]
    for f in finals:
        lines.append(
            f"{f['model']:16s} {f.get('params', 0):>9,d} {100 * f['test_error']:>10.2f}% "
            f"{100 * f.get('best_test_error', f['test_error']):>7.2f}% "
            f"{f.get('wall_time', float('nan')):>9.1f}s"
        )
    a, b = finals
    diff = 100 * (b["test_error"] - a["test_error"])
    lines.append(f"{b['model']} - {a['model']}: {diff:+.2f} points of test error")
    return "\n".join(lines)


def condition_table(samples: int, seed: int, device=None) -> str:
    """The condition-(5) table of ``sdenet weak check`` for the built-in laws."""
    from .. import weak

    rows = weak.check(dts=QUICK_DTS, samples=samples, seed=seed, device=device)
    try:
        from .weak import format_check_table
    except ImportError:  # the weak command is not in this build
        return _plain_condition_table(rows)
    return format_check_table(rows, seed=seed)


def _plain_condition_table(rows) -> str:
    """Fallback layout when ``sdenet weak check``'s formatter is not available."""
    head = f"{'law':>12s} {'dt':>6s} {'exact C':>10s} {'empirical C':>12s} {'± se':>9s} {'K exact':>9s}"
    lines = [head]
    for r in rows:
        law = r["law"] + (f" p={r['p']:g}" if r.get("p") is not None else "")
        c = r["condition"]
        lines.append(
            f"{law:>12s} {r['dt']:>6g} {c['exact']:>10.4g} {c['empirical']:>12.4g} "
            f"{c['empirical_stderr']:>9.2g} {c['K']:>9.4g}"
        )
    return "\n".join(lines)


def change_of_dt(args, out: Path, final: dict, log=print) -> list:
    """Refine the trained stochastic network to Δt/2 at fixed T with the survival probabilities
    fixed and sqrt-scheduled, evaluate both; one row per network (the trained one first) with
    its Δt, schedule, condition (5) per stochastic stage and test errors."""
    from ..nn import models
    from ..train import checkpoint as ck
    from ..train import evaluate
    from .refine import refine_checkpoint, weak_summary

    src = Path(final["folder"]) / "last.pt"
    c = ck.load_checkpoint(src)
    rc = c["config"]
    net = models.create(
        rc["model"], num_classes=rc.get("num_classes"), **dict(rc.get("model_overrides") or {})
    )
    net.load_state_dict(c["model"])
    rows = [
        dict(
            label="trained",
            schedule=None,
            weak=weak_summary(net),
            test_error=final["test_error"],
            test_error_mc=final.get("test_error_mc"),
        )
    ]
    for sched in ("fixed", "sqrt"):
        path = out / f"{final['model']}-dt-half-{sched}.pt"
        info = refine_checkpoint(src, path, factor=2, p_schedule=sched)
        ev = evaluate(
            path,
            samples=STOCHASTIC_MC_SAMPLES,
            device=args.device,
            limit_test=args.limit_test,
            seed=args.seed,
        )
        rows.append(
            dict(
                label=f"refined x2, p {sched}",
                schedule=sched,
                weak=info["weak_after"],
                test_error=ev["test_error"],
                test_error_mc=ev.get("test_error_mc"),
                path=str(path),
            )
        )
    return rows


def format_change_of_dt(rows) -> str:
    """Condition (5) of every stochastic stage (inside the ODE: Δt < 1 after refinement) at each Δt."""
    head = f"{'network':24s} {'stage':8s} {'dt':>6s} {'max K':>8s} {'bound':>8s}  {'condition (5)':24s}"
    lines = [head]
    for r in rows:
        for s in r["weak"]:
            if s["stage"].endswith("transition") or s.get("bound") is None:
                continue
            ok = "exceeds the bound" if s["exceeds"] else "within the bound"
            lines.append(
                f"{r['label']:24s} {s['stage']:8s} {s['dt']:>6.3g} {s['K_max']:>8.3g} "
                f"{s['bound']:>8.3g}  {ok}"
            )
    lines.append("")
    for r in rows:
        mc = (
            ""
            if r.get("test_error_mc") is None
            else f", {100 * r['test_error_mc']:.2f}% averaging {STOCHASTIC_MC_SAMPLES} noisy passes"
        )
        lines.append(f"{r['label']:24s} test error {100 * r['test_error']:.2f}% (drift only){mc}")
    return "\n".join(lines)


def run(args) -> int:
    _check_args(args)
    if getattr(args, "threads", None) is None:
        args.threads = default_threads()
    apply_threads(args)
    t0 = time.perf_counter()
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / ("quickstart-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    )
    writable_dir(out, "--out")
    sto = _stochastic(args)
    print(
        f"sdenet quickstart: {args.models[0]} against {args.models[1]}"
        + (f", then the stochastic {sto}" if sto else "")
        + f", {args.epochs} epochs each on {args.dataset} (quick preset, {args.threads} CPU "
        f"thread{'s' if args.threads > 1 else ''}), runs in {out}"
    )
    finals = train_pair(args, out)
    sto_final = None
    if sto:
        print()
        print(
            f"{sto}: stochastic network trained as an SDE discretization (condition (5) is "
            "recorded every epoch)"
        )
        sto_final = _train_one(args, out, sto, mc_samples=STOCHASTIC_MC_SAMPLES)
    print()
    print("Test errors after", args.epochs, "epochs:")
    print(error_table(finals))
    if sto_final is not None:
        print()
        print(stochastic_summary(sto_final))
        print()
        print(
            f"Change of dt: {sto} refined to dt/2 at fixed T (twice the blocks, no retraining), its survival "
            "probabilities kept (fixed) or rescheduled (sqrt: p(dt) = 1/2 + (p - 1/2) sqrt(dt)); condition (5) "
            "K = C/dt^2 per stage against the bound of the dt = 1 network:"
        )
        print(format_change_of_dt(change_of_dt(args, out, sto_final)))
    print()
    print(
        "Condition (5), |E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt| ≤ K Δt², of the built-in noise laws "
        f"({args.samples:,} samples per row; `sdenet weak check` for the full table):"
    )
    print(condition_table(args.samples, args.seed))
    if not args.no_plots:
        from ..train.plots import plot_runs

        runs = finals + ([sto_final] if sto_final is not None else [])
        print()
        print("Figures:")
        plot_runs(
            [f["folder"] for f in runs],
            out_dir=out / "plots",
            labels=[f["model"] for f in runs],
            log=lambda s: print("  " + s),
        )
    print()
    print(
        f"quickstart finished in {time.perf_counter() - t0:.0f} s. Runs this short on a small "
        f"sample say little about the paper's 160-epoch CIFAR-10 numbers."
    )
    return 0
