"""Structure of the package: no import cycles, one home per stage, CLI choices from the code's registries."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cotsurvival

PACKAGE = Path(cotsurvival.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the cotsurvival modules it imports anywhere (top level or inside functions), from the AST.

    ``from X import name`` counts as an edge to ``X.name`` when that is a module, else to ``X``.
    """
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None; iterative DFS with colours."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    for root in sorted(graph):
        if colour[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[child] == 1:
                return path[path.index(child):] + [child]
            elif colour[child] == 0:
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_cycle_finder_finds_a_planted_cycle():
    # The oracle for the finder itself: a hand-made graph with one known cycle, and one without.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) in (["a", "b", "c", "a"],)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_function_level_imports():
    graph = import_graph()
    assert "cotsurvival.labels" in graph["cotsurvival.taxonomy.runs"]  # top-level, relative
    assert "cotsurvival.reports.viewer" in graph["cotsurvival.stages"]  # inside a function


def test_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_stage_functions_are_exposed_and_named_alike():
    import inspect

    for name in cotsurvival.STAGES:
        function = getattr(cotsurvival, name)
        assert callable(function), name
        first = next(iter(inspect.signature(function).parameters))
        assert first in ("run", "chains", "source", "questions"), (name, first)
        assert "run_dir" not in inspect.signature(function).parameters, name
    assert "prune" in dir(cotsurvival)
    with pytest.raises(AttributeError):
        cotsurvival.no_such_stage  # noqa: B018


def test_cli_choices_come_from_the_registries():
    from cotsurvival.chains import ON_ERROR
    from cotsurvival.cli import cli
    from cotsurvival.pruning import BASELINES, OBJECTIVES, SCORING_METHODS
    from cotsurvival.pruning.methods import SCORERS
    from cotsurvival.pruning.registry import BACKENDS
    from cotsurvival.reports.style import FIGURE_WIDTHS, WIDTHS
    from cotsurvival.taxonomy.spec import LEVELS

    def choices(command, option):
        return list({p.name: p for p in cli.commands[command].params}[option].type.choices)

    assert choices("prune", "objective") == list(OBJECTIVES)
    assert choices("prune", "method") == list(SCORING_METHODS) == ["auto", *SCORERS]
    assert choices("prune", "on_error") == list(ON_ERROR)
    assert choices("prune", "backend") == choices("study", "backend") == list(BACKENDS)
    assert choices("analyze", "levels") == choices("tag-agree", "level") == list(LEVELS)
    assert choices("report", "width") == [*FIGURE_WIDTHS, "both"] and list(WIDTHS) == list(FIGURE_WIDTHS)
    options = {p.name: p for p in cli.commands["prune"].params}
    assert ",".join(BASELINES) in options["baselines"].help
    from cotsurvival.pruning.baselines import BASELINES as used_by_baselines
    from cotsurvival.pruning.scoring import OBJECTIVES as used_by_scoring

    assert used_by_baselines is BASELINES and used_by_scoring is OBJECTIVES


def test_every_registered_name_has_its_implementation():
    """Each registry maps every declared name to an implementation (what the old assert checked by hand)."""
    import cotsurvival.pruning.baselines  # noqa: F401 - registers the baselines
    import cotsurvival.pruning.methods  # noqa: F401 - registers scorers and objectives
    import cotsurvival.pruning.run  # noqa: F401 - registers the backends
    from cotsurvival.pruning.registry import BACKENDS, BASELINES, OBJECTIVES, SCORING_METHODS
    from cotsurvival.reports.style import FIGURE_WIDTHS

    for registry in (OBJECTIVES, SCORING_METHODS, BASELINES, BACKENDS, FIGURE_WIDTHS):
        assert list(registry.implementations()) == list(registry), registry


def test_registry_resolves_checks_and_refuses_undeclared_names():
    import numpy as np

    from cotsurvival.errors import CotSurvivalError
    from cotsurvival.pruning.registry import BASELINES, OBJECTIVES
    from cotsurvival.pruning.scoring import target_weights
    from cotsurvival.registry import Registry

    # objectives resolve to their target weights (hand-worked: answer scores only the answer tokens)
    assert target_weights(2, 1, "answer").tolist() == [0.0, 0.0, 1.0]
    assert target_weights(2, 1, "joint").tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(CotSurvivalError) as info:
        BASELINES.check("surprise")
    assert info.value.code == "E088" and "did you mean 'surprisal'" in info.value.message
    registry = Registry("--colour", {"red": "warm"})
    with pytest.raises(KeyError):
        registry.register("blue", 1)  # not declared: a typo in the code fails where it is made
    registry.register("red", np.float64(1))
    assert registry.resolve("red") == 1 and dict(registry) == {"red": "warm"}
    with pytest.raises(ValueError):
        OBJECTIVES.resolve("likelihood")


def test_baselines_come_from_the_registry():
    from cotsurvival.pruning.baselines import baseline_orders
    from cotsurvival.pruning.engine import ChainTrace

    import numpy as np

    trace = ChainTrace.__new__(ChainTrace)
    trace.step_positions, trace.static_logprobs = [], np.array([-3.0, -1.0, -2.0])
    trace.step_costs = [np.array([0.5, 0.1, 0.3])]
    orders = baseline_orders(trace, names=["surprisal", "loo"], seed=0, chain_index=0)
    assert orders["surprisal"].tolist() == [1, 2, 0] and orders["loo"].tolist() == [1, 2, 0]


def test_style_and_simulation_use_the_taxonomy_categories():
    from cotsurvival.analysis import simulate
    from cotsurvival.reports import style
    from cotsurvival.taxonomy.spec import CATEGORIES, CATEGORY_OF_LABEL, FINE_LABELS

    assert style.COARSE == CATEGORIES and style.FINE == FINE_LABELS
    assert simulate.CATEGORIES == CATEGORIES
    assert all(CATEGORY_OF_LABEL[label] == category for category, label in simulate._LABEL.items())


def test_every_cli_stage_command_calls_its_stage_function():
    """Each stage command's body names the stage function it calls (by reading cli.py's AST)."""
    source = (PACKAGE / "cli.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    bodies = {node.name: ast.get_source_segment(source, node) for node in tree.body if isinstance(node, ast.FunctionDef)}
    expected = {"prune": "run_prune(", "tag_command": "tag(", "analyze": "run_analysis(", "attention": "run_attention(",
                "report": "build_report(", "view": "run_view(", "export": "run_export(", "generate": "run_generate("}
    for command, call in expected.items():
        assert call in bodies[command], command
    # no stage logic left in the commands: none loads a model or writes a table itself
    for command in expected:
        assert "load_model" not in bodies[command] and "write_part" not in bodies[command], command


def test_imports_by_name_are_the_documented_ones():
    """Imports by name are invisible to the graph above: only the lazy package roots and RunDir's Jupyter hook use them."""
    users = {_module_name(p) for p in PACKAGE.rglob("*.py")
             if "import_module(" in p.read_text(encoding="utf-8") or "__import__(" in p.read_text(encoding="utf-8")}
    assert users == {"cotsurvival", "cotsurvival.pruning", "cotsurvival.reports", "cotsurvival.taxonomy", "cotsurvival.rundir"}
