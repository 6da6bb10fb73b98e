"""Generated reports in a real browser: headless Chromium, network off. Every plotly graph must hold
its SVG and the page must log no script error and ask for nothing beyond itself."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

from tests.support.browser import chromium_path, render

REQUIRED = os.environ.get("DI_REQUIRE_BROWSER") == "1"  # set by .ci/run, which installs chromium
missing = [
    what
    for what, ok in (
        ("Debian's chromium", chromium_path() is not None),
        ("playwright", importlib.util.find_spec("playwright") is not None),
    )
    if not ok
]
pytestmark = pytest.mark.skipif(bool(missing) and not REQUIRED, reason=f"needs {', '.join(missing)}")


def _check(path, least: int = 5) -> None:
    expected = len(re.findall(r'class="plotly-graph-div"', path.read_text(encoding="utf-8")))
    page = render(path)
    assert expected >= least and page.graphs == expected, (expected, page.graphs)
    assert page.graphs_drawn == page.graphs, f"{page.graphs - page.graphs_drawn} graphs did not render"
    assert page.errors == [], page.errors
    assert page.requests == [], f"the report is not self-contained: {page.requests}"


def test_study_report_renders_offline(tiny_full_study):
    _check(tiny_full_study[0] / "report.html")


def test_refusal_report_renders_offline(tiny_refusal_study):
    _check(tiny_refusal_study / "report.html")


def test_stored_svd_report_renders_offline(tmp_path):
    import torch

    from defense_interp.cli import main

    g = torch.Generator().manual_seed(0)
    files = []
    for name, dtype in (("h16", torch.float16), ("s16", torch.float16), ("h32", torch.float32), ("s32", torch.float32)):
        files.append(tmp_path / f"{name}.pt")
        torch.save(torch.randn(12, 32, generator=g).to(dtype), files[-1])
    assert main(["svd", *map(str, files), "--out", str(tmp_path / "svd")]) == 0
    _check(tmp_path / "svd" / "report.html", least=3)  # the comparison and one figure per pair


def test_a_broken_figure_is_caught(tmp_path):
    """The check can fail: a page whose script throws late, whose graph never draws, and which asks
    the network for an image."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<html><body><div class='plotly-graph-div'></div><img src='https://example.org/x.png'>"
        "<script>setTimeout(() => undefinedFunction(), 300)</script></body></html>"
    )
    page = render(bad, draw_timeout_ms=1_000)  # its graph never draws: do not wait the full 15 s
    assert page.graphs == 1 and page.graphs_drawn == 0
    assert any("undefinedFunction" in e for e in page.errors)
    assert page.requests == ["https://example.org/x.png"]
