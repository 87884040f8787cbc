"""Multiscale resolution (Haber et al., *Learning across scales*): a network trained on 16×16
images, used and warm-started at 32×32.

This script measures the moment map (``method="moments"``), the one that fails on trained
networks; ``experiments/transfer_resolution.py`` measures the à trous map, the default.

Per seed:

1. ``r16``: train at ``--resolution 16`` (area-downsampled on the device) for ``--epochs16``.
2. Test error at 32×32 of that network: applied as it is; after ``sdenet.nn.rescale(m, 2)``
   (every moment, the exact operator); after ``rescale(m, 2, order=1)`` and ``order=2``; and,
   as a diagnostic outside the library, each with its batch-norm statistics recomputed on
   the 32×32 training images (one pass, no gradient).
3. Three 32×32 runs of ``--epochs32`` epochs: ``cold`` (from scratch), ``warm`` (``--init r16``,
   kernels as they are) and ``warm_rescaled`` (``--init r16 --rescale``); epochs to reach the
   cold run's final test error, and to reach each of a few fixed targets.

Writes ``OUT/results.json``, ``OUT/multiscale.md`` and ``OUT/multiscale.png``; run folders go
under ``--runs`` (a finished run is reused, so an interrupted invocation can be restarted).

    python experiments/multiscale.py --dataset ../shared/data/cifar10-subset.npz --seeds 0 \
        --epochs16 8 --epochs32 4 --out experiments/results
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sdenet import models  # noqa: E402
from sdenet.nn import rescale  # noqa: E402
from sdenet.train import train  # noqa: E402
from sdenet.train.checkpoint import load_checkpoint  # noqa: E402
from sdenet.train.data import DeviceLoader, load_dataset  # noqa: E402
from sdenet.train.hardware import describe  # noqa: E402


def _run(out: Path, **kw) -> dict:
    if (out / "metrics.json").exists():
        print(f"reusing {out}", flush=True)
    else:
        if out.exists():  # an interrupted run: start it again
            for f in out.iterdir():
                f.unlink()
        train(out=str(out), quiet=True, device="cpu", **kw)
    curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = json.loads((out / "metrics.json").read_text())
    return {
        "dir": str(out),
        "test_error": final["test_error"],
        "wall_time": final["wall_time"],
        "curve": [c["test_error"] for c in curve],
        "epoch_time": [c["epoch_time"] for c in curve],
    }


def _error(model, ds, res, train_split=False, batch=500) -> float:
    x, y = (ds.x_train, ds.y_train) if train_split else (ds.x_test, ds.y_test)
    loader = DeviceLoader(x, y, batch_size=batch, train=False, mean=ds.mean, std=ds.std, resolution=res)
    model.eval()
    wrong = n = 0
    with torch.no_grad():
        for xb, yb in loader:
            wrong += int((model(xb).argmax(1) != yb).sum())
            n += len(yb)
    return wrong / n


def _recalibrated(model, ds, res, batch=500):
    """A copy with batch-norm running statistics recomputed on the training images at ``res``
    (cumulative average over one pass, no gradient, no augmentation)."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    loader = DeviceLoader(
        ds.x_train, ds.y_train, batch_size=batch, train=False, mean=ds.mean, std=ds.std, resolution=res
    )
    m.train()
    with torch.no_grad():
        for xb, _ in loader:
            m(xb)
    return m.eval()


def _epochs_to(curve, target):
    for i, e in enumerate(curve):
        if e <= target:
            return i + 1
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="../shared/data/cifar10-subset.npz")
    ap.add_argument("--model", default="tiny_resnet")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs16", type=int, default=8)
    ap.add_argument("--epochs32", type=int, default=4)
    ap.add_argument("--low", type=int, default=16, help="the coarse resolution (default 16)")
    ap.add_argument("--runs", default="runs/multiscale")
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.70, 0.65, 0.60, 0.55])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset)
    hi = ds.image_shape[1]
    factor = hi / args.low
    load_before = os.getloadavg()
    t0 = time.time()
    common = dict(model=args.model, dataset=args.dataset, preset="quick")
    seeds = []
    for seed in args.seeds:
        base = Path(args.runs) / f"{args.model}-seed{seed}"
        r16 = _run(base / f"r{args.low}", seed=seed, epochs=args.epochs16, resolution=args.low, **common)
        ck = load_checkpoint(Path(r16["dir"]) / "last.pt")
        m = models.create(args.model, num_classes=ds.num_classes)
        m.load_state_dict(ck["model"])
        variants = {
            "as_is": m,
            "rescaled": rescale(m, factor, method="moments"),
            "rescaled_order1": rescale(m, factor, order=1, method="moments"),
            "rescaled_order2": rescale(m, factor, order=2, method="moments"),
        }
        at_hi = {}
        for name, mv in variants.items():
            at_hi[name] = _error(mv, ds, hi)
            at_hi[name + "+bn"] = _error(_recalibrated(mv, ds, hi), ds, hi)
        print(
            f"seed {seed}: at {args.low}: {_error(m, ds, args.low):.4f}; at {hi}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in at_hi.items()),
            flush=True,
        )
        runs = {
            "cold": _run(base / "cold", seed=seed, epochs=args.epochs32, **common),
            "warm": _run(
                base / "warm",
                seed=seed,
                epochs=args.epochs32,
                init=str(Path(r16["dir"]) / "last.pt"),
                **common,
            ),
            "warm_rescaled": _run(
                base / "warm_rescaled",
                seed=seed,
                epochs=args.epochs32,
                init=str(Path(r16["dir"]) / "last.pt"),
                init_rescale=True,
                init_rescale_method="moments",
                **common,
            ),
        }
        # the other way (restriction): the cold 32×32 network on 16×16 images
        mc = models.create(args.model, num_classes=ds.num_classes)
        mc.load_state_dict(load_checkpoint(Path(runs["cold"]["dir"]) / "last.pt")["model"])
        restricted = rescale(mc, 1 / factor, method="moments")
        at_lo = {
            "as_is": _error(mc, ds, args.low),
            "rescaled": _error(restricted, ds, args.low),
            "as_is+bn": _error(_recalibrated(mc, ds, args.low), ds, args.low),
            "rescaled+bn": _error(_recalibrated(restricted, ds, args.low), ds, args.low),
        }
        target = runs["cold"]["test_error"]
        to = {
            k: {
                "cold_final": _epochs_to(r["curve"], target),
                **{f"{t:.2f}": _epochs_to(r["curve"], t) for t in args.targets},
            }
            for k, r in runs.items()
        }
        seeds.append(
            {
                "seed": seed,
                "r16": r16,
                "error_at_low": _error(m, ds, args.low),
                "error_at_high": at_hi,
                "cold_at_low": at_lo,
                "runs": runs,
                "cold_final_error": target,
                "epochs_to": to,
            }
        )
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    result = {
        "what": "multiscale resolution: a network trained at low resolution, used and "
        "warm-started at full resolution",
        "model": args.model,
        "dataset": args.dataset,
        "n_train": len(ds.x_train),
        "n_test": len(ds.x_test),
        "low": args.low,
        "high": hi,
        "factor": factor,
        "epochs16": args.epochs16,
        "epochs32": args.epochs32,
        "preset": "quick",
        "seeds": seeds,
        "hardware": describe("cpu"),
        "threads": 1,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_time_total": time.time() - t0,
        "git_commit": commit,
        "command": " ".join(["python", "experiments/multiscale.py", *sys.argv[1:]]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from sdenet.provenance import provenance

    result["provenance"] = provenance(seed=list(args.seeds), command=result.get("command"))
    (out / "multiscale.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, out / "multiscale.png")
    (out / "multiscale.md").write_text(_report(result))
    print(f"wrote {out / 'multiscale.md'}, {out / 'multiscale.json'}, {out / 'multiscale.png'}")
    return 0


def _mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else float("nan")
    return m, sd


def _pct(m, sd):
    return f"{100 * m:.1f}" + (f" ± {100 * sd:.1f}" if sd == sd else "")


def _report(r) -> str:
    S = r["seeds"]
    lo, hi = r["low"], r["high"]
    lines = [
        "# Multiscale resolution: 16×16-trained networks at 32×32",
        "",
        f"`{r['model']}` on `{r['dataset']}` ({r['n_train']} train / {r['n_test']} test images), "
        f"preset `quick` (one-cycle), {len(S)} seed(s): {', '.join(str(s['seed']) for s in S)}. "
        f"Hardware: {r['hardware']}, one thread; load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.1f}' for x in r['load_average_before'])} before and "
        f"{', '.join(f'{x:.1f}' for x in r['load_average_after'])} after (the 2 cores are "
        f"shared with other jobs, so wall times are indicative only). Total "
        f"{r['wall_time_total'] / 60:.1f} min. Command: `{r['command']}` (commit "
        f"{r['git_commit']}).",
        "",
        f"## Test error at {hi}×{hi} of the network trained {r['epochs16']} epochs at {lo}×{lo}",
        "",
        f"| network | test error % | with batch-norm statistics recomputed at {hi}×{hi} % |",
        "|---|---|---|",
        f"| at {lo}×{lo} (its own resolution) | {_pct(*_mean_sd([s['error_at_low'] for s in S]))} | – |",
    ]
    names = {
        "as_is": "applied as it is",
        "rescaled": "`rescale(m, 2)` (every moment)",
        "rescaled_order1": "`rescale(m, 2, order=1)`",
        "rescaled_order2": "`rescale(m, 2, order=2)`",
    }
    for k, label in names.items():
        a = _mean_sd([s["error_at_high"][k] for s in S])
        b = _mean_sd([s["error_at_high"][k + "+bn"] for s in S])
        lines.append(f"| {label} | {_pct(*a)} | {_pct(*b)} |")
    lines.append(
        f"| trained at {hi}×{hi} directly, {r['epochs32']} epochs (`cold`) | "
        f"{_pct(*_mean_sd([s['runs']['cold']['test_error'] for s in S]))} | – |"
    )
    lines += [
        "",
        f"The other way: the `cold` network ({hi}×{hi}, {r['epochs32']} epochs) on {lo}×{lo} "
        "images (restriction, `rescale(m, 0.5)`):",
        "",
        f"| network | test error at {lo}×{lo} % | with batch-norm statistics recomputed % |",
        "|---|---|---|",
    ]
    for k, label in (("as_is", "applied as it is"), ("rescaled", "`rescale(m, 0.5)`")):
        a = _mean_sd([s["cold_at_low"][k] for s in S])
        b = _mean_sd([s["cold_at_low"][k + "+bn"] for s in S])
        lines.append(f"| {label} | {_pct(*a)} | {_pct(*b)} |")
    lines += [
        "",
        f"## Training at {hi}×{hi}: cold against warm starts ({r['epochs32']} epochs each)",
        "",
        "| run | final test error % | epochs to the cold run's final error | "
        + " | ".join(
            f"epochs to {100 * float(t):.0f} %" for t in S[0]["epochs_to"]["cold"] if t != "cold_final"
        )
        + " | wall time s |",
        "|---|---|---|" + "---|" * (len(S[0]["epochs_to"]["cold"]) - 1) + "---|",
    ]
    for k in ("cold", "warm", "warm_rescaled"):
        errs = _mean_sd([s["runs"][k]["test_error"] for s in S])
        keys = list(S[0]["epochs_to"][k])
        cells = []
        for key in keys:
            vals = [s["epochs_to"][k][key] for s in S]
            cells.append("/".join("–" if v is None else str(v) for v in vals))
        wall = _mean_sd([s["runs"][k]["wall_time"] for s in S])
        lines.append(f"| {k} | {_pct(*errs)} | " + " | ".join(cells) + f" | {wall[0]:.0f} |")
    w16 = _mean_sd([s["r16"]["wall_time"] for s in S])[0]
    e32 = _mean_sd([sum(s["runs"]["cold"]["epoch_time"]) / len(s["runs"]["cold"]["epoch_time"]) for s in S])[
        0
    ]
    lines += [
        "",
        f"Epoch counts are per seed (separated by /; – = not reached in {r['epochs32']} epochs). "
        f"A warm start also costs the {lo}×{lo} run: {w16:.0f} s here, about "
        f"{w16 / e32:.1f} epochs of {hi}×{hi} training at this run's {e32:.0f} s per epoch.",
        "",
        "## How little this shows",
        "",
        f"A tiny network (44 k parameters), a 5 k-image subset, {r['epochs16']} + "
        f"{r['epochs32']} epochs of a one-cycle schedule and {len(S)} seed(s): networks this short "
        "of convergence are far from what the paper trained, differences of a few points are "
        "within seed noise, and the epochs-to-target counts are integers from a handful of "
        "epochs. What it does show is the sign of large effects: whether the rescaled network "
        "classifies at all at the new resolution, and whether a warm start is ahead of a cold "
        "one early in training.",
        "",
        "![test error per epoch](multiscale.png)",
        "",
    ]
    return "\n".join(lines)


def _plot(r, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.8))
    colors = {"cold": "tab:gray", "warm": "tab:blue", "warm_rescaled": "tab:red"}
    for s in r["seeds"]:
        for k, c in colors.items():
            curve = s["runs"][k]["curve"]
            start = {"warm": "as_is", "warm_rescaled": "rescaled"}.get(k)
            xs = list(range(1, len(curve) + 1))
            if start:  # epoch 0: the 16×16 network at 32×32 before any training there
                xs, curve = [0] + xs, [s["error_at_high"][start]] + curve
            a.plot(xs, [100 * e for e in curve], "-o", color=c, ms=3, label=k if s is r["seeds"][0] else None)
    a.set_xlabel(f"epoch at {r['high']}×{r['high']} (0: the warm start before training)")
    a.set_ylabel("test error %")
    a.set_title(f"{r['model']}: training at {r['high']}×{r['high']}")
    a.legend()
    a.grid(alpha=0.3)
    keys = ["as_is", "rescaled", "rescaled_order1", "rescaled_order2"]
    labels = ["as is", "rescale", "order=1", "order=2"]
    xs = range(len(keys))
    for j, (suffix, c, lab) in enumerate(
        (("", "tab:blue", "kept BN stats"), ("+bn", "tab:orange", f"BN stats at {r['high']}"))
    ):
        vals = [100 * sum(s["error_at_high"][k + suffix] for s in r["seeds"]) / len(r["seeds"]) for k in keys]
        b.bar([x + 0.38 * j for x in xs], vals, width=0.38, color=c, label=lab)
    lo_err = 100 * sum(s["error_at_low"] for s in r["seeds"]) / len(r["seeds"])
    cold = 100 * sum(s["runs"]["cold"]["test_error"] for s in r["seeds"]) / len(r["seeds"])
    b.axhline(lo_err, color="k", ls="--", lw=1, label=f"at {r['low']}×{r['low']}")
    b.axhline(cold, color="tab:gray", ls=":", lw=1.5, label=f"trained at {r['high']} (cold)")
    b.axhline(90, color="tab:red", ls="-", lw=0.8, alpha=0.5, label="chance")
    b.set_xticks([x + 0.19 for x in xs])
    b.set_xticklabels(labels)
    b.set_ylabel(f"test error % at {r['high']}×{r['high']}")
    b.set_title(f"{r['low']}×{r['low']}-trained network at {r['high']}×{r['high']}")
    b.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    b.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
