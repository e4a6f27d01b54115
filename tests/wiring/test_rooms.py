"""The rooms of docs/ARCHITECTURE.md, enforced: every import in boiler_ai/ (read with ast, lazy ones
included) goes down the table, and no two files import each other, even through others."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "boiler_ai"

# room -> rooms it may import (besides itself and third-party libraries). `strict` (the strict YAML field
# reader), `status_codes` (the operator's code and text for each reason), `errors` (the expected-failure
# types every command prints as one line), `addresses` (network addresses parsed and probed), the
# package's own `__init__` (the version) and `tagmap` (the unit's tag map: signal specs the core is built from
# and the plant reads and writes by) are ground floor like the messages.
GROUND = {"messages", "strict", "status_codes", "errors", "addresses", "tagmap", "__init__"}
ALLOWED = {
    "messages": set(),
    "errors": set(),
    "addresses": {"errors", "strict"},
    "strict": {"errors"},
    "status_codes": {"messages"},
    "tagmap": {"status_codes", "strict"},
    "__init__": set(),
    "plant": {"messages", "strict"},
    "sim": {"messages", "strict", "plant"},
    "control": {"messages", "strict"},
    "record": {"messages", "strict"},
}
WIRING = {"config", "daemon", "cli", "check", "preflight", "demo", "replay", "explain", "dashboard", "report",
          "evaluate", "evaluate_report", "promote", "lifecycle",
          "metrics", "host", "logs", "service", "__main__"}
# Known crossings, each a module -> module pair with the reason it stays for now.
EXCEPTIONS = {
    # The oracle (an offline tool in sim/) reads the unit's envelope to know what the AI may do.
    ("sim.oracle", "control.envelope"): "offline oracle reads the envelope",
}
STDLIB = sys.stdlib_module_names


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def room(module: str) -> str:
    head = module.split(".")[0]
    return "wiring" if head in WIRING else head


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported boiler_ai module, line) for every import in the file, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(), str(path))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from boiler_ai.sim import steam` imports the module boiler_ai.sim.steam
                sub = f"{node.module}.{alias.name}"
                as_path = PACKAGE.parent / sub.replace(".", "/")
                is_module = as_path.with_suffix(".py").exists() or (as_path / "__init__.py").exists()
                found.append((sub if is_module else node.module, node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write the absolute module")
    return [(name.removeprefix("boiler_ai."), line) for name, line in found
            if name == "boiler_ai" or name.startswith("boiler_ai.")]


def graph() -> dict[str, list[tuple[str, int]]]:
    return {module_name(p): [("__init__" if m == "boiler_ai" else m, line) for m, line in imports(p)]
            for p in sorted(PACKAGE.rglob("*.py"))}


def test_imports_only_go_down():
    wrong = []
    for module, targets in graph().items():
        mine = room(module)
        if mine == "wiring":
            continue
        for target, line in targets:
            theirs = room(target)
            if theirs in (mine, *GROUND, *ALLOWED[mine]) or (module, target) in EXCEPTIONS:
                continue
            wrong.append(f"{module} ({mine}) imports {target} ({theirs}) at line {line}")
    assert not wrong, "imports that go up or across:\n" + "\n".join(wrong)


def test_every_exception_is_still_needed():
    edges = {(m, t) for m, targets in graph().items() for t, _ in targets}
    assert not set(EXCEPTIONS) - edges, "remove the exceptions no longer taken"


def test_the_messages_room_needs_only_the_standard_library():
    for path in sorted((PACKAGE / "messages").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                top = name.split(".")[0]
                assert top in STDLIB or name.startswith("boiler_ai.messages"), f"{path.name} imports {name}"


def test_no_import_cycles():
    edges = {m: {t for t, _ in targets} for m, targets in graph().items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, path + [node])
        done.add(node)

    for module in sorted(edges):
        visit(module, [])


def test_the_core_reads_no_clock_and_knows_nothing_above_it():
    words = ("perf_counter", "monotonic", "time.time", "clock_ns", "datetime.now", "boiler_ai.record",
             "from ..record", "boiler_ai.daemon")
    hits = {p.name: [f"{n}: {line.strip()}" for n, line in enumerate(p.read_text().splitlines(), 1)
                     if any(w in line for w in words)]
            for p in sorted((PACKAGE / "control").glob("*.py"))}
    assert not {name: lines for name, lines in hits.items() if lines}
