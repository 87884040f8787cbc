"""Shared plumbing of the theory items: results, figures, progress, slope fits."""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "Finding",
    "ItemResult",
    "item",
    "figure_path",
    "save_figure",
    "progress",
    "slope",
    "md_table",
    "plt",
]


@dataclass
class Finding:
    """One row of the report's summary table."""

    claim: str
    evidence: str
    agrees: str  # "yes", "no", "partly"


@dataclass
class ItemResult:
    """What an item hands to the report: findings, a markdown section, figures, numbers."""

    key: str
    title: str
    findings: list[Finding]
    body: str
    figures: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    seconds: float = 0.0


#: what an item's ``run`` returns under :func:`item`: ``(findings, body, figures, data)``
Parts = tuple[list[Finding], str, list[str], dict]


def item(key: str, title: str) -> Callable[[Callable[..., Parts]], Callable[..., ItemResult]]:
    """Make an item's ``run(out, quick=False)``, which returns its :data:`Parts`, return the
    :class:`ItemResult` under this key and title, with the seconds the run took."""

    def decorate(run: Callable[..., Parts]) -> Callable[..., ItemResult]:
        @functools.wraps(run)
        def timed(out, quick: bool = False) -> ItemResult:
            t_start = time.perf_counter()
            findings, body, figures, data = run(out, quick)
            return ItemResult(key, title, findings, body, figures, data, time.perf_counter() - t_start)

        return timed

    return decorate


def out_dir(out) -> Path:
    path = Path(out)
    (path / "figures").mkdir(parents=True, exist_ok=True)
    return path


def figure_path(out, name: str) -> Path:
    return out_dir(out) / "figures" / name


def save_figure(fig, out, name: str) -> str:
    """Save ``fig`` as ``out/figures/name`` (PNG) and return the path relative to ``out``."""
    from sdenet.train.safe_io import save_figure as _save_safely

    path = figure_path(out, name)
    fig.tight_layout()
    _save_safely(fig, path, dpi=110)  # no symbolic link followed
    plt.close(fig)
    return f"figures/{name}"


_T0 = [time.perf_counter()]


def progress(msg: str) -> None:
    """One progress line on stdout (the items print several each)."""
    if os.environ.get("THEORY_QUIET"):
        return
    print(f"  [{time.perf_counter() - _T0[0]:6.1f}s] {msg}", flush=True)


def slope(dts, errors, stderr=None):
    """Observed order: least-squares slope of ``log error`` on ``log Δt`` with a 95% interval.

    Delegates to :func:`sdenet.weak.fit_slope` (which weighs Monte Carlo errors by their
    standard errors) and returns ``(slope, (lo, hi))``.
    """
    from sdenet.weak import fit_slope

    dts = [float(d) for d in dts]
    errors = [float(e) for e in errors]
    if stderr is not None:
        stderr = [float(s) for s in stderr]
    return fit_slope(dts, errors, stderr)


def md_table(header, rows) -> str:
    """A markdown table from a header and rows of cells."""
    lines = ["| " + " | ".join(str(h).replace("|", "\\|") for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e-3 and abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{max(digits - 1, 1)}e}"


def verdict(ok: bool, partly: bool = False) -> str:
    """A finding's ``agrees``: "yes" when ``ok``, else "partly" (a qualified claim) or "no"."""
    return "yes" if ok else ("partly" if partly else "no")


def orders(results: dict, sep: str = ", ") -> str:
    """``label order, label order, …`` of ``{label: {"order": …}}`` (a finding's evidence)."""
    return sep.join(f"{label} {r['order']:.2f}" for label, r in results.items())


def loglog_axes(ax, xlabel="Δt", ylabel="error"):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def panel(ax, xlabel: str, ylabel: str, title: str, title_size: float = 9, legend_size: float = 7) -> None:
    """Finish a log–log panel: its axes (:func:`loglog_axes`), title and legend."""
    loglog_axes(ax, xlabel, ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.legend(fontsize=legend_size)


def se_bars(ax, dts, errors, stderr, style: str = "o", upper: bool = True, **kw) -> None:
    """``errors`` against ``dts`` with bars of 2 standard errors: above each point only (``upper``;
    a log axis has no room for the lower bar) or on both sides; ``kw`` go to ``ax.errorbar``."""
    up = 2 * np.asarray(stderr)
    ax.errorbar(dts, errors, yerr=[np.zeros_like(up), up] if upper else up, fmt=style, capsize=2, **kw)


def reference_line(ax, dts, anchor_dt, anchor_err, order, **kw):
    """A dashed ``C Δt^order`` guide through ``(anchor_dt, anchor_err)``."""
    dts = np.asarray(dts, dtype=float)
    ax.plot(dts, anchor_err * (dts / anchor_dt) ** order, "--", color="gray", lw=1, **kw)
