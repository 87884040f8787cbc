"""Cost to accuracy on GBM: wall time to reach a weak error ε with weak Euler, extrapolated weak
Euler and Platen's weak order-2 scheme.

Problem: ``dX = μX dt + σX dW`` (defaults μ = −1, σ = 0.3, x0 = 1, T = 1, float64), test
function ``φ(x) = x^k`` (default k = 2), ``E φ(X(T)) = x0^k exp(kμT + k(k−1)σ²T/2)``.

A weak error ε is reached by a step ``Δt = T/N`` whose bias ``|E φ(X_N) − E φ(X(T))|`` is
below ε and enough paths that two Monte Carlo standard errors fill the rest:
``n = (2 s / (ε − |bias|))²`` with ``s`` the standard deviation of one path's φ (the exact
``sd φ(X(T))``; for the extrapolated estimator ``√5 s``, the two levels' variances
``4s² + s²`` with independent paths). The wall time is ``n × (path-steps per path) ×
(seconds per path-step)``, minimised over N; seconds per path-step are measured here, per
scheme, interleaved (best of ``--repeats``), on ``--time-paths`` paths.

* weak Euler (``WeakEuler(Rademacher())``; on this field ``integrate`` takes the in-place
  fast path of :mod:`sdenet.fast`): bias exact, from the law's moments
  (:meth:`sdenet.weak.GBM.scheme_expectation`);
* extrapolated weak Euler, Talay–Tubaro ``2 E_{Δt/2} − E_{Δt}`` from two weak Euler runs
  (``N + 2N`` path-steps per path) by :func:`sdenet.weak.extrapolate`: bias exact from the
  exact weak Euler expectations, the Monte Carlo check from two independent runs;
* Platen (``get_scheme("platen", law=ThreePoint())``), when the scheme exists on this
  branch (else skipped and said so): bias exact from ``sdenet.linear.scheme_moment`` when
  that exists, else by Monte Carlo with ``--bias-paths`` paths per N, taken as
  ``|bias| + 2 se`` (an upper bound) so the cost is not flattered.

At ε = ``--target`` (default 1e-3) each scheme is then run for real with its optimal
(N, n), timed, and its actual error reported with its standard error.

Usage::

    python experiments/benchmarks/cost_accuracy.py                 # writes experiments/results/cost_accuracy.*
    python experiments/benchmarks/cost_accuracy.py --quick --out runs/cost_accuracy-quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sdenet as sn  # noqa: E402
from sdenet.train.hardware import info as describe_hardware  # noqa: E402
from sdenet.weak import GBM  # noqa: E402

F64 = torch.float64


def schemes_available(log):
    out = {
        "weak Euler": sn.WeakEuler(sn.Rademacher()),
        "extrapolated weak Euler": sn.WeakEuler(sn.Rademacher()),
    }
    try:
        out["Platen"] = sn.get_scheme("platen", law=sn.ThreePoint())
    except ValueError as err:
        log(f"Platen skipped: {err}")
    return out


def seconds_per_path_step(field, schemes, x0_value, paths, steps, repeats, T, log):
    """Best-of-repeats time per path-step for each distinct scheme, interleaved."""
    x0 = torch.full((paths, 1), x0_value, dtype=F64)
    times = {name: [] for name in schemes}
    gen = torch.Generator().manual_seed(0)
    for scheme in schemes.values():  # warm-up
        sn.integrate(field, scheme, x0, t1=T, steps=steps, generator=gen)
    for r in range(repeats):
        order = list(schemes)[r % len(schemes) :] + list(schemes)[: r % len(schemes)]
        for name in order:
            t = time.perf_counter()
            with torch.no_grad():
                sn.integrate(field, schemes[name], x0, t1=T, steps=steps, generator=gen)
            times[name].append(time.perf_counter() - t)
    out = {name: min(v) / (paths * steps) for name, v in times.items()}
    for name, v in out.items():
        log(f"  {name}: {v * 1e9:.2f} ns per path-step ({1 / v:.3g} path-steps/s)")
    return out, times


def mc_mean(field, scheme, sde, steps, paths, seed, chunk=1 << 18):
    """Mean of φ(X_N) and its standard error from ``paths`` paths."""
    gen = torch.Generator().manual_seed(seed)
    total, total2, done = 0.0, 0.0, 0
    with torch.no_grad():
        while done < paths:
            n = min(chunk, paths - done)
            x = sn.integrate(
                field, scheme, torch.full((n, 1), sde.x0, dtype=F64), t1=sde.T, steps=steps, generator=gen
            )
            v = x.reshape(-1) ** K
            total += v.sum().item()
            total2 += (v * v).sum().item()
            done += n
    mean = total / paths
    var = max(total2 / paths - mean * mean, 0.0) * paths / (paths - 1)
    return mean, math.sqrt(var / paths)


K = 2


def main(argv=None):
    global K
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mu", type=float, default=-1.0)
    parser.add_argument("--sigma", type=float, default=0.3)
    parser.add_argument("--power", type=int, default=2, choices=(1, 2, 3, 4), help="phi(x) = x^k")
    parser.add_argument("--target", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=1024)
    parser.add_argument("--time-paths", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--bias-paths", type=int, default=4_000_000, help="Monte Carlo paths per N for Platen's bias"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "cost_accuracy"))
    args = parser.parse_args(argv)
    if args.quick:
        args.time_paths, args.repeats, args.bias_paths, args.max_steps = 20_000, 2, 100_000, 256
    torch.set_num_threads(args.threads)
    K = args.power

    def log(msg):
        print(msg, flush=True)

    sde = GBM(mu=args.mu, sigma=args.sigma)
    field = sde.field()
    exact = sde.exact(K)
    sd = math.sqrt(
        sde.x0 ** (2 * K) * math.exp(2 * K * sde.mu * sde.T + 2 * K * (2 * K - 1) * sde.sigma**2 * sde.T / 2)
        - exact**2
    )  # sd of φ(X(T)) = sqrt(E X^{2k} − (E X^k)²)
    load_before = os.getloadavg()
    started = time.time()
    schemes = schemes_available(log)
    timed = {"weak Euler": schemes["weak Euler"]}
    if "Platen" in schemes:
        timed["Platen"] = schemes["Platen"]
    log("seconds per path-step (best of repeats):")
    sps, raw = seconds_per_path_step(field, timed, sde.x0, args.time_paths, 16, args.repeats, sde.T, log)
    sps["extrapolated weak Euler"] = sps["weak Euler"]

    law = sn.Rademacher()
    Ns = sorted(
        {
            n
            for n in [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
            if n <= args.max_steps
        }
    )
    curves = {}
    we = {n: sde.scheme_expectation(law, sde.T / n, K) for n in Ns + [2 * n for n in Ns]}
    curves["weak Euler"] = [
        {"N": n, "bias": abs(we[n] - exact), "bias_se": 0.0, "path_steps": n, "sd": sd} for n in Ns
    ]
    curves["extrapolated weak Euler"] = [
        {
            "N": n,
            "bias": abs(sn.extrapolate(lambda dt: we[round(sde.T / dt)], sde.T / n) - exact),
            "bias_se": 0.0,
            "path_steps": 3 * n,
            "sd": math.sqrt(5) * sd,
        }
        for n in Ns
    ]
    try:  # exact scheme moments of linear SDEs for any one-step scheme (added by another branch)
        from sdenet.linear import scheme_moment
    except ImportError:
        scheme_moment = None
    if "Platen" in schemes and scheme_moment is not None:
        curves["Platen"] = []
        for n in Ns:
            m = scheme_moment(field, schemes["Platen"], sde.x0, sde.T, sde.T / n, K)
            curves["Platen"].append(
                {
                    "N": n,
                    "bias": abs(m - exact),
                    "bias_se": 0.0,
                    "path_steps": n,
                    "sd": sd,
                    "bias_from": "exact (sdenet.linear.scheme_moment)",
                }
            )
    elif "Platen" in schemes:
        rows = []
        for n in [n for n in Ns if n <= 16]:
            m, se = mc_mean(field, schemes["Platen"], sde, n, args.bias_paths, seed=1000 + n)
            rows.append(
                {
                    "N": n,
                    "bias": abs(m - exact) + 2 * se,
                    "bias_mc": m - exact,
                    "bias_se": se,
                    "path_steps": n,
                    "sd": sd,
                }
            )
            log(f"  Platen N={n}: bias {m - exact:+.3e} ± {se:.1e}")
        curves["Platen"] = rows

    def cost(row, eps, name):
        if row["bias"] >= eps:
            return None
        n = math.ceil((2 * row["sd"] / (eps - row["bias"])) ** 2)
        return n, n * row["path_steps"] * sps[name]

    eps_grid = [10 ** (-1 - 3 * i / 30) for i in range(31)]
    best = {}
    for name, rows in curves.items():
        pts = []
        for eps in eps_grid:
            options = [(cost(r, eps, name), r) for r in rows]
            options = [(c, r) for c, r in options if c is not None]
            if options:
                (n, t), r = min(options, key=lambda o: o[0][1])
                pts.append({"eps": eps, "seconds": t, "N": r["N"], "paths": n})
        best[name] = pts

    # at the target: the optimal (N, n) of each scheme, run for real and timed
    verify = {}
    for name, rows in curves.items():
        options = [(cost(r, args.target, name), r) for r in rows]
        options = [(c, r) for c, r in options if c is not None]
        if not options:
            verify[name] = None
            log(f"{name}: no N up to {args.max_steps} reaches {args.target:g}")
            continue
        (n, predicted), r = min(options, key=lambda o: o[0][1])
        t = time.perf_counter()
        if name == "extrapolated weak Euler":
            runs = {r["N"]: 7, 2 * r["N"]: 8}  # steps -> seed: two independent Monte Carlo runs
            m, se = sn.extrapolate(
                lambda dt: mc_mean(
                    field,
                    schemes[name],  # noqa: B023
                    sde,
                    round(sde.T / dt),
                    n,  # noqa: B023
                    seed=runs[round(sde.T / dt)],  # noqa: B023
                ),
                sde.T / r["N"],
            )  # noqa: B023
        else:
            m, se = mc_mean(field, schemes[name], sde, r["N"], n, seed=9)
        wall = time.perf_counter() - t
        verify[name] = {
            "N": r["N"],
            "paths": n,
            "predicted_s": predicted,
            "wall_s": wall,
            "error": abs(m - exact),
            "error_se": se,
        }
        log(
            f"{name}: N={r['N']} paths={n}: predicted {predicted:.2f} s, ran {wall:.2f} s, "
            f"error {abs(m - exact):.2e} ± {se:.1e}"
        )

    hw = describe_hardware("cpu")
    hw["torch_threads"] = torch.get_num_threads()
    data = {
        "problem": {"sde": "gbm", **sde.params(), "phi": f"x^{K}", "exact": exact, "sd_phi": sd},
        "target": args.target,
        "hardware": hw,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_s": time.time() - started,
        "seconds_per_path_step": sps,
        "raw_times_s": raw,
        "curves": curves,
        "cost": best,
        "verify": verify,
        "skipped": [s for s in ("Platen",) if s not in schemes],
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from sdenet.provenance import provenance

    data["provenance"] = provenance(seed="fixed in the script: Monte Carlo seeds 0, 7, 8, 9 and 1000 + N")
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    plot(data, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(render(data, out.with_suffix(".png").name))
    log(f"wrote {out.with_suffix('.json')}, .md and .png")
    return 0


def plot(data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (name, pts) in enumerate(data["cost"].items()):
        if not pts:
            continue
        ax.plot(
            [p["seconds"] for p in pts],
            [p["eps"] for p in pts],
            "-",
            color=f"C{i}",
            label=f"{name} (predicted)",
        )
        v = data["verify"].get(name)
        if v:  # the measured error and its upper 2-se bar (the lower bar would reach 0)
            ax.errorbar(
                [v["wall_s"]],
                [v["error"]],
                yerr=[[0.0], [2 * v["error_se"]]],
                fmt="o",
                color=f"C{i}",
                capsize=3,
                label=f"{name}: run at its optimum for ε = {data['target']:g} (error, +2se)",
            )
    ax.axhline(data["target"], color="k", lw=0.8, ls="--")
    low = min(p["eps"] for pts in data["cost"].values() for p in pts) if any(data["cost"].values()) else 1e-4
    ax.set_ylim(low / 3, 0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall time (s), one CPU thread")
    ax.set_ylabel("weak error ε = |bias| + 2 se")
    p = data["problem"]
    skipped = f"; skipped (not on this branch): {', '.join(data['skipped'])}" if data["skipped"] else ""
    ax.set_title(f"cost to accuracy, GBM μ={p['mu']:g} σ={p['sigma']:g}, φ = {p['phi']}{skipped}", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def render(data, png):
    hw = data["hardware"]
    p = data["problem"]
    lines = [
        "# Cost to accuracy on GBM",
        "",
        f"GBM μ = {p['mu']:g}, σ = {p['sigma']:g}, x0 = {p['x0']:g}, T = {p['T']:g}, φ = {p['phi']} "
        f"(E φ(X(T)) = {p['exact']:.6g}, sd {p['sd_phi']:.3g}), float64. Method in "
        "`experiments/benchmarks/cost_accuracy.py`: the cheapest Δt = T/N and path count reaching "
        "|bias| + 2 se ≤ ε, with seconds per path-step measured here (best of repeats).",
        "",
        f"- CPU: {hw['cpu']}, torch threads {hw['torch_threads']}, torch {hw['torch']}",
        f"- load average before: {', '.join(f'{v:.2f}' for v in data['load_average_before'])}; after: "
        f"{', '.join(f'{v:.2f}' for v in data['load_average_after'])} (2 cores shared with other jobs: "
        "absolute times are inflated by the load; the ranking is what carries)",
        f"- command: `{data['command']}`, wall time {data['wall_s']:.0f} s",
    ]
    if data["skipped"]:
        lines.append(
            f"- skipped: {', '.join(data['skipped'])} (`get_scheme('platen')` does not exist on this "
            "branch; rerun after merging)"
        )
    lines += [
        "",
        f"![cost to accuracy]({png})",
        "",
        f"At ε = {data['target']:g}:",
        "",
        "| scheme | N | paths | predicted wall time | measured wall time | actual error ± se |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, v in data["verify"].items():
        if v is None:
            lines.append(f"| {name} | — | — | not reached | — | — |")
        else:
            lines.append(
                f"| {name} | {v['N']} | {v['paths']:,} | {v['predicted_s']:.2f} s | {v['wall_s']:.2f} s | "
                f"{v['error']:.2e} ± {v['error_se']:.1e} |"
            )
    lines += [
        "",
        "Weak Euler (and so the extrapolated weak Euler) runs on the in-place fast path of "
        "`sdenet.fast` (GBM is a `LinearSDEField`); Platen runs the generic path, which is most of "
        "its higher cost per path-step.",
    ]
    lines += [
        "",
        "Seconds per path-step: "
        + ", ".join(f"{k} {v * 1e9:.1f} ns" for k, v in data["seconds_per_path_step"].items()),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
