"""``sdenet weak``: condition (5) and weak-order estimation (see :mod:`sdenet.weak`).

``sdenet weak check``  tabulates ``C(Δt) = |E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt|`` exactly and
from samples, with ``K = C/Δt²``; ``sdenet weak order`` fits the weak order of a scheme on
GBM, Ornstein–Uhlenbeck or a user problem (``--sde package.module:Name``) and says whether
the declared order lies in the slope's confidence interval (``--strict``: exit 1 when not).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ._args import (
    add_json_option,
    add_threads_option,
    apply_threads,
    device,
    finite_float,
    integer,
    writable_file,
)

DEFAULT_SAMPLES = 1_000_000
#: ``--paths`` default: None, i.e. chosen (doubling from 2^16 until the interval is decisive)
DEFAULT_PATHS = None
_THREADS_HELP = (
    "torch CPU threads (default 1: the work is many vector operations of ~10^6 elements, "
    "which a second thread barely speeds up and which stall when the cores are shared)"
)


def register(subparsers) -> None:
    from ..weak import DEFAULT_CHECK_DTS

    weak = subparsers.add_parser(
        "weak",
        help="condition (5) and weak order of the noise laws",
        description="Weak convergence: condition (5) of the increment laws and weak-order estimation.",
    )
    sub = weak.add_subparsers(dest="weak_command", metavar="{check,order}", parser_class=type(weak))
    sub.required = True

    chk = sub.add_parser(
        "check",
        help="condition (5) exactly and from samples, with K = C/dt^2",
        description=(
            "Condition (5): C(dt) = |E dW| + |E dW^3| + |E dW^2 - dt| <= K dt^2, computed exactly from each "
            "law's moments and estimated from samples (+- one standard error). Without --law every built-in "
            "law is shown: gaussian, uniform, rademacher, threepoint, drop at p=0.5 and, to show the failure "
            "of condition (5), drop at p=0.8 (K grows like dt^-1/2). With --p but no --law, the drop law at "
            "that p replaces both drop rows."
        ),
    )
    chk.add_argument("--law", help="gaussian, uniform, rademacher, threepoint or drop (default: all)")
    chk.add_argument(
        "--dt",
        type=finite_float,
        nargs="+",
        default=list(DEFAULT_CHECK_DTS),
        metavar="DT",
        help="step sizes, each in [1e-50, 1e50] (default: %(default)s)",
    )
    chk.add_argument(
        "--samples",
        type=integer,
        default=DEFAULT_SAMPLES,
        help="draws per (law, dt) (default 10^6; at most 10^11 draws in all)",
    )
    add_json_option(chk, "print a JSON list, one object per (law, dt)")
    chk.add_argument("--plot", metavar="FILE", help="draw C/dt^2 against dt (log-log) into FILE")
    _common_options(chk, "sample")
    chk.set_defaults(func=run_check)

    order = sub.add_parser(
        "order",
        help="fit the weak order of a scheme on GBM, Ornstein-Uhlenbeck or your own problem",
        description=(
            "Weak order: simulate dX = f dt + g dW with a known E phi(X(T)) over a ladder of dt, regress "
            "log |mean phi(X_N) - E phi(X(T))| on log dt and report the slope with a 95% confidence interval "
            "(the Monte Carlo standard errors enter it by the delta method), then a verdict: is the scheme's "
            "declared weak order inside the interval? Without --paths the number of paths is chosen (doubled "
            "until the interval is at most 0.5 wide, which tells order 2 from order 1, or --budget is spent), and "
            "without --dt a finest dt whose error is lost in Monte Carlo noise is dropped; the output says plainly "
            "when the interval could not be made decisive. A scheme other than weak Euler (platen, weak_taylor2, "
            "milstein) is run together with the weak Euler path on the same increments, a control variate whose "
            "expectation gbm and ou know exactly. Built-in problems: gbm dX = mu X dt + sigma X dW "
            "(defaults mu=-1, sigma=0.3, x0=1, T=1, dt = T/4, T/6, T/8, T/12, T/16) and ou dX = -theta X dt + "
            "sigma dW (defaults theta=0.25, sigma=1, x0=1, T=1, dt = T/2, T/3, T/4, T/6, T/8); "
            "--sde package.module:Name takes your own problem (see sdenet.weak.WeakProblem). phi = x^3 sees "
            "E dW^3: every law satisfying condition (5) gives order 1, drop with p != 0.5 gives order 1/2 (the "
            "default ou parameters resolve it; on gbm its O(dt) term dominates the default ladder). Exact values: "
            "gbm has x..x4 (cos: no closed form, exp: infinite for x0 > 0); ou has all of x..x4, cos, exp. Any "
            "other (problem, phi) pair needs --exact VALUE. stochastic_lm is compared with its own continuous "
            "limit, the second-order system dX = Y dt, dY = f dt + g Y dt + sigma dW from rest."
        ),
    )
    order.add_argument(
        "--sde",
        default="ou",
        metavar="gbm|ou|package.module:Name",
        help="problem: gbm, ou, or a user problem object/class/factory imported from the named "
        "module (default ou)",
    )
    for name, what in (
        ("mu", "gbm drift rate"),
        ("sigma", "noise scale (gbm, ou)"),
        ("theta", "ou mean-reversion rate"),
        ("x0", "initial value (gbm, ou)"),
        ("T", "horizon (gbm, ou)"),
    ):
        order.add_argument(f"--{name}", type=float, default=None, help=f"{what}; default: the problem's")
    order.add_argument("--law", default="gaussian", help="increment law (default gaussian)")
    order.add_argument(
        "--scheme",
        default="weak_euler",
        help="any stochastic scheme of sdenet.schemes.get_scheme: weak_euler (default), euler_maruyama "
        "(Gaussian increments only), stochastic_lm (against its second-order limit), platen, ...",
    )
    order.add_argument("--g", type=float, default=None, help="stochastic_lm's constant g (default 0)")
    order.add_argument(
        "--dt",
        type=finite_float,
        nargs="+",
        metavar="DT",
        help="step sizes (default: T/N for the SDE's ladder)",
    )
    order.add_argument(
        "--phi",
        default="x3",
        metavar="NAME|package.module:function",
        help="test function: x, x2, x3, x4, cos, exp, a power 1..4, or a function of the (B, ...) "
        "states imported from the named module (then --exact is required) (default x3)",
    )
    order.add_argument(
        "--exact",
        type=float,
        default=None,
        metavar="VALUE",
        help="E phi(X(T)) to compare with, for pairs without a built-in exact value",
    )
    order.add_argument(
        "--paths",
        type=integer,
        default=DEFAULT_PATHS,
        help="Monte Carlo paths per dt (default: chosen, doubling from 65536 until the 95%% "
        "interval of the slope is at most 0.5 wide or --budget is spent; at most 10^12 "
        "path-steps in all)",
    )
    order.add_argument(
        "--budget",
        type=finite_float,
        default=None,
        metavar="SECONDS",
        help="time for choosing the paths (and, without --dt, the ladder) (default 120)",
    )
    order.add_argument(
        "--no-control",
        dest="control",
        action="store_const",
        const="none",
        default="auto",
        help="no control variate (default: the weak Euler path on the same increments, whose "
        "expectation GBM and OU know exactly, for any other scheme with a power phi)",
    )
    order.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when the declared weak order lies outside the confidence interval",
    )
    add_json_option(order, "print one JSON object")
    order.add_argument(
        "--plot", metavar="FILE", help="draw log error against log dt with the fitted line into FILE"
    )
    _common_options(order, "simulate")
    order.set_defaults(func=run_order)


def _common_options(parser, verb: str) -> None:
    """Options both ``weak check`` and ``weak order`` take."""
    parser.add_argument(
        "--p", type=finite_float, help="survival probability of the drop law, in (0, 1] (default 0.5)"
    )
    parser.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--device",
        type=device,
        default=None,
        help=f"torch device to {verb} on: cpu, cuda, cuda:N (default cpu)",
    )
    add_threads_option(parser, 1, _THREADS_HELP)


# ---------------------------------------------------------------------------- check


def _laws_from(args):
    from ..laws import DropBernoulli, get_law
    from ..weak import default_laws

    if args.law is not None:
        return [get_law(args.law, args.p)]
    if args.p is not None:
        law = DropBernoulli(args.p)
        return [lw for lw in default_laws() if lw.name != "drop"] + [law]
    return default_laws()


def _device(name):
    if name is None:
        return None
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid --device {name!r}: {err}") from None


def run_check(args) -> int:
    from ..weak import check

    apply_threads(args)
    if args.plot is not None:
        writable_file(args.plot, "--plot")
    laws = _laws_from(args)
    rows = check(laws, args.dt, samples=args.samples, seed=args.seed, device=_device(args.device))
    out = sys.stderr if args.json else sys.stdout
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_check_table(rows, args.seed))
    if args.plot:
        path = plot_check(rows, args.plot)
        print(f"wrote {path}", file=out)
    return 0


def _g(v) -> str:
    return "0" if v == 0 else f"{v:.3g}"


def _pm(v, se) -> str:
    return f"{v:+.2e}±{se:.1e}"


def format_check_table(rows, seed=0) -> str:
    """The plain-text table: one row per (law, dt); empirical columns are ``value±se``."""
    head = (
        f"{'law':<10} {'p':>4} {'dt':>6} | {'E dW':>7} {'empirical':>17} | {'E dW^2-dt':>9} {'empirical':>17} | "
        f"{'E dW^3':>8} {'empirical':>17} | {'C exact':>8} {'C empirical':>16} | {'K=C/dt^2':>8} {'K emp':>8}"
    )
    lines = [
        "condition (5): C(dt) = |E dW| + |E dW^3| + |E dW^2 - dt| <= K dt^2; exact from the law's moments, "
        "empirical as value±standard error",
        f"({rows[0]['empirical']['samples'] if rows else 0} samples per row, seed {seed}; "
        "C empirical's error is se1+se2+se3; it is biased upward where C = 0)",
        "",
        head,
        "-" * len(head),
    ]
    for r in rows:
        ex, em, se, c = r["exact"], r["empirical"], r["empirical"]["stderr"], r["condition"]
        p = "-" if r["p"] is None else f"{r['p']:g}"
        lines.append(
            f"{r['law']:<10} {p:>4} {r['dt']:>6g} | {_g(ex['m1']):>7} {_pm(em['m1'], se['m1']):>17} | "
            f"{_g(ex['m2'] - r['dt']):>9} {_pm(em['m2'] - r['dt'], se['m2']):>17} | "
            f"{_g(ex['m3']):>8} {_pm(em['m3'], se['m3']):>17} | "
            f"{_g(c['exact']):>8} {_pm(c['empirical'], c['empirical_stderr'])[1:]:>16} | {_g(c['K']):>8} "
            f"{_g(c['K_empirical']):>8}"
        )
    return "\n".join(lines)


def _label(law, p):
    return law if p is None else f"{law} p={p:g}"


def _savefig(fig, file) -> Path:
    from ..train.safe_io import save_figure

    path = Path(file)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=120, bbox_inches="tight")  # no symbolic link followed
    return path


def plot_check(rows, file) -> Path:
    """C(dt)/dt² against dt: exact as lines, empirical as points with ±1 se bars.

    The y axis is symmetric-log: the exact K of the symmetric laws is 0, drawn on the
    linear part of the axis around 0.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict = {}
    for r in rows:
        groups.setdefault((r["law"], r["p"]), []).append(r)
    positive = [v for r in rows for v in (r["condition"]["K"], r["condition"]["K_empirical"]) if v > 0]
    linthresh = 10 ** math.floor(math.log10(min(positive))) if positive else 1e-3
    from ..train.plots import PALETTE

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, ((law, p), rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda r: r["dt"])
        dts = [r["dt"] for r in rs]
        color = PALETTE[i % len(PALETTE)]  # Okabe-Ito without its yellow
        ax.plot(dts, [r["condition"]["K"] for r in rs], "-", color=color, label=f"{_label(law, p)} exact")
        dodge = 1.0 + 0.04 * (i - (len(groups) - 1) / 2)  # spread the points of different laws apart
        ax.errorbar(
            [d * dodge for d in dts],
            [r["condition"]["K_empirical"] for r in rs],
            yerr=[
                [
                    min(r["condition"]["empirical_stderr"] / r["dt"] ** 2, r["condition"]["K_empirical"])
                    for r in rs
                ],
                [r["condition"]["empirical_stderr"] / r["dt"] ** 2 for r in rs],
            ],  # C >= 0: the lower bar stops at 0
            fmt="o",
            ms=4,
            color=color,
            capsize=2,
            alpha=0.8,
        )
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("dt")
    ax.set_ylabel("K = C(dt) / dt²")
    ax.set_title(
        "condition (5): lines exact, points empirical ± se\n"
        f"(symlog axis, linear below {linthresh:g}: exact K = 0 lies on the 0 line)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best")
    path = _savefig(fig, file)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- order


_BUILTIN_PARAMS = {"gbm": ("mu", "sigma", "x0", "T"), "ou": ("theta", "sigma", "x0", "T")}


def _problem_from(args):
    """The problem of ``--sde`` with the built-ins' parameters, or a user object from its module."""
    from ..weak import SDE_NAMES, _check_problem, get_sde, import_object

    given = {k: getattr(args, k) for k in ("mu", "sigma", "theta", "x0", "T") if getattr(args, k) is not None}
    key = args.sde.lower()
    if key in SDE_NAMES:
        extra = sorted(set(given) - set(_BUILTIN_PARAMS[key]))
        if extra:
            raise ValueError(
                f"--sde {key} takes {', '.join('--' + k for k in _BUILTIN_PARAMS[key])}, "
                f"not {', '.join('--' + k for k in extra)}"
            )
        return get_sde(key, **given)
    if ":" not in args.sde:
        raise ValueError(f"unknown --sde {args.sde!r}; choose gbm, ou or give package.module:Name")
    if given:
        raise ValueError(
            f"{', '.join('--' + k for k in sorted(given))} apply to the built-in problems only; "
            "a user problem sets its own parameters"
        )
    obj = import_object(args.sde, "--sde")
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "exact")):
        try:
            obj = obj()  # a class or a factory without arguments
        except Exception as err:
            raise ValueError(
                f"--sde {args.sde}: calling it without arguments failed: {type(err).__name__}: {err}"
            ) from None
    return _check_problem(obj)  # the protocol, before anything reads problem.T


def _phi_from(args):
    from ..weak import get_phi, import_object

    if ":" in args.phi:
        if args.exact is None:
            raise ValueError(
                f"--phi {args.phi} is a user function: give its exact E phi(X(T)) with --exact VALUE"
            )
        fn = import_object(args.phi, "--phi")
        if not callable(fn):
            raise ValueError(f"--phi {args.phi} is not callable")
        from ..weak import TestFunction

        return TestFunction(args.phi, fn)
    text = args.phi
    return get_phi(int(text) if text.isdigit() else text)


def run_order(args) -> int:
    from ..laws import get_law
    from ..schemes import get_scheme
    from ..weak import AUTO_START_PATHS, _check_order_work, weak_order

    apply_threads(args)
    if args.plot is not None:
        writable_file(args.plot, "--plot")
    law = get_law(args.law, args.p)
    options = {} if args.g is None else {"g": args.g}
    scheme = get_scheme(args.scheme, law=law, **options)
    if not getattr(scheme, "stochastic", False):
        raise ValueError(
            f"--scheme {args.scheme} is deterministic and cannot simulate an SDE; "
            "use weak_euler, euler_maruyama, stochastic_lm, ..."
        )
    sde = _problem_from(args)
    # refuses absurd work before any of it (with automatic paths: the first round's paths)
    _check_order_work(sde, args.dt, AUTO_START_PATHS if args.paths is None else args.paths)
    if args.paths is None and args.budget is not None and not args.budget > 0:
        raise ValueError(f"--budget must be a positive number of seconds, got {args.budget:g}")
    phi = _phi_from(args)
    budget = {} if args.budget is None else {"budget": args.budget}
    res = weak_order(
        sde,
        scheme,
        dts=args.dt,
        paths=args.paths,
        phi=phi,
        seed=args.seed,
        device=_device(args.device),
        exact=args.exact,
        scheme_name=args.scheme.lower().replace("-", "_"),
        control=args.control,
        **budget,
    )
    out = sys.stderr if args.json else sys.stdout
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(format_order(res))
    if args.plot:
        path = plot_order(res, args.plot)
        print(f"wrote {path}", file=out)
    if args.strict and res["declared_inside_ci"] is False:
        print(f"sdenet weak order: strict: {res['verdict']}", file=sys.stderr)
        return 1
    return 0


def format_order(res) -> str:
    params = ", ".join(
        f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in res["params"].items()
    )
    law = _label(res["law"], res["p"])
    lines = [
        f"weak order of {res['scheme']} with {law} increments on {res['sde']} ({params}), phi = {res['phi']}",
        f"E phi(X(T)) = {res['exact']:.6g} ({res['exact_from']}); {res['paths']} paths per dt, seed {res['seed']}, "
        f"state shape {tuple(res['state_shape'])}",
    ]
    if res.get("control"):
        lines.append(
            "control variate: the weak Euler path on the same increments (its E phi(X_N) is exact), "
            "optimal coefficient"
        )
    a = res.get("auto")
    if a:
        lines.append(
            f"paths chosen: {a['rounds']} round(s) up to {a['paths']} per dt in {a['seconds']:.1f} s "
            f"(stop at a 95% interval at most {a['target_width']:g} wide or after {a['budget_s']:g} s)"
            + (
                f"; dropped dt {', '.join(f'{d:.4g}' for d in a['dropped_dts'])} (error within one "
                "standard error of 0)"
                if a["dropped_dts"]
                else ""
            )
        )
    lines += [
        "",
        f"{'dt':>8} {'mean phi(X_N)':>14} {'error':>10} {'stderr':>9} {'error/se':>8}"
        + (f" {'exact bias':>11}" if "bias" in res else ""),
    ]
    for i, dt in enumerate(res["dts"]):
        line = (
            f"{dt:>8.4g} {res['estimates'][i]:>14.6g} {res['errors'][i]:>10.3e} "
            f"{res['stderr'][i]:>9.2e} {_snr(res['snr'][i]):>8}"
        )
        if "bias" in res:
            line += f" {res['bias'][i]:>+11.3e}"
        lines.append(line)
    lo, hi = res["slope_ci"]
    lines.append("")
    lines.append(
        f"fitted slope {res['slope']:.3f}  (95% CI [{lo:.3f}, {hi:.3f}]); declared weak order "
        f"{_declared(res['declared_weak_order'])}"
    )
    if res.get("bias_slope") is not None:
        lines.append(f"slope of the exact scheme bias over the same dts: {res['bias_slope']:.3f}")
    lines.append(f"verdict: {res['verdict']}")
    if a and not a["decisive"]:
        lines.append(f"could not decide: the interval is wider than {a['target_width']:g} within the budget")
    if any(v is not None and v < 3 for v in res["snr"]):
        lines.append(
            "warning: some errors are within 3 standard errors of 0; use more --paths or coarser --dt"
        )
    return "\n".join(lines)


def _declared(v) -> str:
    return "none" if v is None else f"{v:g}"


def _snr(v) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 1e5 else f"{v:.1e}"


def plot_order(res, file) -> Path:
    """log error against log dt with ±1 se bars, the fitted line and the exact bias."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dts, errors, se = res["dts"], res["errors"], res["stderr"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    lower = [min(s, e * 0.999) for s, e in zip(se, errors)]  # keep bars above 0 on a log axis
    from ..train.plots import PALETTE

    ax.errorbar(
        dts, errors, yerr=[lower, se], fmt="o", color=PALETTE[4], capsize=3, label="Monte Carlo |error| ± se"
    )
    x = [math.log(d) for d in dts]
    y = [math.log(e) for e in errors if e > 0]
    if len(y) == len(x):
        b = res["slope"]
        a = sum(y) / len(y) - b * sum(x) / len(x)
        grid = [min(dts), max(dts)]
        lo, hi = res["slope_ci"]
        ax.plot(
            grid,
            [math.exp(a + b * math.log(d)) for d in grid],
            "-",
            color=PALETTE[5],
            label=f"fit: slope {b:.2f} [{lo:.2f}, {hi:.2f}]",
        )
    if res.get("bias") and all(v != 0 for v in res["bias"]):
        ax.plot(dts, [abs(v) for v in res["bias"]], "k--", lw=1, label="exact scheme bias")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dt")
    ax.set_ylabel(f"|mean phi(X_N) - E phi(X(T))|, phi(x) = {res['phi']}")
    ax.set_title(
        f"{res['scheme']}, {_label(res['law'], res['p'])}, {res['sde']}: "
        f"declared weak order {_declared(res['declared_weak_order'])}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    path = _savefig(fig, file)
    plt.close(fig)
    return path
