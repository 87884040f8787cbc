"""Every code block of README.md and docs/**/*.md runs as printed, in order.

Collected from the Markdown at test time, so an example cannot rot:

* ```` ```python ```` blocks of one page run in order in one namespace (a later block may use the
  names of an earlier one), in a fresh temporary folder that is the current directory;
* ```` ```bash ```` blocks run line by line in that same folder (a command continued with ``\\``
  is one line); every line must exit 0. A plain ``sdenet ...`` line runs through
  ``sdenet.cli.main`` (the console script's entry point) in this process; a line that needs a
  shell runs in ``bash -c``, ``sdenet`` being ``python -m sdenet`` of this tree, one CPU thread;
* a block preceded by ``<!-- slow -->`` runs only in the slow set (``pytest -m slow``), which runs
  the whole page, slow blocks included;
* a block preceded by ``<!-- no-run: reason -->`` (a download, several GPUs, an ImageNet folder,
  an installation) is not run, but every ``sdenet ...`` command in it must parse with the real
  parser (``sdenet.cli.build_parser``): a real sub-command with real flags.

Examples are written to be cheap (the bundled ``--dataset sample``, tiny models, one or two
epochs), so the default set stays about a minute.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
FENCE = re.compile(
    r"(?:<!--\s*(?P<marker>slow|no-run\s*:[^>]*?)\s*-->[ \t]*\n)?^```(?P<lang>python|bash)[ \t]*\n(?P<code>.*?)^```",
    re.S | re.M,
)
SDENET = re.compile(r"(^|[;&|(]\s*)sdenet(?=\s|$)")  # sdenet in command position
INVOCATION = re.compile(r"(?:^|[\s;&|(])(?:\S*python3?\s+-m\s+|-m\s+)?sdenet\s+(?P<args>.*)")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    marker: str | None

    @property
    def slow(self):
        return self.marker == "slow"

    @property
    def no_run(self):
        return self.marker is not None and self.marker.startswith("no-run")

    def where(self):
        return f"{self.page}:{self.line}"


def blocks_of(path: Path, root: Path = ROOT) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    rel = path.relative_to(root).as_posix()
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start("code"))
        out.append(Block(rel, line, m.group("lang"), m.group("code"), m.group("marker")))
    return out


ALL = {p.relative_to(ROOT).as_posix(): blocks_of(p) for p in PAGES}
RUNNABLE = [page for page, bs in ALL.items() if any(not b.no_run for b in bs)]
WITH_SLOW = [page for page, bs in ALL.items() if any(b.slow for b in bs)]


def shell_lines(code: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, blank and comment lines dropped."""
    lines, cur = [], ""
    for raw in code.splitlines():
        if raw.rstrip().endswith("\\"):
            cur += raw.rstrip()[:-1] + " "
            continue
        cur += raw
        if cur.strip() and not cur.strip().startswith("#"):
            lines.append(cur.strip())
        cur = ""
    return lines


def sdenet_invocations(line: str) -> list[list[str]]:
    """The argument lists of every ``sdenet ...`` command on a shell line (up to ``&&``, ``|``, ``;``, ``#``)."""
    found = []
    for part in re.split(r"&&|\|\||[|;]", line):
        part = part.split(" #", 1)[0]
        m = INVOCATION.search(part)
        if m:
            found.append(shlex.split(m.group("args")))
    return found


def check_parses(block: Block):
    from sdenet.cli import build_parser

    for line in shell_lines(block.code):
        for argv in sdenet_invocations(line):
            try:
                build_parser().parse_args(argv)
            except (SystemExit, Exception) as err:  # argparse refuses: an unknown sub-command or flag
                pytest.fail(f"{block.where()}: `sdenet {' '.join(argv)}` does not parse ({err!r})")


SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?]")


def run_sdenet_in_process(argv: list[str]) -> tuple[int, str]:
    """``sdenet ARGV`` through ``sdenet.cli.main`` — what the ``sdenet`` console script calls — in this
    process (a fresh interpreter per line would cost seconds of imports each), output captured."""
    import contextlib
    import io

    from sdenet.cli import main

    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(argv)
    finally:
        torch.set_num_threads(threads)
    return code, out.getvalue()


def run_bash(block: Block, cwd: Path):
    """Each command line of the block: a plain ``sdenet ...`` line in process, anything that needs a
    shell (operators, substitutions, other programs) in ``bash -c`` with ``sdenet`` → ``python -m sdenet``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    sdenet = f"{shlex.quote(sys.executable)} -m sdenet"
    for line in shell_lines(block.code):
        plain = line.split(" #", 1)[0].strip()
        if plain.startswith("sdenet ") and not SHELL_SYNTAX.search(plain):
            code, output = run_sdenet_in_process(shlex.split(plain)[1:])
            assert code == 0, f"{block.where()}: `{line}` exited {code}\n{output[-3000:]}"
            continue
        command = SDENET.sub(lambda m: m.group(1) + sdenet, line)
        proc = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, (
            f"{block.where()}: `{line}` exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )


def run_page(page: str, tmp_path: Path, monkeypatch, with_slow: bool):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs_example__"}
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    try:
        for block in ALL[page]:
            if block.no_run or (block.slow and not with_slow):
                if block.lang == "bash":
                    check_parses(block)
                continue
            if block.lang == "python":
                exec(compile(block.code, block.where(), "exec"), namespace)
            else:
                run_bash(block, tmp_path)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_examples_run(page, tmp_path, monkeypatch):
    run_page(page, tmp_path, monkeypatch, with_slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", WITH_SLOW)
def test_page_examples_run_with_slow_blocks(page, tmp_path, monkeypatch):
    run_page(page, tmp_path, monkeypatch, with_slow=True)


@pytest.mark.parametrize("page", sorted(ALL))
def test_no_run_commands_parse(page):
    for block in ALL[page]:
        if block.lang == "bash" and (block.no_run or block.slow):
            check_parses(block)


def test_markers_are_known_and_examples_exist():
    """A misspelt marker would silently run (or skip) a block; the README and the site have examples."""
    for path in PAGES:
        for m in re.finditer(r"<!--\s*([^>]*?)\s*-->[ \t]*\n```", path.read_text(encoding="utf-8")):
            # "example" labels a block another test also runs (docs/protocol.md's new scheme); it runs here too
            assert m.group(1) in ("slow", "example") or re.match(r"no-run\s*:\s*\S", m.group(1)), (
                f"{path.name}: unknown marker <!-- {m.group(1)} --> before a code block "
                "(use <!-- slow -->, <!-- example --> or <!-- no-run: reason -->)"
            )
    readme = ALL["README.md"]
    assert sum(b.lang == "python" for b in readme) >= 1 and sum(b.lang == "bash" for b in readme) >= 2
    assert sum(b.lang == "python" for bs in ALL.values() for b in bs) >= 10


def test_commands_are_registered_subcommands():
    """Every ``sdenet X`` of README and docs names a real sub-command (the README's check, site-wide)."""
    from sdenet.cli import build_parser

    known = set(build_parser()._subparsers._group_actions[0].choices)
    used = {
        argv[0]
        for bs in ALL.values()
        for b in bs
        if b.lang == "bash"
        for line in shell_lines(b.code)
        for argv in sdenet_invocations(line)
        if argv
    }
    readme_used = {
        argv[0]
        for b in ALL["README.md"]
        if b.lang == "bash"
        for line in shell_lines(b.code)
        for argv in sdenet_invocations(line)
        if argv
    }
    assert readme_used, "the README shows no sdenet command"
    assert used <= known, f"unknown sub-commands: {sorted(used - known)}"


def test_setup_commands_match_ci():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = "bash scripts/setup.sh && python3 -m pytest -q"
    assert test_command in text and test_command in ci
    assert "bash scripts/setup.sh && python3 -m sdenet quickstart" in text
    assert "mkdocs build --strict" in ci


def test_the_collector_sees_markers_and_continuations(tmp_path):
    """The collector itself: markers bind to the next fence only, continuations join, invocations parse."""
    page = tmp_path / "x.md"
    page.write_text(
        "<!-- slow -->\n```bash\nsdenet models \\\n  --json\n```\n\n```python\nx = 1\n```\n"
        "<!-- no-run: GPUs -->\n```bash\ntorchrun -m sdenet train --model resnet20 && echo ok  # c\n```\n"
    )
    bs = blocks_of(page, root=tmp_path)
    assert [(b.lang, b.marker) for b in bs] == [("bash", "slow"), ("python", None), ("bash", "no-run: GPUs")]
    assert shell_lines(bs[0].code) == ["sdenet models    --json"]
    assert sdenet_invocations(shell_lines(bs[2].code)[0]) == [["train", "--model", "resnet20"]]
    assert sdenet_invocations("python3 -m sdenet quickstart") == [["quickstart"]]
    assert (
        SDENET.sub(lambda m: m.group(1) + "PY -m sdenet", "sdenet eval a && sdenet plot b")
        == "PY -m sdenet eval a && PY -m sdenet plot b"
    )
    assert (
        SDENET.sub(lambda m: m.group(1) + "PY -m sdenet", "python3 -m sdenet models")
        == "python3 -m sdenet models"
    )
