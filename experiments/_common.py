"""Shared bits of the experiment scripts: provenance (command, commit, torch, threads, hardware,
load) and resumable training runs in a folder."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def provenance(threads: int, seeds=None) -> dict:
    """sdenet's provenance block (:func:`sdenet.provenance.provenance`: command, commit, torch,
    threads, hardware, seed) with this script's thread count and the load at its start."""
    from sdenet.provenance import provenance as block

    p = block(
        seed=list(seeds) if seeds is not None else "per run: see each run's seed",
        command=" ".join(shlex.quote(a) for a in ["python", *sys.argv]),
    )
    p.update(
        threads=threads, hardware=f"{cpu_model()} ({os.cpu_count()} cores)", load_average_start=load_average()
    )
    return p


def repo_path(p) -> Path:
    p = Path(p)
    return p if p.is_absolute() else ROOT / p


def rel(p) -> str:
    """A path as written in a results file: relative to the repository when inside it."""
    p = Path(p).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def run_training(out: Path, **kw) -> dict:
    """Train into ``out`` unless it already holds a finished run; an interrupted run (``last.pt``)
    is resumed exactly, one that stopped before its first checkpoint is started again."""
    from sdenet.train import train

    if (out / "metrics.json").exists():
        print(f"  reusing {rel(out)}", flush=True)
    elif (out / "last.pt").exists():
        print(f"  resuming {rel(out)}", flush=True)
        train(resume=str(out), device=kw.get("device", "cpu"), quiet=True)
    else:
        if out.exists():
            for f in out.iterdir():
                if f.is_file():
                    f.unlink()
        train(out=str(out), quiet=True, **kw)
    return json.loads((out / "metrics.json").read_text())


def curve(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_results(stem: Path, result: dict, render, figure) -> None:
    """``stem.json``, ``stem.md`` (``render(result)``) and ``stem.png`` (``figure(result, path)``),
    rewritten after every finished run; a figure that fails is reported on stderr and the numbers
    are kept (the numbers are the result, the figure a view of them)."""
    write_json(stem.with_name(stem.name + ".json"), result)
    stem.with_name(stem.name + ".md").write_text(render(result))
    try:
        figure(result, stem.with_name(stem.name + ".png"))
    except Exception as err:
        print(f"no figure: {err}", file=sys.stderr)


def rerender(path, render, figure, summarise=None) -> int:
    """``--render JSON``: rewrite the .md and .png next to a recorded JSON (its numbers kept;
    ``summarise(result)``, when given, recomputes the summary from the runs) and print the .md."""
    path = Path(path)
    result = json.loads(path.read_text())
    if summarise is not None:
        result["summary"] = summarise(result)
    stem = path.with_suffix("")
    stem.with_name(stem.name + ".md").write_text(render(result))
    figure(result, stem.with_name(stem.name + ".png"))
    print(stem.with_name(stem.name + ".md").read_text())
    return 0
