"""Help texts: every sub-command's --help renders cleanly (no doubled %%, no traceback), and
``sdenet theory --help`` names every item the report runs."""

from __future__ import annotations

import pytest

from sdenet.cli import main

COMMANDS = [
    [],
    ["quickstart"],
    ["train"],
    ["eval"],
    ["refine"],
    ["plot"],
    ["models"],
    ["theory"],
    ["weak"],
    ["weak", "check"],
    ["weak", "order"],
]


def _help(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    return out + err


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "sdenet")
def test_help_renders_cleanly(capsys, argv):
    text = _help(capsys, argv)
    assert text.startswith("usage: sdenet")
    assert "%%" not in text and "%(" not in text and "Traceback" not in text


def test_theory_help_lists_every_item(capsys):
    from sdenet.commands.theory import ITEMS
    from sdenet.theory.report import ITEMS as REPORT_ITEMS

    assert list(ITEMS) == list(REPORT_ITEMS)
    text = " ".join(_help(capsys, ["theory"]).split())
    for key in REPORT_ITEMS:
        assert f"{key} (" in text
    assert f"all {len(REPORT_ITEMS)}" in text
