"""The one stepping loop on a user's own field against an in-place hand loop (issue 17, item 2).

Problem: Ornstein–Uhlenbeck ``dX = −θX dt + σ dW`` (θ = 1, σ = ½), float32, ``X_0 = 1``,
100 steps of ``Δt = 2⁻⁷``, diagonal noise, Rademacher and Gaussian increments, 1 thread.

Contenders (each a full 100-step run, same law, own seeded generator):

``user lambdas``
    ``integrate(SDEField(lambda t, x: -θ*x, lambda t, x: σ_tensor), WeakEuler(law), x0, ...)``
    — a user's field as a user writes it; ``integrate`` runs the one loop, in place;
``user subclass``
    the same through a ``Field`` subclass whose ``drift`` returns ``-self.theta * x``;
``generic``
    the user-lambda call with the in-place path off (``sdenet.fast.ENABLED = False``): the
    loop as it ran before (a new tensor per operation);
``builtin fast``
    ``LinearSDEField(a=-θ, d=σ)``, which declares its affine form (a fused kernel);
``hand in-place``
    the reference: the loop a user writes by hand for speed, no sdenet code, one state buffer
    updated with ``x.mul_(1 − θΔt).add_(ΔŴ, alpha=σ)`` (Gaussian: ``randn(out=)`` into a reused
    buffer, √Δt folded into alpha; Rademacher: 64 bit-unpacked signs per 64-bit ``randint``,
    ``x.mul_(1 − θΔt).add_(bits, alpha=2σ√Δt).sub_(σ√Δt)``);
``compiled step`` (``--compile``)
    ``torch.compile`` of the user field's weak Euler step (the scheme's own ``step`` on the
    increment the loop draws), called in a Python loop over the same draws; its compile time
    is reported apart.

Rounds are interleaved: every round runs each contender twice, in an order rotated every round
and then reversed, and keeps the mean; the median over rounds of the per-round ratio to the
hand loop is reported (and the median time). ``--clock cpu`` (the default) times each run by
the CPU time of its thread (``time.thread_time``), which on a shared, oversubscribed machine
leaves out the time the process waits for a core (the wall-clock time is recorded too);
``--clock wall`` uses ``time.perf_counter``. At one path it reports µs per step of
``integrate`` (100 steps; the call's fixed cost included) for the user field and the hand loop.

Usage::

    OMP_NUM_THREADS=1 python experiments/benchmarks/one_loop.py --rounds 5 --compile
    python experiments/benchmarks/one_loop.py --paths 100000 --rounds 2 --out runs/one_loop-quick

Writes ``<out>.json`` and ``<out>.md`` (default ``experiments/results/one_loop``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sdenet as sn  # noqa: E402
from sdenet import fast  # noqa: E402

THETA, SIGMA, DT = 1.0, 0.5, 2.0**-7


class OU(sn.Field):
    """A user's Field subclass: ``dX = −θ X dt + σ dW``."""

    noise = "diagonal"

    def __init__(self, theta, sigma):
        super().__init__()
        self.theta = theta
        self.sigma = torch.tensor(sigma)

    def drift(self, t, x):
        return -self.theta * x

    def diffusion(self, t, x):
        return self.sigma


def user_lambdas(dtype):
    g = torch.tensor(SIGMA, dtype=dtype)
    return sn.SDEField(lambda t, x: -THETA * x, lambda t, x: g, noise="diagonal")


def make_integrate(field, law, x0, steps, seed, inplace=True):
    scheme = sn.WeakEuler(sn.get_law(law))
    gen = torch.Generator().manual_seed(seed)

    def run():
        if inplace:
            return sn.integrate(field, scheme, x0, dt=DT, steps=steps, generator=gen)
        fast.ENABLED = False
        try:
            return sn.integrate(field, scheme, x0, dt=DT, steps=steps, generator=gen)
        finally:
            fast.ENABLED = True

    return run


def make_hand(law, x0, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    grow, sq = 1.0 - THETA * DT, math.sqrt(DT)
    buf = torch.empty_like(x0)
    n = x0.numel()
    words = (n + 63) // 64
    bits = torch.empty((words, 8, 8), dtype=torch.uint8)
    shifts = torch.arange(8, dtype=torch.uint8)
    if law == "gaussian":

        def run():
            x = x0.clone()
            for _ in range(steps):
                torch.randn(x.shape, generator=gen, out=buf)
                x.mul_(grow).add_(buf, alpha=SIGMA * sq)
            return x
    else:

        def run():
            x = x0.clone()
            for _ in range(steps):
                w = torch.randint(-(2**63), 2**63 - 1, (words,), dtype=torch.int64, generator=gen)
                torch.bitwise_right_shift(w.view(torch.uint8).view(words, 8, 1), shifts, out=bits)
                bits.bitwise_and_(1)
                x.mul_(grow).add_(bits.view(-1)[:n].view(x.shape), alpha=2 * SIGMA * sq).sub_(SIGMA * sq)
            return x

    return run


def make_compiled(field, law, x0, steps, seed):
    """torch.compile of the scheme's step on the user field, fed the loop's own draws."""
    scheme = sn.WeakEuler(sn.Gaussian())  # from_gaussian is the identity: the step takes dw as it is
    gen = torch.Generator().manual_seed(seed)
    drawer = sn.get_law(law).draws(field.noise_shape(x0), DT, gen, x0)

    def update(t, x, u, scale, shift):
        dw = u.to(x.dtype) * scale + shift
        x.copy_(scheme.step(field, t, x, DT, None, dw=dw)[0])

    compiled = torch.compile(update, dynamic=False, fullgraph=True)
    times = [torch.tensor(n * DT, dtype=x0.dtype) for n in range(steps)]
    t0 = time.perf_counter()
    with torch.no_grad():
        x = x0.clone()
        u, scale, shift = drawer.draw()
        compiled(times[0], x, u, torch.tensor(scale, dtype=x0.dtype), torch.tensor(shift, dtype=x0.dtype))
    compile_s = time.perf_counter() - t0

    def run():
        with torch.no_grad():
            x = x0.clone()
            for t in times:
                u, scale, shift = drawer.draw()
                compiled(t, x, u, torch.tensor(scale, dtype=x0.dtype), torch.tensor(shift, dtype=x0.dtype))
            return x

    return run, compile_s


CLOCK = {"cpu": time.thread_time, "wall": time.perf_counter}


def interleaved(contenders, rounds, log, clock="cpu"):
    keys = list(contenders)
    for k in keys:  # warm-up
        contenders[k]()
    times = {k: [] for k in keys}
    wall = {k: [] for k in keys}
    now = CLOCK[clock]
    for r in range(rounds):
        shift = r % len(keys)
        order = keys[shift:] + keys[:shift]
        pair = {k: 0.0 for k in keys}
        pair_wall = {k: 0.0 for k in keys}
        for k in order + order[::-1]:
            w, t = time.perf_counter(), now()
            contenders[k]()
            pair[k] += (now() - t) / 2
            pair_wall[k] += (time.perf_counter() - w) / 2
        for k in keys:
            times[k].append(pair[k])
            wall[k].append(pair_wall[k])
        log(f"    round {r + 1}/{rounds}")
    return times, wall


def ratio_stats(timed, ref):
    times, wall = timed
    out = {}
    for k, v in times.items():
        ratios = [a / b for a, b in zip(v, times[ref])]
        wall_ratios = [a / b for a, b in zip(wall[k], wall[ref])]
        out[k] = {
            "median_s": statistics.median(v),
            "ratio_median": statistics.median(ratios),
            "ratios": ratios,
            "times_s": v,
            "wall_median_s": statistics.median(wall[k]),
            "wall_ratio_median": statistics.median(wall_ratios),
        }
    return out


def hardware():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:  # pragma: no cover
            return None

    model = sh("lscpu | grep 'Model name' | sed 's/.*: *//'")
    return {
        "cpu": model,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "load_before": sh("uptime"),
        "commit": sh(f"git -C {ROOT} rev-parse --short HEAD"),
        "dirty": bool(sh(f"git -C {ROOT} status --porcelain -- sdenet experiments/benchmarks")),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--one-path-rounds", type=int, default=15)
    ap.add_argument("--laws", nargs="+", default=["rademacher", "gaussian"])
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the step")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCK),
        default="cpu",
        help="cpu: the thread's CPU time (robust on a shared machine); wall: perf_counter",
    )
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "one_loop"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    hw = hardware()
    res = {
        "command": "python experiments/benchmarks/one_loop.py " + " ".join(argv or sys.argv[1:]),
        "hardware": hw,
        "paths": args.paths,
        "steps": args.steps,
        "rounds": args.rounds,
        "clock": args.clock,
        "laws": {},
    }
    dtype = torch.float32
    for law in args.laws:
        log(f"{law}: {args.paths} paths x {args.steps} steps")
        x0 = torch.ones(args.paths, 1, dtype=dtype)
        c = {
            "hand in-place": make_hand(law, x0, args.steps, 1),
            "user lambdas": make_integrate(user_lambdas(dtype), law, x0, args.steps, 2),
            "user subclass": make_integrate(OU(THETA, SIGMA), law, x0, args.steps, 3),
            "builtin fast": make_integrate(sn.LinearSDEField(a=-THETA, d=SIGMA), law, x0, args.steps, 4),
            "generic": make_integrate(user_lambdas(dtype), law, x0, args.steps, 5, inplace=False),
        }
        entry = {}
        if args.compile:
            run, cs = make_compiled(user_lambdas(dtype), law, x0, args.steps, 6)
            c["compiled step"] = run
            entry["compile_s"] = cs
        entry["big"] = ratio_stats(interleaved(c, args.rounds, log, args.clock), "hand in-place")
        log(f"{law}: one path")
        x1 = torch.ones(1, 1, dtype=dtype)
        c1 = {
            "hand in-place": make_hand(law, x1, args.steps, 1),
            "user lambdas": make_integrate(user_lambdas(dtype), law, x1, args.steps, 2),
            "user subclass": make_integrate(OU(THETA, SIGMA), law, x1, args.steps, 3),
            "generic": make_integrate(user_lambdas(dtype), law, x1, args.steps, 5, inplace=False),
        }
        one = ratio_stats(interleaved(c1, args.one_path_rounds, log, args.clock), "hand in-place")
        for v in one.values():
            v["us_per_step"] = v["median_s"] / args.steps * 1e6
        entry["one_path"] = one
        res["laws"][law] = entry
    res["hardware"]["load_after"] = hardware()["load_before"]
    res["targets"] = targets(res)
    from sdenet.provenance import provenance

    res["provenance"] = provenance(
        seed="fixed in the script: each contender's own torch.Generator seed", command=res.get("command")
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(render(res))
    print(render(res))


def targets(res):
    rows = []
    for law, e in res["laws"].items():
        for who in ("user lambdas", "user subclass"):
            r = e["big"][who]["ratio_median"]
            rows.append(
                {
                    "target": f"{who}, {law}, {res['paths']} paths: <= 1.2x hand in-place",
                    "value": r,
                    "met": r <= 1.2,
                }
            )
            us = e["one_path"][who]["us_per_step"]
            rows.append({"target": f"{who}, {law}, 1 path: <= 20 us per step", "value": us, "met": us <= 20})
    return rows


def render(res):
    hw = res["hardware"]
    lines = [
        "# One stepping loop on a user's field (OU, float32, 100 steps of dt = 2^-7)",
        "",
        f"Command: `{res['command']}`  ",
        f"Commit: {hw['commit']}{' (with uncommitted changes)' if hw['dirty'] else ''}; torch {hw['torch']}, "
        f"Python {hw['python']}; {hw['threads']} thread(s); CPU: {hw['cpu']}  ",
        f"Load before: `{hw['load_before']}`  ",
        f"Load after: `{hw.get('load_after')}`",
        "",
        f"Median over {res['rounds']} interleaved rounds of the per-round ratio to the in-place hand loop "
        "(each round runs every contender twice, rotated then reversed); times are "
        + (
            "the thread's CPU time (`time.thread_time`: the machine is shared, waiting for a core is left out); "
            "wall-clock ratios in the last column"
            if res.get("clock") == "cpu"
            else "wall-clock"
        )
        + ".",
        "",
    ]
    for law, e in res["laws"].items():
        lines += [
            f"## {law}",
            "",
            f"{res['paths']} paths:",
            "",
            "| contender | median time | ratio to hand loop | wall-clock ratio |",
            "|---|---|---|---|",
        ]
        for k, v in e["big"].items():
            lines.append(
                f"| {k} | {v['median_s'] * 1e3:.1f} ms | {v['ratio_median']:.2f}x | "
                f"{v['wall_ratio_median']:.2f}x |"
            )
        if "compile_s" in e:
            lines += ["", f"torch.compile of the step: {e['compile_s']:.1f} s to compile (first call)."]
        lines += [
            "",
            "1 path (integrate's fixed cost included):",
            "",
            "| contender | us per step | ratio to hand loop | wall-clock us per step |",
            "|---|---|---|---|",
        ]
        for k, v in e["one_path"].items():
            lines.append(
                f"| {k} | {v['us_per_step']:.1f} | {v['ratio_median']:.2f}x | "
                f"{v['wall_median_s'] / res['steps'] * 1e6:.1f} |"
            )
        lines.append("")
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in res["targets"]:
        lines.append(f"| {t['target']} | {t['value']:.2f} | {'yes' if t['met'] else '**missed**'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
