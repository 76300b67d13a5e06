"""The package's import graph runs one way: every import points to the same package or a lower layer, and no
modules import each other in a circle. Function-local imports count (they are dependencies too);
``if TYPE_CHECKING:`` blocks do not. See docs/architecture.md for the layers and the rule of each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "advbench"

#: top to bottom; a module may import its own package and anything in a lower row, nothing else
LAYERS: list[tuple[str, ...]] = [
    ("advbench.__main__",),
    ("advbench.cli",),
    ("advbench.api",),
    ("advbench.engine", "advbench.report"),
    ("advbench.papers",),
    ("advbench.resolve",),
    ("advbench.defenses",),
    ("advbench.certify",),
    ("advbench.attacks",),
    ("advbench.config", "advbench.data", "advbench.models"),
    ("advbench.core",),
    ("advbench.registry", "advbench.threat", "advbench.runs"),
    ("advbench.errors",),
]
#: the package root is a lazy facade (``advbench.train`` etc. import the api on first use)
FACADE = "advbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The advbench modules ``name`` imports (resolved to modules where an imported name is a submodule)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("advbench"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("advbench"):
                continue
            for alias in node.names:
                if base == FACADE and alias.name == "__version__":
                    continue  # the version constant, not the facade's lazy API
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    out.discard(name)
    return out


def layer_of(name: str) -> int:
    best, depth = -1, -1
    for i, row in enumerate(LAYERS):
        for prefix in row:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    return best


def top_package(name: str) -> str:
    return ".".join(name.split(".")[:2])


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def upward_arrows(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for a, targets in g.items():
        if a == FACADE:
            continue
        for b in sorted(targets):
            if b == FACADE:
                bad.append(f"{a} -> {b} (import submodules, not the package root)")
                continue
            if top_package(a) == top_package(b):
                continue
            la, lb = layer_of(a), layer_of(b)
            if la < 0 or lb < 0:
                bad.append(f"{a} -> {b} (a module in no layer: add it to LAYERS and docs/architecture.md)")
            elif lb <= la:
                bad.append(f"{a} (layer {la}) -> {b} (layer {lb})")
    return bad


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_is_in_a_layer():
    missing = [m for m in all_modules() if m != FACADE and layer_of(m) < 0]
    assert not missing, missing


def test_no_arrow_points_up_or_sideways():
    bad = upward_arrows(graph())
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    found = circles(graph())
    assert not found, found


@pytest.mark.parametrize("case", ["up", "circle"])
def test_the_checks_catch_what_they_claim(case):
    """The checker itself, on a made-up graph: an arrow up and a two-module circle are both reported."""
    if case == "up":
        assert upward_arrows({"advbench.errors": {"advbench.api.train"}}) == [
            "advbench.errors (layer 12) -> advbench.api.train (layer 2)"]
    else:
        assert circles({"advbench.papers.a": {"advbench.papers.b"}, "advbench.papers.b": {"advbench.papers.a"}}) == [
            ["advbench.papers.a", "advbench.papers.b"]]
