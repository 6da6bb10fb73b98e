"""The package's shape: the public names users rely on, and the limits that keep it readable (module
length, function length, no private name used across modules). The layer contracts themselves are
import-linter's (`make lint`)."""

import ast
from pathlib import Path

import pytest

import defense_interp as di

PACKAGE = Path(di.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

#: `di.__all__` at commit 22206c3: every name stays public.
PUBLIC = {
    'Ablation', 'Baseline', 'ChatBatch', 'Comparison', 'Condition', 'ConfigError', 'DataError', 'DefenseInterpError',
    'DifferenceSVD', 'DirectionSelection', 'EmbeddingAT', 'Estimate', 'EvalPair', 'Findings', 'GradientEdit',
    'GradientProbe', 'GradientStats', 'IP', 'InstructionSet', 'Judge', 'LAT', 'LayerSweep', 'ModelNotAvailableError',
    'NonFiniteError', 'PPS', 'PlaceboIP', 'PromptActivations', 'RandomPPS', 'RefusalData', 'RefusalDirections',
    'RefusalRate', 'RefusalStudy', 'RefusalStudyConfig', 'Run', 'RunError', 'SubstringJudge', 'TrainConfig', 'Trait',
    'TraitAxes', 'TransferMatrix', '__version__', 'ablate', 'ablate_direction', 'add_direction',
    'adversarial_perturbation', 'assess', 'axes_from_conversations', 'capture_gradients', 'collect_activations',
    'compare', 'contrast_score', 'copy_model', 'difference_svd', 'edit_gradients', 'encode_chat', 'encode_prompts',
    'extract_trait_axes', 'generate_answers', 'is_refusal', 'layer_sweep', 'load_chat_jsonl', 'load_hf_conversations',
    'load_instructions', 'load_model', 'load_trained', 'measure_expression', 'metrics', 'model_identity',
    'orthogonalize', 'pps_sweep', 'probe_gradients', 'projection_score', 'refusal_directions', 'refusal_rate',
    'run_refusal_study', 'select_direction', 'steer', 'tiny_model', 'train', 'transfer_matrix',
}  # fmt: skip


def test_every_public_name_is_still_there():
    assert PUBLIC <= set(di.__all__)
    assert [n for n in di.__all__ if not hasattr(di, n)] == []


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
