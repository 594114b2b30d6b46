"""The one Markdown table formatter."""

from __future__ import annotations

import pytest

from reta.utils.markdown import md_table


def test_md_table_lines_and_missing_cells():
    assert md_table(["a", "b"], [[1, None], ["x", 2.5]]).splitlines() == ["| a | b |", "|---|---|", "| 1 | – |",
                                                                          "| x | 2.5 |"]


def test_md_table_rejects_a_short_row():
    with pytest.raises(ValueError, match="row has 1 cells, header has 2"):
        md_table(["a", "b"], [[1]])
