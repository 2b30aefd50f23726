"""The import graph of gecko_jax and data_gen has no cycles, counting imports inside functions too (a cycle hidden in
a function-local import is still a cycle). The layers themselves are import-linter's contracts in pyproject.toml
(``lint-imports``, run by scripts/test.sh); this test needs nothing but the standard library."""
from __future__ import annotations

import ast
import pathlib
import sys

from tests.conftest import REPO

PACKAGES = ("gecko_jax", "data_gen")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (REPO / pkg).rglob("*.py"):
            parts = f.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _targets(node: ast.AST, module: str, is_pkg: bool, modules) -> list[str]:
    """The modules an import statement loads (a name imported from a package is the package's ``__init__``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: resolve against this module's package
        base = module.split(".")
        base = base[:len(base) - node.level + (1 if is_pkg else 0)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: set() for m in modules}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []  # annotations only: never executed
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(node, mod, path.name == "__init__.py", modules):
                    while t and t not in modules and "." in t:
                        t = t.rsplit(".", 1)[0]
                    if t in modules and t != mod:
                        graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = counter[0]
                counter[0] += 1
                stack.append(w)
                on.add(w)
                work.append((w, iter(sorted(graph[w]))))
            elif w in on:
                low[v] = min(low[v], index[w])
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_data_gen_imports_nothing_of_gecko_jax_even_inside_functions():
    graph = import_graph()
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.split(".")[0] == "data_gen" for t in ts
                 if t.split(".")[0] == "gecko_jax")
    assert bad == []
    heavy = []
    for mod, path in _modules().items():
        if mod.split(".")[0] == "data_gen":
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    heavy += [f"{mod}: {n}" for n in names if n.split(".")[0] in ("jax", "flax", "torch", "optax")]
    assert heavy == []


if __name__ == "__main__":  # print the cycles, if any
    print(cycles(import_graph()))
    sys.exit(0)
