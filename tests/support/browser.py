"""Open a generated report in headless Chromium (Debian's `chromium`) with the network off.

`render(path)` loads the page, waits for plotly to draw, and returns how many plotly graphs the
page holds, how many of them are drawn (their SVG holds one drawn element per visible trace: a
`.trace` group, or an `<image>` for a heatmap), every script error or console error or warning it
logged, and every request beyond the page itself (aborted).
Run as a script to save a screenshot of a report's first screen (the one in the README):

    python tests/support/browser.py runs/study/report.html docs/img/report.png
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DRAWN = """() => [...document.querySelectorAll('div.plotly-graph-div')].filter(d => {
    const visible = (d._fullData || []).filter(t => t.visible === true).length;
    const drawn = d.querySelectorAll('svg.main-svg .trace').length + d.querySelectorAll('svg.main-svg image').length;
    return d._fullLayout && visible > 0 && drawn >= visible;
}).length"""


def chromium_path() -> str | None:
    """The system Chromium, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    graphs: int
    graphs_drawn: int
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for beyond itself


@contextmanager
def open_page(
    path: str | Path, *, width: int = 1280, height: int = 800, draw_timeout_ms: int = 15_000, allow: str | None = None
) -> Iterator[tuple[object, Rendered]]:
    """A Playwright page showing the report at `path` (a file, or an `http://127.0.0.1…` URL),
    offline: any request other than the page itself (or, with `allow`, a URL starting with it, e.g.
    a local server's other files) is recorded and aborted. Waits up to `draw_timeout_ms` for every
    graph to be drawn. Yields `(page, rendered)`; `rendered` is filled on entry."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    url = str(path) if str(path).startswith("http://127.0.0.1") else Path(path).resolve().as_uri()
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            # a page served from 127.0.0.1 needs the network stack on; the route below still aborts
            # (and records) every request outside the page and `allow`
            context = browser.new_context(
                offline=not url.startswith("http"), viewport={"width": width, "height": height}
            )
            page = context.new_page()

            def route(r):
                if r.request.url == url or (allow is not None and r.request.url.startswith(allow)):
                    r.continue_()
                else:
                    requests.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda msg: (
                    errors.append(f"console {msg.type}: {msg.text}") if msg.type in ("error", "warning") else None
                ),
            )
            page.goto(url, wait_until="load")
            graphs = page.locator("div.plotly-graph-div").count()
            try:  # plotly draws on load; wait until every graph is drawn (or give up and count)
                page.wait_for_function(f"() => ({DRAWN})() === {graphs}", timeout=draw_timeout_ms)
            except PlaywrightTimeout:
                pass
            page.wait_for_timeout(1_000)  # time for errors raised after drawing
            yield page, Rendered(graphs, page.evaluate(DRAWN), errors, requests)
        finally:
            browser.close()


def render(path: str | Path, **kw) -> Rendered:
    with open_page(path, **kw) as (_, rendered):
        return rendered


def main(argv: list[str]) -> None:
    report, out = argv
    with open_page(report) as (page, rendered):
        page.screenshot(path=out)
    print(f"{out}: {rendered.graphs_drawn}/{rendered.graphs} graphs drawn, {len(rendered.errors)} errors")


if __name__ == "__main__":
    main(sys.argv[1:])
