"""Why a family does or does not keep its accuracy at another depth (issue 19, item 2).

Reads the trained networks of ``experiments/transfer_depth.py`` (``--runs``, default
``runs/transfer_depth``) and measures, per run, on the first ``--images`` test images:

* **step size**: every block's update relative to the state it updates, ``‖Δt f(x)‖ / ‖x‖``
  (median and largest over the blocks of the network at its trained depth). Refinement and
  coarsening at fixed T treat the network as a discretisation of one flow; that reading needs
  each step to be a small change of the state.
* **re-staggered Hamiltonian** (Hamiltonian runs only): Chang et al.'s step read on a staggered
  grid (``Z_n`` standing for ``Z(t_{n+1/2})``, :class:`sdenet.schemes.Hamiltonian`) means a
  stage refined to ``Δt' = Δt/F`` receives ``Z`` half a coarse step late. Shifting ``Z`` by
  ``−(Δt − Δt')/2 · f2(Y)`` on entry and back on exit is the consistent change of step size for
  that reading; the test accuracy at ×0.5 and ×2 with and without the shift tells whether the
  staggering is what breaks the Hamiltonian network's transfer. (The shift is applied here by
  wrapping the depth views; it is not a library option.)

Writes ``--out/depth_diagnostics.{json,md,png}``.

    python experiments/depth_diagnostics.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._common import provenance, rel, repo_path, rerender, write_results  # noqa: E402


def _images(data: str, n: int):
    """The first ``n`` test images, normalised with the training set's channel statistics (as
    the training normalises them)."""
    import torch

    from sdenet.train.data import load_dataset

    spec = str(repo_path(data)) if data.endswith(".npz") else data
    ds = load_dataset(spec)
    x = torch.as_tensor(ds.x_test[:n]).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(ds.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def step_sizes(net, x) -> list[float]:
    import torch

    from sdenet.nn.stage import Stage, Transition

    ratios: list[float] = []
    hooks = []
    for m in net.modules():
        if isinstance(m, Stage) and not isinstance(m, Transition):
            for name in ("blocks", "blocks1", "blocks2"):
                for blk in getattr(m.field, name, None) or []:

                    def hook(mod, inp, out, dt=float(m.dt)):
                        ratios.append(dt * float(out.norm() / inp[0].norm()))

                    hooks.append(blk.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return ratios


def restaggered(build_view):
    """A depth view builder that shifts a Hamiltonian stage's ``Z`` for its new step size."""
    import torch

    from sdenet.schemes.invertible import Hamiltonian

    def build(stage, f):
        view = build_view(stage, f)
        if not all(isinstance(s, Hamiltonian) for s in stage.schemes):
            return view
        h, hp, n = float(stage.dt), float(view.dt), stage.steps
        forward = view.forward

        def shifted(x, prev=None):
            c = (h - hp) / 2
            y, z = x.chunk(2, dim=1)
            z = z - c * stage.field.f2(stage.t0, y)
            y, z = forward(torch.cat([y, z], 1), prev).chunk(2, dim=1)
            z = z + c * stage.field.f2(stage.t0 + (n - 1) * h, y)
            return torch.cat([y, z], 1)

        view.forward = shifted
        return view

    return build


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs/transfer_depth")
    ap.add_argument("--data", default="../shared/data/cifar10-subset.npz")
    ap.add_argument("--images", type=int, default=256, help="test images for the step sizes")
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument(
        "--recalibrate",
        type=int,
        default=2048,
        metavar="N",
        help="also evaluate every depth with batch-norm statistics recomputed there from N "
        "training images (evaluate(recalibrate_bn=N)); 0: not",
    )
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md and .png next to a recorded JSON")
    a = ap.parse_args(argv)
    if a.render:
        return rerender(a.render, render, figure)
    import torch

    import sdenet.models as M
    import sdenet.nn.depth as D
    from sdenet.train import checkpoint as ck
    from sdenet.train.depth import evaluate_depths

    torch.set_num_threads(a.threads)
    runs_dir = repo_path(a.runs)
    x = _images(a.data, a.images).to(a.device)
    rows = []
    for run in sorted(p for p in runs_dir.iterdir() if (p / "depths.json").is_file()):
        c = ck.load_checkpoint(run / "last.pt")
        rc = c["config"]
        net = M.create(
            rc["model"], num_classes=rc.get("num_classes") or 10, **(rc.get("model_overrides") or {})
        )
        net.load_state_dict(c["model"])
        net.to(a.device).eval()
        r = step_sizes(net, x)
        family, condition, seed = run.name.rsplit("-", 2)
        row = {
            "run": rel(run),
            "family": family,
            "condition": condition,
            "seed": int(seed.lstrip("s")),
            "model": rc["model"],
            "update_over_state_median": statistics.median(r),
            "update_over_state_max": max(r),
        }
        if a.recalibrate:  # every depth with its own batch-norm statistics
            ev = evaluate_depths(
                run / "last.pt", "0.5,1,2,4", samples=0, device=a.device, recalibrate_bn=a.recalibrate
            )
            acc_r = {f"{d['depth']:g}": 1 - d["test_error"] for d in ev["depths"]}
            plain_acc = json.loads((run / "depths.json").read_text())["accuracy"]
            row["accuracy_plain_bn"] = plain_acc
            row["accuracy_recalibrated_bn"] = acc_r
            row["ratio_plain_bn"] = {f: plain_acc[f] / plain_acc["1"] for f in plain_acc}
            row["ratio_recalibrated_bn"] = {f: acc_r[f] / acc_r["1"] for f in acc_r}
        if family == "hamiltonian":
            plain = D._build_view
            acc = {}
            for mode in ("as trained", "re-staggered"):
                D._build_view = plain if mode == "as trained" else restaggered(plain)
                D._VIEWS.clear()
                try:
                    ev = evaluate_depths(run / "last.pt", "0.5,1,2", samples=0, device=a.device)
                finally:
                    D._build_view = plain
                    D._VIEWS.clear()
                acc[mode] = {f"{d['depth']:g}": 1 - d["test_error"] for d in ev["depths"]}
            row["accuracy"] = acc
        rows.append(row)
        print(
            f"{run.name}: |dt f(x)|/|x| median {row['update_over_state_median']:.2f}, "
            f"max {row['update_over_state_max']:.2f}" + (f"; {row['accuracy']}" if "accuracy" in row else ""),
            flush=True,
        )
    result = {"provenance": provenance(a.threads), "settings": vars(a), "runs": rows}
    out = repo_path(a.out)
    write_results(out / "depth_diagnostics", result, render, figure)
    print((out / "depth_diagnostics.md").read_text())
    return 0


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["runs"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["family"], r["condition"]), []).append(r)
    keys = sorted(groups)
    ham = [r for r in rows if "accuracy" in r]
    rec = [r for r in rows if "ratio_recalibrated_bn" in r]
    ncols = 1 + bool(ham) + bool(rec)
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.2), squeeze=False)
    ax = axes[0][0]
    colors = {"plain": "#0072B2", "robust": "#D55E00"}
    for i, k in enumerate(keys):
        rs = groups[k]
        for j, what in enumerate(("update_over_state_median", "update_over_state_max")):
            v = [r[what] for r in rs]
            m = statistics.mean(v)
            se = statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0.0
            ax.bar(
                i + (j - 0.5) * 0.38,
                m,
                0.36,
                yerr=se,
                color=colors.get(k[1], "grey"),
                alpha=1.0 if j == 0 else 0.45,
                capsize=2,
                label=(f"{k[1]}: {'median' if j == 0 else 'largest'} block") if i < 2 else None,
            )
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{f}\n{c}" for f, c in keys], fontsize=7, rotation=30)
    ax.set_ylabel("‖Δt f(x)‖ / ‖x‖")
    ax.set_title("How large a step is, per block (mean over seeds ± s.e.)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    if ham:
        ax = axes[0][1]
        factors = ["0.5", "1", "2"]
        for cond, color in colors.items():
            rs = [r for r in ham if r["condition"] == cond]
            if not rs:
                continue
            for mode, style in (("as trained", "-o"), ("re-staggered", "--s")):
                ys = [statistics.mean(100 * r["accuracy"][mode][f] for r in rs) for f in factors]
                ax.plot([0.5, 1, 2], ys, style, color=color, label=f"{cond}, {mode}")
        ax.set_xscale("log", base=2)
        ax.set_xticks([0.5, 1, 2])
        ax.set_xticklabels(["×½", "×1", "×2"])
        ax.set_xlabel("depth factor")
        ax.set_ylabel("test accuracy % (mean over seeds)")
        ax.set_title("Hamiltonian network: Z re-staggered for the new step", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if rec:
        ax = axes[0][ncols - 1]
        rk = sorted({(r["family"], r["condition"]) for r in rec})
        for i, k in enumerate(rk):
            rs = [r for r in rec if (r["family"], r["condition"]) == k]
            for j, (what, label) in enumerate(
                (("ratio_plain_bn", "statistics as trained"), ("ratio_recalibrated_bn", "recomputed at ×½"))
            ):
                v = [r[what]["0.5"] for r in rs]
                se = statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0.0
                ax.bar(
                    i + (j - 0.5) * 0.38,
                    statistics.mean(v),
                    0.36,
                    yerr=se,
                    capsize=2,
                    color=colors.get(k[1], "grey"),
                    alpha=0.45 if j == 0 else 1.0,
                    label=f"{k[1]}: {label}" if i < 2 else None,
                )
        ax.axhline(0.9, color="grey", ls="--", lw=1, label="target 0.9")
        ax.set_xticks(range(len(rk)))
        ax.set_xticklabels([f"{f}\n{c}" for f, c in rk], fontsize=7, rotation=30)
        ax.set_ylabel("accuracy ×½ / accuracy ×1")
        ax.set_title("Coarsened ×½: batch-norm statistics recomputed (± s.e.)", fontsize=9)
        ax.legend(fontsize=6)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(result: dict) -> str:
    p, rows = result["provenance"], result["runs"]
    lines = [
        "# Depth transfer: why a family keeps its accuracy or not",
        "",
        f"Command: `{p['command']}` (commit {p['commit']}); torch {p['torch']}, {p['threads']} thread(s); "
        f"hardware {p['hardware']}. The networks of `experiments/transfer_depth.py`; "
        f"{result['settings']['images']} test images.",
        "",
        "## Step size: ‖Δt f(x)‖ / ‖x‖ per block, at the trained depth",
        "",
        "| family | condition | runs | median (mean over seeds) | largest (mean over seeds) |",
        "|---|---|---|---|---|",
    ]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["family"], r["condition"]), []).append(r)
    for (fam, cond), rs in groups.items():
        med = statistics.mean(r["update_over_state_median"] for r in rs)
        mx = statistics.mean(r["update_over_state_max"] for r in rs)
        lines.append(f"| {fam} | {cond} | {len(rs)} | {med:.2f} | {mx:.2f} |")
    rec = [r for r in rows if "ratio_recalibrated_bn" in r]
    if rec:
        lines += [
            "",
            f"## Batch-norm statistics recomputed at each depth ({result['settings']['recalibrate']} "
            "training images)",
            "",
            "A network trained at several depths (or at one) keeps one set of batch-norm running "
            "statistics; `sdenet eval --depths ... --recalibrate-bn N` recomputes them at the depth it "
            "runs at, from N unaugmented training images (no labels, no gradient). Ratio to ×1 (each "
            "column's own ×1), mean ± sd over seeds; in brackets without recalibration. The last two "
            "columns divide by the accuracy at the trained depth as trained (no recalibration):",
            "",
            "| family | condition | acc ×1 % | ×½ | ×2 | ×4 | ×½ / ×1 as trained (per seed) | ×2 / ×1 as trained (per seed) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rgroups: dict = {}
        for r in rec:
            rgroups.setdefault((r["family"], r["condition"]), []).append(r)

        def ms(v):
            return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

        for (fam, cond), rs in sorted(rgroups.items()):
            acc1 = [100 * r["accuracy_recalibrated_bn"]["1"] for r in rs]
            cells = [
                f"{ms([r['ratio_recalibrated_bn'][f] for r in rs])} "
                f"({ms([r['ratio_plain_bn'][f] for r in rs])})"
                for f in ("0.5", "2", "4")
            ]
            # against the accuracy at the trained depth with the statistics it was trained with
            to_trained = [
                f"{statistics.mean(v):.2f} ({', '.join(f'{x:.2f}' for x in v)})"
                for v in (
                    [r["accuracy_recalibrated_bn"][f] / r["accuracy_plain_bn"]["1"] for r in rs]
                    for f in ("0.5", "2")
                )
            ]
            lines.append(
                f"| {fam} | {cond} | {statistics.mean(acc1):.1f} "
                f"({statistics.mean(100 * r['accuracy_plain_bn']['1'] for r in rs):.1f}) | "
                + " | ".join(cells + to_trained)
                + " |"
            )
    ham = [r for r in rows if "accuracy" in r]
    if ham:
        lines += [
            "",
            "## Hamiltonian: test accuracy % with Z re-staggered for the new step",
            "",
            "| condition | seed | ×0.5 as trained | ×0.5 re-staggered | ×1 | ×2 as trained | ×2 re-staggered |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in ham:
            a, b = r["accuracy"]["as trained"], r["accuracy"]["re-staggered"]
            lines.append(
                f"| {r['condition']} | {r['seed']} | {100 * a['0.5']:.1f} | {100 * b['0.5']:.1f} | "
                f"{100 * a['1']:.1f} | {100 * a['2']:.1f} | {100 * b['2']:.1f} |"
            )
    lines += ["", "![step sizes and the re-staggered Hamiltonian](depth_diagnostics.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
