"""``python -m theory`` from a checkout: the same as ``sdenet theory`` (the code lives in
``sdenet/theory/``; this folder keeps the committed REPORT.md and its figures). Not installed
with the package: installed, run ``sdenet theory`` or ``python -m sdenet.theory``."""

import sys

from sdenet.theory.__main__ import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m theory"))
