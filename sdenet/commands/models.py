"""``sdenet models [--json] [--dataset cifar|imagenet]``: the registered networks.

One line (or one JSON object) per model: ``name``, ``params`` (parameter count at the
dataset's default number of classes, counted on the meta device, so the command takes
seconds), ``dataset``, ``scheme`` and noise ``law`` (null for deterministic networks).
"""

from __future__ import annotations

import json

from ._args import add_json_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the registered networks with parameter count, dataset, scheme and noise law",
        description="List the registered networks (sdenet.models.names()) with their parameter count, "
        "dataset, scheme and noise law.",
    )
    add_json_option(p, "print a JSON list of {name, params, dataset, scheme, law}")
    p.add_argument(
        "--dataset", choices=("cifar", "imagenet"), default=None, help="only the models for this dataset"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        return _run(args)
    except BrokenPipeError:  # `sdenet models | head`: the reader left; not an error
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args) -> int:
    from ..models import info, names

    rows = [info(n) for n in names()]
    if args.dataset is not None:
        rows = [r for r in rows if r["dataset"] == args.dataset]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'params':>10}  {'dataset':<8}  {'scheme':<13}  law")
    for r in rows:
        print(
            f"{r['name']:<{width}}  {r['params'] / 1e6:>9.3f}M  {r['dataset']:<8}  {r['scheme']:<13}  {r['law'] or '-'}"
        )
    return 0
