"""Item 4 — weak convergence of each noise law.

Condition (5) on the increments of the weak Euler scheme ``X_{n+1} = X_n + f Δt + g ΔŴ_n``,

    C(Δt) = |E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt| ≤ K Δt²,

holds with C = 0 for the symmetric laws (Gaussian, uniform, Rademacher, three-point,
stochastic depth at p = ½). For stochastic depth with fixed p ≠ ½,
``C(Δt)/Δt² = |1 − 2p| / √(p(1−p)) · Δt^{−1/2}`` is unbounded as Δt → 0 and the scheme's
weak order drops from 1 to ½ (seen with φ(x) = x³, whose expectation feels E ΔŴ³). With
``1 − 2p = c√Δt`` (the paper's assumption) ``C/Δt²`` stays bounded and order 1 returns.

Weak convergence says nothing about paths: with Rademacher increments coupled to a
Brownian path step by step (``ΔŴ_n = √Δt sign(ΔW_n)``), the weak error of the scheme
vanishes like Δt while its distance to the Brownian-driven solution does not shrink.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import sdenet
from sdenet import weak

from ._common import Finding, fmt, item, md_table, panel, plt, progress, save_figure, se_bars, slope, verdict

__all__ = [
    "test_sdes",
    "condition_curves",
    "weak_orders",
    "cos_orders",
    "strong_vs_weak",
    "drop_schedules",
    "scheduled_p",
    "run",
]

_F64 = torch.float64


def test_sdes():
    """The two test SDEs used here, with parameters where the O(Δt) bias has no cancellation."""
    return weak.GBM(mu=-0.5, sigma=1.0, x0=1.0, T=1.0), weak.OU(theta=1.0, sigma=0.5, x0=1.0, T=1.0)


def scheduled_p(dt: float, p1: float = 0.8) -> float:
    """Survival probability with ``1 − 2p = (1 − 2 p1) √Δt``: ``p1`` at Δt = 1, → ½ as Δt → 0
    (the library's ``p_schedule="sqrt"``, :func:`sdenet.laws.survival_at`)."""
    return sdenet.laws.survival_at(p1, dt, "sqrt")


def _label(law):
    return f"drop p={law.p}" if law.drops else law.name


def condition_curves(dts, samples: int = 1_000_000, seed: int = 0, p1: float = 0.8):
    """``C(Δt)/Δt²``, exact and empirical (with standard error), for every default law and for
    the scheduled stochastic-depth law ``p(Δt)`` (see :func:`scheduled_p`). Returns a dict of
    label -> {"dts", "K", "K_emp", "K_se"}."""
    out = {}
    rows = weak.check(weak.default_laws(), dts, samples=samples, seed=seed)
    for law in weak.default_laws():
        lab = _label(law)
        mine = [r for r in rows if r["law"] == law.name and r["p"] == getattr(law, "p", None)]
        out[lab] = {
            "dts": [r["dt"] for r in mine],
            "K": [r["condition"]["K"] for r in mine],
            "K_emp": [r["condition"]["K_empirical"] for r in mine],
            "K_se": [r["condition"]["empirical_stderr"] / r["dt"] ** 2 for r in mine],
        }
    lab = f"drop p(Δt), 1−2p = {1 - 2 * p1:+.1f}√Δt"
    ks, kemp, kse = [], [], []
    for dt in dts:
        law = sdenet.DropBernoulli(scheduled_p(dt, p1))
        g = torch.Generator().manual_seed(seed + int(1e6 * dt))
        c, se = weak.empirical_condition(law, dt, samples=samples, generator=g)
        ks.append(weak.condition_K(law, dt))
        kemp.append(c / dt**2)
        kse.append(se / dt**2)
    out[lab] = {"dts": list(dts), "K": ks, "K_emp": kemp, "K_se": kse}
    return out


def weak_orders(
    sde, laws=None, steps=(16, 32, 64, 128, 256, 512, 1024), mc_steps=(4, 8, 16), paths=400_000, phi=3, seed=0
):
    """Weak order of weak Euler with each law on ``sde``: the exact scheme bias
    ``|E φ(X_N) − E φ(X(T))|`` over ``Δt = T/N`` for N in ``steps`` (fitted slope = observed order),
    and a Monte Carlo run of :func:`sdenet.weak.weak_order` over ``mc_steps`` whose estimates
    must match the exact scheme expectation (z-scores)."""
    laws = weak.default_laws() if laws is None else laws
    res = {}
    for law in laws:
        scheme = sdenet.WeakEuler(law)
        dts = [sde.T / n for n in steps]
        bias = [abs(sde.scheme_expectation(law, dt, phi) - sde.exact(phi)) for dt in dts]
        s, ci = slope(dts, bias)
        mc = weak.weak_order(sde, scheme, dts=[sde.T / n for n in mc_steps], paths=paths, phi=phi, seed=seed)
        z = [
            (est - sde.scheme_expectation(law, dt, phi)) / se
            for est, dt, se in zip(mc["estimates"], mc["dts"], mc["stderr"])
        ]
        line_dts = sorted(set(dts) | {sde.T / n for n in mc_steps}, reverse=True)
        res[_label(law)] = {
            "declared": scheme.weak_order,
            "dts": dts,
            "bias": bias,
            "line_dts": line_dts,
            "line_bias": [abs(sde.scheme_expectation(law, dt, phi) - sde.exact(phi)) for dt in line_dts],
            "order": s,
            "order_ci": ci,
            "mc": mc,
            "z": z,
        }
    return res


def cos_orders(ou, laws=None, steps=(16, 32, 64, 128, 256, 512, 1024), mc_dt=0.25, paths=400_000, seed=0):
    """Weak Euler with each law on OU with φ = cos, which feels every moment of ΔŴ: the exact
    scheme expectation through the law's characteristic function
    (``E e^{iX_N} = e^{i a^N x0} Π_n φ_law(σ a^{N−1−n})``, ``a = 1 − θΔt``;
    :func:`sdenet.linear.scheme_cos`) against ``E cos X(T) = cos(m) e^{−v/2}``, and a Monte
    Carlo run at ``mc_dt`` compared with it (z-score)."""
    from sdenet import linear

    laws = weak.default_laws() if laws is None else laws
    exact = math.cos(ou.mean()) * math.exp(-ou.variance() / 2)
    dts = [ou.T / n for n in steps]
    res = {}
    for law in laws:
        scheme = sdenet.WeakEuler(law)
        signed = [linear.scheme_cos(ou.field(), scheme, ou.x0, ou.T, dt) - exact for dt in dts]
        at = linear.scheme_cos(ou.field(), scheme, ou.x0, ou.T, mc_dt)
        g = torch.Generator().manual_seed(seed + 17)
        mean, se = weak.monte_carlo(
            ou.field(), scheme, torch.full((1, 1), ou.x0, dtype=_F64), ou.T, mc_dt, torch.cos, paths, g
        )
        res[_label(law)] = {
            "declared": scheme.weak_order,
            "dts": dts,
            "bias": [abs(b) for b in signed],
            "signed": signed,
            "order": slope(dts, [abs(b) for b in signed])[0],
            "bias_at": at - exact,
            "mc": mean - exact,
            "mc_se": se,
            "z": (mean - at) / se,
        }
    return res


def strong_vs_weak(sde, steps=(4, 8, 16, 32, 64, 128, 256), paths=20_000, phi=3, seed=0, chunk=5_000):
    """Strong and weak error of Rademacher increments coupled to a Brownian path.

    Gaussian increments are drawn on the finest grid and summed to the coarse ``ΔW_n`` of each
    Δt. Euler–Maruyama uses ``ΔW_n``; the Rademacher scheme uses ``ΔŴ_n = √Δt sign(ΔW_n)`` (the
    monotone, step-by-step coupling of the two laws). Both are compared path by path with the
    exact GBM solution driven by the same ``W(T)``: strong error ``E|X_N − X(T)|``. The weak
    error ``|E φ(X_N) − E φ(X(T))|`` comes from the same paths and, exactly, from the law's moments.
    """
    if not isinstance(sde, weak.GBM):
        raise ValueError("strong_vs_weak needs a GBM (its exact solution is known path by path)")
    field = sde.field()
    n_fine = max(steps)
    fine = sde.T / n_fine
    g = torch.Generator().manual_seed(seed)
    sums = {key: np.zeros((len(steps), 4)) for key in ("em", "rad")}  # Σ|err|, Σ|err|², Σφ, Σφ²
    done = 0
    with torch.no_grad():
        while done < paths:
            n = min(chunk, paths - done)
            dw_fine = torch.randn((n_fine, n, 1), generator=g, dtype=_F64) * math.sqrt(fine)
            xT = sde.solution(dw_fine.sum(dim=0))
            for i, m in enumerate(steps):
                dt = sde.T / m
                dw = dw_fine.view(m, n_fine // m, n, 1).sum(dim=1)
                for key, incr in (("em", dw), ("rad", torch.sign(dw) * math.sqrt(dt))):
                    x = torch.full((n, 1), sde.x0, dtype=_F64)
                    for j in range(m):
                        x = x + field.increment(j * dt, x, dt, incr[j])
                    e = (x - xT).abs()
                    ph = x**phi
                    sums[key][i] += [
                        float(e.sum()),
                        float((e * e).sum()),
                        float(ph.sum()),
                        float((ph * ph).sum()),
                    ]
            done += n
    out = {"dts": [sde.T / m for m in steps], "paths": paths}
    exact = sde.exact(phi)
    for key, law in (("em", sdenet.Gaussian()), ("rad", sdenet.Rademacher())):
        s = sums[key]
        mean_e = s[:, 0] / paths
        se_e = np.sqrt(np.maximum(s[:, 1] / paths - mean_e**2, 0) / paths)
        mean_p = s[:, 2] / paths
        se_p = np.sqrt(np.maximum(s[:, 3] / paths - mean_p**2, 0) / paths)
        out[key] = {
            "strong": mean_e.tolist(),
            "strong_se": se_e.tolist(),
            "strong_order": slope(out["dts"], mean_e, se_e),
            "weak_mc": np.abs(mean_p - exact).tolist(),
            "weak_mc_se": se_p.tolist(),
            "weak_exact": [abs(sde.scheme_expectation(law, dt, phi) - exact) for dt in out["dts"]],
        }
        out[key]["weak_order"] = slope(out["dts"][-4:], out[key]["weak_exact"][-4:])
    return out


def drop_schedules(
    sde, p1=0.8, steps=(16, 32, 64, 128, 256, 512, 1024), mc_steps=(4, 16), paths=400_000, phi=3, seed=0
):
    """Stochastic-depth increments with fixed ``p = p1`` against ``p(Δt)`` with ``1 − 2p = (1 − 2p1)√Δt``.

    Exact scheme bias of ``E φ(X_N)`` for each, its fitted order, and Monte Carlo estimates from
    :func:`sdenet.integrate` at ``mc_steps`` checked against the exact scheme expectation.
    """
    dts = [sde.T / n for n in steps]
    out = {"dts": dts}
    for key, pfun in (("fixed", lambda dt: p1), ("scheduled", lambda dt: scheduled_p(dt, p1))):
        bias = [
            abs(sde.scheme_expectation(sdenet.DropBernoulli(pfun(dt)), dt, phi) - sde.exact(phi))
            for dt in dts
        ]
        z = []
        for m in mc_steps:
            dt = sde.T / m
            law = sdenet.DropBernoulli(pfun(dt))
            g = torch.Generator().manual_seed(seed + 7919 * m)
            x0 = torch.full((paths, 1), sde.x0, dtype=_F64)
            with torch.no_grad():
                xN = sdenet.integrate(sde.field(), sdenet.WeakEuler(law), x0, t1=sde.T, steps=m, generator=g)
            ph = xN.reshape(-1) ** phi
            est, se = float(ph.mean()), float(ph.std() / math.sqrt(paths))
            z.append((est - sde.scheme_expectation(law, dt, phi)) / se)
        out[key] = {
            "bias": bias,
            "order": slope(dts, bias),
            "z": z,
            "K": [weak.condition_K(sdenet.DropBernoulli(pfun(dt)), dt) for dt in dts],
        }
    return out


@item("weak", "4. Weak convergence of each law")
def run(out, quick: bool = False):
    gbm, ou = test_sdes()
    samples = 200_000 if quick else 1_000_000
    paths = 100_000 if quick else 400_000
    progress("item 4: condition (5), exact and empirical, for every law")
    cdts = weak.DEFAULT_CHECK_DTS
    curves = condition_curves(cdts, samples=samples)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    ax = axes[0]
    fine = np.logspace(-4, 0, 40)
    for p in (0.8, 0.9, 0.6):
        law = sdenet.DropBernoulli(p)
        ax.plot(fine, [weak.condition_K(law, d) for d in fine], label=f"drop p={p} (fixed)")
    ax.plot(
        fine,
        [weak.condition_K(sdenet.DropBernoulli(scheduled_p(d)), d) for d in fine],
        "k--",
        label="drop p(Δt): 1−2p = −0.6√Δt",
    )
    title = "Exact C/Δt²; symmetric laws (gaussian, uniform,\nrademacher, threepoint, drop ½): C ≡ 0"
    panel(ax, "Δt", "C(Δt)/Δt²  (exact)", title, 9, 8)
    ax = axes[1]
    for lab, c in curves.items():
        se_bars(ax, c["dts"], np.maximum(c["K_emp"], 1e-6), c["K_se"], "o-", ms=3, label=lab)
    title = f"Empirical, {samples:,} draws per point: symmetric laws are\nMonte Carlo noise (≈ s.e./Δt²)"
    panel(ax, "Δt", "empirical Ĉ(Δt)/Δt²  (bar: +2 s.e.)", title)
    fig_cond = save_figure(fig, out, "weak_condition5.png")

    progress("item 4: weak order of every law on GBM and OU (exact bias + Monte Carlo)")
    steps = (16, 32, 64, 128, 256) if quick else (16, 32, 64, 128, 256, 512, 1024)
    mc_steps = (4, 8) if quick else (4, 8, 16)
    orders = {
        "GBM": weak_orders(gbm, steps=steps, mc_steps=mc_steps, paths=paths),
        "OU": weak_orders(ou, steps=steps, mc_steps=mc_steps, paths=paths),
    }
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, (name, res) in zip(axes, orders.items()):
        for lab, r in res.items():
            (line,) = ax.plot(
                r["line_dts"],
                r["line_bias"],
                "-",
                label=f"{lab}: order {r['order']:.2f} (declared {r['declared']:g})",
            )
            mc = r["mc"]
            se_bars(ax, mc["dts"], mc["errors"], mc["stderr"], ms=3, color=line.get_color())
        sde = gbm if name == "GBM" else ou
        par = ", ".join(f"{k}={v:g}" for k, v in sde.params().items())
        title = f"{name} ({par})\nlines: exact scheme bias (symmetric laws share one); dots: Monte Carlo, bar +2 s.e."
        panel(ax, "Δt", "|E X_N³ − E X(T)³|", title, 8, 7)
    fig_orders = save_figure(fig, out, "weak_orders.png")

    progress("item 4: φ = cos on OU, exact through characteristic functions (separates the laws)")
    ou_cos = weak.OU(
        theta=1.0, sigma=1.0, x0=1.0, T=1.0
    )  # the parameters; noise strong enough for drop's ½
    cos_steps = (16, 32, 64, 128, 256, 512, 1024)  # exact, cheap in either mode
    coses = cos_orders(ou_cos, steps=cos_steps, paths=paths)
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    styles = {"threepoint": "--", "drop p=0.5": ":"}  # they lie on the gaussian / rademacher curves
    for lab, r in coses.items():
        ax.plot(
            r["dts"],
            r["bias"],
            styles.get(lab, "-"),
            lw=2.2 if lab in styles else 1.4,
            label=f"{lab}: order {r['order']:.2f}, bias at Δt=¼ {r['bias_at']:+.2e}",
        )
    title = f"OU {ou_cos.params()}, weak Euler, φ = cos:\neach law its own curve (x³ gave one for all symmetric laws); three-point ≈ gaussian, drop ½ = rademacher"
    panel(ax, "Δt", "|E cos X_N − E cos X(T)|  (exact)", title, 8, 7)
    fig_cos = save_figure(fig, out, "weak_cos.png")

    progress("item 4: strong vs weak error of Rademacher increments (coupled to a Brownian path)")
    sw_steps = (4, 8, 16, 32, 64) if quick else (4, 8, 16, 32, 64, 128, 256)
    sw = strong_vs_weak(gbm, steps=sw_steps, paths=5_000 if quick else 20_000)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for key, name in (("em", "Euler–Maruyama (ΔW)"), ("rad", "Rademacher (√Δt sign ΔW)")):
        r = sw[key]
        label = f"strong E|X_N − X(T)|, {name}: slope {r['strong_order'][0]:.2f}"
        se_bars(ax, sw["dts"], r["strong"], r["strong_se"], "o-", upper=False, label=label)
        ax.plot(
            sw["dts"],
            r["weak_exact"],
            "s--" if key == "rad" else "x:",
            ms=8,
            label=f"weak |E X_N³ − E X(T)³|, {name}: slope {r['weak_order'][0]:.2f}",
        )
    title = "GBM: strong vs weak error on the same Brownian paths\n(the two weak curves coincide: x³ sees moments 1–3 only)"
    panel(ax, "Δt", "error", title)
    fig_sw = save_figure(fig, out, "weak_strong_vs_weak.png")

    progress("item 4: stochastic depth, fixed p against 1 − 2p = O(√Δt)")
    ds = {
        name: drop_schedules(sde, steps=steps, paths=paths, mc_steps=(4, 16))
        for name, sde in (("GBM", gbm), ("OU", ou))
    }
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, (name, r) in zip(axes, ds.items()):
        ax.plot(
            r["dts"], r["fixed"]["bias"], "o-", label=f"p = 0.8 fixed: order {r['fixed']['order'][0]:.2f}"
        )
        ax.plot(
            r["dts"],
            r["scheduled"]["bias"],
            "s-",
            label=f"1 − 2p = −0.6√Δt: order {r['scheduled']['order'][0]:.2f}",
        )
        panel(ax, "Δt", "|E X_N³ − E X(T)³|", f"stochastic-depth increments on {name}", 10, 8)
    fig_ds = save_figure(fig, out, "weak_drop_schedules.png")

    # ---------------------------------------------------------------- verdicts
    order_rows, all_ok, z_max, z_cell = [], True, 0.0, ""
    for name, res in orders.items():
        for lab, r in res.items():
            ok = abs(r["order"] - r["declared"]) <= 0.2
            all_ok &= ok
            for v, dt in zip(r["z"], r["mc"]["dts"]):
                if abs(v) > z_max:
                    z_max, z_cell = abs(v), f"{name}, {lab}, Δt = 1/{round(1 / dt)}"
            order_rows.append(
                (
                    name,
                    lab,
                    f"{r['declared']:g}",
                    fmt(r["order"]),
                    f"[{fmt(r['order_ci'][0])}, {fmt(r['order_ci'][1])}]",
                    fmt(r["mc"]["slope"]),
                    fmt(max(abs(v) for v in r["z"]), 2),
                )
            )
    cond_rows = []
    for lab, c in curves.items():
        cond_rows.append(
            (lab,)
            + tuple(
                f"{fmt(k)} / {fmt(ke)} ± {fmt(2 * se)}" for k, ke, se in zip(c["K"], c["K_emp"], c["K_se"])
            )
        )
    cond_ok = all(
        abs(ke - k) <= 4 * se + 1e-12
        for c in curves.values()
        for k, ke, se in zip(c["K"], c["K_emp"], c["K_se"])
    )
    ds_ok = all(
        abs(r["fixed"]["order"][0] - 0.5) <= 0.2 and abs(r["scheduled"]["order"][0] - 1.0) <= 0.2
        for r in ds.values()
    )
    ds_z = max(abs(v) for r in ds.values() for key in ("fixed", "scheduled") for v in r[key]["z"])
    rad, em = sw["rad"], sw["em"]
    default_gbm = weak.GBM()
    d8 = sdenet.DropBernoulli(0.8)
    ddts = [default_gbm.T / n for n in default_gbm.default_steps]
    default_slope = slope(
        ddts, [abs(default_gbm.scheme_expectation(d8, dt) - default_gbm.exact(3)) for dt in ddts]
    )[0]
    if default_slope > 0.75:
        default_note = (
            "the order-½ part has a small constant there and hides under the order-1 part, so a fit on a few "
            "coarse steps reports order ≈ 1 for a law that fails condition (5). The parameters above (σ = 1) "
            "make the third moment matter."
        )
    else:
        default_note = "the order-½ behaviour shows there as well."
    recheck = ""
    if z_max > 3.5:  # rerun the worst Monte Carlo cell with other seeds before anyone reads it as a bias
        sde_w = gbm if z_cell.startswith("GBM") else ou
        lab_w = z_cell.split(", ")[1]
        law_w = [law for law in weak.default_laws() if _label(law) == lab_w][0]
        dt_w = 1.0 / float(z_cell.split("1/")[-1])
        zs = []
        for seed in (1, 2, 3):
            mc = weak.weak_order(
                sde_w, sdenet.WeakEuler(law_w), dts=[dt_w, dt_w / 2], paths=paths, phi=3, seed=seed
            )
            zs.append((mc["estimates"][0] - sde_w.scheme_expectation(law_w, dt_w, 3)) / mc["stderr"][0])
        recheck = f" Rerun with seeds 1, 2, 3, that cell gives z = {', '.join(f'{z:.1f}' for z in zs)}: " + (
            "an unlucky draw, not a bias." if max(abs(z) for z in zs) < 3 else "the discrepancy persists."
        )
    strong_flat = abs(rad["strong_order"][0]) < 0.15
    cos_ok = all(abs(r["order"] - r["declared"]) <= 0.2 for r in coses.values()) and all(
        abs(r["z"]) < 4 for r in coses.values()
    )
    cos_ats = sorted(r["bias_at"] for lab, r in coses.items() if lab in ("gaussian", "uniform", "rademacher"))
    cos_sep = min(b - a for a, b in zip(cos_ats, cos_ats[1:])) > 0
    cos_rows = [
        (
            lab,
            f"{r['declared']:g}",
            f"{r['bias_at']:+.3e}",
            f"{r['mc']:+.3e} ± {fmt(2 * r['mc_se'])}",
            f"{r['z']:.2f}",
            fmt(r["order"]),
        )
        for lab, r in coses.items()
    ]
    findings = [
        Finding(
            "symmetric laws satisfy condition (5) (C = 0); drop with fixed p ≠ ½ fails it (C/Δt² ~ Δt^−½)",
            f"exact C/Δt² and empirical estimates (within 4 s.e.: {'yes' if cond_ok else 'NO'}); drop p=0.8: "
            f"C/Δt² = {fmt(curves['drop p=0.8']['K'][-1])} at Δt = {cdts[-1]}",
            verdict(cond_ok),
        ),
        Finding(
            "weak Euler has weak order 1 for every law meeting (5), ½ for drop with fixed p ≠ ½",
            f"{len(order_rows)} fitted orders on GBM and OU, all within ±0.2 of declared: {'yes' if all_ok else 'NO'}; "
            f"Monte Carlo matches the exact scheme expectation (max |z| = {z_max:.1f})",
            verdict(all_ok),
        ),
        Finding(
            "φ = cos separates the laws: each symmetric law its own weak Euler bias, all of order 1; drop p = 0.8 order ½",
            "OU, bias at Δt = ¼: "
            + ", ".join(f"{lab} {r['bias_at']:+.2e}" for lab, r in coses.items())
            + "; orders "
            + ", ".join(f"{r['order']:.2f}" for r in coses.values()),
            verdict(cos_ok and cos_sep),
        ),
        Finding(
            "with 1 − 2p = O(√Δt) (paper's assumption) stochastic depth regains weak order 1",
            ", ".join(
                f"{n}: fixed {r['fixed']['order'][0]:.2f} vs scheduled {r['scheduled']['order'][0]:.2f}"
                for n, r in ds.items()
            ),
            verdict(ds_ok),
        ),
        Finding(
            "Rademacher increments converge weakly, not strongly",
            f"strong error slope {rad['strong_order'][0]:.2f} (EM: {em['strong_order'][0]:.2f}); weak slope {rad['weak_order'][0]:.2f}",
            verdict(strong_flat and abs(rad["weak_order"][0] - 1) < 0.2),
        ),
    ]
    sw_rows = [
        (fmt(dt), f"{fmt(a)} ± {fmt(2 * b)}", f"{fmt(c)} ± {fmt(2 * d)}", fmt(e), fmt(f))
        for dt, a, b, c, d, e, f in zip(
            sw["dts"],
            em["strong"],
            em["strong_se"],
            rad["strong"],
            rad["strong_se"],
            em["weak_exact"],
            rad["weak_exact"],
        )
    ]
    ds_rows = [
        (
            n,
            fmt(r["fixed"]["order"][0]),
            fmt(r["scheduled"]["order"][0]),
            fmt(max(r["fixed"]["K"])),
            fmt(max(r["scheduled"]["K"])),
        )
        for n, r in ds.items()
    ]
    body = f"""**Claims (paper, DESIGN.md).** The simplified weak Euler scheme converges weakly with order 1 when its
increments satisfy condition (5), `|E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt| ≤ K Δt²`. The uniform (shake-shake) and ±1
increments satisfy it exactly; the stochastic-depth increment `√Δt (η − p)/√(p(1−p))` has
`E ΔŴ³ = Δt^{{3/2}} (1 − 2p)/√(p(1−p))` and satisfies it only when `1 − 2p = O(√Δt)`.

**Condition (5).** Exact `C/Δt²` (left; the symmetric laws have C ≡ 0 and do not appear on a log axis) and
empirical `Ĉ/Δt²` from `sdenet.weak.check` (right). For a symmetric law the empirical value is pure Monte
Carlo noise of size about s.e./Δt², which itself grows as Δt → 0: a sample can never *prove* (5), only fail to
refute it; the stochastic-depth law with p = 0.8 departs from the noise and follows `1.5 Δt^{{−1/2}}`.
Cells: exact / empirical ± 2 s.e.

{md_table(["law"] + [f"Δt={d}" for d in cdts], cond_rows)}

![condition 5]({fig_cond})

**Weak order.** Weak error `|E X_N³ − E X(T)³|` of `WeakEuler(law)` on GBM {gbm.params()} and OU {ou.params()}.
φ(x) = x³ is needed: E X_N and E X_N² depend only on the first two moments of ΔŴ, which every law gets right,
so φ = x, x² cannot tell the laws apart. "order" is the slope of the exact scheme bias (from the law's moments,
`GBM/OU.scheme_expectation`) over Δt = 1/{steps[0]} … 1/{steps[-1]}; "MC slope" is `sdenet.weak.weak_order` over
Δt = 1/{mc_steps[0]} … 1/{mc_steps[-1]} with {paths:,} paths (its interval is wide because the Monte Carlo error is
a sizeable part of the bias there), and "max |z|" is the largest distance, in standard errors, between the Monte Carlo
estimate and the exact scheme expectation: the simulator in `sdenet.integrate` does what the formula says. Over
all {sum(len(r["z"]) for res in orders.values() for r in res.values())} comparisons the largest is |z| = {z_max:.1f} ({z_cell}); with that many comparisons
|z| up to about 3 is expected from chance alone, and a larger value deserves a rerun with other seeds before it
is read as a bias.{recheck}

{md_table(["SDE", "law", "declared", "order (exact bias)", "95% CI", "MC slope", "max |z|"], order_rows)}

![weak orders]({fig_orders})

The parameters matter. With `sdenet.weak.GBM`'s defaults ({default_gbm.params()}) and its default ladder
N = {", ".join(map(str, default_gbm.default_steps))}, the exact bias of stochastic depth at p = 0.8 has slope {fmt(default_slope)}:
{default_note}

**φ = cos separates the laws.** With φ = x³ every symmetric law has the same weak Euler expectation (x³ feels only
`E ΔŴ^k`, k ≤ 3), so the rows above for gaussian, uniform, rademacher, threepoint and drop ½ repeat one number. φ = cos
feels every moment: `E cos X_N` of weak Euler on OU {ou_cos.params()} is exact through the law's characteristic function
(`E e^{{iX_N}} = e^{{i a^N x0}} Π_n φ_law(σ a^{{N−1−n}})`, `a = 1 − θΔt`; `sdenet.linear.scheme_cos`), and
`E cos X(T) = cos(m) e^{{−v/2}}`. Each law now has its own bias (the three-point law matches the Gaussian up to the fifth
moment, so under weak Euler its curve is within O(Δt²) of the Gaussian's); every law meeting condition (5) still has
order 1 and drop p = 0.8 order ½. Monte Carlo ({paths:,} paths at Δt = ¼, ± 2 s.e.) against the exact value (z):

{md_table(["law", "declared", "exact bias at Δt = ¼", "Monte Carlo bias", "z", "order (exact, Δt = 1/" + str(cos_steps[0]) + " … 1/" + str(cos_steps[-1]) + ")"], cos_rows)}

![weak cos]({fig_cos})

**Stochastic depth, fixed p vs 1 − 2p = O(√Δt).** With `p(Δt) = (1 + 0.6√Δt)/2` (p = 0.8 at Δt = 1, p → ½
as Δt → 0), `C/Δt²` stays bounded and the weak order is 1 again; with p fixed at 0.8 it is ½. The Monte Carlo
runs of `sdenet.integrate` agree with the exact expectations (max |z| = {ds_z:.1f}).

{md_table(["SDE", "order, p = 0.8 fixed", "order, p(Δt)", "max C/Δt², fixed", "max C/Δt², p(Δt)"], ds_rows)}

![drop schedules]({fig_ds})

**Strong vs weak (Rademacher).** Construction: for each path draw Brownian increments on the finest grid
(Δt = 1/{max(sw_steps)}) and sum them to the increments `ΔW_n` of each coarser grid. Euler–Maruyama uses `ΔW_n`;
the Rademacher scheme uses `ΔŴ_n = √Δt · sign(ΔW_n)` — the same law as `sdenet.Rademacher` (± √Δt with
probability ½) and the closest step-by-step coupling of the two laws. Both are compared path by path with the
exact solution `X(T) = x0 exp((μ − σ²/2)T + σW(T))` driven by the same W ({sw["paths"]:,} paths, ± 2 s.e.).
The sum of the per-step mismatches `√Δt sign(ΔW_n) − ΔW_n` has variance `T (2 − 2√(2/π)) ≈ 0.40 T` whatever Δt is,
so the Rademacher path stays a fixed distance from the Brownian one; the weak error still vanishes at order 1.

{md_table(["Δt", "strong, EM", "strong, Rademacher", "weak, EM (exact)", "weak, Rademacher (exact)"], sw_rows)}

![strong vs weak]({fig_sw})

A coupling that is not step-by-step (a Skorokhod embedding of the random walk into W) brings the walk within
O(Δt^{{1/4}}) of W, so "does not converge strongly" is a statement about the natural coupling — the one in which the
network's coin flips are functions of a Brownian path on the same grid — not about every conceivable coupling.
Nothing in the paper's argument needs strong convergence: it reasons about laws.

**Verdict.** Agrees with the paper and with DESIGN.md on every point checked; the one caveat is that
stochastic depth's order ½ at fixed p can hide behind an order-1 term on coarse grids.
"""
    data = {"curves": curves, "orders": orders, "cos": coses, "strong_vs_weak": sw, "drop_schedules": ds}
    return findings, body, [fig_cond, fig_orders, fig_cos, fig_sw, fig_ds], data
