"""The notebooks in notebooks/: committed without outputs, using only the public API, and executed
end to end in their fast setting (FAST = True: the tiny random model) in a real Jupyter kernel."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import defense_interp as di

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
ALLOWED_IMPORTS = {"defense_interp", "torch", "dataclasses", "json", "math", "pathlib"}
PUBLIC = set(di.__all__) | {"metrics"}

nbformat = pytest.importorskip("nbformat")


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_three_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_pps_vs_ip_gradients", "03_refusal_svd"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_uses_the_public_api(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} is committed with outputs"
    code = _code(path)
    assert sum("FAST = True\n" in src for src in code) == 1, "one parameter cell with FAST = True"
    for src in code:
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for name in names:
                    assert name.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {name}"
                    assert name in ("defense_interp",) or not name.startswith("defense_interp.")
                if isinstance(node, ast.ImportFrom) and node.module == "defense_interp":
                    assert {a.name for a in node.names} <= PUBLIC | {"viz"}
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "di":
                assert node.attr in PUBLIC, f"{path.name} uses di.{node.attr}, which is not public"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_end_to_end_in_its_fast_setting(path, tmp_path):
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name=NATIVE_KERNEL_NAME, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    figures = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]
    assert figures, "the notebook shows its figures"
