"""The source catalogue (advbench.core.catalog) equals the imported registries, and the commands that answer
from it never load torch (which is what keeps `advbench list` and argument errors under a second)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from advbench.core import catalog


@pytest.mark.parametrize("kind", sorted(catalog.PACKAGES))
def test_catalog_equals_the_registry(kind):
    from advbench.attacks import ATTACKS
    from advbench.data import DATASETS
    from advbench.defenses import DEFENSES
    from advbench.models import MODELS

    reg = {"defense": DEFENSES, "attack": ATTACKS, "model": MODELS, "dataset": DATASETS}[kind]
    entries = catalog.entries(kind)
    assert sorted(e.name for e in entries) == sorted(reg.names())
    assert {e.name: e.help for e in entries} == {n: reg.help(n) for n in reg.names()}
    aliases = {a: e.name for e in entries for a in e.aliases}
    assert aliases == {a: n for a, n in reg._aliases.items()}  # noqa: SLF001 - the registry's own record
    for name in reg.names():
        assert catalog.known(kind, name) and catalog.known(kind, name.replace("-", "_"))
    assert not catalog.known(kind, "no-such-thing") and not catalog.known(kind, reg.names()[0].upper())


def test_catalog_reads_a_new_file(tmp_path, monkeypatch):
    """A registration in a new module (decorator with help, a plain add call, a docstring as help) is found."""
    pkg = tmp_path / "advbench_fake"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text('@DEFENSES.register("toy-a", help="the help", aliases=("toya",))\nclass A:\n'
                                '    pass\n\n\n@DEFENSES.register("toy-b")\nclass B:\n    """Doc line.\n\n    more"""\n'
                                '\n\nDEFENSES.add("toy-c", object(), "added")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(catalog.PACKAGES, "defense", ("advbench_fake", ()))
    catalog.entries.cache_clear()
    try:
        assert [(e.name, e.help, e.aliases) for e in catalog.entries("defense")] == [
            ("toy-a", "the help", ("toya",)), ("toy-b", "Doc line.", ()), ("toy-c", "added", ())]
    finally:
        catalog.entries.cache_clear()


@pytest.mark.parametrize("argv", [["list", "defenses"], ["list", "attacks"], ["list", "models"], ["list", "datasets"],
                                  ["--help"], ["--version"], ["train", "--defense", "psatt"],
                                  ["train", "--eps", "2"], ["train", "--model", "SMALL-CNN"],
                                  ["train", "--dataset", "cifar11"], ["train", "--epochz", "1"]])
def test_answers_without_loading_torch(argv):
    code = ("import sys; from advbench.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1].startswith("NO-TORCH"), (argv, proc.stdout[-300:], proc.stderr[-300:])
