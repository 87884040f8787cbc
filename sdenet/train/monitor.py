"""Condition (5) while a network trains.

Each stochastic stage of a network draws increments ``ΔŴ`` from a noise law at its step Δt.
The simplified weak Euler scheme converges weakly (Kloeden & Platen, 14.1) when

    C(Δt) = |E ΔŴ| + |E ΔŴ³| + |E ΔŴ² − Δt| ≤ K Δt²                                      (5)

with K independent of Δt. Every epoch the trainer records, per stochastic stage, the exact
``C`` and ``K = C/Δt²`` of its law at its Δt and p (from ``model.weak_report()``) and the
empirical moments ``m1, m2, m3`` of the increments it actually drew that epoch.

Threshold. By default (``weak_K = "law"``) a stage is flagged when its ``K`` exceeds the ``K``
its own law has at Δt = 1, the original network (:data:`DEFAULT_WEAK_K`): running the stage at
a finer step must not make the moment mismatch worse, relative to ``Δt²``, than it is in the
architecture the paper starts from. Symmetric laws (Gaussian, uniform, ±1, three-point, and
drop at p = ½) have ``C = 0`` and are never flagged. For stochastic depth the original network
is the block's survival ``p₁`` at Δt = 1 (the row's ``p1``), not the ``p`` its ``p_schedule``
gives at the stage's Δt: the reference is ``K(1) = |1 − 2p₁| / √(p₁(1 − p₁))``. With the
fixed schedule (``p = p₁``) ``K(Δt) = K(1)/√Δt``, so every block with ``p₁ ≠ ½`` is flagged as
soon as Δt < 1: condition (5) fails as Δt → 0 (weak order ½), which is the point of the
paper's remark. With the ``sqrt`` schedule (``1 − 2p = (1 − 2p₁)√Δt``)
``K(Δt) = |1 − 2p₁| / √(p(1 − p)) ≤ K(1)`` (``p`` is nearer ½ than ``p₁``), so the schedule
that exists to keep condition (5) is accepted, ``strict_weak`` included. A number ``weak_K`` is one fixed bound for every stage instead
(``weak_K = 1``: the mismatch may not exceed Δt², the local weak error of the Euler step).

A degenerate law (drop at p = 1: nothing is dropped, the stage is deterministic) is reported
but never warned about.

Any network: :func:`model_weak_report` asks an sdenet network for its ``weak_report()``; for
any other ``nn.Module`` (a user's, trained with ``--model package.module:factory``) it asks
each part: a module with its own ``weak_report()``, an :class:`sdenet.nn.Stage` (its schemes'
laws at its Δt), or a stochastic :class:`sdenet.Field` that declares ``law`` and ``dt``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "DEFAULT_WEAK_K",
    "WeakConditionError",
    "normalize_report",
    "reduce_report",
    "violations",
    "reference_K",
    "parse_weak_K",
    "warning_message",
    "format_table",
    "exact_condition",
    "model_weak_report",
    "model_is_stochastic",
    "reset_model_weak_stats",
]

#: default bound: each stage's law's own K at Δt = 1 (see the module docstring)
DEFAULT_WEAK_K = "law"

_KEYS = ("stage", "block", "law", "p", "dt", "C", "K", "n", "m1", "m2", "m3")


class WeakConditionError(ValueError):
    """A stochastic stage's law breaks condition (5) with K above the allowed bound
    (raised with ``strict_weak``)."""


def _float(v):
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        v = v.detach().double().cpu().item()
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def exact_condition(law: str, p, dt: float) -> tuple[float, float]:
    """``(C, K)`` of the law named ``law`` (with ``p`` for drop) at ``dt``, from exact moments."""
    from ..laws import get_law

    key = str(law).lower()
    obj = get_law(key, p) if key.startswith(("drop", "bernoulli")) else get_law(key)
    if obj.drops and p is None:
        raise ValueError("exact_condition: the drop law needs p")
    c = obj.condition(dt)
    return c, c / (float(dt) ** 2)


def normalize_report(report) -> list[dict]:
    """The model's ``weak_report()`` as plain JSON-ready dicts with every key of the run format
    (tensors read as floats; ``C``/``K`` filled from the law's exact moments when missing)."""
    out = []
    for entry in report or []:
        d = {k: _float(v) if k not in ("stage", "law") else v for k, v in dict(entry).items()}
        if d.get("C") is None and d.get("law") is not None and d.get("dt") is not None:
            try:
                d["C"], d["K"] = exact_condition(d["law"], d.get("p"), d["dt"])
            except ValueError:
                pass
        if d.get("K") is None and d.get("C") is not None and d.get("dt"):
            d["K"] = d["C"] / d["dt"] ** 2
        if d.get("n") is not None:
            d["n"] = int(d["n"])
        if isinstance(d.get("block"), float) and d["block"].is_integer():
            d["block"] = int(d["block"])
        for k in _KEYS:
            d.setdefault(k, None)
        d["stage"] = None if d["stage"] is None else str(d["stage"])
        d["law"] = None if d["law"] is None else str(d["law"])
        out.append(d)
    return out


def reduce_report(report: list[dict], world_size: int = 1, device="cpu") -> list[dict]:
    """Pool the empirical moments of every rank (weights ``n``); a no-op for one process.

    Every rank must call it with reports of the same length (the same model)."""
    if world_size <= 1 or not report:
        return report
    import torch.distributed as dist

    t = torch.zeros(len(report), 4, dtype=torch.float64, device=device)
    for i, d in enumerate(report):
        n = d.get("n") or 0
        t[i, 0] = n
        for j, k in enumerate(("m1", "m2", "m3")):
            v = d.get(k)
            t[i, j + 1] = 0.0 if v is None or not n else n * v
    dist.all_reduce(t)
    t = t.cpu()
    out = []
    for i, d in enumerate(report):
        d = dict(d)
        n = int(t[i, 0].item())
        d["n"] = n
        for j, k in enumerate(("m1", "m2", "m3")):
            d[k] = (t[i, j + 1].item() / n) if n else None
        out.append(d)
    return out


def reference_K(entry: dict) -> float | None:
    """``K`` of the entry's law at Δt = 1 as the original network has it: for stochastic depth
    at the survival ``p1`` the block has at Δt = 1 (before its ``p_schedule``; ``p`` when the
    row does not say). None when the law is not one of sdenet's."""
    p = entry.get("p1")
    if p is None:
        p = entry.get("p")
    try:
        return exact_condition(entry["law"], p, 1.0)[1]
    except (ValueError, KeyError, TypeError):
        return None


def parse_weak_K(value) -> float | str:
    """``"law"`` (or None) for the per-law default, else a number >= 0 (``inf`` disables)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "law"):
        return "law"
    try:
        k = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"weak_K must be a number >= 0 or 'law', got {value!r}") from None
    if math.isnan(k) or k < 0:
        raise ValueError(f"weak_K must be a number >= 0 or 'law', got {value!r}")
    return k


def violations(report: list[dict], weak_K="law") -> list[dict]:
    """Entries whose exact K exceeds the bound (``"law"``: the K of their law at Δt = 1), each
    with the bound it broke as ``bound``; degenerate p = 1 stages are never flagged."""
    weak_K = parse_weak_K(weak_K)
    bad = []
    for d in report:
        k = d.get("K")
        if k is None or not math.isfinite(k) or (d.get("p") is not None and d["p"] >= 1.0):
            continue
        bound = reference_K(d) if weak_K == "law" else weak_K
        if bound is None or not math.isfinite(bound):
            continue
        if k > bound * (1 + 1e-9) + 1e-12:  # not on float rounding of an equality
            bad.append({**d, "bound": bound})
    return bad


def _where(d: dict) -> str:
    s = f"stage {d.get('stage')}"
    if d.get("block") is not None:
        s += f" block {d['block']}"
    return s


def warning_message(bad: list[dict], weak_K="law") -> str:
    """One line naming the worst offending stage and how many there are."""
    worst = max(bad, key=lambda d: d["K"])
    p = "" if worst.get("p") is None else f", p={worst['p']:g}"
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    if parse_weak_K(weak_K) == "law":
        bound = f"{worst['bound']:.4g}, the K of its law at dt=1"
    else:
        bound = f"weak_K = {worst['bound']:g}"
    return (
        f"condition (5): {_where(worst)} ({worst.get('law')}{p}, dt={worst.get('dt'):g}) has "
        f"K = C/dt^2 = {worst['K']:.4g} > {bound}{more}; its skewed increments cost the weak "
        f"Euler step its weak order 1 as dt shrinks"
    )


def _fmt(v, spec=".3g"):
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def format_table(report: list[dict]) -> str:
    """A compact text table: one line per stochastic stage (or block)."""
    if not report:
        return ""
    head = ("stage", "block", "law", "p", "dt", "C", "K", "n", "m1", "m2-dt", "m3")
    rows = []
    for d in report:
        m2 = d.get("m2")
        dm2 = None if m2 is None or d.get("dt") is None else m2 - d["dt"]
        rows.append(
            (
                _fmt(d.get("stage")),
                _fmt(d.get("block")),
                _fmt(d.get("law")),
                _fmt(d.get("p")),
                _fmt(d.get("dt")),
                _fmt(d.get("C")),
                _fmt(d.get("K")),
                _fmt(d.get("n")),
                _fmt(d.get("m1"), ".2e"),
                _fmt(dm2, ".2e"),
                _fmt(d.get("m3"), ".2e"),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Condition (5) of any network: sdenet's own, or a user's nn.Module
# --------------------------------------------------------------------------------------------


def _law_row(where: str, block, law, dt, stats=None) -> dict:
    dt = float(dt)
    C = float(law.condition(dt))
    p = getattr(law, "survival", None)
    row = {
        "stage": where,
        "block": block,
        "law": getattr(law, "name", type(law).__name__),
        "p": float(p) if p is not None else None,
        "dt": dt,
        "C": C,
        "K": C / (dt * dt),
    }
    if stats:
        row.update(stats)
    return row


def _stats(module, n):
    fn = getattr(module, "weak_stats", None)
    if not callable(fn):
        return None
    try:
        return dict(fn(n))
    except TypeError:
        return dict(fn())


def model_weak_report(model) -> list[dict]:
    """Condition-(5) rows (the run format of :func:`normalize_report`) of every stochastic part of
    ``model``, any ``nn.Module``.

    What is asked of the parts, in order:

    1. ``model.weak_report()`` when the model has one (every sdenet network): used as it is.
    2. Otherwise each submodule, by its path in the model:
       a module with its own ``weak_report()`` method gives its rows (``stage`` defaults to its
       path) and is not looked into further;
       an :class:`sdenet.nn.Stage` gives one row per step whose scheme has a noise ``law``, at the
       stage's Δt (empirical moments from its field's ``weak_stats(n)`` when it records them);
       a stochastic :class:`sdenet.Field` that declares its law — a ``law`` attribute (a
       :class:`sdenet.NoiseLaw`) and its step ``dt`` — gives one row (exact ``C`` and ``K``;
       empirical moments when it has ``weak_stats()``).
    """
    fn = getattr(model, "weak_report", None)
    if callable(fn):
        return normalize_report(fn())
    from ..fields import is_field
    from ..laws import is_law

    try:
        from ..nn.stage import Stage

        have_stage = True
    except ImportError:  # pragma: no cover - sdenet.nn is part of the package
        have_stage = False
    rows: list[dict] = []
    covered: list[str] = []
    for path, m in model.named_modules():
        if m is model or any(path == c or path.startswith(c + ".") for c in covered):
            continue
        own = getattr(m, "weak_report", None)
        if callable(own):
            for r in own() or []:
                r = dict(r)
                r.setdefault("stage", path)
                if r["stage"] is None:
                    r["stage"] = path
                rows.append(r)
            covered.append(path)
        elif have_stage and isinstance(m, Stage):
            name = m.name or path
            for n, scheme in enumerate(m.schemes):
                law = getattr(scheme, "law", None)
                if is_law(law):
                    rows.append(_law_row(name, n, law, m.dt, _stats(m.field, n)))
            covered.append(path)
        elif is_field(m) and m.stochastic and is_law(getattr(m, "law", None)):
            dt = getattr(m, "dt", None)
            if isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0:
                rows.append(_law_row(path, None, m.law, dt, _stats(m, 0)))
    return normalize_report(rows)


def model_is_stochastic(model) -> bool:
    """True when ``model`` says so (``model.stochastic``) or any part of it draws noise: a
    stochastic sdenet stage or field, or a part that reports condition (5)."""
    flag = getattr(model, "stochastic", None)
    if isinstance(flag, bool):
        return flag
    try:
        if model_weak_report(model):
            return True
    except Exception:
        pass
    from ..fields import is_field

    for m in model.modules():
        if is_field(m) and m.stochastic:
            return True
        f = getattr(m, "stochastic", None)
        if m is not model and isinstance(f, bool) and f:
            return True
    return False


def reset_model_weak_stats(model) -> None:
    """Zero the increment statistics the model (or each part that keeps them) records."""
    fn = getattr(model, "reset_weak_stats", None)
    if callable(fn):
        fn()
        return
    for m in model.modules():
        if m is not model and callable(getattr(m, "reset_weak_stats", None)):
            m.reset_weak_stats()
