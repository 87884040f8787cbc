"""Cost of the API boundary (first-step checks, ``t`` as a tensor) against a reference tree.

``--base DIR`` is a folder holding the package as it was before the change (e.g.
``mkdir DIR && git archive <commit> sdenet | tar -x -C DIR``). The script copies it under the
name ``sdenet_base`` (the package imports itself only relatively) and imports it next to
this checkout's ``sdenet``, in one process, so both run on the same interpreter, allocator
and caches. Cases:

* ``integrate`` of the OU equation ``dX = −X dt + 0.5 dW`` (an ``SDEField`` whose callables
  ignore ``t``), weak Euler with Rademacher increments, 100 steps, float32, at 1 and 10⁵
  paths;
* the same with a drift that uses ``t`` the torchsde way, ``torch.sqrt(1 + t)`` (this tree
  only: the reference hands ``t`` as a float, which ``torch.sqrt`` refuses);
* one eval-mode forward pass of ResNet-20 and LM-ResNet-20 (Δt = 1), batch 32.

Each round times both trees on every case (median of ``--repeats`` calls, fewer for the big
cases), the order alternating from round to round; reported are the median times over the
rounds and the median of the per-round ratios (this tree / reference). Outputs of the two
trees are compared bit for bit (same generator seeds, same weights).

    python experiments/benchmarks/api_overhead.py --base ../sdenet-base --rounds 7
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from sdenet.provenance import provenance  # noqa: E402  (this tree's, before --base swaps the package)


def _median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cases(sn, models, torch, repeats):
    """{name: (callable, repeats)} for one tree; the callables return their outputs."""
    out = {}
    field = sn.SDEField(lambda t, x: -x, lambda t, x: torch.full_like(x, 0.5), noise="diagonal")
    tfield = sn.SDEField(lambda t, x: -torch.sqrt(1 + t) * x, lambda t, x: torch.full_like(x, 0.5))
    scheme = sn.WeakEuler(sn.Rademacher())
    for paths in (1, 100_000):
        x0 = torch.ones(paths, 1)
        r = repeats if paths == 1 else max(3, repeats // 20)

        def run(f=field, x0=x0):
            return sn.integrate(
                f, scheme, x0, dt=2.0**-7, steps=100, generator=torch.Generator().manual_seed(0)
            )

        out[f"integrate, {paths} path(s)"] = (run, r)
        try:
            run(tfield)
            out[f"integrate, drift sqrt(1+t), {paths} path(s)"] = (lambda run=run: run(tfield), r)
        except TypeError:
            pass  # the reference hands t as a float
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for name in ("resnet20", "lm_resnet20"):
        torch.manual_seed(0)
        net = models.create(name, num_classes=10).eval()

        def fwd(net=net):
            with torch.no_grad():
                return net(x)

        out[f"{name} eval forward, batch 32"] = (fwd, max(3, repeats // 20))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="folder holding the reference 'sdenet' package")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument(
        "--repeats", type=int, default=100, help="timed calls per case at 1 path (fewer for larger work)"
    )
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "api_overhead"))
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    src = Path(args.base) / "sdenet"
    if not (src / "__init__.py").exists():
        p.error(f"{src} is not a package folder")
    tmp = tempfile.mkdtemp()
    shutil.copytree(src, Path(tmp) / "sdenet_base", ignore=shutil.ignore_patterns("data", "__pycache__"))
    sys.path.insert(0, tmp)
    trees = {}
    for label, pkg in (("reference", "sdenet_base"), ("this tree", "sdenet")):
        sn = importlib.import_module(pkg)
        models = importlib.import_module(f"{pkg}.models")
        trees[label] = cases(sn, models, torch, args.repeats)
    ref_cases, new_cases = trees["reference"], trees["this tree"]
    identical = {k: bool(torch.equal(ref_cases[k][0](), new_cases[k][0]())) for k in ref_cases}

    times = {label: {k: [] for k in c} for label, c in trees.items()}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for key in new_cases:
            for label in order:
                if key in trees[label]:
                    fn, reps = trees[label][key]
                    times[label][key].append(_median_time(fn, reps))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    rows = []
    for key in new_cases:
        mine = times["this tree"][key]
        row = {"case": key, "this tree s": statistics.median(mine)}
        if key in ref_cases:
            base = times["reference"][key]
            row["reference s"] = statistics.median(base)
            row["ratio (paired median)"] = statistics.median(m / b for m, b in zip(mine, base))
            row["ratio range"] = [
                min(m / b for m, b in zip(mine, base)),
                max(m / b for m, b in zip(mine, base)),
            ]
        rows.append(row)
    from sdenet.train.hardware import info as hardware

    hw = hardware()
    load = os.getloadavg()
    result = {
        "rows": rows,
        "bit_identical": identical,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "hardware": hw,
        "load_average": load,
        "threads": 1,
    }
    result["provenance"] = provenance(seed="fixed in the script: generators seeded with 0 and 1")
    Path(args.out + ".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    lines = [
        "# API boundary overhead (first-step checks, t as a tensor)",
        "",
        "`python experiments/benchmarks/api_overhead.py --base <the package before the change>`: both trees "
        f"in one process, {args.rounds} interleaved rounds, one thread, each timing the median of up to "
        f"{args.repeats} calls. Load average at the end: {', '.join(f'{v:.2f}' for v in load)} "
        "(a machine shared with other jobs: absolute times are inflated, ratios are paired per round).",
        "",
        "| case | reference | this tree | ratio (paired median) | ratio range |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if "reference s" in row:
            lo, hi = row["ratio range"]
            lines.append(
                f"| {row['case']} | {row['reference s'] * 1e3:.3f} ms | {row['this tree s'] * 1e3:.3f} ms "
                f"| {row['ratio (paired median)']:.3f} | {lo:.2f}–{hi:.2f} |"
            )
        else:
            lines.append(
                f"| {row['case']} | — (t is a float there) | {row['this tree s'] * 1e3:.3f} ms | — | — |"
            )
    lines += [
        "",
        "Bit-for-bit identical outputs: " + ", ".join(f"{k}: {v}" for k, v in identical.items()),
        "",
        f"Hardware: {json.dumps(hw, default=str)}",
    ]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
