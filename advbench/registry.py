"""One tiny generic registry used by datasets, models, defenses, attacks and suites."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from advbench.errors import UserError

T = TypeVar("T")


def closest(name: str, choices: list[str], n: int = 3) -> list[str]:
    """Return up to ``n`` names from ``choices`` that look like ``name`` (typo suggestions)."""
    key = name.lower().replace("_", "-")
    hits = difflib.get_close_matches(key, choices, n=n, cutoff=0.5)
    # also match when the dashes were dropped ("psat" -> "p-sat")
    squashed = {c.replace("-", ""): c for c in choices}
    if key.replace("-", "") in squashed and squashed[key.replace("-", "")] not in hits:
        hits.insert(0, squashed[key.replace("-", "")])
    return hits[:n]


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """One-line message for an unknown registry name, with the closest valid names."""
    if len(name) > 80:
        name = name[:80] + "..."
    hits = closest(name, choices) if name else []
    if hits:
        return f"unknown {kind} '{name}'; did you mean {' or '.join(repr(h) for h in hits)}?"
    return f"unknown {kind} '{name}'; choose one of: {', '.join(sorted(choices))}"


class Registry(Generic[T]):
    """A name -> object mapping with decorator registration and typo-tolerant lookup.

    ``kind`` is the word used in error messages ("defense", "attack", ...).
    Names are lower-case with dashes; lookups accept underscores too.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._aliases: dict[str, str] = {}
        self._on_miss: Callable[[str], None] | None = None

    def on_miss(self, loader: Callable[[str], None]) -> None:
        """Call ``loader(name)`` when a lookup misses, then look again once (lazily registered entries, such
        as the suites that paper recipes define)."""
        self._on_miss = loader

    def _key(self, name: str) -> str:
        if not isinstance(name, str) or not name or name != name.strip() or name != name.lower():
            # names are lower case as listed: 'SMALL-CNN' is not silently a second spelling of 'small-cnn'
            raise UserError(unknown_name_message(self.kind, str(name), list(self._items)))
        key = name.replace("_", "-")
        key = self._aliases.get(key, key)
        if key not in self._items and self._on_miss is not None:
            self._on_miss(key)
            key = self._aliases.get(key, key)
        if key not in self._items:
            raise UserError(unknown_name_message(self.kind, name, list(self._items)))
        return key

    def register(self, name: str, help: str = "", aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (and hidden ``aliases``); fails on duplicates."""

        def deco(obj: T) -> T:
            self.add(name, obj, help)
            for alias in aliases:
                self.alias(alias, name)
            return obj

        return deco

    def add(self, name: str, obj: T, help: str = "") -> None:
        """Register ``obj`` under ``name`` (a duplicate name is a programming error)."""
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        if isinstance(obj, type) and hasattr(obj, "name"):
            if obj.__dict__.get("name") not in (None, "", name):
                raise ValueError(f"{self.kind} class {obj.__qualname__} says name {obj.__dict__['name']!r} but is "
                                 f"registered as {name!r}: the registration names it")
            obj.name = name  # type: ignore[attr-defined]  # the one place a method's name is written
        self._items[name] = obj
        doc = help or (getattr(obj, "__doc__", None) or "").strip().splitlines()
        self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")

    def alias(self, alias: str, name: str) -> None:
        """Let ``alias`` (e.g. the spec's spelling ``psat``) resolve to ``name``; aliases are not listed."""
        if alias in self._items or alias in self._aliases:
            raise ValueError(f"{self.kind} alias '{alias}' registered twice")
        self._aliases[alias] = name

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases (UserError if unknown)."""
        return self._key(name)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; a UserError with suggestions if unknown."""
        return self._items[self._key(name)]

    def help(self, name: str) -> str:
        """One-line description of ``name``."""
        return self._help.get(name, "")

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower().replace("_", "-")
        return key in self._items or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
