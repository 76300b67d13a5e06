"""docs/reproducing.md's status table and recipe sections are the ones the code generates (the docs stay true)."""

from pathlib import Path

from advbench.papers.published import table_id
from advbench.papers.recipes import get_recipe
from advbench.papers.status import DOC_MARKERS, all_tables, doc_sections, replace_sections

DOC = Path(__file__).resolve().parents[1] / "docs" / "reproducing.md"


def test_generated_sections_are_current():
    text = DOC.read_text()
    assert replace_sections(text) == text, (
        "docs/reproducing.md is out of date: run python -m advbench.papers.status docs/reproducing.md")


def test_every_table_and_recipe_is_in_the_doc():
    sections = doc_sections()
    tables = all_tables()
    for paper, table, status, _ in tables:
        assert f"| {paper} | {table} | {status} |" in sections["status"]
        recipe = get_recipe(paper, table_id(table))
        if recipe is not None:  # each recipe's section names its command and every difference it documents
            assert f"advbench reproduce {paper} --table {table_id(table)} --scale paper" in sections["recipes"]
            assert all(d in sections["recipes"] for d in recipe.discrepancies)
    assert f"{len(tables)} tables:" in sections["status"]
    assert all(m in DOC.read_text() for pair in DOC_MARKERS.values() for m in pair)
