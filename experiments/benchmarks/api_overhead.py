"""Cost of the API boundary (first-step checks, ``t`` as a tensor) against a reference tree.

The same worker runs under two source trees, in separate processes, interleaved (the order
alternates every round): ``--base DIR`` (a copy of the package before the change, e.g.
``git archive <commit> sdenet | tar -x -C DIR``) and this checkout. Each worker times

* ``integrate`` of the OU equation ``dX = −X dt + 0.5 dW`` (an ``SDEField`` whose callables
  ignore ``t``), weak Euler with Rademacher increments, 100 steps, float32, at 1 and 10⁵
  paths;
* the same with a drift that uses ``t`` the torchsde way, ``torch.sqrt(1 + t)`` (this tree
  only: the reference tree passes a float, which ``torch.sqrt`` refuses);
* one eval-mode forward pass of ResNet-20 and LM-ResNet-20 (Δt = 1), batch 32;

and writes its outputs, so the script also checks that every result is bit for bit the
reference's. Reported: the median over rounds of each worker's median time, and the median
of the per-round ratios (this tree / reference).

Usage::

    python experiments/benchmarks/api_overhead.py --base /tmp/sdenet-base --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def worker(out_path: str, repeats: int):
    import torch

    import sdenet as sn
    import sdenet.models as models

    torch.set_num_threads(1)
    res, outs = {}, {}
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.full_like(x, 0.5), noise="diagonal")
    scheme = sn.WeakEuler(sn.Rademacher())
    for paths in (1, 100_000):
        x0 = torch.ones(paths, 1)

        def run(field=field, x0=x0):
            return sn.integrate(field, scheme, x0, dt=2.0**-7, steps=100, generator=torch.Generator().manual_seed(0))

        res[f"integrate, {paths} path(s)"] = _median_time(run, repeats if paths == 1 else max(3, repeats // 10))
        outs[f"integrate {paths}"] = run()
        try:
            tfield = sn.SDEField(lambda t, x: -torch.sqrt(1 + t) * x, lambda t, x: torch.full_like(x, 0.5))
            run(tfield)
            res[f"integrate, drift sqrt(1+t), {paths} path(s)"] = _median_time(
                lambda: run(tfield), repeats if paths == 1 else max(3, repeats // 10))
        except TypeError:
            pass  # the reference tree hands t as a float
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for name in ("resnet20", "lm_resnet20"):
        torch.manual_seed(0)
        net = models.create(name, num_classes=10).eval()
        with torch.no_grad():
            res[f"{name} eval forward, batch 32"] = _median_time(lambda: net(x), max(3, repeats // 20))
            outs[name] = net(x)
    torch.save(outs, out_path + ".pt")
    Path(out_path).write_text(json.dumps(res))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="folder holding the reference 'sdenet' package")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=200, help="timed calls at 1 path (fewer for larger work)")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "api_overhead"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.repeats)

    import torch

    trees = {"reference": str(Path(args.base).resolve()), "this tree": str(ROOT)}
    times = {k: [] for k in trees}
    tmp = tempfile.mkdtemp()
    files = {}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for k in order:
            f = os.path.join(tmp, f"{k.replace(' ', '_')}-{r}.json")
            env = dict(os.environ, PYTHONPATH=trees[k], OMP_NUM_THREADS="1")
            subprocess.run([sys.executable, __file__, "--base", args.base, "--worker", f,
                            "--repeats", str(args.repeats)], env=env, check=True, cwd=tmp)
            times[k].append(json.loads(Path(f).read_text()))
            files[k] = f
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    ref, new = torch.load(files["reference"] + ".pt"), torch.load(files["this tree"] + ".pt")
    identical = {k: bool(torch.equal(ref[k], new[k])) for k in ref}
    rows = []
    for key in times["this tree"][0]:
        mine = [t[key] for t in times["this tree"]]
        base = [t.get(key) for t in times["reference"]]
        row = {"case": key, "this tree s": statistics.median(mine)}
        if None not in base:
            row["reference s"] = statistics.median(base)
            row["ratio (paired median)"] = statistics.median(m / b for m, b in zip(mine, base))
        rows.append(row)
    try:
        sys.path.insert(0, str(ROOT))
        from sdenet.train.hardware import info as hardware

        hw = hardware()
    except Exception as e:  # pragma: no cover
        hw = {"error": str(e)}
    result = {"rows": rows, "bit_identical": identical, "rounds": args.rounds, "repeats": args.repeats,
              "hardware": hw, "load_average": os.getloadavg(), "threads": 1}
    Path(args.out + ".json").write_text(json.dumps(result, indent=1, default=str))
    lines = ["# API boundary overhead (first-step checks, t as a tensor)", "",
             f"{args.rounds} interleaved rounds, one thread, each worker's median of up to {args.repeats} calls; "
             f"load average at the end {', '.join(f'{v:.2f}' for v in os.getloadavg())}.", "",
             "| case | reference | this tree | ratio (paired median) |", "|---|---|---|---|"]
    for row in rows:
        ref_s = f"{row['reference s'] * 1e3:.3f} ms" if "reference s" in row else "— (t is a float there)"
        ratio = f"{row['ratio (paired median)']:.3f}" if "reference s" in row else "—"
        lines.append(f"| {row['case']} | {ref_s} | {row['this tree s'] * 1e3:.3f} ms | {ratio} |")
    lines += ["", "Bit-for-bit identical outputs: " + ", ".join(f"{k}: {v}" for k, v in identical.items()), "",
              f"Hardware: {json.dumps(hw, default=str)}"]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
