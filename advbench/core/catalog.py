"""What is registered, read from the source files without importing them (so without torch).

``advbench list defenses`` and the name checks of ``train`` and ``attack`` answer from here in a fraction of
a second; importing the defenses, attacks or models would load torch first (seconds, tens of seconds on a
busy machine). A registration is a call with a literal name as first argument, at the top level of a
discovered module (as a decorator or a plain call): ``DEFENSES.register("p-sat", help=...)``,
``ATTACKS.add("apgd-ce", cls, "help")``, ``register_dataset("mnist", ..., help=...)``. The help text is the
``help`` argument, else the first docstring line of what is registered, as :class:`~advbench.registry.Registry`
does. ``tests/test_catalog.py`` checks that this catalogue equals the imported registries exactly.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

#: registry kind -> (package, module names that are infrastructure, not entries)
PACKAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "defense": ("advbench.defenses", ()),
    "attack": ("advbench.attacks", ()),
    "model": ("advbench.models", ()),
    "dataset": ("advbench.data", ("core", "batching")),
}
_CALLS = {"register", "add", "register_dataset", "_component"}
#: help is the n-th positional argument of these calls (``help=`` wins everywhere)
_HELP_POSITION = {"register": 1, "add": 2, "_component": 1, "register_dataset": None}


@dataclass(frozen=True)
class Entry:
    """One registered name: its help line and hidden aliases."""

    name: str
    help: str
    aliases: tuple[str, ...] = field(default=())


def _literal(node: ast.AST | None) -> object:
    try:
        return ast.literal_eval(node) if node is not None else None
    except (ValueError, SyntaxError):
        return None


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _entry(call: ast.Call, owner: ast.AST | None, kind: str) -> Entry | None:
    """The entry a registration call makes, or None when the call is not a registration of this kind."""
    name = _call_name(call)
    if name not in _CALLS or not call.args or not isinstance(_literal(call.args[0]), str):
        return None
    if name == "add" and isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", "") == "SUITES":
        return None
    kw = {k.arg: k.value for k in call.keywords}
    position = _HELP_POSITION[name]
    help_node = kw.get("help") or (call.args[position] if position is not None and len(call.args) > position
                                   else None)
    text = _literal(help_node)
    if not isinstance(text, str) or not text:
        doc = ast.get_docstring(owner) if isinstance(owner, (ast.ClassDef, ast.FunctionDef)) else None
        text = (doc or "").strip().splitlines()[0] if doc else ""
    aliases = _literal(kw.get("aliases")) or ()
    return Entry(str(_literal(call.args[0])), text, tuple(aliases))


def _module_entries(path: Path, kind: str) -> list[Entry]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[Entry] = []
    for node in tree.body:
        calls: list[tuple[ast.Call, ast.AST | None]] = []
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            calls = [(d, node) for d in node.decorator_list if isinstance(d, ast.Call)]
        elif isinstance(node, (ast.Expr, ast.Assign)) and isinstance(node.value, ast.Call):
            calls = [(node.value, None)]
        for call, owner in calls:
            entry = _entry(call, owner, kind)
            if entry is not None:
                out.append(entry)
    return out


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # imports the parent package only, never this one
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(package)
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def entries(kind: str) -> tuple[Entry, ...]:
    """Every entry of registry ``kind`` (defense, attack, model, dataset) in registration order: the package's
    modules in sorted order (as their packages import them), each module's registrations in source order."""
    package, infrastructure = PACKAGES[kind]
    folder = _package_dir(package)
    first = ("base.py",) if (folder / "base.py").is_file() else ()  # the base module registers first on import
    files = [folder / f for f in first] + sorted(p for p in folder.glob("*.py")
                                                 if p.name not in first and not p.name.startswith("_")
                                                 and p.stem not in infrastructure)
    return tuple(e for path in files for e in _module_entries(path, kind))


def names(kind: str) -> list[str]:
    """Registered names of ``kind`` (aliases not included)."""
    return [e.name for e in entries(kind)]


def known(kind: str, name: str) -> bool:
    """Whether ``name`` is a registered name or alias of ``kind`` (lower case as listed; ``_`` for ``-``)."""
    if not isinstance(name, str) or name != name.strip() or name != name.lower():
        return False
    key = name.replace("_", "-")
    return any(key == e.name or key in e.aliases for e in entries(kind))
