"""Which way imports go, beyond what import-linter checks (`lint-imports` in make test).

import-linter enforces the layers in pyproject.toml over every import, those inside
functions included, but it cannot see into celery_app.py (a single module outside the
root packages) and does not tell an import at module top from one inside a function.
These read the source itself: no cycle among the imports that run when a module loads,
and no import hidden in a function without a comment saying why.
"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Iterator

from apps import task_routes

ROOT = Path(__file__).resolve().parent.parent


def _sources() -> dict[str, Path]:
    """Every module of the product by dotted name (a package by its own name)."""
    paths = [*ROOT.glob("apps/**/*.py"), *ROOT.glob("workers/**/*.py"), *ROOT.glob("config/**/*.py"),
             ROOT / "celery_app.py", ROOT / "manage.py"]
    modules = {}
    for path in paths:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _sources()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module loads: not those in functions or under TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(child, ast.If) and _is_type_checking(child):
            yield from (i for n in child.orelse for i in _top_level_imports(ast.Module(body=[n], type_ignores=[])))
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        else:
            yield from _top_level_imports(child)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The product's modules that loading `node` runs: the one it names, and the packages
    above it (their __init__ runs first), except the importer's own packages."""
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:  # relative: from the importer's package
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            base = importlib.util.resolve_name("." * node.level + base, package)
        named = {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    found = set()
    own = set(_ancestors(module))
    for name in named:
        while name and name not in MODULES:  # `import a.b.x` where x is a name: a.b
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
            found.update(a for a in _ancestors(name) if a in MODULES and a not in own)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[module] = {m for node in _top_level_imports(tree) for m in _imported(module, node)} - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_cycle_among_the_imports_that_run_when_a_module_loads():
    graph = _graph()
    assert graph["config"] == {"celery_app"}  # the Celery app loads with Django's settings
    assert "workers.control" in graph["celery_app"]  # and registers the pool's remote-control commands
    assert _cycles(graph) == []


def test_the_cycle_check_sees_a_cycle_through_a_package():
    graph = {"config": {"celery_app"}, "celery_app": {"config.logging", "config"}, "config.logging": set()}
    assert _cycles(graph) == [["celery_app", "config"]]


def test_an_import_inside_a_function_says_why():
    unexplained = []
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                if "#" not in line and not above.startswith("#"):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
    assert unexplained == [], "move these to the module's top, or say on the line why not"


def test_every_task_is_declared_and_routed_under_its_listed_name_and_queue(settings):
    from celery_app import app

    app.loader.import_default_modules()
    for task in task_routes.TASKS:
        assert task.name in app.tasks
        assert task.queue in task_routes.QUEUES
        assert app.amqp.router.route({}, task.name)["queue"].name == task.queue, task.name
    ours = {name for name in app.tasks if not name.startswith("celery.")}
    assert ours == {task.name for task in task_routes.TASKS}
    beat = {entry["task"]: entry["options"]["queue"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert beat == {task.name: task.queue for task in (task_routes.SWEEP_JOBS, task_routes.PERIODIC_SYNC,
                                                        task_routes.DISPATCH_DUE_WEBHOOKS,
                                                        task_routes.FIRE_SCHEDULES)}
