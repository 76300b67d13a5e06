"""``python -m advbench`` runs the CLI."""

from advbench.cli import entry

entry()
