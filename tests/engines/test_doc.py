"""docs/engines.md is generated from the engine definitions; it must match the code."""

from __future__ import annotations

from pathlib import Path

from nemo_ref.sampling.engines import doc, names

PAGE = Path(__file__).resolve().parents[2] / "docs" / "engines.md"


def test_committed_page_is_the_rendered_page():
    """Regenerate with `python -m nemo_ref.sampling.engines.doc > docs/engines.md`."""
    assert PAGE.read_text() == doc.render()


def test_every_engine_and_every_cell_has_a_source():
    page = doc.render()
    for name in names():
        assert f"`{name}`" in page
    choices = page.split("## The choices")[1].split("## What each engine")[0]
    rows = [
        line for line in choices.splitlines() if line.startswith("| ") and not line.startswith("| version")
    ]
    for line in rows[1:]:  # the header row has no sources
        cells = [c.strip() for c in line.strip("|").split(" | ")][1:]
        title = line.split("|")[1].strip()
        if title == "logit_bias ids >= V":
            continue  # "an error" is the emulation's own rule where the engine's source is silent
        assert all(c.endswith("]") for c in cells), line


def test_readme_links_the_page():
    readme = (PAGE.parents[1] / "README.md").read_text()
    assert "(docs/engines.md)" in readme
