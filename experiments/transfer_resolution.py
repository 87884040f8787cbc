"""Resolution transfer (issue 19, item 1): networks trained at 16×16 used at 32×32 without
retraining, and coarse-to-fine training against training at 32×32 directly.

Per model and seed:

1. ``r16``: train at ``--resolution 16`` for ``--epochs16`` epochs (preset ``quick``).
2. Test accuracy of that network (``sdenet.train.evaluate``, the code behind ``sdenet eval``) at
   16×16, and at 32×32: as it is; ``--rescale`` with the à trous map (``atrous``); with the
   moment map (``moments``). For the operator family (``*pde_resnet*``) the moment map is the
   operator rebuild (every layer for the spacing h/2, same coefficients); à trous keeps the
   layers' difference step.
   Models in ``--transfer-only`` (default resnet20) stop here.
3. ``direct32``: train at 32×32 from scratch for ``--epochs32`` epochs.
4. ``fine32``: coarse to fine, ``--init r16 --rescale`` (à trous: the kernels dilated, and
   dilated they stay) and ``fine32-as_is``: ``--init r16`` alone (the same 3×3 kernels on the
   fine grid: progressive resizing), each at 32×32 for ``--fine`` epochs at peak learning rate
   ``--fine-lr``; its time counts the 16×16 run's as well. Time to the direct run's final
   accuracy, and the ratio to the direct run's time, on the epochs' CPU clock (``--clock``).

Resumable: a finished training run (``metrics.json`` in its folder) is reused and every
evaluation is kept in ``OUT/transfer_resolution.json``, written after each step, so an
interrupted invocation is restarted with the same command. Writes
``OUT/transfer_resolution.{json,md}``, ``OUT/transfer_resolution.png`` (accuracy against
resolution) and ``OUT/transfer_resolution_time.png`` (test accuracy against wall time).

    python experiments/transfer_resolution.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sdenet.train import evaluate, train  # noqa: E402

NAME = "transfer_resolution"
FINE_INITS = ("atrous", "as_is")


def _is_operator_family(model: str) -> bool:
    return "pde" in model


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _run(out: Path, need_cpu: bool = False, **kw) -> dict:
    """Train into ``out`` unless a finished run is there; its curve (test accuracy, cumulative
    wall time and CPU time per epoch). ``need_cpu``: a finished run of an older sdenet whose
    epochs record no CPU time is moved aside (``<out>.wall``) and trained again."""
    trained = False
    if (out / "metrics.json").exists() and need_cpu:
        first = (out / "metrics.jsonl").read_text().splitlines()[0]
        if "epoch_cpu_time" not in json.loads(first):
            aside = out.with_name(out.name + ".wall")
            print(f"  {out} records no CPU time: moved to {aside}, trained again", flush=True)
            if aside.exists():
                import shutil

                shutil.rmtree(aside)
            out.rename(aside)
    if (out / "metrics.json").exists():
        print(f"  reusing {out}", flush=True)
    else:
        if out.exists():  # an interrupted run: start it again
            for f in out.iterdir():
                if f.is_file():
                    f.unlink()
        t = time.time()
        print(f"  training {out} ...", flush=True)
        train(out=str(out), quiet=True, **kw)
        trained = True
        print(f"  done {out} in {time.time() - t:.0f} s", flush=True)
    curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    cpu, c = [], 0.0
    for m in curve:
        if "epoch_cpu_time" not in m:
            cpu = None
            break
        c += m["epoch_cpu_time"]
        cpu.append(c)
    return {
        "dir": str(out),
        "acc": [1 - c["test_error"] for c in curve],
        "time": [c["elapsed"] for c in curve],
        "cpu": cpu,
        "epoch_time": [c["epoch_time"] for c in curve],
        "final_acc": 1 - curve[-1]["test_error"],
        "wall_time": curve[-1]["elapsed"],
        "cpu_time": None if cpu is None else cpu[-1],
        "trained_now": trained,
    }


def _axis(run: dict, clock: str) -> list:
    """The run's cumulative time per epoch on the clock (CPU time, else wall time)."""
    return run["cpu"] if clock == "cpu" and run.get("cpu") else run["time"]


def _total(run: dict, clock: str) -> float:
    return _axis(run, clock)[-1]


def _time_to(run: dict, target: float, offset: float = 0.0, clock: str = "wall"):
    for a, t in zip(run["acc"], _axis(run, clock)):
        if a >= target - 1e-12:
            return offset + t
    return None


def _mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, 0
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return m, sd, len(xs)


def _fmt(xs, scale=100, digits=1):
    m, sd, n = _mean_sd(xs)
    if m is None:
        return "–"
    s = f"{scale * m:.{digits}f} ± {scale * sd:.{digits}f}"
    return s if n == len(xs) else s + f" ({n}/{len(xs)})"


def _ratio_text(r):
    return "–" if r is None else f"{r:.2f}"


def _save(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="../shared/data/cifar10-subset.npz")
    ap.add_argument("--models", nargs="+", default=["tiny_resnet", "tiny_pde_resnet", "resnet20"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs16", type=int, default=15)
    ap.add_argument("--epochs32", type=int, default=15, help="epochs of the direct 32×32 run")
    ap.add_argument(
        "--transfer-only",
        nargs="*",
        default=["resnet20"],
        metavar="MODEL",
        help="models that get the 16×16 run and the transfer evaluations only (no "
        "32×32 training; default resnet20, whose 32×32 epochs the time plan "
        "cannot afford on 2 shared cores)",
    )
    ap.add_argument("--fine", type=int, default=4, help="epochs at 32×32 after the 16×16 run")
    ap.add_argument(
        "--fine-init",
        nargs="+",
        choices=FINE_INITS,
        default=list(FINE_INITS),
        help="how the 32×32 stage starts from the 16×16 network: atrous (--rescale: the kernels "
        "dilated, and dilated they stay) or as_is (the same 3×3 kernels, now on the fine grid: "
        "progressive resizing); default both",
    )
    ap.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default=None,
        help="time of coarse to fine against direct: the epochs' CPU time (steady on "
        "shared cores; the default on the CPU) or wall time (the default on a GPU, where the CPU clock does not see the work)",
    )
    ap.add_argument(
        "--fine-lr",
        type=float,
        default=0.2,
        help="peak learning rate of the one-cycle fine stage (default the preset's, 0.2; a "
        "pilot on seed 0 gave 55.7 / 56.5 / 59.4 %% after 4 epochs from the kernels as they "
        "are at 0.05 / 0.1 / 0.2, and 55.9 %% from à trous at 0.1)",
    )
    ap.add_argument("--low", type=int, default=16)
    ap.add_argument("--high", type=int, default=32)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--runs", default="runs/transfer_resolution")
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="write the .md and figures from OUT's JSON as it is (e.g. of a run "
        "still going or stopped), training nothing",
    )
    args = ap.parse_args(argv)
    if args.report_only:
        out = Path(args.out)
        results = json.loads((out / f"{NAME}.json").read_text())
        results.setdefault("load_after", list(os.getloadavg()))
        write_report(results, out)
        print(f"wrote {out / (NAME + '.md')} from {out / (NAME + '.json')}", flush=True)
        return 0
    torch.set_num_threads(args.threads)
    if args.clock is None:  # the CPU clock does not see a GPU's work
        args.clock = "cpu" if args.device == "cpu" else "wall"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{NAME}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("runs", {})
    results.update(
        command="python "
        + " ".join(
            shlex.quote(a) for a in [f"experiments/{NAME}.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        commit=_commit(),
        torch=torch.__version__,
        threads=args.threads,
        hardware=_cpu_model(),
        cores=os.cpu_count(),
        dataset=args.dataset,
        seeds=args.seeds,
        models=args.models,
        transfer_only=[m for m in args.models if m in args.transfer_only],
        epochs16=args.epochs16,
        epochs32=args.epochs32,
        fine=args.fine,
        fine_lr=args.fine_lr,
        fine_init=args.fine_init,
        clock=args.clock,
        low=args.low,
        high=args.high,
        device=args.device,
    )
    if args.device != "cpu" and torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name()
    from sdenet.provenance import provenance

    results["provenance"] = provenance(seed=list(args.seeds), command=results["command"])
    results["provenance"].update(threads=args.threads, hardware=f"{_cpu_model()} ({os.cpu_count()} cores)")
    results["load_before"] = list(os.getloadavg())  # of this invocation, which times what it trains
    common = dict(
        dataset=args.dataset,
        preset="quick",
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        device=args.device,
    )
    ev_kw = dict(device=args.device, limit_test=args.limit_test)
    t0 = time.time()
    # phase 1: every model's 16×16 runs and transfer evaluations (cheap), phase 2: the 32×32
    # runs of coarse to fine and direct training (expensive), so that an interrupted run has
    # the transfer results of every model
    jobs = [(m, s) for m in args.models for s in args.seeds]
    c2f_jobs = [(m, s) for m, s in jobs if m not in args.transfer_only]
    for i, (model, seed) in enumerate(jobs):
        key = f"{model}/seed{seed}"
        rec = results["runs"].setdefault(key, {"model": model, "seed": seed})
        print(f"[transfer {i + 1}/{len(jobs)}] {key}  ({(time.time() - t0) / 60:.1f} min so far)", flush=True)
        base = Path(args.runs) / f"{model}-seed{seed}"
        timed = model not in args.transfer_only and args.clock == "cpu"  # its time is measured
        rec["r16"] = _run(
            base / f"r{args.low}",
            need_cpu=timed,
            model=model,
            seed=seed,
            epochs=args.epochs16,
            resolution=args.low,
            **common,
        )
        if rec["r16"]["trained_now"]:  # evaluations of an earlier network are void
            rec.pop("acc", None)
            rec.pop("loss", None)
        _save(path, results)
        acc = rec.setdefault("acc", {})
        ckpt = str(base / f"r{args.low}")
        wanted = {
            f"at{args.low}": dict(resolution=args.low),
            "as_is": dict(resolution=args.high),
            "atrous": dict(resolution=args.high, rescale=True, rescale_method="atrous"),
            "moments": dict(resolution=args.high, rescale=True, rescale_method="moments"),
        }
        for name, kw in wanted.items():
            if name not in acc:
                r = evaluate(ckpt, **kw, **ev_kw)
                acc[name] = 1 - r["test_error"]
                rec.setdefault("loss", {})[name] = r["test_loss"]
                print(
                    f"  {name:>8}: accuracy {100 * acc[name]:.1f} %  (loss {r['test_loss']:.3g})", flush=True
                )
                _save(path, results)
    for i, (model, seed) in enumerate(c2f_jobs):
        key = f"{model}/seed{seed}"
        rec = results["runs"][key]
        r16 = rec["r16"]
        print(
            f"[coarse to fine {i + 1}/{len(c2f_jobs)}] {key}  ({(time.time() - t0) / 60:.1f} min so far)",
            flush=True,
        )
        base = Path(args.runs) / f"{model}-seed{seed}"
        ckpt = str(base / f"r{args.low}")
        timed = args.clock == "cpu"
        rec["direct32"] = _run(
            base / f"direct{args.high}",
            need_cpu=timed,
            model=model,
            seed=seed,
            epochs=args.epochs32,
            resolution=args.high,
            **common,
        )
        _save(path, results)
        rec.pop("fine32", None)  # the layout of an earlier version of this script
        if "c2f" in rec and "target" in rec["c2f"]:
            rec.pop("c2f")
        for how in args.fine_init:
            sub = f"fine{args.high}" + ("" if how == "atrous" else f"-{how}")
            rescale = dict(init_rescale=True, init_rescale_method="atrous") if how == "atrous" else {}
            fine = _run(
                base / sub,
                need_cpu=timed,
                model=model,
                seed=seed,
                epochs=args.fine,
                resolution=args.high,
                init=ckpt,
                lr=args.fine_lr,
                **rescale,
                **common,
            )
            rec.setdefault("fine", {})[how] = fine
            target = rec["direct32"]["final_acc"]
            t0_fine = _total(r16, args.clock)
            t_c2f = _time_to(fine, target, offset=t0_fine, clock=args.clock)
            t_direct = _total(rec["direct32"], args.clock)
            rec.setdefault("c2f", {})[how] = {
                "target": target,
                "time_direct": t_direct,
                "time_c2f_to_target": t_c2f,
                "time_c2f_total": t0_fine + _total(fine, args.clock),
                "final_acc_c2f": fine["final_acc"],
                "ratio": None if t_c2f is None else t_c2f / t_direct,
                "clock": args.clock,
            }
            _save(path, results)
            print(
                f"  coarse-to-fine ({how}) {100 * fine['final_acc']:.1f} % in "
                f"{rec['c2f'][how]['time_c2f_total']:.0f} s; direct {100 * target:.1f} % in "
                f"{t_direct:.0f} s ({args.clock} time)",
                flush=True,
            )
    results["load_after"] = os.getloadavg()
    results["total_minutes"] = results.get("total_minutes", 0) + (time.time() - t0) / 60
    _save(path, results)
    write_report(results, out)
    print(f"wrote {out / (NAME + '.md')}", flush=True)
    return 0


def write_report(results: dict, out: Path) -> None:
    runs = results["runs"]
    models = [
        m
        for m in results["models"]
        if any(r["model"] == m and "moments" in r.get("acc", {}) for r in runs.values())
    ]
    c2f_models = [
        m for m in models if any(r["model"] == m and "fine" in r and "c2f" in r for r in runs.values())
    ]
    clock = results.get("clock", "wall")
    unit = "CPU s" if clock == "cpu" else "s"
    lo, hi = results["low"], results["high"]
    lines = [f"# Resolution transfer: trained at {lo}×{lo}, used at {hi}×{hi}", ""]
    lines.append(
        f"`{results['dataset']}`, preset `quick` (one-cycle), seeds {', '.join(map(str, results['seeds']))}; "
        f"{results['epochs16']} epochs at {lo}×{lo}; direct {hi}×{hi} training {results['epochs32']} epochs; "
        f"coarse to fine: the {lo}×{lo} run then {results['fine']} epochs at {hi}×{hi} "
        f"(peak learning rate {results['fine_lr']}), starting either from the à trous map "
        f"(`--init --rescale`: the kernels dilated, and dilated they stay) or from the kernels as "
        f"they are (`--init` alone: progressive resizing). "
        f"Hardware: {results['hardware']} ({results['cores']} cores, shared with other jobs)"
        f"{', GPU ' + results['gpu'] if results.get('gpu') else ''}, device {results.get('device', 'cpu')}, "
        f"torch {results['torch']}, {results['threads']} thread(s); load average (1, 5, 15 min) "
        + (
            f"{', '.join(f'{v:.1f}' for v in results['load_before'])}"
            if isinstance(results.get("load_before"), list)
            else str(results.get("load_before"))
        )
        + " before and "
        f"{', '.join(f'{v:.1f}' for v in results.get('load_after', [float('nan')] * 3))} after. "
        f"Command: `{results['command']}` (commit {results['commit']})."
    )
    lines += [
        "",
        f"## Test accuracy at {hi}×{hi} without retraining",
        "",
        f"| model | seeds | at {lo}×{lo} % | {hi}×{hi} as it is % | à trous % | moment map / operator "
        f"rebuild % | ratio à trous | ratio moment map / operator rebuild |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        rs = [r for r in runs.values() if r["model"] == m and "moments" in r.get("acc", {})]
        at = [r["acc"]["atrous"] / r["acc"][f"at{lo}"] for r in rs]
        mo = [r["acc"]["moments"] / r["acc"][f"at{lo}"] for r in rs]
        lines.append(
            f"| {m} | {len(rs)} | "
            f"{_fmt([r['acc'][f'at{lo}'] for r in rs])} | {_fmt([r['acc']['as_is'] for r in rs])} | "
            f"{_fmt([r['acc']['atrous'] for r in rs])} | {_fmt([r['acc']['moments'] for r in rs])} | "
            f"{_fmt(at, scale=1, digits=3)} (per seed {', '.join(f'{x:.3f}' for x in at)}) | "
            f"{_fmt(mo, scale=1, digits=3)} |"
        )
    lines += [
        "",
        "Ratios are accuracy at the new resolution over accuracy at the trained one, per seed. "
        "For the operator family (`*pde_resnet*`) the moment map *is* the operator rebuild (each "
        "layer's difference quotients re-scaled for the spacing h/2, same coefficients); the à "
        "trous map keeps its difference step. Target: ratio ≥ 0.9 (à trous on the plain "
        "ResNets, and the operator family).",
        "",
        f"## Coarse to fine against direct {hi}×{hi} training",
        "",
        f"| model | start of the {hi}×{hi} stage | direct {hi}×{hi} final % | its time {unit} | "
        f"coarse-to-fine final % | its total time {unit} | time to the direct run's final accuracy "
        f"{unit} | ratio | direct run's time to the coarse-to-fine final accuracy {unit} | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in c2f_models:
        rs = [r for r in runs.values() if r["model"] == m and "fine" in r]
        for how in FINE_INITS:
            rh = [r for r in rs if how in r["c2f"]]
            if not rh:
                continue
            c = [r["c2f"][how] for r in rh]
            back = [_time_to(r["direct32"], r["c2f"][how]["final_acc_c2f"], clock=clock) for r in rh]
            back_ratio = [None if b is None else x["time_c2f_total"] / b for x, b in zip(c, back)]
            lines.append(
                f"| {m} | {'à trous' if how == 'atrous' else 'as it is'} | {_fmt([x['target'] for x in c])} | "
                f"{_fmt([x['time_direct'] for x in c], 1, 0)} | "
                f"{_fmt([x['final_acc_c2f'] for x in c])} | {_fmt([x['time_c2f_total'] for x in c], 1, 0)} | "
                f"{_fmt([x['time_c2f_to_target'] for x in c], 1, 0)} | "
                f"{_fmt([x['ratio'] for x in c], 1, 2)} (per seed "
                f"{', '.join(_ratio_text(x['ratio']) for x in c)}) | {_fmt(back, 1, 0)} | "
                f"{_fmt(back_ratio, 1, 2)} (per seed {', '.join(_ratio_text(x) for x in back_ratio)}) |"
            )
    for m in c2f_models:
        rs = [r for r in runs.values() if r["model"] == m and "fine" in r]
        per_epoch = [
            (_total(r["r16"], clock) / len(r["r16"]["acc"]))
            / (_total(r["direct32"], clock) / len(r["direct32"]["acc"]))
            for r in rs
        ]
        text = f"{m}: a {lo}×{lo} epoch costs {min(per_epoch):.2f}–{max(per_epoch):.2f}× a {hi}×{hi} epoch"
        if all({"atrous", "as_is"} <= set(r["fine"]) for r in rs):
            dil = [_total(r["fine"]["atrous"], clock) / _total(r["fine"]["as_is"], clock) for r in rs]
            text += f"; a fine epoch from à trous (dilated) {min(dil):.2f}–{max(dil):.2f}× one from the kernels as they are"
        lines += ["", text + f" ({clock} time, per seed)."]
    lines += [
        "",
        "Target: coarse to fine reaches the direct run's final accuracy in ≤ 0.6× its time "
        "(– : not reached). The last two columns compare the other way: how long the direct "
        "run takes to reach the accuracy coarse to fine ends at, and coarse to fine's total "
        "time over that (– : the direct run never reaches it). "
        + (
            "Times are the CPU time of the training epochs, each with its test pass (one thread, "
            "so they do not grow when other jobs share the cores; the wall times are in the JSON)."
            if clock == "cpu"
            else "Times are wall-clock seconds of training including the per-epoch test pass, on "
            "cores shared with other jobs: indicative, not a benchmark."
        ),
        "",
        f"![accuracy against resolution]({NAME}.png)",
        "",
        f"![test accuracy against training time]({NAME}_time.png)",
        "",
    ]
    (out / f"{NAME}.md").write_text("\n".join(lines))
    _plots(results, models, c2f_models, out)


def _plots(results, models, c2f_models, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    lo, hi = results["low"], results["high"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, m in enumerate(models):
        rs = [r for r in runs.values() if r["model"] == m and "moments" in r.get("acc", {})]
        mom = "operator rebuild" if _is_operator_family(m) else "moment map"
        for name, style, label in (
            ("atrous", "-o", "à trous"),
            ("as_is", "--s", "as it is"),
            ("moments", ":^", mom),
        ):
            ys = [100 * (sum(r["acc"][k] for r in rs) / len(rs)) for k in (f"at{lo}", name)]
            ax.plot([lo, hi], ys, style, color=f"C{i}", label=f"{m}: {label}")
    ax.set_xticks([lo, hi])
    ax.set_xlabel(f"test resolution (trained at {lo})")
    ax.set_ylabel("test accuracy % (mean over seeds)")
    ax.axhline(10, color="grey", lw=0.5)
    ax.legend(fontsize=7)
    ax.set_title(f"Trained at {lo}×{lo}, no retraining")
    fig.tight_layout()
    fig.savefig(out / f"{NAME}.png", dpi=120)
    plt.close(fig)
    if not c2f_models:
        return
    clock = results.get("clock", "wall")
    fig, axes = plt.subplots(1, len(c2f_models), figsize=(4.8 * len(c2f_models), 3.8), squeeze=False)
    colors = {"direct": "#0072B2", "coarse": "#999999", "atrous": "#D55E00", "as_is": "#009E73"}
    for ax, m in zip(axes[0], c2f_models):
        for r in (r for r in runs.values() if r["model"] == m and "fine" in r):
            first = r["seed"] == results["seeds"][0]
            d, c = r["direct32"], r["r16"]
            ax.plot(
                _axis(d, clock),
                [100 * a for a in d["acc"]],
                "-o",
                color=colors["direct"],
                lw=1,
                ms=2,
                label=f"direct {hi}×{hi}" if first else None,
            )
            ax.plot(
                _axis(c, clock),
                [100 * a for a in c["acc"]],
                ":",
                color=colors["coarse"],
                lw=1,
                label=f"{lo}×{lo} stage (accuracy at {lo}×{lo})" if first else None,
            )
            for how, f in r["fine"].items():
                ax.plot(
                    [_total(c, clock) + t for t in _axis(f, clock)],
                    [100 * a for a in f["acc"]],
                    "-o",
                    color=colors[how],
                    lw=1,
                    ms=3,
                    label=f"then {hi}×{hi}, {'à trous' if how == 'atrous' else 'kernels as they are'}"
                    if first
                    else None,
                )
        ax.set_title(f"Coarse to fine against direct training: {m}", fontsize=9)
        ax.set_xlabel("CPU time of the epochs, s (one thread)" if clock == "cpu" else "wall time, s")
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{NAME}_time.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
