#!/usr/bin/env python
"""Run a set of experiments from ``experiments/configs`` and tabulate it against the paper.

    python experiments/run.py --set NAME [--epochs N] [--seeds 0 1 2] [--dataset PATH]
                              [--out DIR] [--results DIR] [--limit-train N] [--limit-test N]
                              [--device DEV] [--only RUN ...] [--dry-run] [--list]

``NAME`` is a set in ``experiments/configs/NAME.json`` or a path to such a JSON file::

    {"name": ..., "description": ..., "paper_table": ...,
     "runs": [{"name": "resnet20", "model": "resnet20", "dataset": "cifar10",
               "preset": "cifar10_lm", "paper_error": 8.75, "paper_source": "...",
               ... any other keyword of sdenet.train.train (dt, p_L, mode, lr, ...)}]}

Every (run, seed) trains through :func:`sdenet.train.train` into ``OUT/runs/<run>-s<seed>``
(``OUT`` defaults to ``runs/experiments/<set>``). Resume-safe: a run folder with
``metrics.json`` is finished and only read; one with ``last.pt`` is resumed; others start.
At the end (and after every run) the script writes into ``RESULTS`` (default ``OUT``):
``results.md`` (mean ± std test error over seeds, params, wall time, the paper's number),
``results.json`` (every run's final metrics) and ``plots/`` (sdenet/train/plots.py, seed of
the first run of each entry).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import inspect
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

CONFIG_DIR = HERE / "configs"
#: keys of a run entry that describe it rather than configure training
META_KEYS = ("name", "paper_error", "paper_source", "paper_params", "note")


class SetError(ValueError):
    """A set that cannot be found or is malformed."""


# ----------------------------------------------------------------------------- sets


def available_sets() -> list:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_set(name_or_path) -> dict:
    """Read a set by name (``experiments/configs/NAME.json``) or path; check its shape."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".json" and path.is_file()):
        path = CONFIG_DIR / f"{text}.json"
    if not path.is_file():
        raise SetError(
            f"unknown set {text!r}; choose one of {', '.join(available_sets())} or give a .json path"
        )
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SetError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list) or not spec["runs"]:
        raise SetError(f"{path}: a set is a JSON object with a non-empty list 'runs'")
    names = set()
    for i, r in enumerate(spec["runs"]):
        if not isinstance(r, dict) or not r.get("name") or not r.get("model"):
            raise SetError(f"{path}: run {i} needs at least 'name' and 'model'")
        if r["name"] in names:
            raise SetError(f"{path}: run name {r['name']!r} appears twice")
        names.add(r["name"])
    spec.setdefault("name", path.stem)
    spec["path"] = str(path)
    return spec


def run_folder(out: Path, run: dict, seed: int) -> Path:
    return Path(out) / "runs" / f"{run['name']}-s{seed}"


def run_state(folder: Path) -> str:
    """``done`` (metrics.json), ``resume`` (last.pt) or ``new``."""
    if (folder / "metrics.json").is_file():
        return "done"
    if (folder / "last.pt").is_file():
        return "resume"
    return "new"


# ----------------------------------------------------------------------------- training


def _default_train():
    try:
        from sdenet.train import train
    except ImportError as err:
        raise SetError(f"the training loop (sdenet.train.train) is not available: {err}") from None
    return train


def _accepted_keys(train_fn):
    """Keyword names the training entry point accepts (its config's fields), or None when
    it takes anything."""
    try:
        import dataclasses

        from sdenet.train import TrainConfig

        if dataclasses.is_dataclass(TrainConfig):
            return {f.name for f in dataclasses.fields(TrainConfig)}
    except Exception:
        pass
    try:
        params = inspect.signature(train_fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    names = set(params)
    return None if len(names) <= 1 else names


def train_kwargs(run: dict, seed: int, folder: Path, opts: dict) -> dict:
    """The keyword arguments of one training call: the run entry (less its description
    keys), the seed and folder, and the command-line overrides that are set."""
    kw = {k: v for k, v in run.items() if k not in META_KEYS and v is not None}
    kw["seed"] = int(seed)
    kw["out"] = str(folder)
    for key in ("epochs", "dataset", "limit_train", "limit_test", "device", "batch_size"):
        if opts.get(key) is not None:
            kw[key] = opts[key]
    kw["quiet"] = opts.get("quiet", True)
    return kw


def train_one(train_fn, kw: dict, state: str):
    """One training call; a folder with ``last.pt`` is continued with ``resume=FOLDER`` (the
    loop takes the rest of the config from the checkpoint; device and quiet still apply)."""
    accepted = _accepted_keys(train_fn)
    call = dict(kw)
    if state == "resume":
        call = {k: kw[k] for k in ("device", "quiet") if k in kw}
        call["resume"] = kw["out"]
    if accepted is not None:
        unknown = sorted(set(call) - accepted)
        if unknown:
            raise SetError(
                f"run {Path(kw['out']).name}: the training loop does not accept {', '.join(unknown)}"
            )
    return train_fn(**call)


# ----------------------------------------------------------------------------- summary


def _read_final(folder: Path):
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _pct(x):
    return None if x is None else 100.0 * float(x)


def _mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


def summarize(spec: dict, out: Path, seeds) -> list:
    """One row per run entry, from the finished run folders among ``seeds``."""
    rows = []
    for run in spec["runs"]:
        finals = []
        for seed in seeds:
            folder = run_folder(out, run, seed)
            final = _read_final(folder) if run_state(folder) == "done" else None
            if final is not None:
                finals.append({**final, "seed": seed, "folder": str(folder)})
        errs = [_pct(f.get("test_error")) for f in finals]
        bests = [_pct(f.get("best_test_error")) for f in finals]
        walls = [float(f["wall_time"]) for f in finals if f.get("wall_time") is not None]
        mean, std = _mean_std(errs)
        bmean, bstd = _mean_std(bests)
        mc = [_pct(f.get("test_error_mc")) for f in finals if f.get("test_error_mc") is not None]
        mcmean, mcstd = _mean_std(mc)
        rows.append(
            dict(
                name=run["name"],
                model=run["model"],
                dataset=finals[0].get("dataset") if finals else run.get("dataset"),
                dt=finals[0].get("dt") if finals else run.get("dt"),
                epochs=finals[0].get("epochs") if finals else None,
                seeds_done=[f["seed"] for f in finals],
                seeds=list(seeds),
                test_error_mean=mean,
                test_error_std=std,
                best_test_error_mean=bmean,
                best_test_error_std=bstd,
                test_error_mc_mean=mcmean,
                test_error_mc_std=mcstd,
                params=finals[0].get("params") if finals else None,
                wall_time_mean=statistics.fmean(walls) if walls else None,
                wall_time_total=sum(walls) if walls else None,
                paper_error=run.get("paper_error"),
                paper_source=run.get("paper_source"),
                runs=finals,
            )
        )
    return rows


def _fmt_pm(mean, std, digits=2):
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _fmt_params(n):
    if n is None:
        return "–"
    n = float(n)
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _fmt_time(s):
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 600 else f"{s / 60:.1f} min"


def markdown(spec: dict, rows: list, meta: dict) -> str:
    """The results table with the set's description and how it was produced."""
    lines = [f"# {spec['name']}", ""]
    if spec.get("description"):
        lines += [spec["description"], ""]
    lines += [
        f"- command: `{meta['command']}`",
        f"- hardware: {meta.get('hardware') or 'unknown'}",
        f"- written: {meta['date']}",
        f"- dataset override: {meta.get('dataset') or 'none (each run its own)'}; epochs: "
        f"{meta.get('epochs') or 'preset'}; limit-train: {meta.get('limit_train') or 'none'}; "
        f"limit-test: {meta.get('limit_test') or 'none'}",
        f"- seeds: {' '.join(str(s) for s in meta['seeds'])}; errors are test errors in % at the "
        f"last epoch, mean ± sample std over the finished seeds",
        "",
        "| run | model | dataset | Δt | epochs | seeds done | test error % | best test error % | "
        "MC test error % | params | wall time / run | paper % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dataset = r["dataset"] or "–"
        if isinstance(dataset, str) and len(dataset) > 28:
            dataset = "…" + dataset[-27:]
        paper = "unknown" if r["paper_error"] is None else f"{r['paper_error']:.2f}"
        lines.append(
            f"| {r['name']} | {r['model']} | {dataset} | {r['dt'] if r['dt'] is not None else '–'} | "
            f"{r['epochs'] or '–'} | {len(r['seeds_done'])}/{len(r['seeds'])} | "
            f"{_fmt_pm(r['test_error_mean'], r['test_error_std'])} | "
            f"{_fmt_pm(r['best_test_error_mean'], r['best_test_error_std'])} | "
            f"{_fmt_pm(r['test_error_mc_mean'], r['test_error_mc_std'])} | {_fmt_params(r['params'])} | "
            f"{_fmt_time(r['wall_time_mean'])} | {paper} |"
        )
    sources = [(r["name"], r["paper_source"]) for r in rows if r["paper_error"] is not None]
    if sources:
        lines += ["", "Paper numbers: " + "; ".join(f"{n}: {s}" for n, s in sources) + "."]
    total = sum(r["wall_time_total"] or 0 for r in rows)
    lines += ["", f"Total training wall time of the finished runs: {_fmt_time(total)}.", ""]
    for f in meta.get("failed") or []:
        lines += [f"Failed (not in the table; run the set again to retry): {f['folder']}: {f['error']}", ""]
    if meta.get("note"):
        lines += [meta["note"], ""]
    return "\n".join(lines)


def write_results(spec, out: Path, results: Path, seeds, meta, plots=True, log=print) -> dict:
    rows = summarize(spec, out, seeds)
    meta = dict(meta, date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    results.mkdir(parents=True, exist_ok=True)
    md = markdown(spec, rows, meta)
    _atomic_write(results / "results.md", md)
    doc = dict(set=spec["name"], description=spec.get("description"), meta=meta, rows=rows)
    from sdenet.provenance import provenance

    doc["provenance"] = provenance(seed=meta.get("seeds"), command=meta.get("command"))
    _atomic_write(results / "results.json", json.dumps(doc, indent=1, default=str) + "\n")
    written = [results / "results.md", results / "results.json"]
    if plots:
        folders, labels = [], []
        for r in rows:
            if r["runs"]:
                folders.append(r["runs"][0]["folder"])
                labels.append(r["name"])
        if folders:
            from sdenet.train.plots import plot_runs

            written += plot_runs(folders, out_dir=results / "plots", labels=labels, log=None)
    return dict(rows=rows, files=[str(p) for p in written])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _hardware(device=None) -> str:
    try:
        from sdenet.train.hardware import describe

        return describe(device)
    except Exception:
        import platform

        import torch

        return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}"


# ----------------------------------------------------------------------------- driver


def run_set(
    spec,
    *,
    seeds=(0,),
    epochs=None,
    dataset=None,
    out=None,
    results=None,
    limit_train=None,
    limit_test=None,
    device=None,
    batch_size=None,
    only=None,
    train_fn=None,
    plots=True,
    log=print,
    command=None,
    note=None,
    quiet=True,
) -> dict:
    """Train every (run, seed) of ``spec`` not finished yet, then write the results.
    Returns ``{"rows": [...], "files": [...], "trained": [...], "skipped": [...]}``."""
    if isinstance(spec, (str, Path)):
        spec = load_set(spec)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise SetError("give at least one seed")
    if only:
        unknown = sorted(set(only) - {r["name"] for r in spec["runs"]})
        if unknown:
            raise SetError(f"--only: no run named {', '.join(unknown)} in set {spec['name']}")
        spec = dict(spec, runs=[r for r in spec["runs"] if r["name"] in set(only)])
    for key, value in (
        ("epochs", epochs),
        ("limit_train", limit_train),
        ("limit_test", limit_test),
        ("batch_size", batch_size),
    ):
        if value is not None and int(value) < 1:
            raise SetError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    out = Path(out) if out is not None else ROOT / "runs" / "experiments" / spec["name"]
    results = Path(results) if results is not None else out
    opts = dict(
        epochs=epochs,
        dataset=str(dataset) if dataset is not None else None,
        limit_train=limit_train,
        limit_test=limit_test,
        device=device,
        batch_size=batch_size,
    )
    meta = dict(
        command=command or "run_set(...)",
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        hardware=_hardware(device),
        seeds=seeds,
        note=note,
        **{k: v for k, v in opts.items()},
    )
    trained, skipped, failed = [], [], []
    meta["failed"] = failed
    say = log or (lambda s: None)
    for run in spec["runs"]:
        for seed in seeds:
            folder = run_folder(out, run, seed)
            state = run_state(folder)
            if state == "done":
                skipped.append(str(folder))
                say(f"[done]   {folder}")
                continue
            if train_fn is None:
                train_fn = _default_train()
            say(f"[{'resume' if state == 'resume' else 'train'}]  {folder}")
            t0 = time.perf_counter()
            try:
                final = train_one(train_fn, train_kwargs(run, seed, folder, dict(opts, quiet=quiet)), state)
            except (RuntimeError, ValueError) as exc:
                # TrainingDiverged (NaN loss), or a checkpoint that cannot be resumed: record it
                # and go on with the set; a bad setting of a fresh run stops the set
                if isinstance(exc, ValueError) and state != "resume":
                    raise
                failed.append(dict(folder=str(folder), error=f"{type(exc).__name__}: {exc}"))
                say(f"         failed: {type(exc).__name__}: {exc}")
                continue
            err = (final or {}).get("test_error")
            say(
                f"         test error {100 * err:.2f}% in {time.perf_counter() - t0:.0f} s"
                if err is not None
                else "         finished"
            )
            trained.append(str(folder))
            write_results(spec, out, results, seeds, meta, plots=False, log=None)
    res = write_results(spec, out, results, seeds, meta, plots=plots, log=None)
    for f in res["files"]:
        say(f)
    res.update(trained=trained, skipped=skipped, failed=failed)
    return res


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--set", dest="set_name", help="set name in experiments/configs, or a .json path")
    p.add_argument("--list", action="store_true", help="list the sets and exit")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the preset's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    p.add_argument("--dataset", default=None, help="dataset for every run (name or path), e.g. an .npz")
    p.add_argument("--out", default=None, help="folder of the run folders (default runs/experiments/SET)")
    p.add_argument("--results", default=None, help="folder for results.md/.json and plots (default: --out)")
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N training images")
    p.add_argument("--limit-test", type=int, default=None, help="test on the first N test images")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the loop's choice)")
    p.add_argument("--only", nargs="+", default=None, metavar="RUN", help="only these runs of the set")
    p.add_argument("--note", default=None, help="a paragraph added under the results table")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print what would run and exit")
    p.add_argument("--verbose", action="store_true", help="let the training loop print its progress")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            for name in available_sets():
                spec = load_set(name)
                print(f"{name:28s} {len(spec['runs'])} runs  {spec.get('description', '')[:80]}")
            return 0
        if not args.set_name:
            raise SetError("give --set NAME (or --list)")
        spec = load_set(args.set_name)
        if args.dry_run:
            out = Path(args.out) if args.out else ROOT / "runs" / "experiments" / spec["name"]
            for run in spec["runs"]:
                if args.only and run["name"] not in args.only:
                    continue
                for seed in args.seeds:
                    folder = run_folder(out, run, seed)
                    kw = train_kwargs(
                        run,
                        seed,
                        folder,
                        dict(
                            epochs=args.epochs,
                            dataset=args.dataset,
                            limit_train=args.limit_train,
                            limit_test=args.limit_test,
                            device=args.device,
                            batch_size=args.batch_size,
                        ),
                    )
                    print(f"[{run_state(folder)}] {kw}")
            return 0
        command = "python experiments/run.py " + " ".join(shlex.quote(a) for a in argv)
        run_set(
            spec,
            seeds=args.seeds,
            epochs=args.epochs,
            dataset=args.dataset,
            out=args.out,
            results=args.results,
            limit_train=args.limit_train,
            limit_test=args.limit_test,
            device=args.device,
            batch_size=args.batch_size,
            only=args.only,
            plots=not args.no_plots,
            command=command,
            note=args.note,
            quiet=not args.verbose,
        )
    except ValueError as err:  # SetError, bad values from the training loop or the data
        print(f"run.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("run.py: interrupted (finished runs are kept; run again to resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
