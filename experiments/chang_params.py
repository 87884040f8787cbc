"""Parameter counts of Chang et al.'s Hamiltonian networks: the authors' released code against sdenet.

    python experiments/chang_params.py [--out experiments/results/chang_params.md]

The paper's table could not be retrieved on this machine, so the reference is the authors' released
TensorFlow code (github.com/changebo/revnet-public, ``resnet/configs/cifar_configs.py`` and
``resnet/models/hamiltonian_model.py``; the 1202-layer configuration from
github.com/LiliMeng/hamiltonian-revnet). :func:`reference_params` counts the variables their
``build_inference_network`` creates, transcribed by hand (no code of theirs is imported or copied):

* ``init``: a 3×3 convolution ``3 → filters[0]`` (no bias) and a batch norm (β, γ);
* stage ``s`` (``s = 0, 1, 2``), unit ``i``: the unit works at ``c = filters[s]`` channels when
  ``i = 0`` and ``filters[s+1]`` otherwise (its *first* unit still runs at the previous stage's
  width; average pooling and zero padding follow it); it has two tied kernels ``K`` of shape
  3×3×(c/2)×(c/2) (branches ``f`` and ``g``, each ``Kᵀσ(BN(K·))`` after a pre-activation BN–ReLU)
  and four batch norms of ``c/2`` channels, except the network's very first unit whose ``f`` has
  no pre-activation BN;
* ``unit_last``: a batch norm of ``filters[-1]`` channels; ``logit``: ``filters[-1] × 10`` weights and 10 biases.

sdenet's Hamiltonian networks follow the paper's update ``Kᵀσ(BN(K·))`` with one batch norm per
branch (the authors' code adds a pre-activation BN–ReLU): that difference is listed separately.
"""

from __future__ import annotations

import argparse
import os
import sys

#: (filters, units per stage) of the authors' configurations
CONFIGS = {
    "hamiltonian74": ((32, 32, 64, 112), (6, 6, 6)),
    "hamiltonian218": ((32, 32, 64, 128), (18, 18, 18)),
    "hamiltonian1202": ((32, 32, 64, 128), (100, 100, 100)),
}


def reference_params(filters, units, num_classes=10, pre_bn=True):
    """Variables of the authors' Hamiltonian network (see the module docstring); returns a dict by kind."""
    kernels = bn = 0
    for s, n in enumerate(units):
        for i in range(n):
            c = filters[s] if i == 0 else filters[s + 1]
            kernels += 2 * 9 * (c // 2) ** 2
            n_bn = 2  # the BN inside each branch Kᵀσ(BN(K·))
            if pre_bn:
                n_bn += 1 if (s == 0 and i == 0) else 2
            bn += n_bn * 2 * (c // 2)
    stem = 9 * 3 * filters[0] + 2 * filters[0]
    head = 2 * filters[-1] + filters[-1] * num_classes + num_classes
    return {"kernels": kernels, "bn": bn, "stem": stem, "head": head, "total": kernels + bn + stem + head}


def sdenet_params(name):
    from sdenet.nn.models import create

    model = create(name)
    return sum(p.numel() for p in model.parameters())


def table():
    rows = []
    for name, (filters, units) in CONFIGS.items():
        ref = reference_params(filters, units)
        same_unit = reference_params(filters, units, pre_bn=False)["total"]  # their layout, sdenet's unit
        ours = sdenet_params(name)
        rows.append(
            {
                "name": name,
                "reference": ref["total"],
                "reference_one_bn": same_unit,
                "sdenet": ours,
                "diff": ours / ref["total"] - 1,
                "pre_bn": ref["total"] - same_unit,
            }
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the table as markdown here")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rows = table()
    lines = [
        "| network | authors' code | authors' layout, one BN per branch | sdenet | sdenet vs authors | "
        "authors' pre-activation BNs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['reference']:,} | {r['reference_one_bn']:,} | {r['sdenet']:,} | "
            f"{100 * r['diff']:+.2f} % | {r['pre_bn']:,} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(
                "# Hamiltonian networks: parameter counts against the authors' code\n\n"
                "Produced by `python experiments/chang_params.py --out experiments/results/chang_params.md`.\n\n"
                + text
                + "\n\nThe reference counts the variables of the authors' released TensorFlow code "
                "(see the script's docstring); the paper's own table could not be retrieved here. "
                "sdenet's branch is the paper's `Kᵀσ(BN(K·))` with one batch norm; the authors' code adds "
                "a pre-activation BN–ReLU to each branch, which is the whole remaining difference "
                "(last column).\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
