"""The package's shape: the public names users rely on, and the limits that keep it readable (module
length, function length, no private name used across modules). The layer contracts themselves are
import-linter's (`make lint`)."""

import ast
import importlib
import re
from pathlib import Path

import pytest

import defense_interp as di

PACKAGE = Path(di.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

#: The names that left the top level in the renovation (issue 27), and where each lives now.
MOVED = {
    "AttentionKnockout": "defense_interp.training",
    "COHERENCE_PROMPT": "defense_interp.judges",
    "ChatBatch": "defense_interp.data",
    "Condition": "defense_interp.training",
    "WriteRoutes": "defense_interp.training.routes",
    "RefusalStudyConfig": "defense_interp.refusal",
    "contrast_score": "defense_interp.evaluate",
    "DifferenceSVD": "defense_interp.metrics",
    "DirectionSelection": "defense_interp.refusal",
    "Estimate": "defense_interp.metrics",
    "EvalPair": "defense_interp.data",
    "JudgedAnswers": "defense_interp.judges",
    "GradientProbe": "defense_interp.training",
    "GradientStats": "defense_interp.interventions",
    "InducedSteering": "defense_interp.training",
    "InstructionSet": "defense_interp.data",
    "JudgmentCache": "defense_interp.judges",
    "LayerSweep": "defense_interp.refusal",
    "MemoryEstimate": "defense_interp.memory",
    "ModelSpec": "defense_interp.models",
    "PromptActivations": "defense_interp.refusal",
    "PromptShift": "defense_interp.study",
    "REFUSAL_PROMPT": "defense_interp.judges",
    "RayExecutor": "defense_interp.execution",
    "RefusalDirections": "defense_interp.refusal",
    "RefusalRate": "defense_interp.refusal",
    "RefusalStudy": "defense_interp.refusal",
    "SubstringJudge": "defense_interp.refusal",
    "TransferMatrix": "defense_interp.refusal",
    "adversarial_perturbation": "defense_interp.interventions",
    "axes_from_conversations": "defense_interp.axes",
    "copy_model": "defense_interp.models",
    "encode_chat": "defense_interp.data",
    "encode_prompts": "defense_interp.data",
    "estimate_memory": "defense_interp.memory",
    "is_refusal": "defense_interp.refusal",
    "knockout_attention": "defense_interp.interventions",
    "load_hf_conversations": "defense_interp.data",
    "load_instructions": "defense_interp.data",
    "load_trained": "defense_interp.training",
    "model_identity": "defense_interp.models",
    "random_model": "defense_interp.random_models",
    "random_model_folder": "defense_interp.random_models",
    "set_thinking": "defense_interp.data",
    "verify_model": "defense_interp.verify",
}


def test_the_top_level_is_curated_and_every_name_resolves():
    assert len(di.__all__) <= 60, "the top level holds what the README and notebooks use"
    assert [n for n in di.__all__ if not hasattr(di, n)] == []
    assert set(MOVED).isdisjoint(di.__all__)


@pytest.mark.parametrize("name", sorted(MOVED))
def test_a_name_that_left_the_top_level_is_importable_from_its_subpackage(name):
    module = importlib.import_module(MOVED[name])
    assert name in module.__all__ and getattr(module, name) is not None


def test_every_public_name_is_in_the_api_reference():
    """Each name has its own `::: module.name` entry, or its module is documented with all its members."""
    docs = PACKAGE.parent / "docs"
    reference = "".join(p.read_text() for p in [*(docs / "api").glob("*.md"), docs / "errors.md"])
    documented = set(re.findall(r"^::: defense_interp\.[\w.]*?\.?(\w+)$", reference, flags=re.M))
    for module in re.findall(
        r"^::: (defense_interp[\w.]*)\n    options:(?:\n {6}.*)*\n {6}members: true", reference, re.M
    ):
        documented |= set(importlib.import_module(module).__all__)
    missing = sorted(n for n in [*di.__all__, *MOVED] if n not in documented and not n.startswith("__"))
    assert missing == []


def _statements(fn: ast.AST) -> int:
    """Statements in a function's own body (nested functions and classes count for themselves)."""
    count, stack = 0, list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        count += isinstance(node, ast.stmt)
        stack.extend(ast.iter_child_nodes(node))
    return count


def test_statement_counter_counts_own_statements_only():
    fn = ast.parse("def f(x):\n    a = 1\n    if x:\n        b = 2\n    def g():\n        c = 3\n    return a\n").body[
        0
    ]
    assert _statements(fn) == 4  # a =, if, b =, return (g's statement is g's own)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_short(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 400, "split the module by concept"
    long = [
        (n.name, _statements(n))
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and _statements(n) > 60
    ]
    assert long == [], "split these functions into their phases"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_is_imported_from_another_module(path):
    private = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("defense_interp"):
            private += [
                f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_") and a.name != "__version__"
            ]
            private += [node.module for part in node.module.split(".") if part.startswith("_")]
    assert private == []


def _import_cycles(package: str) -> list[list[str]]:
    """Every cycle of module imports inside `package`, lazy imports (inside functions) included: for
    each import `a → b`, the shortest chain back from `b` to `a` (grimp's graph, what import-linter reads)."""
    import grimp

    graph = grimp.build_graph(package, cache_dir=None)
    cycles = set()
    for a in graph.modules:
        for b in graph.find_modules_directly_imported_by(a):
            chain = graph.find_shortest_chain(importer=b, imported=a) if b.startswith(package) else None
            if chain:
                loop = [a, *chain]
                i = loop.index(min(loop[:-1]))  # one spelling per cycle: start at its smallest module
                cycles.add(tuple(loop[i:-1] + loop[:i] + [loop[i]]))
    return sorted(map(list, cycles))


def test_the_cycle_finder_sees_a_lazy_import(tmp_path, monkeypatch):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyc.a import x\n")
    (pkg / "c.py").write_text("from cyc import b\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _import_cycles("cyc") == [["cyc.a", "cyc.b", "cyc.a"]]


def test_no_import_cycle_between_modules():
    assert _import_cycles("defense_interp") == []


def test_the_tests_mirror_the_package_and_helpers_live_in_tests_support():
    """Every test folder is a subpackage of defense_interp (or a tier: acceptance, docs, the model
    matrix); every file in it is a test module, `conftest.py` or `__init__.py`; the helpers the
    tests share are in `tests/support/`."""
    tests = Path(__file__).parent
    tiers = {"acceptance", "docs", "models", "support", "snapshots", "__pycache__"}
    for folder in (p for p in tests.rglob("*") if p.is_dir() and not p.name.startswith((".", "__"))):
        rel = folder.relative_to(tests)
        if rel.parts[0] not in tiers:
            assert (PACKAGE / rel).is_dir(), f"tests/{rel} mirrors no subpackage of defense_interp"
    stray = [
        str(p.relative_to(tests))
        for p in tests.rglob("*.py")
        if p.parent.name != "support"
        and not p.name.startswith("test_")
        and p.name not in ("conftest.py", "__init__.py")
    ]
    assert stray == [], "helpers belong in tests/support/"
