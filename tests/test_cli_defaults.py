"""Everyday defaults of the CLI: ``sdenet theory`` writes a fresh folder (the committed
``theory/REPORT.md`` is rewritten only with ``--out theory``), and ``--threads`` is taken by
every command that computes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sdenet.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "theory" / "REPORT.md"


def _digest(path: Path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture
def threads_restored():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("entry", ["sdenet", "python -m theory"])
def test_theory_writes_a_fresh_folder_by_default(entry, tmp_path, monkeypatch, capsys, threads_restored):
    import torch

    monkeypatch.chdir(tmp_path)
    before = _digest(REPORT)
    argv = ["--quick", "--items", "stability", "--threads", "1"]
    if entry == "sdenet":
        code = main(["theory", *argv])
    else:
        from sdenet.theory.__main__ import main as theory_main

        code = theory_main(argv)
    assert code == 0
    assert torch.get_num_threads() == 1
    made = sorted(tmp_path.glob("theory-*"))
    assert len(made) == 1 and (made[0] / "REPORT.md").is_file()
    assert (made[0] / "figures" / "lm_stability_region.png").stat().st_size > 1000
    assert f"wrote {made[0].name}/REPORT.md" in capsys.readouterr().out
    assert _digest(REPORT) == before  # the committed report is untouched


def test_fresh_folders_do_not_collide(tmp_path):
    from sdenet.commands.theory import fresh_out_dir

    a = fresh_out_dir(tmp_path)
    a.mkdir()
    b = fresh_out_dir(tmp_path)
    assert b != a and b.name.startswith(a.name) and not b.exists()


@pytest.mark.parametrize(
    "command", [["weak", "check"], ["weak", "order"], ["theory"], ["quickstart"], ["train"]]
)
def test_threads_on_every_command_that_computes(command):
    parser = build_parser()
    args, _ = parser.parse_known_args([*command, "--threads", "3"])
    assert args.threads == 3
