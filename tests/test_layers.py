"""The layer rules of ARCHITECTURE.md, read from the source's import statements.

Every ``import`` and ``from ... import`` in ``skyward``'s modules counts: relative ones resolved,
those under ``if TYPE_CHECKING:`` and those inside functions too, since a rule broken
lazily is still broken. Only the statements are read (nothing is imported), so a parent
package's ``__init__`` that Python runs on the way to a submodule is not an edge.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "skyward_jupyter"
PACKAGE = SOURCE / "skyward"

UI_LIBRARIES = frozenset({"IPython", "ipywidgets", "anywidget"})
AGENT_LIBRARIES = frozenset({"cloudpickle"})
WORKER_LIBRARIES = frozenset({"IPython", "matplotlib_inline", "traitlets"})  # IPython's config
OPTIONAL_SAMPLER = frozenset({"pynvml"})  # NVIDIA's NVML, where the instance has a GPU
WORKER_ENTRIES = ("skyward.agent.worker", "skyward.agent.shell")


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` (at ``path:line``) imports ``target``."""

    source: str
    target: str
    path: Path
    line: int
    type_only: bool

    @property
    def top(self) -> str:
        return self.target.partition(".")[0]

    def __str__(self) -> str:
        where = self.path.relative_to(ROOT)
        kind = " (type-only)" if self.type_only else ""
        return f"{where}:{self.line} imports {self.target}{kind}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """The modules a ``from`` statement imports: ``base.name`` where that is a module."""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{anchor}.{node.module}" if node.module else anchor
    else:
        base = node.module or ""
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        for alias in node.names
    ]


def _imports_of(module: str, path: Path) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                targets = _resolve(module, path, node)
            found.extend(
                Import(module, target, path, node.lineno, type_only)
                for target in dict.fromkeys(targets)
            )
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


IMPORTS = [edge for module, path in MODULES.items() for edge in _imports_of(module, path)]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _from(package: str) -> list[Import]:
    return [edge for edge in IMPORTS if _within(edge.source, package)]


def _check(rule: str, offending: Sequence[object]) -> None:
    """Fail naming every offending import (file, line, target), one a line."""
    if offending:
        pytest.fail(f"{rule}:\n" + "\n".join(f"  {item}" for item in offending), pytrace=False)


def test_core_imports_neither_the_jupyter_layer_nor_ui_libraries() -> None:
    offending = [
        edge
        for edge in _from("skyward.core")
        if _within(edge.target, "skyward.jupyter") or edge.top in UI_LIBRARIES
    ]
    _check("the core imports the UI", offending)


def _worker_modules() -> set[str]:
    """The agent modules the worker process loads: its entries and what they import."""
    seen: set[str] = set()
    todo = list(WORKER_ENTRIES)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += [
            edge.target
            for edge in IMPORTS
            if edge.source == module and _within(edge.target, "skyward.agent")
        ]
    return seen


def _bundle() -> set[str]:
    """The modules the bootstrap ships to an instance (the agent and what it shares with
    the kernel: the protocol, the frames, the line engine, the records)."""
    from skyward.transport.bootstrap import AGENT_MODULES

    return {_module_name(PACKAGE / name) for name in AGENT_MODULES}


def test_agent_imports_only_what_an_instance_has() -> None:
    worker = _worker_modules()
    bundle = _bundle()

    def allowed(edge: Import) -> bool:
        libraries = AGENT_LIBRARIES | (WORKER_LIBRARIES if edge.source in worker else set())
        if edge.source == "skyward.agent.sampler":
            libraries |= OPTIONAL_SAMPLER
        if edge.source == "skyward" and _within(edge.target, "skyward.jupyter"):
            return True  # the %load_ext hooks, imported when a kernel calls them
        return edge.target in bundle or edge.top in sys.stdlib_module_names or edge.top in libraries

    agent = [m for m in MODULES if _within(m, "skyward.agent")]
    assert set(agent) <= bundle, f"agent modules the bootstrap does not ship: {set(agent) - bundle}"
    offending = [edge for edge in IMPORTS if edge.source in bundle and not allowed(edge)]
    _check(
        "the agent imports beyond the standard library, cloudpickle and the modules shipped "
        f"with it (worker modules: {', '.join(sorted(worker))})",
        offending,
    )


def test_jupyter_layer_reaches_neither_providers_nor_transport() -> None:
    offending = [
        edge
        for edge in _from("skyward.jupyter")
        if _within(edge.target, "skyward.providers") or _within(edge.target, "skyward.transport")
    ]
    _check("the jupyter layer reaches past the session", offending)


def _provider_of(module: str) -> str | None:
    """``skyward.providers.<name>`` when the module is in a provider's package."""
    parts = module.split(".")
    if len(parts) < 3 or parts[:2] != ["skyward", "providers"]:
        return None
    package = ".".join(parts[:3])
    return package if MODULES.get(package, Path()).name == "__init__.py" else None


def test_no_provider_imports_another() -> None:
    offending = [
        edge
        for edge in IMPORTS
        if (mine := _provider_of(edge.source))
        and (theirs := _provider_of(edge.target))
        and mine != theirs
    ]
    _check("a provider imports another provider", offending)


def _reachable(graph: dict[str, dict[str, Import]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    return seen


def _shortest_cycle(graph: dict[str, dict[str, Import]], start: str) -> list[Import]:
    """The fewest edges that lead from ``start`` back to it (breadth first)."""
    came: dict[str, Import] = {}
    frontier = [start]
    while start not in came:
        frontier = [
            came.setdefault(target, edge).target
            for module in frontier
            for target, edge in graph.get(module, {}).items()
            if target not in came
        ]
    path = [came[start]]
    while path[0].source != start:
        path.insert(0, came[path[0].source])
    return path


def _cycles(edges: list[Import]) -> list[tuple[set[str], list[Import]]]:
    """Each group of modules that import each other in a ring, with one shortest ring."""
    graph: dict[str, dict[str, Import]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    reach = {module: _reachable(graph, module) for module in graph}
    found, done = [], set()
    for module in sorted(graph):
        if module in reach[module] and module not in done:
            group = {other for other in reach[module] if module in reach.get(other, ())}
            done |= group
            found.append((group, _shortest_cycle(graph, module)))
    return found


def test_no_import_cycles() -> None:
    internal = [edge for edge in IMPORTS if edge.target in MODULES and edge.target != edge.source]
    report = [
        f"{' -> '.join([ring[0].source, *(edge.target for edge in ring)])}"
        f" (the ring's modules: {', '.join(sorted(group))})\n"
        + "\n".join(f"    {edge}" for edge in internal if {edge.source, edge.target} <= group)
        for group, ring in _cycles(internal)
    ]
    _check("import cycles among skyward's modules", report)
