"""Memory and time of a training step by memory mode, depth 20 to 1202.

For each family and depth one worker process builds the network once and switches its stages'
memory mode (``sdenet.nn.set_memory``) between the contenders:

* pre-activation ResNet (``preact_resnet*``, 6n + 2 layers): ``store`` vs ``checkpoint``;
* RevNet (``revnet``, widths 32-64-128, n units per stage, about 12n + 2 layers): ``store`` vs ``reversible``
  and ``reversible-plain``;
* Hamiltonian (``hamiltonian*``, widths 32-64-128, 12n + 2 layers): the same three.

Per (network, mode) it measures

* **saved bytes**: the distinct tensors autograd saves for backward during the forward pass
  (``torch.autograd.graph.saved_tensors_hooks``, :func:`sdenet.nn.saved_tensor_bytes`);
* **peak process memory** of one training step above the memory before it (Linux: peak RSS
  reset through ``/proc/self/clear_refs`` and read from ``VmHWM``; the C heap is trimmed
  before each step) and the peak CUDA memory on a GPU;
* **step time** (forward + cross-entropy + backward + SGD with momentum): rounds interleave the
  two modes (order alternating), the reported ratio is the median over rounds of the paired
  ratios (mode / store);
* for the reversible modes, the max relative gradient error against ``store`` on the same batch
  (float32); the same comparison of ``store`` in float32 against ``store`` in float64 (the
  network's inherent float32 level); and the reconstruction drift of the stages
  (:func:`sdenet.nn.memory.reconstruction_drift`) with the exact fixed-point arithmetic that
  ``reversible`` uses, and with plain float32 inversion for comparison.

``reversible-plain`` is ``set_memory(model, "reversible", exact=False)``: plain floating-point
inversion instead of the exact fixed-point carries. Rounds interleave all of a family's modes
(the order rotated and reversed from round to round); every ratio is paired within a round.

Targets: reversible saved bytes at depth 1202 <= 1.3x those at depth 20 (store grows about 60x);
checkpoint grows like sqrt(N) (issue 10); step time: exact reversible <= 1.35x store, plain
(exact=False) <= 1.25x (issue 17), checkpoint <= 1.4x (issue 10).

    python experiments/benchmarks/memory.py                      # CPU, batch 8, 1 thread
    python experiments/benchmarks/memory.py --quick              # smoke test (depths 20, 56)
Writes ``memory.json``, ``memory.md`` and ``memory.png`` to ``--out`` (default experiments/results).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FAMILIES = {
    "preact_resnet": ("store", "checkpoint"),
    "revnet": ("store", "reversible", "reversible-plain"),
    "hamiltonian": ("store", "reversible", "reversible-plain"),
}
# issue 17: exact reversible <= 1.35x store, plain floating point (exact=False) <= 1.25x; checkpoint (issue 10) <= 1.4x
TARGETS = {"reversible": 1.35, "reversible-plain": 1.25, "checkpoint": 1.4}


def apply_mode(model, mode):
    """``reversible-plain`` is ``set_memory(model, "reversible", exact=False)``."""
    from sdenet.nn import set_memory

    if mode == "reversible-plain":
        return set_memory(model, "reversible", exact=False)
    return set_memory(model, mode)


def units(family, depth):
    if family == "preact_resnet":
        n = max(1, round((depth - 2) / 6))
        return n, 6 * n + 2
    n = max(2, round((depth - 2) / 12))
    return n, 12 * n + 2


def build(family, n):
    import sdenet.models as M

    if family == "preact_resnet":
        return M.create("preact_resnet20", blocks=(n,) * 3)
    if family == "revnet":
        return M.create("revnet", blocks=(n,) * 3)
    return M.create("hamiltonian1202", blocks=(n,) * 3)


# ---------------------------------------------------------------------- worker (one family, one depth)


def _rss():
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                vals[line.split(":")[0]] = int(line.split()[1]) * 1024
    return vals


def _trim():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(spec):
    import torch
    import torch.nn.functional as F

    from sdenet.nn import Stage, saved_tensor_bytes, set_memory
    from sdenet.nn.memory import reconstruction_drift

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    family, n = spec["family"], spec["units"]
    model = build(family, n).to(device).train()
    x = torch.randn(spec["batch"], 3, spec["size"], spec["size"], device=device)
    y = torch.randint(0, 10, (spec["batch"],), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    modes = FAMILIES[family]
    lean = modes[1]
    set_memory = apply_mode  # noqa: F811 (the benchmark's modes include reversible-plain)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    out = {
        "family": family,
        "units": n,
        "depth": spec["depth"],
        "params": sum(p.numel() for p in model.parameters()),
        "modes": {},
    }
    set_memory(model, "store")
    step()  # warm-up
    # memory: the lean modes first, then store, trimming the heap before each
    for mode in (*modes[1:], "store"):
        set_memory(model, mode)
        opt.zero_grad(set_to_none=True)
        _trim()
        nbytes, logits = saved_tensor_bytes(lambda: model(x))
        F.cross_entropy(logits, y).backward()
        del logits
        opt.zero_grad(set_to_none=True)
        _trim()
        before = _rss()["VmRSS"]
        ok = _reset_peak()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            cuda0 = torch.cuda.memory_allocated(device)
        step()
        sync()
        peak = _rss()["VmHWM"] if ok else None
        rec = {
            "saved_bytes": nbytes,
            "rss_before": before,
            "rss_peak": peak,
            "rss_step": (peak - before) if peak is not None else None,
        }
        if device.type == "cuda":
            rec["cuda_peak_step"] = torch.cuda.max_memory_allocated(device) - cuda0
        out["modes"][mode] = rec
    # gradients against store, same batch, no optimizer step
    if lean == "reversible":
        bufs = {k: v.clone() for k, v in model.state_dict().items()}
        grads = {}
        for mode in modes:
            model.load_state_dict(bufs)
            set_memory(model, mode)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            grads[mode] = [p.grad.detach().clone() for p in model.parameters()]

        def rel(gs, refs):
            return max(
                float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))
                for a, b in zip(gs, refs)
            )

        out["grad_rel_error"] = rel(grads[lean], grads["store"])
        for m in modes[1:]:
            out["modes"][m]["grad_rel_error"] = rel(grads[m], grads["store"])
        # the inherent float32 level: store in float32 against store in float64, same weights and batch
        import copy

        model64 = copy.deepcopy(model).double()
        set_memory(model64, "store")
        F.cross_entropy(model64(x.double()), y).backward()
        out["grad_store32_vs_64"] = rel(grads["store"], [p.grad for p in model64.parameters()])
        del model64
        model.load_state_dict(bufs)
        drift, plain = [], []
        with torch.no_grad():
            h = model.stem(x)
            for layer in model.layers:
                if layer.transition is not None:
                    h, _ = layer.transition(h)
                drift.append(reconstruction_drift(layer.stage, h)["rel_error"])  # what reversible does
                plain.append(reconstruction_drift(layer.stage, h, exact=False)["rel_error"])  # plain float32
                h = layer.stage(h)
        out["reconstruction_drift"] = drift
        out["reconstruction_drift_plain"] = plain
    # time, interleaved: every round runs each mode once, in an order rotated from round to round
    # (and reversed every other round); ratios are paired within a round
    ratios, times = {m: [] for m in modes[1:]}, {m: [] for m in modes}
    for mode in modes:  # one untimed step per mode
        set_memory(model, mode)
        step()
    for r in range(spec["rounds"]):
        k = r % len(modes)
        order = modes[k:] + modes[:k]
        order = order if (r // len(modes)) % 2 == 0 else order[::-1]
        got = {}
        for mode in order:
            set_memory(model, mode)
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            got[mode] = time.perf_counter() - t0
            times[mode].append(got[mode])
        for m in modes[1:]:
            ratios[m].append(got[m] / got["store"])
    for mode in modes:
        out["modes"][mode]["step_s"] = statistics.median(times[mode])
    for m in modes[1:]:
        out["modes"][m]["time_ratio"] = statistics.median(ratios[m])
        out["modes"][m]["time_ratio_range"] = [min(ratios[m]), max(ratios[m])]
    out["time_ratio"] = out["modes"][lean]["time_ratio"]
    out["time_ratio_range"] = out["modes"][lean]["time_ratio_range"]
    set_memory(model, "store")
    assert all(s.memory == "store" for s in model.modules() if isinstance(s, Stage))
    return out


# ---------------------------------------------------------------------- driver


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110, 302, 1202])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    p.add_argument("--quick", action="store_true", help="depths 20 and 56, one round (smoke test)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.quick:
        args.depths, args.rounds = [20, 56], 1
    from sdenet.train.hardware import info as hardware

    load0 = os.getloadavg()
    rows = []
    t_start = time.time()
    out = Path(args.out)
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "sdenet"], capture_output=True, text=True
    )
    commit = (git.stdout.strip() or "unknown") + (" (sdenet/ modified)" if dirty.stdout.strip() else "")

    def write():  # after every row: an interrupted run still records what it measured
        result = {
            "hardware": hardware(args.device),
            "load_before": load0,
            "load_after": os.getloadavg(),
            "batch": args.batch,
            "size": args.size,
            "rounds": args.rounds,
            "threads": args.threads,
            "device": args.device,
            "rows": rows,
            "seconds": time.time() - t_start,
            "commit": commit,
            "command": " ".join(["python", "experiments/benchmarks/memory.py", *(argv or sys.argv[1:])]),
        }
        result["verdicts"] = verdicts(rows)
        from sdenet.provenance import provenance

        result["provenance"] = provenance(
            seed="fixed in the script: torch.manual_seed(0) in each worker", command=result.get("command")
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / "memory.json").write_text(json.dumps(result, indent=1))
        plot(rows, out / "memory.png")
        (out / "memory.md").write_text(markdown(result))

    for depth in args.depths:
        for family in args.families:
            n, actual = units(family, depth)
            spec = {
                "family": family,
                "units": n,
                "depth": actual,
                "batch": args.batch,
                "size": args.size,
                "rounds": args.rounds,
                "threads": args.threads,
                "device": args.device,
            }
            t0 = time.time()
            env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"memory benchmark: worker {family} depth {actual} failed")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            lean = FAMILIES[family][1]
            ratios = ", ".join(f"{m} {row['modes'][m]['time_ratio']:.2f}" for m in FAMILIES[family][1:])
            print(
                f"[{time.time() - t_start:6.0f}s] {family:<13} depth {actual:>5}: saved "
                f"{row['modes']['store']['saved_bytes'] / 2**20:8.1f} MiB store, "
                f"{row['modes'][lean]['saved_bytes'] / 2**20:7.2f} MiB {lean}; time ratio {ratios} "
                f"({time.time() - t0:.0f} s)",
                flush=True,
            )
            write()
    print(f"wrote {out / 'memory.md'}")
    return 0


def _by(rows, family):
    return sorted((r for r in rows if r["family"] == family), key=lambda r: r["depth"])


def verdicts(rows):
    out = []
    for family, modes in FAMILIES.items():
        rs = _by(rows, family)
        if len(rs) < 2:
            continue
        lean = modes[1]
        lo, hi = rs[0], rs[-1]
        growth = {m: hi["modes"][m]["saved_bytes"] / lo["modes"][m]["saved_bytes"] for m in modes}
        depth_ratio = hi["units"] / lo["units"]
        if lean == "reversible":
            out.append(
                {
                    "family": family,
                    "target": f"reversible saved bytes at depth {hi['depth']} <= 1.3x depth {lo['depth']}",
                    "value": growth[lean],
                    "met": growth[lean] <= 1.3,
                    "note": f"store grows {growth['store']:.1f}x over the same range",
                }
            )
        else:
            out.append(
                {
                    "family": family,
                    "target": f"checkpoint saved bytes grow like sqrt(N): "
                    f"sqrt({hi['units']}/{lo['units']}) = {math.sqrt(depth_ratio):.1f}x",
                    "value": growth[lean],
                    "met": growth[lean] <= 1.5 * math.sqrt(depth_ratio),
                    "note": f"store grows {growth['store']:.1f}x (N ratio {depth_ratio:.1f}); "
                    f"met when within 1.5x of sqrt(N ratio)",
                }
            )
        for m in modes[1:]:
            worst = max(r["modes"][m]["time_ratio"] for r in rs)
            out.append(
                {
                    "family": family,
                    "target": f"{m} step time <= {TARGETS[m]}x store (every depth)",
                    "value": worst,
                    "met": worst <= TARGETS[m],
                    "note": "median paired ratio per depth: "
                    + ", ".join(f"{r['depth']}: {r['modes'][m]['time_ratio']:.2f}" for r in rs),
                }
            )
    return out


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for family, modes in FAMILIES.items():
        rs = _by(rows, family)
        if not rs:
            continue
        d = [r["depth"] for r in rs]
        for m in modes:
            style = "-o" if m == "store" else "--s"
            axes[0].loglog(
                d, [r["modes"][m]["saved_bytes"] / 2**20 for r in rs], style, label=f"{family} {m}"
            )
            peaks = [r["modes"][m]["rss_step"] for r in rs]
            if all(v is not None for v in peaks):
                axes[1].loglog(d, [max(v, 1) / 2**20 for v in peaks], style, label=f"{family} {m}")
        for m in modes[1:]:
            axes[2].semilogx(
                d,
                [r["modes"][m]["time_ratio"] for r in rs],
                "-o" if m != "reversible-plain" else ":^",
                label=f"{family}: {m} / store",
            )
    axes[0].set_title("activations saved for backward (MiB)")
    axes[1].set_title("peak process memory of a step above its start (MiB)")
    axes[2].set_title("step time ratio (median of interleaved pairs)")
    for m, c in (("reversible", "r"), ("reversible-plain", "orange"), ("checkpoint", "m")):
        axes[2].axhline(TARGETS[m], color=c, ls=":", lw=1, label=f"{m} target {TARGETS[m]}")
    for ax in axes:
        ax.set_xlabel("depth (layers)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res):
    hw = res["hardware"]
    hw_s = ", ".join(f"{k} {v}" for k, v in hw.items()) if isinstance(hw, dict) else str(hw)
    lines = [
        "# Memory modes: saved activations, peak memory and step time by depth",
        "",
        f"Produced by `{res['command']}` in {res['seconds']:.0f} s, at commit {res.get('commit', '?')}.",
        "",
        f"- hardware: {hw_s}",
        f"- load average (1/5/15 min) before {[round(v, 2) for v in res['load_before']]}, after "
        f"{[round(v, 2) for v in res['load_after']]} (2 cores shared with other jobs: times are noisy; ratios "
        "are of interleaved pairs)",
        f"- batch {res['batch']} of {res['size']}x{res['size']} random images, float32, {res['threads']} thread(s), "
        f"device {res['device']}; {res['rounds']} timing rounds per depth; one worker process per (family, depth)",
        "",
        "![memory](memory.png)",
        "",
        "| family | depth | params | mode | saved for backward (MiB) | step peak RSS above start (MiB) | step (s) |"
        " ratio to store | grad rel. error vs store | store float32 vs float64 | reconstruction drift per stage"
        " (plain float32 inversion) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(res["rows"], key=lambda r: (list(FAMILIES).index(r["family"]), r["depth"])):
        for m in FAMILIES[r["family"]]:
            rec = r["modes"][m]
            lean = m != "store"
            lines.append(
                f"| {r['family']} | {r['depth']} | {r['params'] / 1e6:.2f}M | {m} | {rec['saved_bytes'] / 2**20:.2f} | "
                f"{(rec['rss_step'] or 0) / 2**20:.1f} | {rec['step_s']:.3f} | "
                f"{rec['time_ratio']:.2f} ({rec['time_ratio_range'][0]:.2f}–{rec['time_ratio_range'][1]:.2f})"
                if lean
                else f"| {r['family']} | {r['depth']} | {r['params'] / 1e6:.2f}M | {m} | {rec['saved_bytes'] / 2**20:.2f} | "
                f"{(rec['rss_step'] or 0) / 2**20:.1f} | {rec['step_s']:.3f} | 1"
            )
            if lean:
                ge, lv = rec.get("grad_rel_error", r.get("grad_rel_error")), r.get("grad_store32_vs_64")
                dr, dp = r.get("reconstruction_drift"), r.get("reconstruction_drift_plain")
                lines[-1] += (
                    (f" | {ge:.2e}" if ge is not None else " | –")
                    + (f" | {lv:.2e}" if lv is not None else " | –")
                    + (
                        " | "
                        + ", ".join(f"{v:.1e}" for v in dr)
                        + (" (" + ", ".join(f"{v:.1e}" for v in dp) + ")" if dp else "")
                        if dr
                        else " | –"
                    )
                    + " |"
                )
            else:
                lines[-1] += " | | | |"
    lines += ["", "## Targets", "", "| family | target | measured | met |", "|---|---|---:|---|"]
    for v in res["verdicts"]:
        lines.append(
            f"| {v['family']} | {v['target']} | {v['value']:.2f} ({v['note']}) | "
            f"{'yes' if v['met'] else '**no**'} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
