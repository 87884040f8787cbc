"""Throughput of ``sdenet.integrate`` against ``torchsde.sdeint`` and a hand-written loop.

Problem: the Ornstein–Uhlenbeck equation ``dX = −θX dt + σ dW`` (diagonal noise, one
dimension per path, float32), ``X_0 = 1``, 100 steps of ``Δt = 2⁻⁷`` (``T = 0.78125``),
for 1, 10⁴ and 10⁶ paths, with three increment laws:

* Gaussian ``ΔW ~ N(0, Δt)`` (Euler–Maruyama);
* Uniform ``ΔŴ ~ U[−√(3Δt), √(3Δt)]``;
* Rademacher ``ΔŴ = ±√Δt``.

Contenders, interleaved after one warm-up run each: a repeat runs every contender twice,
in an order rotated every repeat and then in reverse, and keeps the mean of the two (so load
drift and position effects cancel); the median over repeats is reported, and the median of the
per-repeat ratios ("paired"):

``sdenet``
    ``integrate(SDEField(drift, diffusion), WeakEuler(law), x0, dt=Δt, steps=100, generator=g)``;
``sdenet fast``
    the same call on ``LinearSDEField(a=−θ, d=σ)``, a field that declares its affine form, so
    ``integrate`` takes the in-place fast path of :mod:`sdenet.fast` (same draws; no
    gradient needed here);
``inplace``
    the in-place loop a user writes by hand for speed, same law, no sdenet code: one state
    buffer updated with ``x.mul_(1 − θΔt).add_(ΔŴ, alpha=σ)``, Gaussian and uniform draws into
    a reused buffer (``randn(out=)``, ``uniform_``), Rademacher as 64 bit-unpacked signs per
    64-bit ``randint`` added as ``x.mul_(1 − θΔt).add_(bits, alpha=2σ√Δt).sub_(σ√Δt)``;
``plain``
    the loop a user writes by hand with the same law and no sdenet code:
    ``x = x + (−θ x) Δt + σ ΔŴ`` with ``ΔŴ`` from ``torch.randn``, ``uniform_`` or
    ``torch.randint(0, 2)·2 − 1``;
``torchsde``
    ``torchsde.sdeint(sde, x0, ts, method="euler", dt=Δt)`` — Gaussian only (torchsde has
    no other law), so every law's sdenet time is compared with torchsde's Gaussian Euler.
    ``ts = [0, T]`` is float64 so that torchsde takes exactly 100 steps. With float32
    ``ts`` and a grid such as ``T = 1, Δt = 0.01`` torchsde takes a 101st sliver step of
    ~7·10⁻⁷ and its Brownian interval then builds a dependency tree of ~5·10⁴ nodes per call
    (~0.7 s); that pathological default is timed once as ``torchsde (T=1, dt=0.01, float32 ts)``
    and reported for information only.

Usage::

    python experiments/benchmarks/sde_throughput.py                      # full run (minutes)
    python experiments/benchmarks/sde_throughput.py --paths 1 1000 --repeats 3 --out runs/sde_throughput-quick
    python experiments/benchmarks/sde_throughput.py --device cuda
    python experiments/benchmarks/sde_throughput.py --threads 1 2 --rounds 3   # interleaved rounds

With ``--threads 1 2 --rounds R`` the whole benchmark runs once per thread count, alternating
1 and 2 threads, R times; the summary gives every round's ratios and path-steps/s.

Writes ``<out>.json`` and ``<out>.md`` (default ``experiments/results/sde_throughput``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sdenet as sn  # noqa: E402
from sdenet.provenance import provenance  # noqa: E402
from sdenet.train.hardware import info as describe_hardware  # noqa: E402

THETA = 1.0
SIGMA = 0.5
DT = 2.0**-7
LAWS = ("gaussian", "uniform", "rademacher")


# --------------------------------------------------------------------------- contenders


def make_sdenet(law_name, x0, steps, seed, device, linear=False):
    theta = THETA
    g = torch.tensor(SIGMA, dtype=x0.dtype, device=device)  # additive noise: σ broadcast over x
    if linear:  # declares its affine form: the in-place fast path of sdenet.fast
        field = sn.LinearSDEField(a=-theta, d=SIGMA, noise="diagonal")
    else:
        field = sn.SDEField(drift=lambda t, x: -theta * x, diffusion=lambda t, x: g, noise="diagonal")
    scheme = sn.WeakEuler(sn.get_law(law_name))
    gen = torch.Generator(device=device).manual_seed(seed)

    def run():
        return sn.integrate(field, scheme, x0, dt=DT, steps=steps, generator=gen)

    return run


def make_plain(law_name, x0, steps, seed, device):
    """The hand-written loop, same law, no sdenet code."""
    gen = torch.Generator(device=device).manual_seed(seed)
    theta, sigma, dt = THETA, SIGMA, DT
    sq = math.sqrt(dt)
    a = math.sqrt(3 * dt)

    if law_name == "gaussian":

        def run():
            x = x0
            for _ in range(steps):
                dw = torch.randn(x.shape, generator=gen, device=device, dtype=x.dtype) * sq
                x = x + (-theta * x) * dt + sigma * dw
            return x
    elif law_name == "uniform":

        def run():
            x = x0
            for _ in range(steps):
                dw = torch.empty_like(x).uniform_(-a, a, generator=gen)
                x = x + (-theta * x) * dt + sigma * dw
            return x
    elif law_name == "rademacher":

        def run():
            x = x0
            for _ in range(steps):
                signs = torch.randint(0, 2, x.shape, generator=gen, device=device, dtype=x.dtype) * 2 - 1
                x = x + (-theta * x) * dt + sigma * (signs * sq)
            return x
    else:  # pragma: no cover
        raise ValueError(law_name)
    return run


def make_inplace(law_name, x0, steps, seed, device):
    """The in-place hand-written loop: one state buffer, reused draw buffers, same law."""
    gen = torch.Generator(device=device).manual_seed(seed)
    grow, sigma, dt = 1.0 - THETA * DT, SIGMA, DT
    sq = math.sqrt(dt)
    a = math.sqrt(3 * dt)
    buf = torch.empty_like(x0)
    n = x0.numel()
    words = (n + 63) // 64
    bits = torch.empty((words, 8, 8), dtype=torch.uint8, device=device)
    shifts = torch.arange(8, dtype=torch.uint8, device=device)

    if law_name == "gaussian":

        def run():
            x = x0.clone()
            for _ in range(steps):
                torch.randn(x.shape, generator=gen, out=buf)
                x.mul_(grow).add_(buf, alpha=sigma * sq)
            return x
    elif law_name == "uniform":

        def run():
            x = x0.clone()
            for _ in range(steps):
                buf.uniform_(-a, a, generator=gen)
                x.mul_(grow).add_(buf, alpha=sigma)
            return x
    elif law_name == "rademacher":

        def run():
            x = x0.clone()
            for _ in range(steps):
                w = torch.randint(
                    -(2**63), 2**63 - 1, (words,), dtype=torch.int64, generator=gen, device=device
                )
                torch.bitwise_right_shift(w.view(torch.uint8).view(words, 8, 1), shifts, out=bits)
                bits.bitwise_and_(1)
                x.mul_(grow).add_(bits.view(-1)[:n].view(x.shape), alpha=2 * sigma * sq).sub_(sigma * sq)
            return x
    else:  # pragma: no cover
        raise ValueError(law_name)
    return run


def make_torchsde(x0, steps, seed, device, float32_ts=False, t1=None, dt=None):
    from sdenet._optional import require

    torchsde = require("torchsde", "interop")

    class OU(torch.nn.Module):
        noise_type = "diagonal"
        sde_type = "ito"

        def __init__(self):
            super().__init__()
            self.sigma = torch.tensor(SIGMA, dtype=x0.dtype, device=device)

        def f(self, t, y):
            return -THETA * y

        def g(self, t, y):
            return self.sigma.expand_as(y)

    sde = OU()
    dt = DT if dt is None else dt
    t1 = steps * DT if t1 is None else t1
    ts = torch.tensor([0.0, t1], dtype=torch.float32 if float32_ts else torch.float64, device=device)

    def run():
        return torchsde.sdeint(sde, x0, ts, method="euler", dt=dt)[-1]

    torch.manual_seed(seed)
    return run


# --------------------------------------------------------------------------- timing


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def hardware(device):
    info = describe_hardware(device)  # device, cpu, cpu_cores, torch, python (+ gpu)
    info.update(
        logical_cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        platform=platform.platform(),
    )
    try:
        import torchsde

        info["torchsde"] = getattr(torchsde, "__version__", "unknown")
    except Exception:  # pragma: no cover
        info["torchsde"] = None
    return info


def ou_moments(x0, t1):
    """Exact mean and variance of the OU process at t1 from a deterministic x0."""
    mean = x0 * math.exp(-THETA * t1)
    var = SIGMA**2 / (2 * THETA) * (1 - math.exp(-2 * THETA * t1))
    return mean, var


def bench_size(paths, steps, repeats, device, laws, with_torchsde, log):
    x0 = torch.ones(paths, 1, dtype=torch.float32, device=device)
    contenders = {}
    for i, law in enumerate(laws):
        contenders[("sdenet", law)] = make_sdenet(law, x0, steps, 100 + i, device)
        contenders[("fast", law)] = make_sdenet(law, x0, steps, 500 + i, device, linear=True)
        contenders[("inplace", law)] = make_inplace(law, x0, steps, 600 + i, device)
        contenders[("plain", law)] = make_plain(law, x0, steps, 200 + i, device)
    if with_torchsde:
        contenders[("torchsde", "gaussian")] = make_torchsde(x0, steps, 300, device)
    keys = list(contenders)
    times = {k: [] for k in keys}
    outs = {}
    for k in keys:  # warm-up
        _, outs[k] = timed(contenders[k], device)
    for r in range(repeats):
        # one repeat runs every contender twice, in a rotated order and then in reverse
        # (A B C … C B A) and keeps the mean: drift in the load and any cost of running
        # first or second after another contender cancel between the two halves
        shift = r % len(keys)
        order = keys[shift:] + keys[:shift]
        pair = {k: 0.0 for k in keys}
        for k in order + order[::-1]:
            t, _ = timed(contenders[k], device)
            pair[k] += t / 2
        for k in keys:
            times[k].append(pair[k])
        log(f"  paths={paths:>8} repeat {r + 1}/{repeats} done")
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    t1 = steps * DT
    mean, var = ou_moments(1.0, t1)
    sanity = {}
    if paths >= 10_000:
        for k, out in outs.items():
            sanity["/".join(k)] = {"mean": out.double().mean().item(), "var": out.double().var().item()}
    return med, best, times, sanity, {"exact_mean": mean, "exact_var": var, "t1": t1}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", type=int, nargs="+", default=[1, 10_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="repeats at 10^5 paths and more (2 runs each)")
    parser.add_argument(
        "--repeats-small", type=int, default=15, help="repeats below 10^5 paths (2 runs each)"
    )
    parser.add_argument("--laws", nargs="+", default=list(LAWS), choices=LAWS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="torch.set_num_threads; several values run the whole benchmark once per value "
        "(default: torch's choice)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the whole benchmark this many times, alternating the --threads values",
    )
    parser.add_argument("--no-torchsde", action="store_true")
    parser.add_argument(
        "--out",
        default=str(ROOT / "experiments" / "results" / "sde_throughput"),
        help="output path without extension; writes .json and .md",
    )
    parser.add_argument(
        "--note",
        action="append",
        default=None,
        help="a paragraph written at the top of the markdown (repeatable; with --render-only "
        "it replaces the stored notes)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="re-evaluate the targets and rewrite <out>.md from an existing <out>.json",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        out = Path(args.out)
        data = json.loads(out.with_suffix(".json").read_text())
        if args.note is not None:
            data["notes"] = args.note
        for result in data.get("runs", [data]):
            naive = [t for t in result["targets"] if "default-looking" in t["target"]]
            result["targets"] = evaluate_targets(result["rows"])
            result["targets_paired"] = evaluate_targets(result["rows"], paired=True)
            for t in naive:
                result["targets"].insert(1, t)
                result["targets_paired"].insert(
                    1, dict(t, measured=t["measured"].split(" (")[0] + " (medians; timed apart)")
                )
        data["provenance"] = provenance(seed="fixed in the script (seed argument of each runner)")
        out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
        out.with_suffix(".md").write_text(render_all(data))
        print(f"rewrote {out.with_suffix('.md')}")
        return 0
    if (
        args.steps < 1
        or args.repeats < 1
        or args.repeats_small < 1
        or args.rounds < 1
        or any(p < 1 for p in args.paths)
    ):
        parser.error("--paths, --steps, --repeats, --repeats-small and --rounds must be positive")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")

    def log(msg):
        print(msg, flush=True)

    with_torchsde = not args.no_torchsde
    if with_torchsde:
        try:
            import torchsde  # noqa: F401
        except Exception as err:  # pragma: no cover
            log(f"torchsde not importable ({err}); skipping it (pip install 'sdenet[interop]')")
            with_torchsde = False

    runs = []
    for rnd in range(args.rounds):
        for threads in args.threads or [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            log(f"round {rnd + 1}/{args.rounds}, torch threads {threads}")
            result = run_once(args, argv, device, with_torchsde, log)
            result["round"] = rnd + 1
            runs.append(result)
            md = _write(args, runs)  # after every run: a stopped benchmark keeps what it measured
            log(f"wrote {args.out}.json/.md after {len(runs)} run(s)")
    md = _write(args, runs)
    print()
    print(md)
    log(f"wrote {args.out}.json and {args.out}.md")
    return 0


def _write(args, runs):
    data = runs[0] if len(runs) == 1 else {"benchmark": "sde_throughput", "runs": runs}
    if args.note:
        data["notes"] = args.note
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data["provenance"] = provenance(seed="fixed in the script (seed argument of each runner)")
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    md = render_all(data)
    out.with_suffix(".md").write_text(md)
    return md


def render_all(data):
    notes = data.get("notes") or []
    head = ""
    if notes:
        head = "# SDE throughput — reading the numbers\n\n" + "\n\n".join(notes) + "\n\n"
    if "runs" not in data:
        return head + render_markdown(data)
    return head + render_summary(data["runs"]) + "\n".join(render_markdown(r) for r in data["runs"])


def render_summary(runs):
    """One line per run (round × threads) at 10⁶ paths and at 1 path: the targets' numbers."""
    big = [(r, {x["law"]: x for x in r["rows"] if x["paths"] == 1_000_000}) for r in runs]
    big = [(r, rows) for r, rows in big if rows and all("fast_s" in x for x in rows.values())]
    if not big:
        return ""
    laws = list(big[0][1])
    lines = [
        "# Summary over rounds (10⁶ paths × 100 steps)",
        "",
        "Each row is one full run of the benchmark; runs alternate torch threads 1 and 2. Ratios are medians of "
        "the paired (back-to-back) per-repeat ratios. Load is the 1-minute load average before the run.",
        "",
        "| round | threads | load | "
        + " | ".join(f"fast / in-place {law}" for law in laws)
        + " | "
        + " | ".join(f"generic / in-place {law}" for law in laws)
        + " | Rademacher path-steps/s: fast | in-place | generic | 1 path fast / generic (worst law) |",
        "|---:|---:|---:|" + "---:|" * (2 * len(laws) + 4),
    ]
    for r, rows in big:
        ones = [x for x in r["rows"] if x["paths"] == 1 and "paired_fast_over_sdenet" in x]
        one = f"{max(x['paired_fast_over_sdenet'] for x in ones):.2f}×" if ones else "—"
        rad = rows.get("rademacher")
        lines.append(
            f"| {r.get('round', 1)} | {r['hardware']['torch_threads']} | {r['load_average_before'][0]:.1f} | "
            + " | ".join(f"{rows[law]['paired_fast_over_inplace']:.2f}×" for law in laws)
            + " | "
            + " | ".join(f"{rows[law]['sdenet_over_inplace']:.2f}×" for law in laws)
            + " | "
            + (
                f"{_rate(rad['fast_steps_per_s'])} | {_rate(rad['inplace_steps_per_s'])} | "
                f"{_rate(rad['sdenet_steps_per_s'])}"
                if rad
                else "— | — | —"
            )
            + f" | {one} |"
        )
    return "\n".join(lines) + "\n\n"


def run_once(args, argv, device, with_torchsde, log):
    hw = hardware(device)
    load_before = os.getloadavg()
    log(f"hardware: {hw}")
    log(f"load average before: {load_before}")
    started = time.time()

    rows = []
    raw = {}
    sanity_all = {}
    for paths in args.paths:
        repeats = args.repeats if paths >= 100_000 else args.repeats_small
        log(f"paths={paths} steps={args.steps} repeats={repeats}")
        med, best, times, sanity, exact = bench_size(
            paths, args.steps, repeats, device, args.laws, with_torchsde, log
        )
        raw[str(paths)] = {"/".join(k): v for k, v in times.items()}
        if sanity:
            sanity_all[str(paths)] = {"exact": exact, "empirical": sanity}
        ts = med.get(("torchsde", "gaussian"))
        ts_min = best.get(("torchsde", "gaussian"))
        for law in args.laws:
            s, p = med[("sdenet", law)], med[("plain", law)]
            s_min, p_min = best[("sdenet", law)], best[("plain", law)]
            rows.append(
                {
                    "paths": paths,
                    "law": law,
                    "sdenet_s": s,
                    "plain_s": p,
                    "torchsde_gaussian_s": ts,
                    "torchsde_over_sdenet": None if ts is None else ts / s,
                    "sdenet_over_plain": s / p,
                    "sdenet_steps_per_s": paths * args.steps / s,
                    "min_sdenet_s": s_min,
                    "min_plain_s": p_min,
                    "min_torchsde_gaussian_s": ts_min,
                    "min_torchsde_over_sdenet": None if ts_min is None else ts_min / s_min,
                    "min_sdenet_over_plain": s_min / p_min,
                    # paired: ratio within each repeat (contenders run back to back), then the median
                    "paired_torchsde_over_sdenet": None
                    if ts is None
                    else statistics.median(
                        a / b for a, b in zip(times[("torchsde", "gaussian")], times[("sdenet", law)])
                    ),
                    "paired_sdenet_over_plain": statistics.median(
                        a / b for a, b in zip(times[("sdenet", law)], times[("plain", law)])
                    ),
                    # the in-place hand loop and sdenet's fast path (LinearSDEField)
                    "fast_s": med[("fast", law)],
                    "inplace_s": med[("inplace", law)],
                    "min_fast_s": best[("fast", law)],
                    "min_inplace_s": best[("inplace", law)],
                    "fast_over_inplace": med[("fast", law)] / med[("inplace", law)],
                    "sdenet_over_inplace": s / med[("inplace", law)],
                    "fast_over_sdenet": med[("fast", law)] / s,
                    "paired_fast_over_inplace": statistics.median(
                        a / b for a, b in zip(times[("fast", law)], times[("inplace", law)])
                    ),
                    "paired_fast_over_sdenet": statistics.median(
                        a / b for a, b in zip(times[("fast", law)], times[("sdenet", law)])
                    ),
                    "fast_steps_per_s": paths * args.steps / med[("fast", law)],
                    "inplace_steps_per_s": paths * args.steps / med[("inplace", law)],
                    "plain_steps_per_s": paths * args.steps / p,
                    "torchsde_gaussian_steps_per_s": None if ts is None else paths * args.steps / ts,
                    "best_fast_steps_per_s": paths * args.steps / best[("fast", law)],
                }
            )
            r = rows[-1]
            log(
                f"  {law:>10}: sdenet {_fmt_t(s)}  fast {_fmt_t(r['fast_s'])}  in-place {_fmt_t(r['inplace_s'])}  "
                f"plain {_fmt_t(p)}  torchsde {_fmt_t(ts)}  fast/in-place {r['fast_over_inplace']:.2f}x  "
                f"sdenet/plain {s / p:.2f}x"
            )

    naive = None
    if with_torchsde and 1 in args.paths:
        # the default-looking call with float32 ts on a non-dyadic grid (see module docstring)
        x0 = torch.ones(1, 1, device=device)
        fn = make_torchsde(x0, args.steps, 400, device, float32_ts=True, t1=1.0, dt=1.0 / args.steps)
        fn()
        naive = statistics.median(timed(fn, device)[0] for _ in range(3))
        log(f"torchsde with float32 ts, T=1, dt=0.01, 1 path: {naive * 1e3:.1f} ms (median of 3)")

    load_after = os.getloadavg()
    targets = evaluate_targets(rows)
    targets_paired = evaluate_targets(rows, paired=True)
    if naive is not None:
        ones = [r for r in rows if r["paths"] == 1]
        worst = min(naive / r["sdenet_s"] for r in ones)
        row = {
            "target": "1 path: sdenet >= 100x faster than torchsde's default-looking call "
            "(float32 ts = [0, 1], dt = 0.01: 101 steps, see note)",
            "measured": f"worst {worst:.0f}x",
            "met": worst >= 100,
        }
        targets.insert(1, row)
        targets_paired.insert(1, dict(row, measured=row["measured"] + " (medians; timed apart)"))
    result = {
        "benchmark": "sde_throughput",
        "problem": {
            "equation": "dX = -theta X dt + sigma dW",
            "theta": THETA,
            "sigma": SIGMA,
            "x0": 1.0,
            "dt": DT,
            "steps": args.steps,
            "dtype": "float32",
            "noise": "diagonal",
        },
        "hardware": hw,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "repeats": args.repeats,
        "repeats_small": args.repeats_small,
        "wall_s": time.time() - started,
        "rows": rows,
        "torchsde_float32_ts_T1_dt001_1path_s": naive,
        "targets": targets,
        "targets_paired": targets_paired,
        "sanity": sanity_all,
        "raw_times_s": raw,
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
    }
    return result


def evaluate_targets(rows, paired=False):
    """The brief's targets on the median times, or (``paired``) on the medians of per-repeat ratios."""
    if paired:
        rows = [
            dict(
                r,
                torchsde_over_sdenet=r["paired_torchsde_over_sdenet"],
                sdenet_over_plain=r["paired_sdenet_over_plain"],
            )
            for r in rows
        ]
    targets = []
    by = {(r["paths"], r["law"]): r for r in rows}
    ones = [r for r in rows if r["paths"] == 1 and r["torchsde_over_sdenet"] is not None]
    if ones:
        worst = min(r["torchsde_over_sdenet"] for r in ones)
        targets.append(
            {
                "target": "1 path: sdenet >= 100x faster than torchsde (every law)",
                "measured": f"worst {worst:.1f}x",
                "met": worst >= 100,
            }
        )
    big = [r for r in rows if r["paths"] == 1_000_000]
    if big:
        cands = [by[(1_000_000, law)] for law in ("rademacher", "uniform") if (1_000_000, law) in by]
        cands = [r for r in cands if r["torchsde_over_sdenet"] is not None]
        if cands:
            best = max(cands, key=lambda r: r["torchsde_over_sdenet"])
            targets.append(
                {
                    "target": "1e6 paths: weak Euler with Rademacher or Uniform >= 3x faster than "
                    "torchsde's Gaussian Euler",
                    "measured": ", ".join(f"{r['law']} {r['torchsde_over_sdenet']:.2f}x" for r in cands),
                    "met": best["torchsde_over_sdenet"] >= 3,
                }
            )
        worst = max(big, key=lambda r: r["sdenet_over_plain"])
        targets.append(
            {
                "target": "1e6 paths: every law within 1.3x of the plain loop with the same law",
                "measured": ", ".join(f"{r['law']} {r['sdenet_over_plain']:.2f}x" for r in big),
                "met": worst["sdenet_over_plain"] <= 1.3,
            }
        )
        if all("fast_over_inplace" in r for r in big):
            key = "paired_fast_over_inplace" if paired else "fast_over_inplace"
            targets.append(
                {
                    "target": "1e6 paths: sdenet <= 1.2x the in-place hand loop, every law "
                    "(LinearSDEField: the in-place fast path)",
                    "measured": ", ".join(f"{r['law']} {r[key]:.2f}x" for r in big),
                    "met": max(r[key] for r in big) <= 1.2,
                }
            )
            targets.append(
                {
                    "target": "1e6 paths: sdenet <= 1.2x the in-place hand loop, every law "
                    "(generic SDEField with lambdas: the generic, differentiable path)",
                    "measured": ", ".join(f"{r['law']} {r['sdenet_over_inplace']:.2f}x" for r in big),
                    "met": max(r["sdenet_over_inplace"] for r in big) <= 1.2,
                }
            )
            rad = [r for r in big if r["law"] == "rademacher"]
            if rad:
                r = rad[0]
                targets.append(
                    {
                        "target": "1e6 paths: Rademacher weak Euler >= 1e9 path-steps/s (fast path)",
                        "measured": f"{r['fast_steps_per_s']:.2e} (best repeat "
                        f"{r['best_fast_steps_per_s']:.2e}; in-place loop "
                        f"{r['inplace_steps_per_s']:.2e}, generic "
                        f"{r['sdenet_steps_per_s']:.2e})",
                        "met": r["fast_steps_per_s"] >= 1e9,
                    }
                )
    ones = [r for r in rows if r["paths"] == 1 and "fast_over_sdenet" in r]
    if ones:
        key = "paired_fast_over_sdenet" if paired else "fast_over_sdenet"
        targets.append(
            {
                "target": "1 path: no slower than today (fast path / generic path, today's code path)",
                "measured": ", ".join(f"{r['law']} {r[key]:.2f}x" for r in ones),
                "met": max(r[key] for r in ones) <= 1.0,
            }
        )
    return targets


def _rate(v):
    return "—" if v is None else f"{v:.2e}"


def _fmt_t(s):
    if s is None:
        return "—"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.3f} s"


def _time_table(rows, prefix):
    """Markdown table of the times (``prefix`` "" for medians, "min_" for best-of-repeats)."""
    lines = [
        "| paths | law | sdenet | plain loop | torchsde (Gaussian) | torchsde / sdenet | sdenet / plain |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = r[prefix + "torchsde_over_sdenet"]
        ratio = "—" if speedup is None else f"{speedup:.1f}×"
        lines.append(
            f"| {r['paths']:,} | {r['law']} | {_fmt_t(r[prefix + 'sdenet_s'])} | {_fmt_t(r[prefix + 'plain_s'])} | "
            f"{_fmt_t(r[prefix + 'torchsde_gaussian_s'])} | {ratio} | {r[prefix + 'sdenet_over_plain']:.2f}× |"
        )
    return lines


def render_markdown(res):
    hw = res["hardware"]
    p = res["problem"]
    lines = [
        f"# SDE throughput: sdenet vs torchsde vs a hand-written loop (torch threads {hw['torch_threads']})",
        "",
        f"Ornstein–Uhlenbeck `{p['equation']}`, θ = {p['theta']}, σ = {p['sigma']}, X₀ = 1, "
        f"{p['steps']} steps of Δt = {p['dt']} ({p['dtype']}, {p['noise']} noise). "
        f"Median of {res['repeats']} interleaved repeats at 10⁵ paths and more, {res['repeats_small']} below, "
        "after a warm-up run; each repeat is the mean of two runs, in a rotated order and its reverse. "
        "torchsde only has Gaussian increments: each law's sdenet time is compared with torchsde's "
        'Gaussian Euler (`sdeint(method="euler")`, float64 `ts` so it takes exactly the same 100 steps).',
        "",
        f"- CPU: {hw['cpu']}, {hw['logical_cores']} logical cores, torch threads {hw['torch_threads']}",
        f"- device: {hw['device']}" + (f" ({hw['gpu']})" if hw.get("gpu") else ""),
        f"- torch {hw['torch']}, torchsde {hw.get('torchsde')}, Python {hw['python']}",
        f"- load average (1/5/15 min) before: {', '.join(f'{v:.2f}' for v in res['load_average_before'])}; "
        f"after: {', '.join(f'{v:.2f}' for v in res['load_average_after'])} "
        "(the benchmark itself accounts for up to 2 on this 2-core machine; anything above that is other jobs sharing the cores)",
        f"- command: `{res['command']}`, wall time {res['wall_s']:.0f} s",
        "",
    ]
    lines += _time_table(res["rows"], "")
    if all("fast_s" in r for r in res["rows"]):
        lines += [
            "",
            'Against the in-place hand loop (medians; "fast" is `integrate` on `LinearSDEField`, which takes '
            'the in-place path of `sdenet.fast`; "generic" is `integrate` on an `SDEField` of lambdas). '
            "Path-steps/s = paths × steps / time:",
            "",
            "| paths | law | generic | fast | in-place loop | fast / in-place | generic / in-place | "
            "path-steps/s: fast | in-place | generic | plain | torchsde (Gaussian) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["rows"]:
            tsd = r.get("torchsde_gaussian_steps_per_s")
            lines.append(
                f"| {r['paths']:,} | {r['law']} | {_fmt_t(r['sdenet_s'])} | {_fmt_t(r['fast_s'])} | "
                f"{_fmt_t(r['inplace_s'])} | {r['fast_over_inplace']:.2f}× | {r['sdenet_over_inplace']:.2f}× | "
                f"{_rate(r['fast_steps_per_s'])} | {_rate(r['inplace_steps_per_s'])} | "
                f"{_rate(r['sdenet_steps_per_s'])} | {_rate(r['plain_steps_per_s'])} | {_rate(tsd)} |"
            )
    lines += [
        "",
        "Best-of-repeats (minimum) times, less sensitive to other jobs on the machine:",
        "",
    ]
    lines += _time_table(res["rows"], "min_")
    lines += [
        "",
        "Paired ratios: the ratio within each repeat (the contenders run back to back), then the median "
        "over repeats — robust to the load drifting between repeats:",
        "",
        "| paths | law | torchsde / sdenet | sdenet / plain |",
        "|---:|---|---:|---:|",
    ]
    for r in res["rows"]:
        ratio = (
            "—" if r["paired_torchsde_over_sdenet"] is None else f"{r['paired_torchsde_over_sdenet']:.1f}×"
        )
        lines.append(f"| {r['paths']:,} | {r['law']} | {ratio} | {r['paired_sdenet_over_plain']:.2f}× |")
    lines += [
        "",
        "## Targets",
        "",
        "| target | on median times | met | on paired ratios | met |",
        "|---|---|---|---|---|",
    ]
    for t, tp in zip(res["targets"], res["targets_paired"]):
        lines.append(
            f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} | "
            f"{tp['measured']} | {'yes' if tp['met'] else '**no**'} |"
        )
    naive = res.get("torchsde_float32_ts_T1_dt001_1path_s")
    if naive is not None:
        ones = [r for r in res["rows"] if r["paths"] == 1]
        lines += [
            "",
            f"For information: `torchsde.sdeint` called with float32 `ts = [0, 1]` and `dt = 0.01` at 1 path takes "
            f"{_fmt_t(naive)} — it takes a 101st step of ~7·10⁻⁷ (float32 rounding of the time grid) and its "
            "Brownian interval then builds a dependency tree of ~5·10⁴ nodes on every call. Against that call "
            "sdenet is " + ", ".join(f"{naive / r['sdenet_s']:.0f}× ({r['law']})" for r in ones) + " faster; "
            "the table above uses the fair call.",
        ]
    if res.get("sanity"):
        lines += [
            "",
            "## Sanity: every contender samples the same law of X_T",
            "",
            "| paths | contender | mean | exact mean | variance | exact variance |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for paths, s in res["sanity"].items():
            ex = s["exact"]
            for name, v in s["empirical"].items():
                lines.append(
                    f"| {int(paths):,} | {name} | {v['mean']:.4f} | {ex['exact_mean']:.4f} | "
                    f"{v['var']:.4f} | {ex['exact_var']:.4f} |"
                )
        lines.append("")
        lines.append(
            "(The Euler schemes' own bias at Δt = 2⁻⁷ is O(Δt); the Monte Carlo error of the mean at "
            "10⁴ paths is ≈ 0.004.)"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
