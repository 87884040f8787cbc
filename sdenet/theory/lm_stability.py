"""Item 2 — linear stability of the LM scheme.

On the test equation ``u' = λu`` the LM-ResNet scheme
``u_{n+1} = (1 − k) u_n + k u_{n−1} + Δt λ u_n`` has the characteristic polynomial

    ρ² − (1 − k + z) ρ − k = 0,        z = λΔt,

and is stable when both roots lie in the unit disc. By the Schur–Cohn (Jury) test for a
real quadratic ``ρ² + a₁ρ + a₀`` (|a₀| < 1, 1 + a₁ + a₀ > 0, 1 − a₁ + a₀ > 0) this is,
for real z,

    −1 < k < 1   and   2k − 2 < z < 0,

i.e. ``−1 < k < 1 + z/2``. At ``z → 0`` the roots are ``1`` and ``−k``: the paper's
condition ``−1 ≤ k ≤ 1`` is zero-stability. For a gradient flow ``u' = −∇E(u)`` the
Jacobian is symmetric and negative semi-definite, so every ``λ`` is real and ≤ 0; with a
finite step the extra condition ``k < 1 + λΔt/2`` appears, and the endpoints ``k = ±1``
are not stable for ``λ < 0`` (k = 1 is leapfrog, which is unstable on dissipative problems).
"""

from __future__ import annotations

import numpy as np
import torch

import sdenet
from sdenet.weak.regression import bisect

from ._common import Finding, fmt, item, md_table, plt, progress, save_figure, verdict

__all__ = [
    "characteristic_roots",
    "spectral_radius",
    "closed_form_interval",
    "stable_interval",
    "lm_gradient_flow",
    "run",
]


def characteristic_roots(k, z):
    """Roots of ``ρ² − (1 − k + z) ρ − k`` (arrays broadcast; complex output, shape (..., 2))."""
    k, z = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(z, dtype=complex))
    b = 1.0 - k + z
    disc = np.sqrt(b * b + 4.0 * k + 0j)
    return np.stack([(b + disc) / 2.0, (b - disc) / 2.0], axis=-1)


def spectral_radius(k, z):
    """``max |ρ|`` over both characteristic roots."""
    return np.abs(characteristic_roots(k, z)).max(axis=-1)


def closed_form_interval(z: float):
    """The k-interval of stability at real ``z = λΔt < 0``: ``(−1, 1 + z/2)``; None if empty."""
    z = float(z)
    if not z < 0:
        return None  # at z >= 0 the root near 1 is >= 1: no strict stability
    hi = 1.0 + z / 2.0
    return (-1.0, hi) if hi > -1.0 else None


def stable_interval(
    z: float, k_range: tuple[float, float] = (-3.0, 3.0), grid: int = 6001, tol: float = 1e-12
):
    """The k-interval where ``max|ρ| < 1`` at ``z``, found numerically from the roots.

    Scans a grid of k, then refines each end of the stable run by bisection on
    ``spectral_radius(k, z) − 1``. Independent of the closed form, which it checks.
    """
    ks = np.linspace(*k_range, grid)
    inside = spectral_radius(ks, z) < 1.0
    if not inside.any():
        return None
    idx = np.flatnonzero(inside)
    if not np.all(np.diff(idx) == 1):
        raise ValueError("stable set is not an interval on this grid")

    def boundary(a, b):  # a inside, b outside
        return bisect(lambda k: spectral_radius(k, z) < 1.0, a, b, lambda a, b: abs(b - a) < tol)

    i0, i1 = idx[0], idx[-1]
    lo = boundary(ks[i0], ks[i0 - 1]) if i0 > 0 else ks[0]
    hi = boundary(ks[i1], ks[i1 + 1]) if i1 < grid - 1 else ks[-1]
    return float(lo), float(hi)


def lm_gradient_flow(k: float, dt: float, eigenvalues=(0.1, 1.0), steps: int = 60, seed: int = 0):
    """‖u_n‖ of the LM scheme (sdenet.LinearMultistep) on the gradient flow ``u' = −A u``.

    ``A = Q diag(eigenvalues) Qᵀ`` (random rotation Q), i.e. ``E(u) = ½ uᵀAu``; the λ of the
    test equation are ``−eigenvalues``. Returns the array of norms, length ``steps + 1``.
    """
    g = torch.Generator().manual_seed(seed)
    d = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    field = sdenet.ODEField(lambda t, x: -x @ a)
    x0 = torch.ones(1, d, dtype=torch.float64)
    path = sdenet.integrate(field, sdenet.LinearMultistep(k), x0, dt=dt, steps=steps, save="all")
    return path.norm(dim=-1).squeeze(-1).numpy()


@item("stability", "2. Stability of the LM scheme")
def run(out, quick: bool = False):
    progress("item 2: characteristic roots over (k, λΔt)")
    n = 301 if quick else 801
    ks = np.linspace(-1.6, 1.6, n)
    zs = np.linspace(-5.0, 0.5, n)
    K, Z = np.meshgrid(ks, zs)
    R = spectral_radius(K, Z)

    # numerical boundary against the closed form on a few λΔt
    checks = []
    for z in (-0.01, -0.5, -1.0, -2.0, -3.0, -3.9):
        num = stable_interval(z)
        cf = closed_form_interval(z)
        err = max(abs(num[0] - cf[0]), abs(num[1] - cf[1]))
        checks.append((z, num, cf, err))
    at_m1 = stable_interval(-1.0)

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    im = ax.pcolormesh(K, Z, np.minimum(R, 2.0), shading="auto", cmap="RdYlGn_r", vmin=0, vmax=2)
    fig.colorbar(im, ax=ax, label="max |ρ| (clipped at 2)")
    ax.contour(K, Z, R, levels=[1.0], colors="k", linewidths=1.5)
    kk = np.linspace(-1, 1, 10)
    ax.plot(kk, 2 * kk - 2, "b--", lw=1.2, label="closed form z = 2k − 2")
    ax.axvline(-1, color="m", ls=":", lw=1.5, label="paper: −1 ≤ k ≤ 1")
    ax.axvline(1, color="m", ls=":", lw=1.5)
    ax.axhline(-1, color="gray", lw=0.8)
    ax.plot([at_m1[0], at_m1[1]], [-1, -1], "ko", ms=4)
    ax.set_xlabel("k (LM coefficient)")
    ax.set_ylabel("z = λΔt")
    ax.set_title("LM scheme on u' = λu: stable where max|ρ| < 1 (black contour)")
    ax.legend(loc="lower right", fontsize=8)
    fig1 = save_figure(fig, out, "lm_stability_region.png")

    progress("item 2: LM on a gradient flow inside and outside the region")
    # gradient flow with eigenvalues in [0.1, L]; λΔt ranges over [−L Δt, −0.1 Δt]
    L = 2.5
    eig = (0.1, L)
    cases = [
        (0.0, 0.7, "k=0 (ResNet), LΔt=1.75: stable"),
        (0.0, 0.9, "k=0, LΔt=2.25: unstable (Euler needs LΔt<2)"),
        (-0.5, 0.9, "k=−0.5, LΔt=2.25: stable (needs LΔt<3)"),
        (0.6, 0.7, "k=0.6 ∈ [−1,1], LΔt=1.75: unstable (needs LΔt<0.8)"),
        (1.0, 0.05, "k=1 (paper's endpoint), tiny Δt: unstable"),
        (-1.05, 0.05, "k=−1.05 outside [−1,1]: unstable"),
    ]
    steps = 80 if quick else 200
    fig, ax = plt.subplots(figsize=(7.0, 6.2))
    traj_rows = []
    for k, dt, label in cases:
        norms = lm_gradient_flow(k, dt, eig, steps=steps)
        ax.semilogy(np.arange(len(norms)), norms, label=label)
        rho = max(spectral_radius(k, -lam * dt) for lam in eig)
        traj_rows.append((k, dt, L * dt, rho, norms[-1]))
    ax.set_xlabel("step n")
    ax.set_ylabel("‖u_n‖ (log scale)")
    ax.set_title(f"LM scheme on the gradient flow u' = −Au, eig(A) = {eig}")
    ax.set_ylim(1e-6, 1e8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig2 = save_figure(fig, out, "lm_stability_gradient_flow.png")

    boundary_ok = abs(at_m1[0] + 1.0) < 1e-6 and abs(at_m1[1] - 0.5) < 1e-6
    traj_ok = all((rho < 1) == (final < 1.0) for _, _, _, rho, final in traj_rows)
    findings = [
        Finding(
            "LM stable on u' = λu (real λ ≤ 0, as for a gradient flow) iff −1 ≤ k ≤ 1 (paper)",
            f"roots of ρ² − (1−k+z)ρ − k: stable iff −1 < k < 1 + λΔt/2; at λΔt = −1: "
            f"k ∈ ({fmt(at_m1[0], 4)}, {fmt(at_m1[1], 4)}), closed form (−1, 0.5)",
            "partly",
        ),
        Finding(
            "(derived here) stable region −1 < k < 1 + λΔt/2, λΔt < 0: closed form vs roots and vs simulation",
            f"max |numeric − closed form| over 6 values of λΔt = {fmt(max(c[3] for c in checks))}; "
            f"gradient-flow runs grow exactly where max|ρ| > 1 ({'all' if traj_ok else 'NOT all'} {len(traj_rows)} cases)",
            verdict(boundary_ok and traj_ok),
        ),
    ]
    rows = [
        (fmt(z), f"({fmt(num[0], 6)}, {fmt(num[1], 6)})", f"({fmt(cf[0], 6)}, {fmt(cf[1], 6)})", fmt(err))
        for z, num, cf, err in checks
    ]
    trows = [(fmt(k), fmt(dt), fmt(ldt), fmt(rho, 4), fmt(final)) for k, dt, ldt, rho, final in traj_rows]
    body = f"""**Claim (paper).** For a gradient flow the LM-ResNet coefficient must satisfy −1 ≤ k_n ≤ 1 for the
scheme `u_{{n+1}} = (1−k)u_n + k u_{{n−1}} + Δt f(u_n)` to be stable.

**Derivation.** On `u' = λu` the characteristic polynomial is `ρ² − (1 − k + z)ρ − k`, `z = λΔt`. For a
gradient flow `u' = −∇E(u)` the Jacobian is symmetric negative semi-definite, so λ is real and ≤ 0.
The Schur–Cohn conditions for a real quadratic give stability (both |ρ| < 1) iff

    −1 < k < 1   and   2k − 2 < λΔt < 0      ⇔      −1 < k < 1 + λΔt/2.

At λΔt → 0 the roots are 1 and −k, so the paper's −1 ≤ k ≤ 1 is exactly *zero-stability*. It is
necessary, but at a finite step it is not sufficient: the upper bound tightens to 1 + λΔt/2, so at
λΔt = −1 the stable interval is (−1, ½). The endpoints are not asymptotically stable for λ < 0:
k = −1 puts both roots on the unit circle for every −4 < λΔt < 0 (|ρ|² = −k = 1), so the error never
decays — its modified equation (3) loses the `u'` term and reads `Δt u'' = f`, a wave equation rather than a
gradient flow — and k = 1 is the leapfrog-type scheme `u_{{n+1}} = u_{{n−1}} + Δt f(u_n)`, whose parasitic
root ≈ −1 − |λΔt|/2 grows on every
dissipative problem. On the other side, negative k (the LM-ResNet initialisation U[−0.1, 0]) *enlarges*
the stable step: Euler (k = 0) needs |λ|Δt < 2, k = −0.5 allows |λ|Δt < 3.

**Evidence.** The stable interval in k found numerically from the roots (grid scan + bisection on
max|ρ| = 1) against the closed form:

{md_table(["λΔt", "numeric (k_lo, k_hi)", "closed form (−1, 1 + λΔt/2)", "max abs diff"], rows)}

![stability region]({fig1})

The LM scheme from `sdenet.LinearMultistep` on the gradient flow u' = −Au with eig(A) = {eig}
(so λΔt ranges over [−{L}Δt, −0.1Δt]), inside and outside the region:

{md_table(["k", "Δt", "LΔt", "max |ρ| over eig", "‖u‖ after the run"], trows)}

![LM on a gradient flow]({fig2})

**Verdict.** The paper's condition is the right zero-stability condition, and the region computed
from the roots matches the closed form; but the condition is necessary only. Inside −1 ≤ k ≤ 1
the scheme still blows up when k ≥ 1 + λΔt/2 (k = 0.6 with LΔt = 1.75 above), and the endpoints
k = ±1 are unstable on a dissipative problem.
"""
    data = {"checks": checks, "interval_at_minus_one": at_m1, "trajectories": traj_rows}
    return findings, body, [fig1, fig2], data
