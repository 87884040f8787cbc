"""``sdenet refine CHECKPOINT --factor F --out NEW.pt``: a trained network at Δt/F, same T.

Prolongs the checkpoint's network with :func:`sdenet.nn.refine` (or restricts it with
:func:`sdenet.nn.coarsen` under ``--coarsen``), writes a checkpoint in the trainer's format
whose config rebuilds the new architecture (``refine`` in the model overrides; the SGD momentum
prolonged with the weights), and evaluates both networks on the test split. For every stochastic stage it reports condition
(5) before and after — ``K = C/Δt²`` of the blocks' noise laws against the bound of the Δt = 1
network (:mod:`sdenet.train.monitor`) — and ``--p-schedule`` chooses how stochastic-depth survival
probabilities follow the step (``sqrt`` keeps condition (5); :func:`sdenet.laws.survival_at`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from ._args import (
    add_checkpoint_argument,
    add_data_root_option,
    add_device_option,
    add_json_option,
    add_limit_test_option,
    add_p_schedule_option,
    add_samples_option,
    add_threads_option,
    apply_threads,
    positive_int,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "refine",
        help="take a trained checkpoint to a finer (or coarser) step at fixed T, and evaluate it",
        description="Refine every stage of a trained network to F times the steps at dt/F over the "
        "same T (no retraining), write NEW.pt in the trainer's checkpoint format (sdenet eval "
        "reads it) and print the test error before and after.",
    )
    add_checkpoint_argument(p)
    p.add_argument(
        "--factor", type=positive_int, default=2, metavar="F", help="refinement factor (default 2)"
    )
    p.add_argument(
        "--mode",
        default=None,
        choices=("constant", "linear", "inject", "average"),
        help="prolongation: constant (default) or linear; with --coarsen: inject (default) or average",
    )
    p.add_argument("--coarsen", action="store_true", help="restrict instead: dt*F, steps/F")
    p.add_argument("--out", required=True, metavar="NEW.pt", help="where to write the new checkpoint")
    add_p_schedule_option(
        p,
        "survival probabilities of stochastic-depth stages at the new dt: fixed (the same p) "
        "or sqrt (1/2 + (p - 1/2) sqrt(dt), which keeps condition (5)); default: the network's own",
    )
    p.add_argument("--no-eval", dest="evaluate", action="store_false", help="do not evaluate")
    add_samples_option(p, 0, "Monte Carlo draws for a stochastic network's test error (default 0)")
    add_limit_test_option(p, "evaluate on the first N test images")
    add_device_option(p)
    add_data_root_option(p)
    add_json_option(p)
    add_threads_option(p, None, "CPU threads for torch")
    p.set_defaults(func=run)


def weak_summary(model) -> list[dict]:
    """Condition (5) of every stochastic stage of ``model``: per stage its Δt, law, the largest
    ``K = C/Δt²`` over its blocks (and which block), the bound it is judged against (the ``K``
    of the block's law in the Δt = 1 network, :func:`sdenet.train.monitor.reference_K`) and
    whether any block exceeds it."""
    from ..train.monitor import model_weak_report, reference_K, violations

    rows = model_weak_report(model)
    bad = {(d["stage"], d["block"]) for d in violations(rows)}
    out: dict = {}
    for d in rows:
        if d.get("K") is None:
            continue
        s = out.setdefault(
            d["stage"],
            {
                "stage": d["stage"],
                "dt": d["dt"],
                "law": d["law"],
                "blocks": 0,
                "K_max": -1.0,
                "block": None,
                "bound": None,
                "exceeds": 0,
            },
        )
        s["blocks"] += 1
        if d["K"] > s["K_max"]:
            s.update(K_max=d["K"], block=d["block"], p=d.get("p"), p1=d.get("p1"), bound=reference_K(d))
        s["exceeds"] += (d["stage"], d["block"]) in bad
    return list(out.values())


def format_weak_summary(summary: list[dict], label: str) -> list[str]:
    lines = []
    for s in summary:
        p = (
            ""
            if s.get("p") is None
            else f" p={s['p']:.4g}"
            + (f" (p={s['p1']:.4g} at dt=1)" if s.get("p1") is not None and s["p1"] != s["p"] else "")
        )
        verdict = (
            f"exceeds the dt=1 bound {s['bound']:.4g} in {s['exceeds']} of {s['blocks']} blocks"
            if s["exceeds"]
            else (
                "within the dt=1 bound " + f"{s['bound']:.4g}" if s.get("bound") is not None else "no bound"
            )
        )
        lines.append(
            f"  condition (5) {label}: stage {s['stage']} ({s['law']}, dt={s['dt']:.4g}): max K = C/dt^2 = "
            f"{s['K_max']:.4g} at block {s['block']}{p}; {verdict}"
        )
    return lines


def refine_checkpoint(
    checkpoint,
    out,
    factor: int = 2,
    mode: str | None = None,
    coarsen: bool = False,
    p_schedule: str | None = None,
) -> dict:
    """Write the refined (or coarsened) checkpoint ``out``; return a summary of the change,
    with condition (5) of every stochastic stage before and after (``weak_before``,
    ``weak_after``: :func:`weak_summary`). ``p_schedule`` (``fixed``/``sqrt``) sets how the
    survival probabilities of stochastic-depth stages follow the new Δt."""
    from ..nn import coarsen as coarsen_fn
    from ..nn import models
    from ..nn import refine as refine_fn
    from ..train import checkpoint as ck
    from ..train.multilevel import _momentum_by_name, _shape, prolong_momentum
    from ..train.safe_io import check_model_size, check_refine_out, lock_output
    from ..train.usermodel import _model_known

    out = check_refine_out(out, "--out")
    src = Path(checkpoint)
    if out.resolve() == (src / "last.pt" if src.is_dir() else src).resolve():
        raise ValueError(f"{out}: --out must not overwrite the checkpoint it refines")
    c = ck.load_checkpoint(checkpoint)
    where = src / "last.pt" if src.is_dir() else src
    ck.validate_checkpoint(c, where, known_model=_model_known, min_epoch=0)
    rc = dict(c["config"])
    if ":" in rc["model"]:
        raise ValueError(
            f"{where}: a checkpoint of the user model {rc['model']!r}; refine works on "
            f"registered models (sdenet.nn.refine your network in Python)"
        )
    overrides = dict(rc.get("model_overrides") or {})
    check_model_size(rc["model"], rc.get("num_classes"), overrides, where=str(where), train=False)
    new_refine = float(overrides.get("refine", 1)) * (1.0 / factor if coarsen else float(factor))
    check_model_size(
        rc["model"],
        rc.get("num_classes"),
        {**overrides, "refine": max(new_refine, 1.0)},
        where=f"--factor {factor}",
        train=False,
    )
    net = models.create(rc["model"], num_classes=rc.get("num_classes"), **overrides)
    try:
        net.load_state_dict(c["model"])
    except RuntimeError as e:
        raise ValueError(
            f"{checkpoint}: its weights do not fit {rc['model']} with {overrides}: {e}"
        ) from None
    before = _shape(net)
    if coarsen:
        new = coarsen_fn(net, factor, mode or "inject", p_schedule=p_schedule)
        ratio = 1.0 / factor
    else:
        new = refine_fn(net, factor, mode or "constant", p_schedule=p_schedule)
        ratio = float(factor)
    r = float(overrides.get("refine", 1)) * ratio
    overrides["refine"] = int(r) if r.is_integer() else r
    if p_schedule is not None and any(s.get("p") is not None for s in weak_summary(net)):
        overrides["p_schedule"] = p_schedule
    # the checkpoint must rebuild: create(name, **overrides) has the new architecture
    check = models.create(rc["model"], num_classes=rc.get("num_classes"), **overrides)
    if {k: v.shape for k, v in check.state_dict().items()} != {
        k: v.shape for k, v in new.state_dict().items()
    }:
        raise ValueError(
            f"{rc['model']}: the {'coarsened' if coarsen else 'refined'} network does not match "
            f"create({rc['model']!r}, **{overrides}); cannot write a loadable checkpoint"
        )
    rc["model_overrides"] = overrides
    if isinstance(rc.get("dt"), (int, float)):
        rc["dt"] = rc["dt"] / ratio
    rc["refined_from"] = str(checkpoint)
    momentum = _momentum_by_name(net, c.get("optimizer"))
    saved = {k: v for k, v in c.items() if k not in ("optimizer", "scheduler", "scaler")}
    saved.update(model=new.state_dict(), config=rc)
    if momentum and not coarsen:
        saved["momentum"] = prolong_momentum(net, momentum, factor, mode or "constant")
    with lock_output(out, "--out"):  # a folder a live run holds is refused
        ck.save_atomic(saved, out)
    return {
        "checkpoint": str(checkpoint),
        "out": str(out),
        "factor": factor,
        "coarsen": coarsen,
        "mode": mode or ("inject" if coarsen else "constant"),
        "before": before,
        "after": _shape(new),
        "refine": overrides["refine"],
        "p_schedule": p_schedule,
        "weak_before": weak_summary(net),
        "weak_after": weak_summary(new),
    }


def run(args) -> int:
    from ..train import evaluate

    apply_threads(args)
    if args.mode is not None:
        allowed = ("inject", "average") if args.coarsen else ("constant", "linear")
        if args.mode not in allowed:
            raise UsageError(
                f"refine: --mode {args.mode} needs {'no ' if args.coarsen else ''}--coarsen; "
                f"choose {' or '.join(allowed)}"
            )
    info = refine_checkpoint(args.checkpoint, args.out, args.factor, args.mode, args.coarsen, args.p_schedule)
    if args.evaluate:
        kw = dict(
            samples=args.samples, device=args.device, limit_test=args.limit_test, data_root=args.data_root
        )
        info["eval_before"] = evaluate(args.checkpoint, **kw)
        info["eval_after"] = evaluate(args.out, **kw)
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    b, a = info["before"], info["after"]
    print(
        f"{'coarsened' if args.coarsen else 'refined'} x{args.factor} ({info['mode']}): steps per stage "
        f"{b['steps']} -> {a['steps']}, dt {[round(d, 4) for d in b['dt']]} -> {[round(d, 4) for d in a['dt']]}; "
        f"wrote {args.out}"
    )
    for line in format_weak_summary(info["weak_before"], "before") + format_weak_summary(
        info["weak_after"], "after"
    ):
        print(line)
    if args.evaluate:
        for key, label in (("eval_before", "before"), ("eval_after", "after")):
            r = info[key]
            line = f"  test error {label}: {100 * r['test_error']:.2f}% (loss {r['test_loss']:.4f}, {r['n_test']} images)"
            if "test_error_mc" in r:
                line += f"; {r['mc_samples']}-sample MC {100 * r['test_error_mc']:.2f}%"
            print(line)
    return 0
