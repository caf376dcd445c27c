"""Structure of the package: no import cycles, one home per stage, CLI choices from the code's registries."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cotsurvival

PACKAGE = Path(cotsurvival.__file__).parent


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: Maps whose string values name modules to import later ("pkg.module:attr", or ".module" relative
#: to the package): the lazy package roots and the stage list.
LAZY_MAPS = ("_LAZY", "STAGES")


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the cotsurvival modules it imports, in every form, from the AST (no import runs).

    Seen: ``import X`` and ``from X import name`` anywhere (module top or inside functions; an edge to
    ``X.name`` when that is a module); ``import_module("X")`` / ``import_module(".X", __name__)`` /
    ``__import__("X")``; values of the lazy maps (:data:`LAZY_MAPS`); and any string constant
    naming a cotsurvival module as ``"cotsurvival.X"`` or ``"cotsurvival.X:attr"`` (the views the
    package root registers for lower layers, :data:`cotsurvival.registry.VIEWS`).
    """
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package_name = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def absolute(target: str, level: int = 0) -> str:
            if level == 0 and target.startswith("."):
                level = len(target) - len(target.lstrip("."))
                target = target.lstrip(".")
            if not level:
                return target
            base = package_name.split(".")
            base = base[: len(base) - (level - 1)]
            return ".".join(base + ([target] if target else []))

        def module_of(text: str) -> str | None:
            candidate = absolute(text.split(":")[0])
            return candidate if candidate in modules else None

        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                origin = absolute(node.module or "", node.level)
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "import_module", "__import__"):
                argument = node.args[0] if node.args else None
                # a computed name is a lazy map's value or a registered view, both seen below
                if isinstance(argument, ast.Constant):
                    targets = [module_of(argument.value)]
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) in LAZY_MAPS for t in node.targets) \
                    and isinstance(node.value, ast.Dict):
                targets = [module_of(v.value) for v in node.value.values
                           if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.startswith("cotsurvival.") and " " not in node.value:
                targets = [module_of(node.value)]
            for target in targets:
                # a module's own packages are imported before it anyway (package data lookups name them)
                if target in modules and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


#: The layers, lowest first; a module may import only from its own layer or lower ones. A module
#: belongs to the layer of the longest entry naming it (a package entry covers its modules; "=X"
#: names the package's __init__ alone).
LAYERS = {
    "core": ["cotsurvival._version", "cotsurvival.errors", "cotsurvival.registry", "cotsurvival.rundir",
             "cotsurvival.outputs", "cotsurvival.results", "cotsurvival.labels", "cotsurvival.taxonomy.spec",
             "cotsurvival.progress", "cotsurvival.threads", "cotsurvival.assets", "cotsurvival.options",
             "cotsurvival.provenance", "cotsurvival.precision", "cotsurvival.quiet"],
    "inputs": ["cotsurvival.chains", "cotsurvival.models", "cotsurvival.encoding", "cotsurvival.generation.questions",
               "cotsurvival.generation.prompting", "cotsurvival.generation.verify"],
    "stages": ["cotsurvival.pruning", "cotsurvival.taxonomy", "cotsurvival.generation"],
    # statistics: analysis (attention features and their predictors included), recovery and its
    # chain-level summaries, resampling importance (a stage returning its on-policy statistics), the
    # alignment of runs for comparison
    "statistics": ["cotsurvival.analysis", "cotsurvival.recovery", "cotsurvival.resampling", "cotsurvival.comparison.align"],
    # presentation: figures, report, viewer, notebook views; the comparison and study pages with the
    # stage functions that write them; stages.py (attention, view, export in the stage shape)
    "presentation": ["cotsurvival.reports", "cotsurvival.comparison", "cotsurvival.stages"],
    "cli": ["cotsurvival.cli", "cotsurvival.demo", "cotsurvival.testing", "=cotsurvival"],
}
ORDER = list(LAYERS)


def layer_of(module: str) -> str:
    best = None
    for layer, entries in LAYERS.items():
        for entry in entries:
            exact = entry.startswith("=")
            entry = entry.lstrip("=")
            if module == entry or (not exact and module.startswith(entry + ".")):
                if best is None or len(entry) > best[1]:
                    best = (layer, len(entry))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


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
    assert "cotsurvival.pruning.run" in graph["cotsurvival"]  # the STAGES map


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
    from cotsurvival.pruning.registry import LLMLINGUA_FRAMINGS

    assert choices("prune", "llmlingua_framing") == list(LLMLINGUA_FRAMINGS)
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


def test_import_graph_sees_every_import_form(tmp_path):
    """A planted package with one edge of each form: the graph finds them all (the oracle is the plant)."""
    root = tmp_path / "cotsurvival"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "_LAZY = {'thing': '.lazy_target:thing'}\n",
        "a.py": "def f():\n    from .b import x\n",
        "b.py": "from importlib import import_module\nimport_module('cotsurvival.c')\n",
        "c.py": "__import__('cotsurvival.sub.d')\n",
        "sub/__init__.py": "", "sub/d.py": "VIEW = 'cotsurvival.e:render'\n", "e.py": "", "lazy_target.py": "",
    }
    for relative, text in files.items():
        (root / relative).write_text(text)
    graph = import_graph(root)
    assert graph["cotsurvival.a"] == {"cotsurvival.b"}  # inside a function, relative
    assert graph["cotsurvival.b"] == {"cotsurvival.c"}  # import_module string
    assert graph["cotsurvival.c"] == {"cotsurvival.sub.d"}  # __import__
    assert graph["cotsurvival.sub.d"] == {"cotsurvival.e"}  # a registered "module:function" string
    assert graph["cotsurvival"] == {"cotsurvival.lazy_target"}  # a lazy map's relative value


def test_imports_by_computed_name_read_only_names_the_graph_sees():
    """``import_module(variable)`` only resolves names the graph reads elsewhere: a lazy map's values
    (the module defines one of LAZY_MAPS) or :data:`cotsurvival.registry.VIEWS` entries (registered
    as string constants, which the graph reads)."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        maps = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name) and t.id in LAZY_MAPS}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "import_module", "__import__") and not isinstance(node.args[0], ast.Constant):
                assert maps or _module_name(path) == "cotsurvival.registry", f"{path.name}:{node.lineno}"


def test_every_module_has_a_layer_and_no_arrow_points_up():
    graph = import_graph()
    upward = sorted(f"{m} ({layer_of(m)}) -> {t} ({layer_of(t)})" for m, targets in graph.items() for t in targets
                    if ORDER.index(layer_of(t)) > ORDER.index(layer_of(m)))
    assert not upward, "\n".join(upward)


def test_layers_are_the_documented_ones():
    assert ORDER == ["core", "inputs", "stages", "statistics", "presentation", "cli"]
    assert layer_of("cotsurvival.rundir") == "core" and layer_of("cotsurvival.reports.notebook") == "presentation"
    assert layer_of("cotsurvival") == "cli" and layer_of("cotsurvival.comparison.align") == "statistics"


def test_run_views_are_registered_from_the_top():
    """RunDir's Jupyter views come from the presentation layer through registry.VIEWS, wired by the package root."""
    from cotsurvival.registry import VIEWS
    from cotsurvival.rundir import RunDir

    assert list(VIEWS.implementations()) == list(VIEWS)
    graph = import_graph()
    assert "cotsurvival.reports.notebook" in graph["cotsurvival"]
    assert not any(t.startswith("cotsurvival.reports") for t in graph["cotsurvival.rundir"])
    assert callable(RunDir._repr_html_)


def test_reading_and_comparing_runs_does_not_import_torch():
    """Comparing runs and building reports only read run directories: torch loads when a stage that runs a
    model (prune, recover) is first called, not on import."""
    import subprocess
    import sys

    code = "import sys, cotsurvival.comparison, cotsurvival.reports.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
