"""``weak_order`` with its defaults: a control variate and a number of paths (and ladder) chosen
until the slope's 95 % interval is decisive — at most 0.5 wide, which tells weak order 2 from 1."""

from __future__ import annotations

import json

import pytest

import sdenet as sn
from sdenet import weak
from sdenet.cli import main
from sdenet.weak import GBM, OU


def _width(res):
    lo, hi = res["slope_ci"]
    return hi - lo


@pytest.mark.parametrize("name", ["platen", "weak_taylor2"])
def test_order2_schemes_are_told_from_order_1_with_defaults(name):
    res = weak.weak_order(OU(), sn.get_scheme(name, law=sn.Gaussian()), seed=0)
    lo, hi = res["slope_ci"]
    assert res["control"] == "weak_euler" and res["auto"]["decisive"] is True
    assert lo <= 2 <= hi and lo > 1, res["slope_ci"]
    assert _width(res) <= weak.AUTO_TARGET_WIDTH
    assert res["declared_inside_ci"] is True


def test_euler_maruyama_interval_holds_1_with_defaults():
    res = weak.weak_order(OU(), sn.EulerMaruyama(), seed=0)
    lo, hi = res["slope_ci"]
    # its step is the control variate's own: plain Monte Carlo, paths doubled until decisive
    assert res["control"] is None and res["auto"]["decisive"] is True
    assert lo <= 1 <= hi and hi < 2, res["slope_ci"]


def test_control_variate_estimates_agree_with_plain_monte_carlo():
    # the same Platen expectations with and without the control variate, within 4 standard errors
    dts = [0.5, 0.25]
    a = weak.weak_order(GBM(), sn.Platen(sn.Gaussian()), dts=dts, paths=200_000, seed=1)
    b = weak.weak_order(GBM(), sn.Platen(sn.Gaussian()), dts=dts, paths=200_000, seed=1, control="none")
    assert a["control"] == "weak_euler" and b["control"] is None and a["auto"] is None
    for ea, sa, eb, sb in zip(a["estimates"], a["stderr"], b["estimates"], b["stderr"]):
        assert abs(ea - eb) <= 4 * (sa**2 + sb**2) ** 0.5
    assert a["stderr"][-1] < b["stderr"][-1] / 3  # the variance it removes


def test_says_plainly_when_not_decisive():
    res = weak.weak_order(OU(), sn.EulerMaruyama(), seed=0, budget=0.01, target_width=0.01)
    assert res["auto"]["decisive"] is False and "NOT DECISIVE" in res["verdict"]


def test_bad_auto_settings():
    with pytest.raises(ValueError, match="control"):
        weak.weak_order(OU(), sn.EulerMaruyama(), paths=10, control="maybe")
    with pytest.raises(ValueError, match="budget"):
        weak.weak_order(OU(), sn.EulerMaruyama(), budget=0)


def test_cli_platen_with_defaults_is_decisive(capsys):
    code = main(["weak", "order", "--scheme", "platen", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    lo, hi = res["slope_ci"]
    assert lo > 1 and lo <= 2 <= hi and res["auto"]["decisive"]
    code = main(["weak", "order", "--scheme", "platen", "--budget", "0.01", "--dt", "0.5", "0.25", "0.125"])
    out, _ = capsys.readouterr()
    assert code == 0 and "paths chosen" in out and "control variate" in out
