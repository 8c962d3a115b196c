"""The layers hold: the command line (cli) composes the bot and the worker, which never import
each other, over the core (imagine), which imports none of them nor discord or the torch stack;
and no module imports itself back through others (no import cycle, imports inside functions and
imports under ``if TYPE_CHECKING:`` for annotations included: a module that needs the bot's
parts is handed them, or a small Protocol, instead of naming ``bot.app``).

The contracts live in pyproject.toml ([tool.importlinter]); `lint-imports` checks them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("imagine", "bot", "worker", "cli")


def test_the_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([sys.executable, str(lint_imports), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "3 kept" in done.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """One cycle of imports per strongly connected component of more than one module (Tarjan):
    the shortest through the component's first module; each module imports the next."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                components.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    cycles = []
    for component in components:
        first = min(component)
        back = [graph.find_shortest_chain(importer=imported, imported=first)
                for imported in sorted(graph.find_modules_directly_imported_by(first)) if imported in component]
        cycles.append([first, *min((chain for chain in back if chain), key=len)])
    return cycles


def test_there_is_no_import_cycle() -> None:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, exclude_type_checking_imports=False)
    assert len(graph.modules) > 50  # the whole tree was read
    cycles = import_cycles(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_a_cycle_is_found_and_printed() -> None:
    """The finder itself, on a graph with one cycle of three modules beside a plain chain."""
    graph = grimp.ImportGraph()
    for importer, imported in [("a.x", "a.y"), ("a.y", "a.z"), ("a.z", "a.x"), ("b.p", "b.q")]:
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph) == [["a.x", "a.y", "a.z", "a.x"]]
