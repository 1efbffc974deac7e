"""No import cycles in core/: the graph of every import between core's modules (module level and inside
functions alike) has no cycle, so each idea depends only on what lies below it."""
import ast
import pathlib

from conftest import ROOT

CORE = ROOT / "core"


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _graph():
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [f"{target}.{a.name}" for a in node.names] + [target]
                for cand in candidates:
                    if cand in modules and cand != name:
                        graph[name].add(cand)
                        if cand != target:
                            continue
    return graph


def test_core_has_no_import_cycles():
    graph = _graph()
    # packages import their __init__ implicitly: a module's package __init__ is not an edge we follow
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):   # a module importing its own package's __init__
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])
