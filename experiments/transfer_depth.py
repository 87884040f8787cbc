"""Depth transfer (issue 19, item 2): one network at several step sizes, trained with and without
depth-robust training (``--random-depth``).

For each family (ResNet, LM-ResNet, Hamiltonian, stochastic depth — the tiny variants refined
×2 so that every stage takes an even number of steps and can be coarsened ×½), each seed and
each condition (``plain``: ordinary training; ``robust``: ``random_depth=0.5,1,2``, each batch at
Δt, Δt/2 or 2Δt with the same weights), the script trains the network on the CIFAR-10 subset,
then evaluates it at depth factors 0.5, 1, 2, 4 (``sdenet.train.depth.evaluate_depths``: the
stages at F·N steps of Δt/F — refine(net, F) for F ≥ 1, coarsen(net, 1/F) by injection for
F = ½). Reported per family and condition: test accuracy at each factor, its ratio to the
accuracy at the trained depth (mean ± sd over seeds), and the targets of the issue: with the
option, refined ×2 ≥ 0.95× and coarsened ×½ ≥ 0.9× of the trained accuracy.

Resumable: every run lives in ``--runs/<family>-<condition>-s<seed>/`` (a finished run with its
``depths.json`` is skipped, an interrupted one resumed exactly); the results are rewritten after
every run: ``--out/transfer_depth.json``, ``.md`` and ``.png``.

    python experiments/transfer_depth.py --threads 1                 # the recorded run
    python experiments/transfer_depth.py --quick --threads 1         # smoke test (minutes)
    python experiments/transfer_depth.py --scale full --device cuda  # full-size models (GPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._common import (  # noqa: E402
    load_average,
    provenance,
    rel,
    repo_path,
    rerender,
    run_training,
    write_json,
    write_results,
)

#: family -> (model, overrides) at the two scales
FAMILIES = {
    "tiny": {
        "resnet": ("tiny_resnet", {"refine": 2}),
        "lm": ("tiny_lm_resnet", {"refine": 2}),
        "hamiltonian": ("tiny_hamiltonian", {"refine": 2}),
        "sd": ("tiny_sd_resnet", {"refine": 2}),
    },
    "full": {  # stem width 8: every stage is a transition + an even number of steps
        "resnet": ("preact_resnet56", {"stem_width": 8}),
        "lm": ("lm_resnet56", {"stem_width": 8}),
        "hamiltonian": ("hamiltonian74", {"refine": 2}),
        "sd": ("sd_resnet56", {"stem_width": 8}),
    },
}
CONDITIONS = ("plain", "robust")


def _mean_sd(v):
    v = [x for x in v if x is not None]
    if not v:
        return None, None
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else None)  # no sd from one value


def summarise(runs: list[dict], factors: list[float]) -> list[dict]:
    out = []
    for fam in dict.fromkeys(r["family"] for r in runs):
        for cond in CONDITIONS:
            rs = [r for r in runs if r["family"] == fam and r["condition"] == cond]
            if not rs:
                continue
            row = {
                "family": fam,
                "condition": cond,
                "model": rs[0]["model"],
                "seeds": [r["seed"] for r in rs],
            }
            for f in factors:
                acc = [r["accuracy"].get(str(f)) for r in rs]
                ratio = [r["ratio"].get(str(f)) for r in rs]
                row[f"acc_{f:g}"] = _mean_sd(acc)
                row[f"ratio_{f:g}"] = _mean_sd(ratio)
            r2, rh = row.get("ratio_2", (None,))[0], row.get("ratio_0.5", (None,))[0]
            row["target_refined"] = None if r2 is None else r2 >= 0.95
            row["target_coarsened"] = None if rh is None else rh >= 0.9
            out.append(row)
    return out


def _fmt(ms, pct=False):
    m, s = ms
    if m is None:
        return "–"
    if s is None:  # one seed
        return f"{100 * m:.1f}" if pct else f"{m:.3f}"
    return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


def render(result: dict) -> str:
    p, a = result["provenance"], result["settings"]
    factors = a["eval_factors"]
    lines = [
        "# Depth transfer: one network at several step sizes (issue 19, item 2)",
        "",
        f"Command: `{p['command']}` (commit {p['commit']}); torch {p['torch']}, {p['threads']} thread(s); "
        f"hardware {p['hardware']}; load average at the start {p['load_average_start']}, now "
        f"{result.get('load_average_end')}. Data {a['data']}; {a['epochs']} epochs, preset {a['preset']}, "
        f"seeds {a['seeds']}; `robust` = `random_depth={a['train_factors']}` (each batch at one factor, "
        f"drawn from the seed and step), `plain` = ordinary training. Evaluation at depth factors "
        f"{factors} with the network's own weights (refine ×F / coarsen ×1/F by injection; drift only). "
        f"{len(result['runs'])} run(s) finished.",
        "",
        "Ratio = test accuracy at the factor / test accuracy at the trained depth (factor 1), "
        "mean ± sd over seeds (a single value where one seed has finished). Targets with the option: refined ×2 ≥ 0.95, coarsened ×½ ≥ 0.9.",
        "",
        "| family | model | condition | acc ×1 % | "
        + " | ".join(f"ratio ×{f:g}" for f in factors if f != 1)
        + " | ×2 ≥ 0.95 | ×½ ≥ 0.9 |",
        "|---|---|---|---|" + "---|" * (len(factors) - 1) + "---|---|",
    ]
    yes = {True: "met", False: "**missed**", None: "–"}
    for s in result["summary"]:
        lines.append(
            f"| {s['family']} | {s['model']} | {s['condition']} | {_fmt(s['acc_1'], True)} | "
            + " | ".join(_fmt(s[f"ratio_{f:g}"]) for f in factors if f != 1)
            + f" | {yes[s['target_refined']] if s['condition'] == 'robust' else '–'} | "
            f"{yes[s['target_coarsened']] if s['condition'] == 'robust' else '–'} |"
        )
    lines += [
        "",
        "Per run (test accuracy % at each factor; steps = total stage steps; compute relative to ×1):",
        "",
        "| family | condition | seed | " + " | ".join(f"×{f:g}" for f in factors) + " | train wall s |",
        "|---|---|---|" + "---|" * len(factors) + "---|",
    ]
    for r in result["runs"]:
        cells = []
        for f in factors:
            acc = r["accuracy"].get(str(f))
            cells.append(
                "–"
                if acc is None
                else f"{100 * acc:.1f} ({r['steps'][str(f)]} st, {r['compute'][str(f)]:.2f}×)"
            )
        lines.append(
            f"| {r['family']} | {r['condition']} | {r['seed']} | "
            + " | ".join(cells)
            + f" | {r['wall_time']:.0f} |"
        )
    lines += ["", f"![accuracy against depth and compute]({a['name']}.png)", ""]
    return "\n".join(lines)


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(dict.fromkeys(r["family"] for r in result["runs"]))
    factors = result["settings"]["eval_factors"]
    fig, axes = plt.subplots(2, max(len(fams), 1), figsize=(max(3.4 * len(fams), 6.0), 6.2), squeeze=False)
    for j, fam in enumerate(fams):
        for cond, style in (
            ("plain", dict(color="C0", ls="--", marker="o")),
            ("robust", dict(color="C3", ls="-", marker="s")),
        ):
            rs = [r for r in result["runs"] if r["family"] == fam and r["condition"] == cond]
            for k, r in enumerate(rs):
                fs = [f for f in factors if r["accuracy"].get(str(f)) is not None]
                acc = [100 * r["accuracy"][str(f)] for f in fs]
                comp = [r["compute"][str(f)] for f in fs]
                lab = cond if k == 0 else None
                axes[0][j].plot(fs, acc, label=lab, alpha=0.8, **style)
                axes[1][j].plot(comp, acc, label=lab, alpha=0.8, **style)
        model = next(r["model"] for r in result["runs"] if r["family"] == fam)
        axes[0][j].set_title(f"{fam} ({model})", fontsize=9)
        for i in range(2):
            axes[i][j].set_xscale("log", base=2)
            axes[i][j].grid(alpha=0.3)
            axes[i][j].legend(fontsize=7)
        axes[0][j].axvline(1, color="grey", lw=0.8)
        axes[0][j].set_xlabel("depth factor F (steps ×F, Δt/F)")
        axes[1][j].set_xlabel("relative compute")
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[1][0].set_ylabel("test accuracy (%)")
    fig.suptitle(
        "plain vs depth-robust training, evaluated at several depths (one line per seed)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def one_run(a, fam: str, cond: str, seed: int, runs_dir: Path) -> dict:
    from sdenet.train.depth import evaluate_depths

    model, overrides = FAMILIES[a.scale][fam]
    out = runs_dir / f"{fam}-{cond}-s{seed}"
    done = out / "depths.json"
    if done.exists():
        print(f"  reusing {rel(out)}", flush=True)
        return json.loads(done.read_text())
    t0 = time.time()
    kw = dict(
        model=model,
        dataset=a.data_path,
        epochs=a.epochs,
        preset=a.preset,
        seed=seed,
        device=a.device,
        overrides=dict(overrides),
        limit_train=a.limit_train,
        limit_test=a.limit_test,
    )
    if cond == "robust":
        kw["random_depth"] = a.train_factors
    out.parent.mkdir(parents=True, exist_ok=True)
    final = run_training(out, **kw)
    ev = evaluate_depths(out / "last.pt", a.eval_factors, samples=0, device=a.device, limit_test=a.limit_test)
    rows = {f"{r['depth']:g}": r for r in ev["depths"]}
    base = 1 - rows["1"]["test_error"]
    rec = {
        "family": fam,
        "condition": cond,
        "seed": seed,
        "model": model,
        "overrides": overrides,
        "run": rel(out),
        "wall_time": final.get("wall_time"),
        "test_error_trained": final["test_error"],
        "accuracy": {k: 1 - r["test_error"] for k, r in rows.items()},
        "accuracy_se": {k: r["test_error_se"] for k, r in rows.items()},
        "ratio": {k: (1 - r["test_error"]) / base for k, r in rows.items()},
        "steps": {k: r["steps"] for k, r in rows.items()},
        "compute": {k: r["relative_compute"] for k, r in rows.items()},
        "n_test": ev["n_test"],
        "finished": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "seconds_this_invocation": round(time.time() - t0, 1),
    }
    write_json(done, rec)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data",
        default="../shared/data/cifar10-subset.npz",
        help="dataset: a .npz (relative paths from the repository root), cifar10, ...",
    )
    ap.add_argument("--families", nargs="+", default=list(FAMILIES["tiny"]), choices=list(FAMILIES["tiny"]))
    ap.add_argument("--scale", choices=list(FAMILIES), default="tiny")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--epochs", type=int, default=None, help="default 10 (2 with --quick)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--train-factors", default="0.5,1,2")
    ap.add_argument("--eval-factors", default="0.5,1,2,4")
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default="runs/transfer_depth", help="run folders (relative to the repository)")
    ap.add_argument(
        "--out", default="experiments/results", help="results folder (relative to the repository)"
    )
    ap.add_argument("--name", default="transfer_depth", help="stem of the result files")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2 epochs (unless --epochs) on 512 images, one seed"
    )
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md and .png next to a recorded JSON")
    a = ap.parse_args(argv)
    if a.render:
        return rerender(
            a.render,
            render,
            figure,
            lambda result: summarise(result["runs"], result["settings"]["eval_factors"]),
        )
    import torch

    from sdenet.nn.depth import parse_depth_factors

    torch.set_num_threads(a.threads)
    if a.quick:
        a.epochs, a.seeds = a.epochs or 2, a.seeds[:1]
        a.limit_train, a.limit_test = a.limit_train or 512, a.limit_test or 256
        if a.runs == "runs/transfer_depth":
            a.runs = "runs/transfer_depth-quick"
        if a.name == "transfer_depth":
            a.name = "transfer_depth-quick"
    a.eval_factors = [float(f) for f in parse_depth_factors(a.eval_factors)]
    a.eval_factors = [int(f) if f.is_integer() else f for f in a.eval_factors]
    a.epochs = a.epochs or 10
    a.data_path = a.data if not a.data.endswith(".npz") else str(repo_path(a.data))
    runs_dir, out_dir = repo_path(a.runs), repo_path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance(a.threads, a.seeds)
    settings = {k: v for k, v in vars(a).items() if k not in ("data_path",)}
    runs = []
    todo = [(s, f, c) for s in a.seeds for f in a.families for c in CONDITIONS]
    t_all = time.time()
    for i, (seed, fam, cond) in enumerate(todo, 1):
        t0 = time.time()
        print(
            f"[{time.strftime('%H:%M:%S')}] {i}/{len(todo)} {fam} {cond} seed {seed} (load {load_average()})",
            flush=True,
        )
        rec = one_run(a, fam, cond, seed, runs_dir)
        runs.append(rec)
        acc = "  ".join(f"x{k}: {100 * v:.1f}%" for k, v in rec["accuracy"].items())
        print(f"    {acc}  ({time.time() - t0:.0f} s; {time.time() - t_all:.0f} s so far)", flush=True)
        result = {
            "provenance": prov,
            "settings": settings,
            "runs": runs,
            "summary": summarise(runs, a.eval_factors),
            "load_average_end": load_average(),
        }
        write_results(out_dir / a.name, result, render, figure)
    print((out_dir / f"{a.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
