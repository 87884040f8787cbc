"""Pictures of finished (or running) training runs.

Reads run folders in the format written by :func:`sdenet.train.train` (``config.json``,
``metrics.jsonl`` one JSON object per epoch, ``metrics.json`` at the end) and draws, with
matplotlib's Agg backend, PNG files:

* ``errors.png`` — training and test error against epoch for every run on one figure
  (the paper's Figures 3 and 5);
* ``lm_coefficients.png`` — the learned ``k_n`` of the LM step
  ``u_{n+1} = (1 - k_n) u_n + k_n u_{n-1} + Δt f(u_n)`` against the block's depth, at the last
  recorded epoch (the paper's Figure 4); only runs that record LM coefficients appear; for
  stochastic runs (LM stochastic depth) the recorded coefficients are the ``g_n`` of
  ``X_{n+1} = (2 + g_n) X_n - (1 + g_n) X_{n-1} + η_n f(X_n)`` and are labelled so;
* ``weak-<run>-<stage>.png`` — condition (5) for each stochastic stage of a run: the
  empirical ``K = C/Δt²`` with ``C = |m1| + |m3| + |m2 - Δt|`` of every block over the epochs,
  and the empirical moments ``m1, m2 - Δt, m3`` of the increments per block at the last epoch
  against their exact values for the block's law (``sdenet.laws``).

Runs without LM coefficients or without stochastic stages skip those figures; the functions
return the paths they wrote and report what they skipped through ``log``.

Entry point: :func:`plot_runs`. Errors in a run folder raise :class:`RunFolderError`
(a ``ValueError`` whose message names the folder and the problem).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "RunFolderError",
    "Run",
    "load_run",
    "plot_errors",
    "plot_lm_coefficients",
    "plot_weak",
    "plot_runs",
    "default_out_dir",
]


class RunFolderError(ValueError):
    """A run folder that is missing, empty or not in the run-folder format."""


@dataclass
class Run:
    """One run folder, read: ``metrics`` is the list of per-epoch records in epoch order,
    ``config`` the resolved config (``{}`` if absent), ``final`` the end-of-run summary
    (``None`` while the run has not finished)."""

    path: Path
    metrics: list
    config: dict = field(default_factory=dict)
    final: dict | None = None
    label: str = ""

    @property
    def epochs(self) -> list:
        return [int(m["epoch"]) for m in self.metrics]

    @property
    def model(self) -> str:
        return str(self.config.get("model") or (self.final or {}).get("model") or self.path.name)


_REQUIRED = ("epoch", "train_error", "test_error")


def _read_json(path: Path, folder: Path):
    from .safe_io import MAX_JSON_BYTES

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise RunFolderError(f"{folder}: {path.name} is larger than {MAX_JSON_BYTES >> 20} MiB")
        return json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{folder}: cannot read {path.name}: {err}") from None
    except json.JSONDecodeError as err:
        raise RunFolderError(
            f"{folder}: {path.name} is not valid JSON ({err.msg}, line {err.lineno})"
        ) from None


def load_run(run_dir, label: str | None = None) -> Run:
    """Read a run folder. Raises :class:`RunFolderError` if it is missing, has no
    ``metrics.jsonl``, or its records are not per-epoch JSON objects with at least
    ``epoch``, ``train_error`` and ``test_error``.

    A last line without its newline that does not parse is a record still being written
    and is ignored; any other bad line is an error.
    """
    folder = Path(run_dir)
    if not folder.exists():
        raise RunFolderError(f"{folder}: no such run folder")
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: not a folder (expected a run folder with metrics.jsonl)")
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise RunFolderError(f"{folder}: no metrics.jsonl (not a run folder, or no epoch has finished yet)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{folder}: cannot read metrics.jsonl: {err}") from None
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # partial last line of a run in progress
                continue
            raise RunFolderError(f"{folder}: metrics.jsonl line {i + 1} is not valid JSON") from None
        if not isinstance(rec, dict):
            raise RunFolderError(f"{folder}: metrics.jsonl line {i + 1} is not a JSON object")
        missing = [k for k in _REQUIRED if k not in rec]
        if missing:
            raise RunFolderError(f"{folder}: metrics.jsonl line {i + 1} lacks {', '.join(missing)}")
        try:
            rec["epoch"] = int(rec["epoch"])
        except (TypeError, ValueError):
            raise RunFolderError(f"{folder}: metrics.jsonl line {i + 1} has a non-integer epoch") from None
        records.append(rec)
    if not records:
        raise RunFolderError(f"{folder}: metrics.jsonl holds no epoch records")
    # a resumed run may repeat an epoch: keep the last record of each epoch
    by_epoch = {}
    for rec in records:
        by_epoch[rec["epoch"]] = rec
    records = [by_epoch[e] for e in sorted(by_epoch)]
    config = {}
    if (folder / "config.json").is_file():
        config = _read_json(folder / "config.json", folder)
        if not isinstance(config, dict):
            raise RunFolderError(f"{folder}: config.json is not a JSON object")
    final = None
    if (folder / "metrics.json").is_file():
        final = _read_json(folder / "metrics.json", folder)
        if not isinstance(final, dict):
            raise RunFolderError(f"{folder}: metrics.json is not a JSON object")
    run = Run(path=folder, metrics=records, config=config, final=final)
    run.label = label if label is not None else ""
    return run


def _default_labels(runs: Sequence[Run]) -> list:
    """The model name, made unique with the seed and then the folder name where needed."""
    base = [r.model for r in runs]
    labels = list(base)
    if len(set(labels)) < len(labels):
        labels = [
            f"{b} seed {r.config.get('seed')}" if r.config.get("seed") is not None else b
            for b, r in zip(base, runs)
        ]
    if len(set(labels)) < len(labels):
        labels = [f"{l} ({r.path.name})" for l, r in zip(labels, runs)]
    return labels


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "run"


#: Okabe & Ito's colour-blind-safe palette without its yellow (#F0E442), which vanishes on
#: white and in print: black, orange, sky blue, bluish green, blue, vermillion, reddish purple
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7")
#: markers that tell the lines apart in grey print too
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from cycler import cycler

    plt.rcParams["axes.prop_cycle"] = cycler(color=list(PALETTE))
    return plt


def _colour(i: int, n: int, plt):
    """Colour of line ``i`` of ``n``: the palette while it lasts, else viridis stopped short
    of its pale yellow end (0 .. 0.8)."""
    if n <= len(PALETTE):
        return PALETTE[i % len(PALETTE)]
    return plt.get_cmap("viridis")(0.8 * i / max(n - 1, 1))


def stage_words(name) -> str:
    """A stage's name in words for a title: ``stage1`` → ``stage 1``,
    ``stage2.transition`` → ``the transition into stage 2``; other names as they are."""
    s = str(name)
    m = re.fullmatch(r"stage(\d+)", s)
    if m:
        return f"stage {m.group(1)}"
    m = re.fullmatch(r"stage(\d+)\.transition", s)
    if m:
        return f"the transition into stage {m.group(1)}"
    return s


def _moment_se(entry: dict):
    """Standard errors of the empirical ``m1, m2, m3`` of a block (means of ``n`` draws of
    ``ΔŴ, ΔŴ², ΔŴ³``): ``sqrt((E ΔŴ^{2k} − (E ΔŴ^k)²)/n)`` from the exact moments of the
    block's law at its Δt; None when the law or ``n`` is unknown."""
    try:
        from ..laws import get_law

        n = int(entry.get("n") or 0)
        if n < 2:
            return None
        law_match = re.match(r"\s*([A-Za-z_-]+)", str(entry.get("law")))
        if law_match is None:  # no law name: as the except below
            return None
        name = law_match.group(1)
        law = get_law(name)
        if law.drops and entry.get("p") is not None:
            law = law.with_survival(float(entry["p"]))
        dt = float(entry["dt"])
        return tuple(
            math.sqrt(max(law.moment(2 * k, dt) - law.moment(k, dt) ** 2, 0.0) / n) for k in (1, 2, 3)
        )
    except Exception:  # an unknown law, a law without higher moments: no error bars
        return None


def _finite(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _save(fig, path: Path, plt) -> Path:
    from .safe_io import save_figure

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_figure(fig, path, dpi=110, bbox_inches="tight")  # no symbolic link followed
    finally:
        plt.close(fig)
    return path


def _epoch_ticks(ax, epochs) -> None:
    """Integer epoch ticks; every epoch labelled when there are few."""
    from matplotlib.ticker import MaxNLocator

    epochs = sorted(epochs)
    if epochs and len(epochs) <= 12:
        ax.set_xticks(epochs)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_errors(runs: Sequence[Run], out_dir, filename: str = "errors.png") -> Path:
    """Training (left) and test (right) error in percent against epoch, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, layout="constrained")
    for i, run in enumerate(runs):
        c = _colour(i, len(runs), plt)
        ep = run.epochs
        mk = MARKERS[i % len(MARKERS)] if len(ep) < 30 else None
        axes[0].plot(
            ep,
            [100 * _finite(m["train_error"]) for m in run.metrics],
            "-",
            color=c,
            marker=mk,
            ms=4,
            label=run.label,
        )
        # the test error of a finished epoch is a mean over n_test images: ± its binomial se
        n_test = run.config.get("n_test") if isinstance(getattr(run, "config", None), dict) else None
        te = [_finite(m["test_error"]) for m in run.metrics]
        se = [100 * math.sqrt(e * (1 - e) / n_test) if n_test and 0 <= e <= 1 else 0.0 for e in te]
        axes[1].errorbar(
            ep,
            [100 * e for e in te],
            yerr=se if any(se) else None,
            fmt="-",
            color=c,
            marker=mk,
            ms=4,
            capsize=2,
            label=run.label,
        )
    _epoch_ticks(axes[0], {e for run in runs for e in run.epochs})
    for ax, what in zip(axes, ("training", "test")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{what} error (%)")
        ax.set_title(
            f"{what} error"
            + (
                " (± one binomial standard error over the test images)"
                if what == "test"
                else " (running mean over the epoch)"
            ),
            fontsize=9,
        )
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("Training and test error against epoch")
    return _save(fig, Path(out_dir) / filename, plt)


def _is_stochastic(run: Run) -> bool:
    """A run whose records carry a weak report: its LM coefficients are the g_n of the LM
    stochastic-depth scheme rather than the k_n of the LM step."""
    return any(rec.get("weak") for rec in run.metrics)


def _lm_series(run: Run):
    """(stage names, per-stage k lists) at the last epoch with non-empty LM coefficients."""
    for rec in reversed(run.metrics):
        coeffs = rec.get("lm_coefficients") or {}
        if isinstance(coeffs, dict) and any(coeffs.values()):
            return rec["epoch"], {str(k): [_finite(x) for x in v] for k, v in coeffs.items() if v}
    return None, {}


def plot_lm_coefficients(runs: Sequence[Run], out_dir, filename: str = "lm_coefficients.png"):
    """The learned ``k_n`` against block depth (blocks numbered through all stages), one line
    per run, stage boundaries dotted. Returns the path, or None when no run has LM
    coefficients."""
    series = [(run, *_lm_series(run)) for run in runs]
    series = [s for s in series if s[2]]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    bounds = None
    kinds = set()
    for i, (run, epoch, coeffs) in enumerate(series):
        ks, edges, n = [], [], 0
        for stage in coeffs:  # stage order as recorded
            ks.extend(coeffs[stage])
            n += len(coeffs[stage])
            edges.append(n)
        kind = "g_n" if _is_stochastic(run) else "k_n"
        kinds.add(kind)
        ax.plot(
            range(1, len(ks) + 1),
            ks,
            "-",
            marker=MARKERS[i % len(MARKERS)],
            ms=4,
            color=_colour(i, len(series), plt),
            label=f"{run.label}: ${kind}$ (epoch {epoch})",
        )
        bounds = bounds or edges[:-1]
    for b in bounds or []:
        ax.axvline(b + 0.5, color="0.6", ls=":", lw=1)
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel("block (depth, through all stages)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(" / ".join(f"${k}$" for k in sorted(kinds, reverse=True)))
    titles = []
    if "k_n" in kinds:
        titles.append(r"LM: $u_{n+1}=(1-k_n)u_n+k_nu_{n-1}+\Delta t\,f(u_n)$")
    if "g_n" in kinds:
        titles.append(r"LM stochastic depth: $X_{n+1}=(2+g_n)X_n-(1+g_n)X_{n-1}+\eta_n f(X_n)$")
    ax.set_title("Learned LM coefficients: " + "; ".join(titles), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(out_dir) / filename, plt)


def _exact_moments(entry: dict):
    """Exact (m1, m2 - Δt, m3) of the entry's law at its Δt, or None if unknown."""
    try:
        from ..laws import get_law

        law_match = re.match(r"\s*([A-Za-z_-]+)", str(entry.get("law")))
        if law_match is None:  # no law name: as the except below
            return None
        name = law_match.group(1)
        law = get_law(name)
        if entry.get("p") is not None:
            law = law.with_survival(float(entry["p"]))  # a drop law takes the entry's p
        dt = float(entry["dt"])
        m1, m2, m3, _ = law.moments(dt)
        return m1, m2 - dt, m3
    except Exception:  # an unknown law name, a missing dt: just no exact marker
        return None


def _empirical_K(entry) -> float:
    """``(|m1| + |m2 − Δt| + |m3|)/Δt²`` from the moments a block drew that epoch (NaN if none)."""
    dt = _finite(entry.get("dt"))
    if not dt > 0:
        return math.nan
    m1, m2, m3 = (_finite(entry.get(k)) for k in ("m1", "m2", "m3"))
    return (abs(m1) + abs(m2 - dt) + abs(m3)) / dt**2


def _weak_by_stage(run: Run):
    """{stage: {block: [(epoch, entry), ...]}} over all epochs with a weak report."""
    stages: dict = {}
    for rec in run.metrics:
        for entry in rec.get("weak") or []:
            if not isinstance(entry, dict) or "stage" not in entry or "block" not in entry:
                continue
            stages.setdefault(str(entry["stage"]), {}).setdefault(int(entry["block"]), []).append(
                (rec["epoch"], entry)
            )
    return stages


def plot_weak(run: Run, out_dir) -> list:
    """One figure per stochastic stage of ``run``: empirical ``K`` of every block against
    epoch (left), and the empirical ``m1``, ``m2 - Δt``, ``m3`` per block at the last epoch
    with the exact values of the block's law (right). Returns the paths (empty when the run
    records no weak report)."""
    stages = _weak_by_stage(run)
    if not stages:
        return []
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    paths = []
    for stage, blocks in stages.items():
        fig, (ax_k, ax_m) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
        cmap = plt.get_cmap("viridis")
        nb = len(blocks)
        for j, (block, hist) in enumerate(sorted(blocks.items())):
            color = _colour(j, nb, plt)
            ses = [_moment_se(en) for _, en in hist]
            dts = [_finite(en.get("dt")) for _, en in hist]
            # ± se of the empirical K: (se1 + se2 + se3)/Δt², as sdenet weak check bounds it
            kse = [sum(se) / d**2 if se is not None and d > 0 else 0.0 for se, d in zip(ses, dts)]
            ax_k.errorbar(
                [e for e, _ in hist],
                [_empirical_K(en) for _, en in hist],
                yerr=kse if any(kse) else None,
                fmt="-",
                color=color,
                capsize=2,
                marker=MARKERS[j % len(MARKERS)] if len(hist) < 30 else None,
                ms=4,
                label=f"block {block}" if nb <= 12 else None,
            )
            exact = _exact_moments(hist[-1][1])
            dt = _finite(hist[-1][1].get("dt"))
            if exact is not None and dt > 0:
                k_exact = (abs(exact[0]) + abs(exact[1]) + abs(exact[2])) / dt**2
                ax_k.axhline(k_exact, color=color, ls=":", lw=1)
        ax_k.plot([], [], ":", color="0.4", label="exact K (dotted)")
        _epoch_ticks(ax_k, {e for hist in blocks.values() for e, _ in hist})
        ax_k.set_xlabel("epoch")
        ax_k.set_ylabel(r"empirical $K = C/\Delta t^2$ (± one standard error)")
        ax_k.set_title(f"Condition (5) constant of each block of {stage_words(stage)}", fontsize=10)
        ax_k.grid(alpha=0.3)
        if nb <= 12:
            ax_k.legend(fontsize=7, ncol=2)
        else:
            ax_k.legend(fontsize=7)
            sm = plt.cm.ScalarMappable(
                cmap=cmap, norm=plt.Normalize(min(blocks), min(blocks) + (max(blocks) - min(blocks)) / 0.8)
            )
            fig.colorbar(sm, ax=ax_k, label="block")

        last = [(block, hist[-1][1]) for block, hist in sorted(blocks.items())]
        xs = [b for b, _ in last]
        emp = {
            "m1": [_finite(en.get("m1")) for _, en in last],
            "m2 - Δt": [_finite(en.get("m2")) - _finite(en.get("dt")) for _, en in last],
            "m3": [_finite(en.get("m3")) for _, en in last],
        }
        exact = [_exact_moments(en) for _, en in last]
        colors = {"m1": PALETTE[0], "m2 - Δt": PALETTE[1], "m3": PALETTE[4]}
        ses = [_moment_se(en) for _, en in last]
        for i, (name, vals) in enumerate(emp.items()):
            err = [se[i] if se is not None else 0.0 for se in ses]
            ax_m.errorbar(
                xs,
                vals,
                yerr=err if any(err) else None,
                fmt=MARKERS[i],
                color=colors[name],
                capsize=3,
                label=f"empirical {name} ± se",
            )
            ex = [e[i] if e is not None else math.nan for e in exact]
            if any(not math.isnan(v) for v in ex):
                ax_m.plot(xs, ex, "_", color=colors[name], ms=14, mew=2, label=f"exact {name}")
        laws = []
        for name in dict.fromkeys(str(en.get("law")) for _, en in last):
            ps = sorted(
                {
                    _finite(en.get("p"))
                    for _, en in last
                    if str(en.get("law")) == name and en.get("p") is not None
                }
            )
            if not ps:
                laws.append(name)
            elif len(ps) == 1:
                laws.append(f"{name} p={ps[0]:.3g}")
            else:
                laws.append(f"{name} p={ps[0]:.3g}..{ps[-1]:.3g}")
        dts = sorted({_finite(en.get("dt")) for _, en in last})
        ax_m.axhline(0.0, color="0.3", lw=0.8)
        ax_m.set_xlabel("block")
        ax_m.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_m.set_ylabel("moment of the increment (empirical ± one standard error)")
        ax_m.set_title(
            f"Moments of the increments in epoch {max(e for hist in blocks.values() for e, _ in hist)}: "
            f"{', '.join(laws)}; Δt = {', '.join(f'{d:g}' for d in dts)}",
            fontsize=9,
        )
        ax_m.grid(alpha=0.3)
        ax_m.legend(fontsize=7)
        fig.suptitle(
            f"{run.label}, {stage_words(stage)}: condition (5), |E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt| ≤ K Δt²"
        )
        paths.append(_save(fig, Path(out_dir) / f"weak-{_slug(run.label)}-{_slug(stage)}.png", plt))
    return paths


def default_out_dir(run_dirs: Sequence) -> Path:
    """Where :func:`plot_runs` writes without ``out_dir``: the run folder itself for one run,
    ``plots/`` (in the working directory) for several."""
    return Path(run_dirs[0]) if len(run_dirs) == 1 else Path("plots")


def plot_runs(
    run_dirs: Iterable,
    out_dir=None,
    labels: Sequence[str] | None = None,
    log: Callable[[str], None] | None = print,
) -> list:
    """Read every run folder and write all figures into ``out_dir`` (see
    :func:`default_out_dir`). Returns the written paths; ``log`` (default ``print``) gets one
    line per file and per skipped figure."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("plot: give at least one run folder")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"plot: {len(labels)} labels for {len(run_dirs)} run folders")
    runs = [load_run(d) for d in run_dirs]
    names = list(labels) if labels is not None else _default_labels(runs)
    for run, name in zip(runs, names):
        run.label = name
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dirs)
    if out.exists() and not out.is_symlink() and not out.is_dir():
        raise ValueError(f"plot: --out {out} exists and is not a folder")
    from .safe_io import check_output_path, lock_output

    out = check_output_path(out_dir if out_dir is not None else out, "--out", folder=True, make_parents=True)
    say = log or (lambda s: None)
    with lock_output(out, "--out", folder=True):  # a run folder: its run lock, for the writes
        paths = [plot_errors(runs, out)]
        say(str(paths[-1]))
        lm = plot_lm_coefficients(runs, out)
        if lm is None:
            say("no LM coefficients recorded in these runs: skipped the k_n figure")
        else:
            paths.append(lm)
            say(str(lm))
        for run in runs:
            weak = plot_weak(run, out)
            if not weak:
                say(f"{run.label}: no stochastic stages: skipped the condition-(5) figures")
            for p in weak:
                say(str(p))
            paths.extend(weak)
    return paths
