"""The documentation builds with mkdocs --strict (broken links, missing pages or unresolvable API
references fail), the API reference is generated from the docstrings, and the concepts and errors
pages cover what they promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import defense_interp as di

ROOT = Path(__file__).parent.parent
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


def test_docs_build_strict_with_every_page(site):
    for page in (
        "index.html",
        "quickstart/index.html",
        "concepts/index.html",
        "errors/index.html",
        "how-to/own-model/index.html",
        "how-to/own-trait/index.html",
        "how-to/own-judge/index.html",
        "how-to/gpu/index.html",
        "how-to/read-report/index.html",
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
