"""The boxed text tables the benchmark scripts print: a header left-aligned, cells right-aligned."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]],
          cell: Callable[[object], str] = str) -> str:
    """``rows`` under ``header``, each value written by ``cell`` (the script's own number format)."""
    cells = [[str(c) for c in header], *[[cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [title, line, "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells[1:]]
    return "\n".join([*out, line])
