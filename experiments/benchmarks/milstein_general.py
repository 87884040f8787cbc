"""Milstein with general noise against its diagonal case, before and after the batched derivative.

Fields (float64, ``x`` of shape ``(B, d)``), the same nonlinear diffusion family in both cases:

* diagonal: ``g(x) = tanh(x ⊙ w)``, ``w ∈ R^d``, ``dW`` of shape ``(B, d)``;
* general: ``g(x) = tanh(x[..., None] ⊙ W)``, ``W ∈ R^{d×m}``, ``dW`` of shape ``(B, m)``
  (declared commutative so that Milstein takes it; the timing does not depend on it).

Timed, in interleaved rounds (the order of the three rotating from round to round), one thread:

* ``before``: the general-noise step as it was (one ``_jvp`` per column ``j``, along the strided
  view ``b[..., j]``), kept below as :func:`before_step`, a copy of the old loop;
* ``after``: ``sdenet.Milstein().step`` (one batched double-backward over all m contiguous columns);
* ``diagonal``: ``sdenet.Milstein().step`` on the diagonal field.

Each is the median over ``--repeats`` calls of one step under ``torch.no_grad()`` (sampling
excluded: the same given ``dW``); reported are the medians over rounds and the median of the
per-round ratios general/diagonal, before and after. ``before`` and ``after`` are checked to
agree to 1e-12.

    OMP_NUM_THREADS=1 python experiments/benchmarks/milstein_general.py --rounds 7 \\
        --out experiments/results/milstein_general.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import sdenet as sn  # noqa: E402
from sdenet.schemes.weak import _column, _jvp  # noqa: E402

CASES = ((1, 8, 4), (256, 8, 4), (256, 16, 8), (4096, 16, 4))


def before_step(field, t, x, dt, dw):
    """The general-noise Milstein step before the change: m jvps along strided column views."""
    a, b = field.coefficients(t, x)
    out = x + a * dt + field.noise_term(b, dw)
    for j in range(b.shape[-1]):
        Lj = _jvp(lambda y: field.diffusion(t, y), x, b[..., j])
        out = out + 0.5 * (field.noise_term(Lj, dw) * _column(dw, j, x) - Lj[..., j] * dt)
    return out


def _median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_case(B, d, m, rounds, repeats):
    g = torch.Generator().manual_seed(0)
    F = torch.float64
    W = torch.randn(d, m, generator=g, dtype=F) * 0.3
    w = torch.randn(d, generator=g, dtype=F) * 0.3
    general = sn.SDEField(
        lambda t, x: -x, lambda t, x: torch.tanh(x.unsqueeze(-1) * W), noise="general", m=m, commutative=True
    )
    diagonal = sn.SDEField(lambda t, x: -x, lambda t, x: torch.tanh(x * w), noise="diagonal")
    x = torch.randn(B, d, generator=g, dtype=F)
    dwg = torch.randn(B, m, generator=g, dtype=F) * 0.1
    dwd = torch.randn(B, d, generator=g, dtype=F) * 0.1
    t = torch.tensor(0.0, dtype=F)
    scheme = sn.Milstein()
    fns = {
        "before": lambda: before_step(general, t, x, 0.01, dwg),
        "after": lambda: scheme.step(general, t, x, 0.01, None, dw=dwg)[0],
        "diagonal": lambda: scheme.step(diagonal, t, x, 0.01, None, dw=dwd)[0],
    }
    with torch.no_grad():
        agree = float((fns["before"]() - fns["after"]()).abs().max())
        times = {k: [] for k in fns}
        names = list(fns)
        for r in range(rounds):
            order = names[r % 3 :] + names[: r % 3]
            for k in order:
                times[k].append(_median_time(fns[k], repeats))
    ratio_before = statistics.median(b / dg for b, dg in zip(times["before"], times["diagonal"]))
    ratio_after = statistics.median(a / dg for a, dg in zip(times["after"], times["diagonal"]))
    speedup = statistics.median(b / a for b, a in zip(times["before"], times["after"]))
    return {
        "B": B,
        "d": d,
        "m": m,
        "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
        "ratio_general_over_diagonal_before": ratio_before,
        "ratio_general_over_diagonal_after": ratio_after,
        "after_speedup_over_before": speedup,
        "max_abs_difference_before_after": agree,
    }


def _sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", default=None, help="write a Markdown report here (and JSON next to it)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = [run_case(B, d, m, args.rounds, args.repeats) for B, d, m in CASES]
    meta = {
        "command": "OMP_NUM_THREADS=1 python experiments/benchmarks/milstein_general.py "
        + " ".join(argv or sys.argv[1:]),
        "commit": _sh("git rev-parse --short HEAD"),
        "threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpu": _sh("lscpu | grep 'Model name'").replace("Model name:", "").strip(),
        "load_after": _sh("uptime"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rounds": args.rounds,
        "repeats": args.repeats,
    }
    lines = [
        "# Milstein, general noise against its diagonal case",
        "",
        f"`{meta['command']}` at commit `{meta['commit']}`; {meta['threads']} thread; {meta['cpu']}; "
        f"torch {meta['torch']}; {args.rounds} interleaved rounds, median of {args.repeats} calls each; "
        f"load at the end: `{meta['load_after']}`.",
        "",
        "One step under `torch.no_grad()`, float64, given increments. general: g(x) = tanh(x[..., None] * W), "
        "W of shape (d, m); diagonal: g(x) = tanh(x * w). before = m jvps along strided column views (the old "
        "loop); after = one batched double-backward over the m contiguous columns.",
        "",
        "| B | d | m | before (ms) | after (ms) | diagonal (ms) | general/diagonal before | general/diagonal after "
        "| after speed-up | max |before − after| |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["median_ms"]
        lines.append(
            f"| {r['B']} | {r['d']} | {r['m']} | {t['before']:.3f} | {t['after']:.3f} | {t['diagonal']:.3f} | "
            f"{r['ratio_general_over_diagonal_before']:.2f} | {r['ratio_general_over_diagonal_after']:.2f} | "
            f"{r['after_speedup_over_before']:.2f} | {r['max_abs_difference_before_after']:.1e} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from sdenet.provenance import provenance

        prov = provenance(
            seed="fixed in the script: torch.Generator().manual_seed(0)", command=meta.get("command")
        )
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(
            json.dumps({"meta": meta, "results": results, "provenance": prov}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
