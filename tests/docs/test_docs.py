"""The documentation builds with mkdocs --strict (broken links, missing pages or unresolvable API
references fail), the API reference is generated from the docstrings, and the concepts and errors
pages cover what they promise."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

import defense_interp as di
from tests.support import browser

ROOT = Path(__file__).parents[2]
pytest.importorskip("mkdocs")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_readme_is_short_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150, "the README is the front door: move measurements to docs/results.md"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert "docs/results.md" in links
    assert [link for link in links if "://" not in link and not (ROOT / link).exists()] == []


def test_docs_build_strict_with_every_page(site):
    for page in (
        "index.html",
        "quickstart/index.html",
        "concepts/index.html",
        "errors/index.html",
        "architecture/index.html",
        "how-to/own-model/index.html",
        "how-to/own-trait/index.html",
        "how-to/own-judge/index.html",
        "how-to/gpu/index.html",
        "how-to/read-report/index.html",
        "results/index.html",
    ):
        assert (site / page).is_file(), page
    assert (site / "img" / "report.png").stat().st_size > 10_000


def test_api_reference_is_generated_from_the_docstrings(site):
    """Every public name of `defense_interp` appears in the API reference, with its docstring."""
    pages = [*(site / "api").rglob("*.html"), site / "errors" / "index.html"]
    api = "".join(p.read_text(encoding="utf-8") for p in pages)
    names = [n for n in di.__all__ if n not in ("__version__", "metrics")]
    missing = [n for n in names if not re.search(rf'id="defense_interp\.(\w+\.)*{n}"', api)]
    assert missing == [], missing
    assert re.search(r'id="defense_interp\.metrics\.(\w+\.)*participation_ratio"', api)
    first_line = di.train.__doc__.strip().splitlines()[0]
    assert first_line.split("`")[0].strip() in api


def test_errors_page_lists_every_error_class():
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    from defense_interp import errors

    classes = [
        c.__name__
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, di.DefenseInterpError) and c is not di.DefenseInterpError
    ]
    assert len(classes) >= 5
    assert [c for c in classes if f"`{c}`" not in text] == []


def test_concepts_page_has_every_design_definition_as_a_formula():
    text = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    for heading in (
        "Response mask",
        "Trait axis",
        "Activation gradient",
        "Gradient pressure",
        "Condition gradient vector",
        "Cosine matrices",
        "Diffuseness",
        "Loss explained away",
        "Trait expression",
        "Gradient edits",
        "Controls",
        "Two-stage",
        "Refusal representation",
    ):
        assert heading in text, heading
    assert text.count("$$") >= 20  # display formulas, not prose


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve `folder` over HTTP on 127.0.0.1 (a free port) for the body; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves quietly; remembers every path it had to answer with 404."""

    missing: ClassVar[list[str]] = []

    def send_error(self, code: int, *args: Any, **kwargs: Any) -> None:
        if code == 404:
            self.missing.append(self.path)
        super().send_error(code, *args, **kwargs)

    def log_message(self, format: str, *args: object) -> None:
        pass


#: MathJax 2 probes for its TeX fonts (the bundle carries STIX-Web, which it then uses) and tests
#: local fonts with an about:blank @font-face: harmless console errors, told apart from real ones.
FONT_PROBES = ("/javascripts/mathjax/fonts/HTML-CSS/TeX/",)
PROBE_MESSAGES = ("Access to font at 'about:blank'", "net::ERR_FAILED", "status of 404")


def test_formulas_render_offline(site):
    """The concepts page, served from 127.0.0.1 as `mkdocs serve` would, typesets every formula
    with the MathJax the site carries: no request leaves the site and no script error is logged."""
    if browser.chromium_path() is None and os.environ.get("DI_REQUIRE_BROWSER") != "1":
        pytest.skip("needs Debian's chromium")
    assert "unpkg.com" not in (site / "concepts" / "index.html").read_text(encoding="utf-8")
    with serve(site) as base, browser.open_page(base + "concepts/", allow=base) as (page, rendered):
        page.wait_for_function(
            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && "
            "document.querySelectorAll('.arithmatex .MathJax, .arithmatex .MathJax_Display').length > 0",
            timeout=30_000,
        )
        typeset = page.evaluate(
            "() => document.querySelectorAll('.arithmatex .MathJax, .arithmatex .MathJax_Display').length"
        )
        raw = page.evaluate(
            "() => [...document.querySelectorAll('.arithmatex')].filter(e => /\\\\[(\\[]/.test(e.textContent)).length"
        )
        page.wait_for_timeout(1_000)  # web fonts load after typesetting
    assert typeset >= 20 and raw == 0  # every formula typeset, none left as TeX source
    assert rendered.requests == []  # nothing asked of any host but the local server
    assert [p for p in _QuietHandler.missing if not p.startswith(FONT_PROBES)] == []
    assert [e for e in rendered.errors if not any(m in e for m in PROBE_MESSAGES)] == []
