"""mkdocs hook: serve the figures committed outside ``docs/`` without copying them into it.

mkdocs publishes only files under ``docs_dir``. The figures live where the code that draws them
writes them — ``theory/figures/`` (``sdenet theory --out theory``) and ``experiments/results/``
(the benchmark and experiment scripts) — so this hook adds them to the site at build time as
``figures/theory/<name>.png`` and ``figures/results/<path under experiments/results>``. Pages
link to those paths; a figure that is renamed or removed breaks ``mkdocs build --strict``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

SOURCES = {"theory/figures": "figures/theory", "experiments/results": "figures/results"}


def on_files(files, config):
    root = Path(config["config_file_path"]).resolve().parent
    for source, target in SOURCES.items():
        base = root / source
        for path in sorted(base.rglob("*.png")):
            uri = f"{target}/{path.relative_to(base).as_posix()}"
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
