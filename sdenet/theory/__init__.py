"""Runnable derivations and experiments on the mathematics of sdenet (Lu et al., ICML 2018).

Each item is a module with a ``run(out, quick=False) -> ItemResult`` that writes its figures under
``out/figures`` and returns its findings and a markdown section; :func:`run_all` runs them in order
and writes ``out/REPORT.md``. ``sdenet theory`` (or ``python -m sdenet.theory``) does it from the shell.

1. :mod:`sdenet.theory.modified_equations` — modified equations of Euler, LM and Heun (sympy), checked
   against torchdiffeq solutions;
2. :mod:`sdenet.theory.lm_stability` — the stability region of the LM scheme in (k, λΔt);
3. :mod:`sdenet.theory.table1` — Table 1 of the paper as ``sdenet.nn`` stages with observed orders;
4. :mod:`sdenet.theory.weak_laws` — condition (5) and weak order for every noise law, strong vs weak;
5. :mod:`sdenet.theory.dt_families` — shake-shake and stochastic depth for Δt ≠ 1;
6. :mod:`sdenet.theory.stochastic_lm` — the LM stochastic scheme at general Δt and at Δt = 1.
"""

from __future__ import annotations

from .report import ITEMS, run_all, write_report

__all__ = ["ITEMS", "run_all", "write_report"]
