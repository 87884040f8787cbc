"""Optional dependencies: sdenet/ outside ``sdenet.theory`` (the ``theory`` extra's runnable
derivations) imports none of torchsde, torchdiffeq, sympy, scipy; code that needs one names the
extra that installs it; the t quantile of the slope intervals needs no scipy."""

import importlib
import subprocess
import sys

import pytest
from scipy.stats import t as student_t

from sdenet._optional import require
from sdenet.weak import _t975

OPTIONAL = ("torchsde", "torchdiffeq", "sympy", "scipy")


def test_importing_every_sdenet_module_loads_no_optional_dependency():
    code = (
        "import importlib, pkgutil, sys, sdenet\n"
        "for m in pkgutil.walk_packages(sdenet.__path__, 'sdenet.'):\n"
        "    if not m.name.endswith('__main__') and not m.name.startswith('sdenet.theory.'):\n"
        "        importlib.import_module(m.name)\n"
        f"print(','.join(k for k in {OPTIONAL!r} if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "module, extra",
    [("sympy", "theory"), ("scipy.linalg", "theory"), ("torchsde", "interop"), ("torchdiffeq", "interop")],
)
def test_require_names_the_extra(monkeypatch, module, extra):
    assert require(module).__name__ == module
    top = module.split(".")[0]
    if module != top:
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, top, None)  # import -> ImportError
    with pytest.raises(ImportError, match=rf"pip install 'sdenet\[{extra}\]'"):
        require(module)


def test_theory_item_without_sympy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sympy", None)
    monkeypatch.delitem(sys.modules, "sdenet.theory.modified_equations", raising=False)
    with pytest.raises(ImportError, match=r"sdenet\[theory\]"):
        importlib.import_module("sdenet.theory.modified_equations")


def test_t_quantile_is_exact_without_scipy():
    for dof in list(range(1, 41)) + [60, 120, 500]:
        assert _t975(dof) == pytest.approx(float(student_t.ppf(0.975, dof)), rel=1e-11)
