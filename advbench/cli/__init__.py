"""The ``advbench`` command line (Typer): train, attack, certify, report, reproduce, list, show, quickstart.

One module per command group; each command imports the Python API it calls inside its function, so that
``advbench --help``, ``list`` and argument errors answer without loading torch. The commands register
themselves on :data:`advbench.cli.app.app` when imported here, in the order ``advbench --help`` lists them.
"""
# isort: skip_file

from __future__ import annotations

from advbench.cli import train  # noqa: F401
from advbench.cli import attack  # noqa: F401
from advbench.cli import certify  # noqa: F401
from advbench.cli import report  # noqa: F401
from advbench.cli import info  # noqa: F401
from advbench.cli.app import app, entry, main

__all__ = ["app", "entry", "main"]
