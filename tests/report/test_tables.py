"""Report tables say what a number is: no `[nan, nan]`, `None` or 14-digit floats; a one-sample
statistic says so instead of showing an interval; counts agree with their nouns."""

from __future__ import annotations

import math
import re

import defense_interp as di
from defense_interp.metrics import Estimate
from defense_interp.report.html import plural, write_page
from tests.support.helpers import fake_run


def _visible_text(html: str) -> str:
    return re.sub(r"<script.*?</script>", "", html, flags=re.S)


def test_cells_show_intervals_one_samples_and_short_numbers(tmp_path):
    rows = [
        {"name": "spread", "value": Estimate(1.23456789, 1.0, 1.5, 3, "seeds")},
        {"name": "single", "value": Estimate(0.5, math.nan, math.nan, 1, "seeds")},
        {"name": "empty", "value": Estimate(math.nan, math.nan, math.nan, 0, "seeds")},
        {"name": "ratio", "value": 0.1981739103794098},
        {"name": "missing", "value": None},
        {"name": "norms", "value": [0.123456789, 2.0]},
    ]
    page = (write_page(tmp_path / "t.html", "t", [], [("Table", None, "caption", rows)])).read_text()
    text = _visible_text(page)
    assert "1.235 <span class=meta>[1.000, 1.500]</span>" in text
    assert "0.500 <span class=meta>(one sample)</span>" in text
    assert "0.1982" in text and "0.1981739103794098" not in text and "0.1235, 2" in text
    assert not re.search(r"\bnan\b|\bNone\b|\d\.\d{7,}", text, flags=re.I)


def test_one_seed_report_has_no_nan_none_or_long_floats(tmp_path):
    base, ip = fake_run("baseline", di.Baseline(), 0, after=5.0), fake_run("ip", di.IP(), 0, after=1.0)
    cmp = di.compare(ip, baseline=base)
    text = _visible_text(cmp.report(tmp_path / "r.html", findings=di.assess(cmp)).read_text())
    assert "1 seed)" in text and "1 seeds" not in text
    assert not re.search(r"\[nan|nan\]|\bNone\b|\d\.\d{7,}", text)


def test_plural():
    assert (plural(1, "seed"), plural(3, "seed"), plural(0, "probe")) == ("1 seed", "3 seeds", "0 probes")
