"""Text shared by every result object: the one-line repr (:func:`one_line`)."""

from __future__ import annotations

REPR_LIMIT = 200
"""The longest repr a result may have (a notebook shows it on one line)."""


def one_line(text: str, limit: int = REPR_LIMIT) -> str:
    """``text`` on one line (every run of whitespace, newlines included, becomes one space) of at most ``limit``
    characters: a longer one is cut and ends in "...)"."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 4] + "...)"
