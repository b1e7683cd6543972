"""The package's layering: no module imports, directly or through others, a module that imports it back
(function-local imports included)."""
import ast
from pathlib import Path

import hashiflex

ROOT = Path(hashiflex.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = ("hashiflex",) + f.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body (``from . import x`` names module x)."""
    mods = _modules()
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = {f"{target}.{a.name}" for a in node.names} & mods.keys()
                graph[m] |= subs or ({target} & mods.keys())
            elif isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names} & mods.keys()
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    out, state, stack = [], {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                out.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return out


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "hashiflex.ops.max_pool" in graph["hashiflex.ops"]  # the graph sees package-relative imports
    assert cycles(graph) == []


def test_the_layers_point_one_way():
    """The IR and the op definitions know nothing of the passes, the backend or the flow above them."""
    graph = import_graph()
    above = {"hashiflex.frontend", "hashiflex.hwmodel", "hashiflex.passes", "hashiflex.export", "hashiflex.hw",
             "hashiflex.flow", "hashiflex.cli", "hashiflex.sim", "hashiflex.report"}
    for m in ("hashiflex.ir", *[k for k in graph if k.startswith("hashiflex.ops")]):
        bad = {t for t in graph[m] if any(t == a or t.startswith(a + ".") for a in above)}
        assert not bad, f"{m} imports {sorted(bad)}"
