"""Evaluation across depths: one trained network at several step sizes (``sdenet eval --depths``).

:func:`evaluate_depths` evaluates a checkpoint at each depth factor ``F`` (its stages run with
``F·N`` steps of ``Δt/F`` and the network's own weights, :func:`sdenet.nn.at_depth` — the same
function as ``refine(net, F)`` for ``F ≥ 1`` and ``coarsen(net, 1/F)`` for ``F < 1``) and
reports the test error with its binomial standard error, the number of steps and the compute
relative to the trained depth (residual-branch evaluations per image; the stem and head, which
do not change with depth, excluded). :func:`plot_depths` draws accuracy against compute.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["evaluate_depths", "plot_depths", "format_depths"]


def evaluate_depths(checkpoint, factors, **evaluate_kwargs) -> dict:
    """``{"checkpoint", "model", ..., "depths": [one :func:`sdenet.train.evaluate` result per factor]}``.

    ``factors``: ``"0.5,1,2"`` or a sequence of numbers (integers ``F ≥ 1`` or ``1/k``);
    every factor is checked (and a coarsening the network's stages cannot take refused,
    ``ValueError`` naming the stage) before the first evaluation.
    """
    from ..nn.depth import parse_depth_factors
    from .evaluation import evaluate

    fs = parse_depth_factors(factors)
    if "depth" in evaluate_kwargs:
        raise ValueError("evaluate_depths: give the depths as factors, not depth=")
    rows = []
    for f in sorted(fs):
        rows.append(evaluate(checkpoint, depth=f, **evaluate_kwargs))
    first = rows[0]
    keep = (
        "checkpoint",
        "model",
        "dataset",
        "epoch",
        "n_test",
        "stochastic",
        "device",
        "hardware",
        "resolution",
        "trained_resolution",
        "rescaled",
        "steps_trained",
        "recalibrated_bn",
    )
    return {**{k: first.get(k) for k in keep}, "depths": rows}


def format_depths(result: dict) -> str:
    """The table ``sdenet eval --depths`` prints."""
    rows = result["depths"]
    mc = any("test_error_mc" in r for r in rows)
    head = (
        f"{result['model']} (epoch {result['epoch']}) on {result['dataset']}: {result['n_test']} "
        f"test images; trained at {result['steps_trained']} steps (depth factor 1)"
    )
    cols = ["factor", "steps", "test error (drift)", "relative compute"]
    if mc:
        cols.insert(3, f"test error (MC, {rows[0].get('mc_samples')} samples)")
    lines = [head, "  " + " | ".join(cols)]
    for r in rows:
        cells = [
            f"{r['depth']:g}",
            f"{r['steps']}",
            f"{100 * r['test_error']:.2f}% +- {100 * r['test_error_se']:.2f}%",
        ]
        if mc:
            cells.append(
                f"{100 * r['test_error_mc']:.2f}% +- {100 * r['test_error_mc_se']:.2f}%"
                if "test_error_mc" in r
                else "-"
            )
        cells.append(f"{r['relative_compute']:.2f}x")
        lines.append("  " + " | ".join(cells))
    lines.append(
        f"  (+- one binomial standard error over the {result['n_test']} test images; "
        f"compute: residual-branch evaluations per image relative to factor 1, stem and "
        f"head excluded)"
    )
    return "\n".join(lines)


def plot_depths(result: dict, path) -> Path:
    """Test accuracy (± one standard error) against relative compute, one point per depth factor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["depths"]
    x = [r["relative_compute"] for r in rows]
    y = [100 * (1 - r["test_error"]) for r in rows]
    e = [100 * r["test_error_se"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label="drift (eval mode)")
    if all("test_error_mc" in r for r in rows):
        ax.errorbar(
            x,
            [100 * (1 - r["test_error_mc"]) for r in rows],
            yerr=[100 * r["test_error_mc_se"] for r in rows],
            marker="s",
            capsize=3,
            label=f"Monte Carlo ({rows[0]['mc_samples']} samples)",
        )
    for r, xi, yi in zip(rows, x, y):
        ax.annotate(
            f"×{r['depth']:g} ({r['steps']} steps)",
            (xi, yi),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("relative compute (residual-branch evaluations, factor 1 = 1)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{result['model']}: one network at several depths", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ValueError(f"plot: folder {path.parent} does not exist")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
