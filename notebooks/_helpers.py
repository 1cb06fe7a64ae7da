"""What the notebooks share: imported by them as ``from _helpers import md_table`` (Jupyter starts a
notebook's kernel in the notebook's own folder, so this module is on its path)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from IPython.display import Markdown, display


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Display rows as a Markdown table (rendered by Jupyter and by GitHub's notebook viewer)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    display(Markdown("\n".join(lines)))
