"""Item 7 — depth is a step size: refinement at fixed T for every family, and the LM start.

``sdenet.nn.refine(m, 2^j)`` integrates every stage of a network over the same T with 2^j× the
steps at Δt/2^j (block n's weights over its sub-steps). For each registered family (random
weights, eval mode) the output ``y_j`` should converge as j grows, with the successive
differences ``|y_j − y_{j+1}|`` shrinking like Δt^order: order 1 for every scheme, since the
refined field is piecewise constant in t.

The LM stochastic-depth start: a transition hands ``S(x)`` over as history. Read as
``X_{−1} = S(x)`` at every Δt (the rule before issue 9), the initial velocity
``(X_0 − X_{−1})/Δt = r/Δt`` blows up as Δt → 0; the fixed rule
``X_{−1} = X_0 + Δt (S(x) − X_0)`` (:meth:`sdenet.Scheme.start`) keeps velocity ``r`` and
converges; so does the start from rest.
"""

from __future__ import annotations

import numpy as np
import torch

import sdenet
import sdenet.models as M
from sdenet.nn import refine

from ._common import Finding, fmt, item, md_table, panel, plt, progress, save_figure, slope, verdict

__all__ = ["FAMILIES", "family_refinement", "toy_lm_sd", "network_lm_sd", "run"]

FAMILIES = {
    "Euler (tiny_resnet)": "tiny_resnet",
    "LM (tiny_lm_resnet)": "tiny_lm_resnet",
    "stochastic depth (tiny_sd_resnet)": "tiny_sd_resnet",
    "LM stochastic depth (tiny_lm_sd_resnet)": "tiny_lm_sd_resnet",
    "shake-shake (tiny_shake_shake)": "tiny_shake_shake",
    "Neumann (polynet)": "polynet",
    "Heun (fractalnet)": "fractalnet",
    "coupled Euler (revnet)": "revnet",
}


def old_rule_forward(net, x):
    """``net`` with the pre-fix history ``X_{−1} = S(x)`` at every Δt (the drift in eval mode,
    the noise of the network's own generator in training mode). The tests use it too."""
    x = net.stem(x)
    for layer in net.layers:
        s = None
        if layer.transition is not None:
            x, s = layer.transition(x)
        st = layer.stage
        if st is None:
            continue
        schemes = st.schemes if st._noisy() else st._eval_schemes
        state = schemes[0].init(st.field, st.t0, x, st.dt)
        if s is not None and isinstance(state, dict):
            state["prev"] = s
        for n in range(st.steps):
            x, state = schemes[n].step(st.field, st.t0 + n * st.dt, x, st.dt, state, st._generator)
            if st.post is not None:
                x = st._post(x)
    return net.head(x)


def family_refinement(levels: int = 6, seed: int = 0):
    """``{label: {"dts", "diff", "order", "ci", "norm"}}``: successive differences of ``refine(m, 2^j)``."""
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    out = {}
    for label, name in FAMILIES.items():
        torch.manual_seed(seed)
        net = M.create(name).eval()
        with torch.no_grad():
            ys = [refine(net, 2**j)(x) if j else net(x) for j in range(levels + 1)]
        diff = [float((a - b).norm() / ys[-1].norm()) for a, b in zip(ys, ys[1:])]
        dts = [2.0**-j for j in range(levels)]
        order, ci = slope(dts[-3:], diff[-3:])
        out[label] = {
            "dts": dts,
            "diff": diff,
            "order": order,
            "ci": ci,
            "norm": [float(y.norm()) for y in ys],
        }
        progress(f"item 7: {label}: observed order {order:.2f}")
    return out


class _Lin(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        return torch.tanh(x @ self.w)


def toy_lm_sd(T: float = 4.0, g: float = -0.95, levels: int = 7, dim: int = 4, seed: int = 0):
    """A transition ``S(x) = x``, ``r = f(x)``, then an LM stochastic-depth stage (mean equation,
    ``p = 1``) over ``T`` with damping ``g``: ``|X_T|`` for Δt = 1 … 2^−levels under the old
    history rule, the fixed rule and the start from rest."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, dim, generator=gen, dtype=torch.float64) * 1.5
    x = torch.randn(8, dim, generator=gen, dtype=torch.float64)
    f = _Lin(w)
    r = f(x)
    x0, s = x + r, x
    res: dict[str, list[float]] = {"dts": [], "old": [], "fixed": [], "rest": []}
    for j in range(levels):
        dt = 2.0**-j
        n = int(round(T / dt))
        field = sdenet.nn.DropField([f] * n, 1.0, dt)
        stage = sdenet.nn.Stage(field, sdenet.StochasticLM(g=g, law=sdenet.DropBernoulli(1.0)), dt=dt).eval()
        with torch.no_grad():
            fixed = stage(x0, s)
            rest = stage(x0)
            sch = stage._eval_schemes[0]
            state = sch.init(field, 0.0, x0, dt)
            state["prev"] = s
            xo = x0
            for k in range(n):
                xo, state = sch.step(field, k * dt, xo, dt, state)
        res["dts"].append(dt)
        for key, v in (("old", xo), ("fixed", fixed), ("rest", rest)):
            res[key].append(float(v.norm(dim=1).mean()))
    return res


def network_lm_sd(levels: int = 6, seed: int = 0):
    """``max |logits|`` of ``refine(tiny_lm_sd_resnet, 2^j)`` with the old and the fixed start."""
    torch.manual_seed(seed)
    net = M.create("tiny_lm_sd_resnet").eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    res: dict[str, list[float]] = {"dts": [], "old": [], "fixed": []}
    with torch.no_grad():
        for j in range(levels + 1):
            m = refine(net, 2**j)
            res["dts"].append(2.0**-j)
            res["old"].append(float(old_rule_forward(m, x).abs().max()))
            res["fixed"].append(float(m(x).abs().max()))
    return res


@item("refinement", "8. Depth is a step size: refinement at fixed T")
def run(out, quick: bool = False):
    levels = 4 if quick else 6
    progress("item 7: refine(m, 2^j) for every family")
    fam = family_refinement(levels)
    progress("item 7: the LM stochastic-depth start on a toy field and on a network")
    toy = toy_lm_sd(levels=6 if quick else 7)
    net = network_lm_sd(levels)

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    for label, r in fam.items():
        ax.plot(r["dts"], r["diff"], "o-", ms=3, label=f"{label}: {r['order']:.2f}")
    d = np.asarray(fam[next(iter(fam))]["dts"])
    ax.plot(d, 0.3 * d, "k--", lw=1, label="Δt¹")
    title = "refine(m, 2^j) at fixed T, eval mode, random weights\n(legend: observed order)"
    panel(ax, "Δt of the coarser network", "|y_j − y_{j+1}| / |y_final|", title, 9, 6.5)
    ax = axes[1]
    for key, style, lab in (
        ("old", "s-", "X₋₁ = S(x) (old rule)"),
        ("fixed", "o-", "X₋₁ = X₀ + Δt (S(x) − X₀) (fixed)"),
        ("rest", "^--", "from rest"),
    ):
        ax.plot(toy["dts"], toy[key], style, ms=4, label=lab)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Δt")
    ax.set_ylabel("mean |X_T|")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(
        "LM stochastic depth after a transition, toy field\nT = 4, g = −0.95 (mean equation)", fontsize=9
    )
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(net["dts"], net["old"], "s-", label="old rule")
    ax.plot(net["dts"], net["fixed"], "o-", label="fixed rule")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Δt (refine factor 1/Δt)")
    ax.set_ylabel("max |logits|")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("refine(tiny_lm_sd_resnet, 2^j), eval mode", fontsize=9)
    ax.legend(fontsize=7)
    fig_path = save_figure(fig, out, "refinement.png")

    rows = [
        (
            label,
            " ".join(fmt(v, 2) for v in r["diff"]),
            f"{r['order']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]",
        )
        for label, r in fam.items()
    ]
    ok = all(0.75 <= r["order"] <= 1.3 for r in fam.values())
    toy_rows = [
        (fmt(dt), fmt(o), fmt(f), fmt(s))
        for dt, o, f, s in zip(toy["dts"], toy["old"], toy["fixed"], toy["rest"])
    ]
    net_rows = [(fmt(dt), fmt(o), fmt(f)) for dt, o, f in zip(net["dts"], net["old"], net["fixed"])]
    old_grows = toy["old"][-1] > 3 * toy["old"][0]
    fixed_conv = (
        abs(toy["fixed"][-1] - toy["fixed"][-2]) < 0.6 * abs(toy["fixed"][-2] - toy["fixed"][-3]) + 1e-12
    )
    findings = [
        Finding(
            "a network refined at fixed T (refine(m, 2^j)) converges, order 1, for every family",
            "; ".join(f"{lab.split(' (')[0]} {r['order']:.2f}" for lab, r in fam.items()),
            verdict(ok, partly=True),
        ),
        Finding(
            "LM stochastic depth has a Δt → 0 limit after a transition only with the fixed history rule",
            f"toy |X_T|: old rule {fmt(toy['old'][0])} → {fmt(toy['old'][-1])}, fixed {fmt(toy['fixed'][0])} → "
            f"{fmt(toy['fixed'][-1])}; tiny_lm_sd_resnet max|logits| old {fmt(net['old'][-1])}, fixed "
            f"{fmt(net['fixed'][-1])} at Δt = {fmt(net['dts'][-1])}",
            verdict(old_grows and fixed_conv),
        ),
    ]
    body = f"""**Claim (DESIGN.md, "Depth is a step size").** Refining a network at fixed T — every stage 2^j× the steps
at Δt/2^j, block n's weights over its sub-steps (`sdenet.nn.refine`, `mode="constant"`) — is the same
piecewise-constant field integrated with a finer step, so the outputs converge as j → ∞, with differences
`|y_j − y_(j+1)|` of order Δt. Every piece of history must have a limit: the LM stochastic-depth start after a
transition did not.

**Every family** (random weights, eval mode, one 8×8 image, differences relative to the finest output, Δt of
the coarser of the two networks; order fitted on the last three):

{md_table(["family", "|y_j − y_(j+1)| / |y_final|, j = 0, 1, …", "observed order (95% interval)"], rows)}

![refinement]({fig_path})

**The LM stochastic-depth start.** A transition computes `X_0 = S(x) + r` and hands `S(x)` over. The scheme reads
`(X_0 − X_(−1))/Δt` as the velocity. With `X_(−1) = S(x)` at every Δt (the rule before issue 9) the initial
velocity is `r/Δt`; the fixed rule (`sdenet.Scheme.start`) keeps the velocity the transition produced over its
unit step, `X_(−1) = X_0 + Δt (S(x) − X_0)`, which is `S(x)` itself at Δt = 1 (the networks there are unchanged
bit for bit). Toy: `S(x) = x`, `f = tanh(W x)`, `StochasticLM` mean equation (p = 1), g = −0.95, T = 4:

{md_table(["Δt", "mean |X_T|, old rule", "fixed rule", "from rest"], toy_rows)}

On `tiny_lm_sd_resnet` (max |logits| of `refine(m, 2^j)`):

{md_table(["Δt", "old rule", "fixed rule"], net_rows)}

**Verdict.** {"Every family converges with order close to 1." if ok else "Not every family shows order 1 at these levels (see the table)."}
The old start has no limit (its |X_T| grows as Δt shrinks); the fixed one converges, like the start from rest.
"""
    return findings, body, [fig_path], {"families": fam, "toy": toy, "network": net}
