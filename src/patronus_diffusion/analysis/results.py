"""The one convention every analysis result follows (issue 34).

An analysis returns a ``*Result`` object:

* ``repr(result)``: one line of at most :data:`REPR_LIMIT` characters, the headline numbers;
* ``result.summary()``: a few lines of text (what the command prints);
* ``result.write(out)``: its files written into the folder ``out``, each atomically, returned by role;
* ``result.to_pil()``: its main figure as a PIL image; ``result._repr_png_()``: that figure's PNG bytes, so a
  notebook shows the result by itself;
* ``result.to_json()``, where the result has a JSON file: the JSON-able numbers that file holds.

The engine's own :class:`~..edit.EditResult` (what ``Patronus.edit`` returns) follows it too: ``write(out)`` gives
``edits.png`` and ``edits.json``; the analyses of :mod:`.edits` wrap it for their richer files.
"""

from __future__ import annotations

from ..utils.text import REPR_LIMIT, one_line

__all__ = ["REPR_LIMIT", "ShowsFigure", "one_line"]


class ShowsFigure:
    """Mixin of the display half: ``_repr_png_`` is the PNG of ``to_pil()``, the result's main figure."""

    def to_pil(self):  # pragma: no cover - every result defines its own
        raise NotImplementedError

    def _repr_png_(self) -> bytes:
        from ..utils.images import png_bytes

        return png_bytes(self.to_pil())
