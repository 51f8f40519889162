"""The shape of the code holds: no import cycles, no long module without a reason, one vocabulary.

Read from the source with :mod:`ast`, never by importing it, so a broken module is still judged.
Each check lists every offender at once, so one run shows all there is to fix.

**Import cycles.** Every ``import`` and ``from … import`` of the product packages counts, at
module level and inside functions alike: an import deferred into a function hides a cycle from
the interpreter but not from the reader, who still cannot understand one module without the
other. Imports under ``if TYPE_CHECKING:`` do not count: they never run, and they exist so that a
type can be named without depending on the module at run time. ``from pkg import name`` is an
edge to ``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``, which defines or
re-exports the name). Importing ``pkg.sub`` also runs ``pkg/__init__.py``, but that implicit
step is no edge: a submodule that imports a sibling by its full name does not depend on what
its package's ``__init__`` holds, and the interpreter resolves it without partial modules. So
``pkg/__init__.py`` re-exporting ``pkg.sub`` is a cycle only if ``pkg.sub`` (or something it
imports) takes a name from ``pkg`` itself — which does depend on how far ``__init__`` has run.

**Long modules.** A product module over ``MAX_LINES`` lines says why in its top docstring, on a
line of its own starting ``Over 500 lines on purpose:`` followed by the reason.

**One vocabulary.** The layer chain is spelt out only in ``lifeline_wire.layers``, the
helpers named in ``DEFINED_ONCE`` are each defined by exactly one product module, and so is each
fact record (a class named ``…Facts``): the source that reads a fact builds the one record of it,
so no table has to bridge two copies, where a renamed field would silently become None.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    ROOT / "agent" / "lifeline_agent",
    ROOT / "collector" / "lifeline_collector",
    ROOT / "wire" / "lifeline_wire",
    ROOT / "lab" / "lifeline_lab",
)
MAX_LINES = 500
REASON_MARKER = "Over 500 lines on purpose:"
LAYER_CHAIN = ("power", "link", "router", "internet", "vpn", "agency", "dns", "cad")
LAYERS_HOME = "lifeline_wire.layers"
# One place each: the retry rule every retry loop uses, and the layer vocabulary's helpers.
DEFINED_ONCE = ("parse_retry_after", "decide", "Backoff", "RetryPolicy", "layer_of", "pct")


def _module_name(path: Path) -> str:
    for package in PACKAGES:
        if path.is_relative_to(package):
            parts = list(path.relative_to(package.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(parts)
    raise AssertionError(f"{path} is in no product package")


def product_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the four product packages."""
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted(package.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` that can run (``if TYPE_CHECKING:`` bodies skipped)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports_in(other)
        else:
            yield from _imports(child)


def _imports_in(node: ast.stmt) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _imports(node)


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest product module that ``name`` (a module, or a name inside one) lives in."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _base(module: str, path: Path, level: int, target: str | None) -> str:
    """The absolute module a ``from <dots><target> import`` statement in ``module`` names."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if level > 1:
        package = package[: -(level - 1)]
    return ".".join([*package, *([target] if target else [])])


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules ``module`` imports (whose code it depends on), itself excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for statement in _imports(tree):
        if isinstance(statement, ast.Import):
            names = [alias.name for alias in statement.names]
        else:
            base = (
                _base(module, path, statement.level, statement.module)
                if statement.level
                else statement.module or ""
            )
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in statement.names
            ]
        for name in names:
            owner = _owner(name, modules)
            if owner is not None and owner != module:
                found.add(owner)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path of modules) for every strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan, iterative: the graph may be deep
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, set(group)) for group in sorted(groups)]


def _closed_path(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest cycle through the group's first module, staying inside the group."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _definitions(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name


def _layer_chains(path: Path) -> Iterator[int]:
    """Line numbers of tuple or list literals that spell out the whole layer chain."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Tuple | ast.List):
            words = tuple(e.value for e in node.elts if isinstance(e, ast.Constant))
            if words == LAYER_CHAIN:
                yield node.lineno


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles between product modules (break each by moving the shared piece):\n" + (
        "\n".join(" -> ".join(cycle) for cycle in found)
    )


def test_no_long_module_without_a_reason() -> None:
    offenders = []
    for name, path in product_modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines <= MAX_LINES:
            continue
        reasons = [line for line in _docstring(path).splitlines() if line.strip().startswith(REASON_MARKER)]
        if not any(line.strip() != REASON_MARKER for line in reasons):
            offenders.append(f"{path.relative_to(ROOT)} ({name}): {lines} lines")
    assert not offenders, (
        f"modules over {MAX_LINES} lines without a '{REASON_MARKER} <why>' line in their top "
        "docstring (split them, or say why they are one piece):\n" + "\n".join(offenders)
    )


def test_the_layer_chain_is_spelt_out_once() -> None:
    modules = product_modules()
    places = [
        f"{path.relative_to(ROOT)}:{line}" for name, path in modules.items() for line in _layer_chains(path)
    ]
    home = modules[LAYERS_HOME].relative_to(ROOT)
    files = [place.rpartition(":")[0] for place in places]
    assert files == [str(home)], f"the layer chain must be written only in {home}; found at: " + (
        ", ".join(places) or "nowhere"
    )


@pytest.mark.parametrize("helper", DEFINED_ONCE)
def test_shared_helpers_are_defined_once(helper: str) -> None:
    places = [
        str(path.relative_to(ROOT))
        for path in product_modules().values()
        for name in _definitions(path)
        if name == helper
    ]
    assert len(places) == 1, f"{helper} must be defined by exactly one product module; found in: " + (
        ", ".join(places) or "none"
    )


def test_each_fact_record_is_defined_once() -> None:
    places: dict[str, list[str]] = {}
    for path in product_modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Facts"):
                places.setdefault(node.name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    twice = {name: where for name, where in sorted(places.items()) if len(where) > 1}
    assert not twice, "fact records defined more than once (keep the source's own record):\n" + (
        "\n".join(f"{name}: {', '.join(where)}" for name, where in twice.items())
    )


# The checks' own machinery, on small graphs and sources: a broken walker would pass everything.


def test_cycles_are_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_resolve_relative_submodule_and_deferred_forms(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    source = pkg / "sub" / "mod.py"
    source.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from .. import helper\n"
        "from pkg import NAME\n"
        "if TYPE_CHECKING:\n"
        "    from pkg import typed_only\n"
        "else:\n"
        "    import pkg.runtime_only\n"
        "def later() -> None:\n"
        "    from pkg.deep.inner import thing\n",
        encoding="utf-8",
    )
    modules = {
        name: pkg / "x.py"
        for name in (
            "pkg",
            "pkg.sub",
            "pkg.sub.mod",
            "pkg.sub.sibling",
            "pkg.helper",
            "pkg.typed_only",
            "pkg.runtime_only",
            "pkg.deep",
            "pkg.deep.inner",
        )
    }
    assert imported_modules("pkg.sub.mod", source, modules) == {
        "pkg.sub.sibling",
        "pkg.helper",
        "pkg",
        "pkg.runtime_only",
        "pkg.deep.inner",
    }
    init = pkg / "sub" / "__init__.py"
    init.write_text("from .mod import later\nfrom . import sibling\n", encoding="utf-8")
    assert imported_modules("pkg.sub", init, modules) == {"pkg.sub.mod", "pkg.sub.sibling"}
