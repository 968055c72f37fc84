"""``file,label`` CSV files: the labels of an N-MNIST folder (``labels.csv``, :mod:`inputs.datasets`) and
of many recordings streamed at once (``runtime.stream --file-labels``). One reader for both; each caller
adds its own rules (which files must exist, which labels are valid).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from core.errors import DataError
from core.fileio import read_text


def read_label_rows(
    path: str | Path, *, header: bool, key: Callable[[str], object] = str
) -> list[tuple[int, str, int]]:
    """``(line, file, label)`` of each row of a ``file,label`` CSV. ``header``: the first row must name
    the columns ``file`` and ``label`` (else it may, or may be a row). A file that is not text, a row
    without its two values, a label that is not an integer and a file listed twice (by ``key`` of its
    field: the later label would replace the earlier, or one sample count twice) are errors naming the
    line."""
    text = read_text(Path(path), "labels file", "CSV", DataError)
    rows = [(i, row) for i, row in enumerate(csv.reader(text.splitlines()), 1) if "".join(row).strip()]
    columns = (0, 1)
    if rows:
        names = [c.strip().lower() for c in rows[0][1]]
        if "file" in names and "label" in names:
            columns = (names.index("file"), names.index("label"))
            rows = rows[1:]
        elif header or names[-1:] == ["label"]:
            if header:
                raise DataError(f"labels file {path}: expected a header with columns file,label, got {rows[0][1]}")
            rows = rows[1:]
    out: list[tuple[int, str, int]] = []
    first: dict[object, int] = {}
    for line, row in rows:
        if len(row) <= max(columns) or (columns == (0, 1) and len(row) != 2):
            raise DataError(f"labels file {path}, line {line}: expected file,label, got {row}")
        file, value = row[columns[0]].strip(), row[columns[1]].strip()
        try:
            label = int(value)
        except ValueError:
            raise DataError(f"labels file {path}, line {line}: label {value!r} is not an integer") from None
        k = key(file)
        if k in first:
            raise DataError(f"labels file {path}, line {line}: {file} is listed again (first on line {first[k]})")
        first[k] = line
        out.append((line, file, label))
    return out
