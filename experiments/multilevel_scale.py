"""Multilevel against direct training at a meaningful scale (issue 19, item 3).

On the whole CIFAR-10 subset (5,085 training / 1,017 test images), one architecture — by
default ``tiny_lm_resnet`` refined to 8/4/4 steps per stage (``refine=4``) — trained three ways,
3 seeds each, interleaved (the order rotates from seed to seed):

* ``direct``:              ``train(model, epochs=E)`` at the final depth from the start;
* ``multilevel``:          ``train_multilevel(L=2, model, epochs=E)`` — ``E`` split over 3 cycles
  at 2/1/1, 4/2/2 and 8/4/4 steps (same T), refined ×2 between cycles, the preset's schedule
  restarted in every cycle (``sdenet train --multilevel 2``);
* ``multilevel-continue``: the same cycles under one schedule over all ``E`` epochs
  (``--multilevel-schedule continue``);
* ``multilevel-continue-long`` (with ``--methods``): the same with ``--long-epochs`` epochs, more
  than direct's, to see the time multilevel needs to reach the direct accuracy.

Time axis: the cumulative CPU time of the run's epochs (``epoch_cpu_time`` of ``metrics.jsonl``:
training and test evaluation of each epoch, one thread, so it does not grow when other jobs share
the cores; ``--clock wall`` uses ``epoch_time`` instead; set-up and the prolongations between
cycles, recorded separately, are small). "Time to the same accuracy": the target is the *lowest
final* test accuracy of the direct runs (so every direct run reaches it); for every run, the time
until its test accuracy first reaches the target. Reported: mean ± sd over seeds of that time for
every method, each multilevel variant's ratio to direct (seed by seed and of the means), and the
final accuracies. Target of the issue: multilevel ≤ 0.6× the direct time at equal accuracy; the
network must reach ≥ 55 %.

Resumable: every run lives in ``--runs/<method>-s<seed>/``; a finished run is reused, an
interrupted one resumed (``resume_multilevel`` / ``train(resume=)``); results are rewritten after
every run: ``--out/multilevel_scale.json``, ``.md``, ``.png``.

    python experiments/multilevel_scale.py --threads 1             # the recorded run
    python experiments/multilevel_scale.py --quick --threads 1     # smoke test
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
    curve,
    load_average,
    provenance,
    rel,
    repo_path,
    rerender,
    run_training,
    write_results,
)

METHODS = ("direct", "multilevel", "multilevel-continue", "multilevel-continue-long")
VARIANTS = METHODS[1:]  # the multilevel ones
SCHEDULE = {
    "multilevel": "restart",
    "multilevel-continue": "continue",
    "multilevel-continue-long": "continue",
}
DEFAULT_METHODS = METHODS[:3]  # the long arm (--long-epochs) on request
COLORS = {  # Okabe–Ito
    "direct": "#0072B2",
    "multilevel": "#D55E00",
    "multilevel-continue": "#009E73",
    "multilevel-continue-long": "#CC79A7",
}


def _mean_sd(v):
    v = [x for x in v if x is not None]
    if not v:
        return None, None
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else None)  # no sd from one value


def one_run(a, method: str, seed: int, runs_dir: Path) -> dict:
    from sdenet.train.multilevel import is_multilevel, resume_multilevel, train_multilevel

    out = runs_dir / f"{method}-s{seed}"
    kw = dict(
        model=a.model,
        dataset=a.data_path,
        epochs=a.long_epochs if method.endswith("-long") else a.epochs,
        preset=a.preset,
        seed=seed,
        device=a.device,
        overrides={**a.overrides, "refine": a.refine},
        limit_train=a.limit_train,
        limit_test=a.limit_test,
    )
    t0 = time.time()
    if method == "direct":
        final = run_training(out, **kw)
    else:
        if (out / "metrics.json").exists():
            print(f"  reusing {rel(out)}", flush=True)
        elif is_multilevel(out):
            print(f"  resuming {rel(out)}", flush=True)
            resume_multilevel(out, device=a.device, quiet=True)
        else:
            train_multilevel(a.levels, out=str(out), quiet=True, schedule=SCHEDULE[method], **kw)
        final = json.loads((out / "metrics.json").read_text())
    c = curve(out)
    cum, wall, t, w = [], [], 0.0, 0.0
    key = "epoch_cpu_time" if a.clock == "cpu" else "epoch_time"
    for m in c:
        if key not in m:
            raise SystemExit(f"{rel(out)}: its epochs record no {key} (a run of an older sdenet); remove it")
        t += float(m[key])
        w += float(m["epoch_time"])
        cum.append(t)
        wall.append(w)
    plan = json.loads((out / "multilevel.json").read_text()) if method != "direct" else None
    return {
        "method": method,
        "seed": seed,
        "run": rel(out),
        "final_accuracy": 1 - final["test_error"],
        "wall_time": final.get("wall_time"),
        "accuracy": [1 - m["test_error"] for m in c],
        "time": cum,
        "clock": a.clock,
        "wall": wall,
        "epoch_time": [m["epoch_time"] for m in c],
        "epoch_cpu_time": [m.get("epoch_cpu_time") for m in c],
        "cycle": [m.get("cycle") for m in c],
        "prolong_seconds": (plan or {}).get("prolong_seconds"),
        "trained_at_commit": str(json.loads((out / "config.json").read_text()).get("git_commit"))[:12],
        "seconds_this_invocation": round(time.time() - t0, 1),
        "load_after": load_average(),
    }


def time_to(run: dict, target: float):
    for acc, t in zip(run["accuracy"], run["time"]):
        if acc >= target - 1e-12:
            return t
    return None


def summarise(runs: list[dict]) -> dict:
    direct = [r for r in runs if r["method"] == "direct"]
    s: dict = {f"n_{m}": sum(r["method"] == m for r in runs) for m in METHODS}
    if not direct:
        return s
    target = min(r["final_accuracy"] for r in direct)
    s["target_accuracy"] = target
    for name in METHODS:
        rs = [r for r in runs if r["method"] == name]
        tt = [time_to(r, target) for r in rs]
        s[f"{name}_time_to_target"] = tt
        s[f"{name}_time_to_target_mean_sd"] = _mean_sd(tt)
        s[f"{name}_reached"] = sum(t is not None for t in tt)
        s[f"{name}_final_accuracy_mean_sd"] = _mean_sd([r["final_accuracy"] for r in rs])
        s[f"{name}_total_time_mean_sd"] = _mean_sd([r["time"][-1] for r in rs])
    s["reaches_55"] = s["direct_final_accuracy_mean_sd"][0] >= 0.55
    by_seed = {r["seed"]: r for r in direct}
    s["variants"] = {}
    for name in VARIANTS:
        ml = [r for r in runs if r["method"] == name]
        if not ml:
            continue
        v: dict = {}
        ratios = []
        for r in ml:
            d = by_seed.get(r["seed"])
            tm, td = time_to(r, target), (time_to(d, target) if d else None)
            ratios.append(None if tm is None or td is None else tm / td)
        v["ratio_per_seed"] = ratios
        # the other way round: the accuracy multilevel ends at, and the time direct needs for it
        matched = []
        for r in ml:
            d = by_seed.get(r["seed"])
            if d is None:
                continue
            acc = r["final_accuracy"]
            tm, td = time_to(r, acc), time_to(d, acc)
            matched.append(
                {
                    "seed": r["seed"],
                    "accuracy": acc,
                    "multilevel_time": tm,
                    "direct_time": td,
                    "ratio": None if td is None else tm / td,
                }
            )
        v["at_multilevel_accuracy"] = matched
        dm, mm = s["direct_time_to_target_mean_sd"][0], s[f"{name}_time_to_target_mean_sd"][0]
        reached = s[f"{name}_reached"]
        v["ratio_of_means"] = None if (dm is None or mm is None or reached < len(ml)) else mm / dm
        v["total_time_ratio"] = s[f"{name}_total_time_mean_sd"][0] / s["direct_total_time_mean_sd"][0]
        if reached < len(ml):
            v["target_met"] = False  # a run never reached the accuracy: no time at equal accuracy
        else:
            v["target_met"] = None if v["ratio_of_means"] is None else v["ratio_of_means"] <= 0.6
        s["variants"][name] = v
    return s


def _f(ms, pct=False, unit=""):
    m, sd = ms
    if m is None:
        return "–"
    if sd is None:  # one run
        return f"{100 * m:.1f} %" if pct else f"{m:.0f}{unit}"
    return f"{100 * m:.1f} ± {100 * sd:.1f} %" if pct else f"{m:.0f} ± {sd:.0f}{unit}"


def _epoch_times(run: dict) -> list:
    """The run's per-epoch times on its clock."""
    t = run["time"]
    return [b - a for a, b in zip([0.0, *t[:-1]], t)]


def render(result: dict) -> str:
    p, a, s = result["provenance"], result["settings"], result["summary"]
    clock = a.get("clock", "wall")
    unit = "CPU s" if clock == "cpu" else "s"
    lines = [
        "# Multilevel against direct training on the CIFAR-10 subset (issue 19, item 3)",
        "",
        f"Command: `{p['command']}` (commit {p['commit']}); torch {p['torch']}, {p['threads']} thread(s); "
        f"hardware {p['hardware']}; load average at the start {p['load_average_start']}, at the last "
        f"update {result.get('load_average_end')}. Model `{a['model']}` with `refine={a['refine']}`"
        f"{' and overrides ' + json.dumps(a['overrides']) if a.get('overrides') else ''} "
        f"(final network), data {a['data']}, {a['epochs']} epochs, preset {a['preset']}, multilevel "
        f"L = {a['levels']} ({a['levels'] + 1} cycles; `multilevel` restarts the preset's schedule in "
        f"every cycle, `multilevel-continue` runs one schedule over all of them"
        + (
            f", `multilevel-continue-long` the same over {a.get('long_epochs')} epochs"
            if "multilevel-continue-long" in a.get("methods", [])
            else ""
        )
        + f"), seeds {a['seeds']}, "
        f"methods interleaved. Time = cumulative "
        + (
            "CPU time of the epochs (training + test evaluation of each epoch, one thread: it does not "
            "grow when other jobs share the cores; wall times are in the JSON)."
            if clock == "cpu"
            else "wall time of the epochs (training + test evaluation of each epoch)."
        ),
        "",
    ]
    if "target_accuracy" not in s:
        return "\n".join(lines + ["(no finished direct run yet)", ""])
    lines += [
        f"Target accuracy (the lowest final accuracy of the direct runs): "
        f"**{100 * s['target_accuracy']:.1f} %**.",
        "",
        f"| method | runs | final accuracy | time to the target ({unit}) | reached | total time ({unit}) |",
        "|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        if s.get(f"n_{m}"):
            lines.append(
                f"| {m} | {s[f'n_{m}']} | {_f(s[f'{m}_final_accuracy_mean_sd'], True)} | "
                f"{_f(s[f'{m}_time_to_target_mean_sd'])} | {s[f'{m}_reached']}/{s[f'n_{m}']} | "
                f"{_f(s[f'{m}_total_time_mean_sd'])} |"
            )
    lines += ["", f"Direct runs reach ≥ 55 %: {'yes' if s.get('reaches_55') else '**no**'}.", ""]
    direct_epoch = [t for r in result["runs"] if r["method"] == "direct" for t in _epoch_times(r)]
    if direct_epoch:
        per = []
        for name in VARIANTS:
            rs = [r for r in result["runs"] if r["method"] == name]
            cycles = sorted({c for r in rs for c in r["cycle"] if c is not None})
            if rs and cycles:
                rel_c = [
                    statistics.mean(t for r in rs for t, c in zip(_epoch_times(r), r["cycle"]) if c == cyc)
                    / statistics.mean(direct_epoch)
                    for cyc in cycles
                ]
                per.append(f"{name}: " + ", ".join(f"cycle {c} {v:.2f}×" for c, v in zip(cycles, rel_c)))
        lines += [f"Time per epoch relative to a direct epoch ({clock}): " + "; ".join(per) + ".", ""]
    for name, v in s.get("variants", {}).items():
        ratio = v.get("ratio_of_means")
        met = v.get("target_met")
        per = ", ".join("not reached" if r is None else f"{r:.2f}" for r in v.get("ratio_per_seed", []))
        lines += [
            f"**{name}**: time to the target / direct's: **{'–' if ratio is None else f'{ratio:.2f}×'}** "
            f"(ratio of the means; per seed: {per or '–'}); target ≤ 0.6×: "
            f"{'met' if met else ('**missed**' if met is False else 'not measured')}"
            f"{' (not every run reached the target accuracy)' if s.get(f'{name}_reached', 0) < s.get(f'n_{name}', 0) else ''}. "
            f"Total time ratio (all epochs): {v['total_time_ratio']:.2f}×. "
            "The other way round — the accuracy each run ends at, and the time its seed's direct run "
            "needed to first reach it: "
            + (
                "; ".join(
                    f"seed {m['seed']}: {100 * m['accuracy']:.1f} % in {m['multilevel_time']:.0f} {unit} vs "
                    + (
                        "not reached by direct"
                        if m["direct_time"] is None
                        else f"{m['direct_time']:.0f} {unit} (direct), ratio {m['ratio']:.2f}×"
                    )
                    for m in v.get("at_multilevel_accuracy", [])
                )
                or "–"
            )
            + ".",
            "",
        ]
    lines += [
        "Per run:",
        "",
        f"| method | seed | final accuracy % | time to target ({unit}) | total time ({unit}) | "
        "epochs' wall time (s) | wall time incl. set-up (s) | trained at commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        t = time_to(r, s["target_accuracy"])
        wall = r.get("wall") or r["time"]
        lines.append(
            f"| {r['method']} | {r['seed']} | {100 * r['final_accuracy']:.1f} | "
            f"{'not reached' if t is None else f'{t:.0f}'} | {r['time'][-1]:.0f} | {wall[-1]:.0f} | "
            f"{r['wall_time']:.0f} | {r.get('trained_at_commit', '–')} |"
        )
    lines += ["", f"![time-to-accuracy curves]({a['name']}.png)", ""]
    return "\n".join(lines)


def a_clock(result: dict) -> str:
    return result["settings"].get("clock", "wall")


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m, color in COLORS.items():
        for k, r in enumerate(rr for rr in result["runs"] if rr["method"] == m):
            ax.plot(
                r["time"],
                [100 * v for v in r["accuracy"]],
                color=color,
                marker=".",
                alpha=0.8,
                label=m if k == 0 else None,
            )
            if m != "direct":  # mark the refinements
                for i in range(1, len(r["cycle"])):
                    if r["cycle"][i] != r["cycle"][i - 1]:
                        ax.axvline(r["time"][i - 1], color=color, lw=0.5, ls=":", alpha=0.6)
    s = result["summary"]
    if "target_accuracy" in s:
        ax.axhline(
            100 * s["target_accuracy"],
            color="grey",
            ls="--",
            lw=1,
            label=f"target {100 * s['target_accuracy']:.1f} %",
        )
    ax.set_xlabel(
        "cumulative CPU time of the epochs (s, one thread)"
        if a_clock(result) == "cpu"
        else "cumulative epoch time (s)"
    )
    ax.set_ylabel("test accuracy (%)")
    a = result["settings"]
    ax.set_title(
        f"Multilevel (L = {a['levels']}) against direct training, {a['model']} refined ×{a['refine']}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data",
        default="../shared/data/cifar10-subset.npz",
        help="dataset: a .npz (relative paths from the repository root), cifar10, ...",
    )
    ap.add_argument("--model", default="tiny_lm_resnet")
    ap.add_argument("--refine", type=int, default=4, help="refine factor of the final network")
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument(
        "--overrides",
        type=json.loads,
        default={},
        help="more model overrides as JSON, e.g. '{\"stem_width\": 8}' (ResNet-56 with L = 3)",
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    ap.add_argument(
        "--long-epochs",
        type=int,
        default=16,
        help="epochs of the multilevel-continue-long arm (more epochs than direct, to reach its "
        "accuracy; default 16)",
    )
    ap.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default=None,
        help="time axis: the epochs' CPU time (steady on shared cores; the default on the CPU) or wall time (the default on a GPU, where the CPU clock does not see the work)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="default 12 (3 with --quick)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--runs", default="runs/multilevel_scale", help="run folders (relative to the repository)"
    )
    ap.add_argument(
        "--out", default="experiments/results", help="results folder (relative to the repository)"
    )
    ap.add_argument("--name", default="multilevel_scale", help="stem of the result files")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 3 epochs (unless --epochs) on 512 images, one seed"
    )
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md and .png next to a recorded JSON")
    a = ap.parse_args(argv)
    if a.render:
        return rerender(a.render, render, figure, lambda result: summarise(result["runs"]))
    import torch

    torch.set_num_threads(a.threads)
    if a.clock is None:  # the CPU clock does not see a GPU's work
        a.clock = "cpu" if a.device == "cpu" else "wall"
    if a.quick:
        a.epochs, a.seeds = a.epochs or 3, a.seeds[:1]
        a.limit_train, a.limit_test = a.limit_train or 512, a.limit_test or 256
        if a.runs == "runs/multilevel_scale":
            a.runs = "runs/multilevel_scale-quick"
        if a.name == "multilevel_scale":
            a.name = "multilevel_scale-quick"
    a.epochs = a.epochs or 12
    a.data_path = a.data if not a.data.endswith(".npz") else str(repo_path(a.data))
    runs_dir, out_dir = repo_path(a.runs), repo_path(a.out)
    runs_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance(a.threads, a.seeds)
    settings = {k: v for k, v in vars(a).items() if k != "data_path"}
    todo = []
    methods = [m for m in METHODS if m in a.methods]
    for i, seed in enumerate(a.seeds):
        k = i % len(methods)
        for m in methods[k:] + methods[:k]:  # the order rotates from seed to seed
            todo.append((m, seed))
    runs = []
    t_all = time.time()
    for i, (m, seed) in enumerate(todo, 1):
        t0 = time.time()
        print(
            f"[{time.strftime('%H:%M:%S')}] {i}/{len(todo)} {m} seed {seed} (load {load_average()})",
            flush=True,
        )
        r = one_run(a, m, seed, runs_dir)
        runs.append(r)
        print(
            f"    final accuracy {100 * r['final_accuracy']:.1f}%, {r['time'][-1]:.0f} s of epochs "
            f"({time.time() - t0:.0f} s now; {time.time() - t_all:.0f} s so far)",
            flush=True,
        )
        result = {
            "provenance": prov,
            "settings": settings,
            "runs": runs,
            "summary": summarise(runs),
            "load_average_end": load_average(),
        }
        write_results(out_dir / a.name, result, render, figure)
    print((out_dir / f"{a.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
