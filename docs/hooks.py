"""mkdocs hook: serve the figures committed outside ``docs/`` without copying them into it.

mkdocs publishes only files under ``docs_dir``. The figures live where the code that draws them
writes them — ``theory/figures/`` (``sdenet theory --out theory``) and ``experiments/results/``
(the benchmark and experiment scripts) — so this hook adds them to the site at build time as
``figures/theory/<name>.png`` and ``figures/results/<path under experiments/results>``. Pages
link to those paths; a figure that is renamed or removed breaks ``mkdocs build --strict``.
``theory/REPORT.md`` itself becomes the page ``guide/theory-report.md``, and the page
``guide/cli.md`` gets every sub-command's ``--help`` from the parser.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

SOURCES = {"theory/figures": "figures/theory", "experiments/results": "figures/results"}


#: the committed theory report, published as a page of the site (its figure links rewritten)
REPORT_PAGE = "guide/theory-report.md"


def on_files(files, config):
    root = Path(config["config_file_path"]).resolve().parent
    report = (root / "theory" / "REPORT.md").read_text(encoding="utf-8")
    report = report.replace("](figures/", "](../figures/theory/")
    files.append(File.generated(config, REPORT_PAGE, content=report))
    for source, target in SOURCES.items():
        base = root / source
        for path in sorted(base.rglob("*.png")):
            uri = f"{target}/{path.relative_to(base).as_posix()}"
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


CLI_MARKER = "<!-- cli-help -->"


def _cli_help() -> str:
    """Every sub-command's ``--help``, from the parser itself (so the page cannot disagree with it)."""
    import os

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width: make the page reproducible
    from sdenet.cli import build_parser

    parser = build_parser()
    parts = ["## sdenet", "", "```text", parser.format_help().rstrip(), "```", ""]

    def walk(p, prefix):
        if p._subparsers is None:
            return
        for action in p._subparsers._group_actions:
            for name, sub in action.choices.items():
                if sub._subparsers is None:
                    parts.extend(
                        [f"## {prefix} {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
                    )
                walk(sub, f"{prefix} {name}")

    walk(parser, "sdenet")
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, _cli_help())
    return markdown
