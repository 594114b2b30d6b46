"""The one Markdown table formatter (reports, the pipeline summary, benchmarks, experiment summaries)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table: ``header`` cells, then one line per row (cells converted with ``str``;
    ``None`` → "–"). A row with the wrong number of cells raises ``ValueError``."""
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = ["–" if c is None else str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row has {len(cells)} cells, header has {len(header)}: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
