"""Markdown tables for report.md and its sections (one helper, so every table escapes cells alike)."""
from __future__ import annotations


def _esc(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table; '|' in a cell is escaped, a newline becomes a space."""
    lines = ["| " + " | ".join(_esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
