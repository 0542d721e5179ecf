"""CSV tables of the analyses (one header row, comma-separated, ``\\n`` line ends, written atomically)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

from ..utils.io import write_text


def csv_text(header: Sequence, rows: Iterable[Sequence], lineterminator: str = "\n") -> str:
    """The table as text; a None cell is written empty. ``lineterminator`` "\\r\\n" gives the csv module's own
    default line ends (the protodiff comparison's tables, whose kept record has them)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=lineterminator)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, header: Sequence, rows: Iterable[Sequence], lineterminator: str = "\n") -> Path:
    write_text(path, csv_text(header, rows, lineterminator))
    return Path(path)
