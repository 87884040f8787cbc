"""The README's Python examples run as written, and its commands name real sub-commands."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    torch.manual_seed(0)
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})


def test_readme_commands_are_registered_subcommands():
    from sdenet.cli import build_parser

    parser = build_parser()
    shell = "\n".join(re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S))
    used = set(re.findall(r"(?:^|\s)(?:-m )?sdenet (\w+)", shell, re.M))
    known = set(parser._subparsers._group_actions[0].choices)
    assert used, "the README shows no sdenet command"
    assert used <= known, f"README uses unknown sub-commands: {sorted(used - known)}"


def test_setup_commands_match_ci():
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    test_command = "bash scripts/setup.sh && python3 -m pytest -q"
    assert test_command in text and test_command in ci
