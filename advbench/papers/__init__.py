"""Paper tables: published numbers, typed recipes, and the plan of runs that reproduces a table.

Papers are discovered, like defenses: a paper is a module ``advbench/papers/<paper>.py`` (dashes written as
underscores) whose published tables ship as ``published/<paper>-table<N>.csv``; the other modules of this
package (recipes, plan, suites, published) are helpers and have no such CSV. Adding a table is one recipe
module (or one more recipe in it) plus its CSV, with no list to edit.

Discovery only lists files: it imports neither the recipe modules nor torch, so ``advbench --help`` can name
the papers and the report side can import :mod:`advbench.papers.published` cheaply. The attack suites paper
recipes define are installed by :mod:`advbench.papers.suites`, which the api imports.
"""

from __future__ import annotations

import functools
import pkgutil
import re
from importlib import resources

_TABLE_CSV = re.compile(r"(?P<paper>.+)-table\d+[a-z]?\.csv")


def paper_modules() -> dict[str, str]:
    """paper name -> recipe module name (``gradient-reg`` -> ``gradient_reg``), papers sorted by name."""
    return dict(_discover())


@functools.cache
def _discover() -> tuple[tuple[str, str], ...]:
    """The package's files, listed once per process (a ``reproduce`` asks for them once per run)."""
    published = {m["paper"] for entry in (resources.files(__name__) / "published").iterdir()
                 if (m := _TABLE_CSV.fullmatch(entry.name))}
    modules = {m.name.replace("_", "-"): m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return tuple((paper, modules[paper]) for paper in sorted(published & set(modules)))


def paper_names() -> tuple[str, ...]:
    """The discovered papers, sorted (``advbench reproduce PAPER``)."""
    return tuple(paper_modules())
