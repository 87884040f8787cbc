#!/usr/bin/env bash
# Install sdenet and everything it needs into the current Python environment.
# A torch that is already installed (CPU or CUDA) is kept; with none present we
# install the CPU build torch==2.13.0, so a fresh machine never pulls CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[sdenet setup] no torch found: installing torch==2.13.0 (CPU build)"
    # machines of this project keep the CPU wheel in /opt/wheels (PIP_FIND_LINKS points there);
    # name it explicitly so the CPU build is found even where that variable is not set
    links=()
    if [ -d /opt/wheels ]; then links=(--find-links /opt/wheels); fi
    "$PY" -m pip install --quiet "${links[@]}" "torch==2.13.0"
else
    echo "[sdenet setup] keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
fi
"$PY" -m pip install --quiet -e ".[dev,docs,theory]"
# pyenv installs console scripts behind shims that exist only after a rehash
if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
echo "[sdenet setup] done: $("$PY" -c 'import sdenet, torch; print("sdenet", sdenet.__version__, "| torch", torch.__version__)')"
