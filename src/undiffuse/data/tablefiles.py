"""Table sources and files: ``table:breast-cancer|diabetes|wine`` (scikit-learn's bundled sets) and
``table:PATH.csv``, read into a :class:`~undiffuse.data.Dataset` of kind ``"table"``; the ``.csv``
writer of that kind.

Both go through one path: text cells → types (:func:`undiffuse.data.tables.column_types`, overridable
with ``data.categorical``) → a schema fitted on the training rows → tensors. The rows are split once
by a fixed permutation (seed 0): 80 % ``train``, 20 % ``test`` (held out, for validation and for
``undiffuse eval``). With ``data.target`` a categorical column, its codes are the class labels
(a class-conditional model, as TabDDPM); rows whose target is missing are dropped.

| spec | rows | columns | target |
|---|---|---|---|
| ``table:breast-cancer`` | 569 | 30 float | diagnosis (malignant / benign) |
| ``table:wine`` | 178 | 11 float + 2 int | cultivar (class_0/1/2) |
| ``table:diabetes`` | 442 | age, sex (category), 8 float | progression (int, regression) |
"""

from __future__ import annotations

import csv
from io import StringIO
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from undiffuse.data.errors import DataError
from undiffuse.data.tables import column_types, decode_rows, encode_rows, fit_schema, is_missing
from undiffuse.io import write_text

__all__ = ["BUILTIN_TABLES", "builtin_table", "read_csv", "read_table", "load_table", "write_csv", "csv_text", "table_rows", "split_rows"]

BUILTIN_TABLES = ("breast-cancer", "diabetes", "wine")
MIN_ROWS = 10
TEST_FRACTION = 0.2
MAX_BYTES = 512 * 2**20


def read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a CSV file with a header line; one-line DataErrors for a missing, empty,
    binary or ragged file and for duplicate or empty column names."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"table file {path} does not exist — give the path of a .csv file with a header line")
    if p.stat().st_size > MAX_BYTES:
        raise DataError(f"table file {path} is over {MAX_BYTES >> 20} MB — use a smaller sample of its rows")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"cannot read {path} as UTF-8 text ({type(e).__name__}) — save it as a UTF-8 CSV") from None
    try:
        lines = [r for r in csv.reader(StringIO(text)) if r and any(c.strip() for c in r)]
    except csv.Error as e:
        raise DataError(f"{path} is not a valid CSV ({e}) — check its quoting") from None
    if not lines:
        raise DataError(f"table file {path} is empty — it needs a header line and rows")
    header = [h.strip() for h in lines[0]]
    if any(not h for h in header) or len(set(header)) != len(header):
        raise DataError(f"{path}: column names must be non-empty and distinct — fix the header line")
    for k, r in enumerate(lines[1:], start=2):
        if len(r) != len(header):
            raise DataError(f"{path}: row {k} has {len(r)} fields, the header {len(header)} — fix that row")
    return header, lines[1:]


def builtin_table(name: str) -> tuple[list[str], list[list[str]], str, tuple[str, ...]]:
    """(header, text rows, target, forced categorical) of a scikit-learn bundled table."""
    from sklearn import datasets

    if name == "diabetes":
        b = datasets.load_diabetes(scaled=False)
        header, target, labels = [*map(str, b.feature_names), "progression"], "progression", None
        cats: tuple[str, ...] = ("sex",)
    else:
        b = datasets.load_breast_cancer() if name == "breast-cancer" else datasets.load_wine()
        target = "diagnosis" if name == "breast-cancer" else "cultivar"
        header, labels, cats = [*map(str, b.feature_names), target], [str(v) for v in b.target_names], ()
    rows = []
    for feats, y in zip(b.data, b.target):
        rows.append([_cell(v) for v in feats] + [labels[int(y)] if labels else _cell(y)])
    return header, rows, target, cats


def _cell(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):.10g}"


def read_table(arg: str, categorical: Sequence[str] = ()) -> tuple[list[str], list[list[str]], Optional[str], tuple]:
    """(header, rows, default target, categorical columns) of ``table:ARG``."""
    if arg in BUILTIN_TABLES:
        header, rows, target, cats = builtin_table(arg)
        return header, rows, target, tuple(cats) + tuple(categorical)
    if not arg.lower().endswith(".csv"):
        raise DataError(f"unknown table {arg!r} — use one of {', '.join(BUILTIN_TABLES)} or a path ending in .csv")
    header, rows = read_csv(arg)
    return header, rows, None, tuple(categorical)


def split_rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices: a fixed permutation (seed 0), the last 20 % held out."""
    perm = np.random.default_rng(0).permutation(n)
    n_test = max(1, int(round(n * TEST_FRACTION)))
    return np.sort(perm[: n - n_test]), np.sort(perm[n - n_test :])


def table_rows(arg: str, target: Optional[str] = None, categorical: Sequence[str] = ()) -> dict:
    """Everything about ``table:ARG`` as text: header, train/test rows and the fitted schema."""
    header, rows, default_target, cats = read_table(arg, categorical)
    target = target if target is not None else default_target
    if target is not None and target not in header:
        raise DataError(f"data.target = {target!r} is not a column of {arg} — use one of {', '.join(header)}")
    if target is not None:
        j = header.index(target)
        rows = [r for r in rows if not is_missing(r[j])]
    if len(rows) < MIN_ROWS:
        raise DataError(f"table {arg} has {len(rows)} usable rows — it needs at least {MIN_ROWS}")
    train_idx, test_idx = split_rows(len(rows))
    train, test = [rows[i] for i in train_idx], [rows[i] for i in test_idx]
    types = column_types(header, train, cats)
    schema = fit_schema(header, train, rows, types, target)
    return {"header": header, "train": train, "test": test, "schema": schema}


def load_table(arg: str, split: str, target: Optional[str] = None, categorical: Optional[Sequence[str]] = None):
    """The :class:`~undiffuse.data.Dataset` of ``table:ARG`` (x float32 [N, W], NaN for missing cells;
    y the target's class codes for a categorical target)."""
    from undiffuse.data import Dataset

    t = table_rows(arg, target, tuple(categorical or ()))
    schema, header = t["schema"], t["header"]
    rows = t[split]
    x = encode_rows(schema, header, rows)
    y, num_classes, class_names = None, None, None
    tgt = schema["target"]
    col = next(c for c in schema["columns"] if c["name"] == tgt) if tgt is not None else None
    if col is not None and col["type"] == "category":
        code = {lab: i for i, lab in enumerate(col["labels"])}
        y = torch.tensor([code[r[header.index(tgt)].strip()] for r in rows], dtype=torch.long)
        num_classes, class_names = len(col["labels"]), list(col["labels"])
    return Dataset(x, y, "table", f"table:{arg}", num_classes, class_names, extra={"table": schema})


def csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A header and text rows as CSV text (quoted where needed)."""
    buf = StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_csv(x: torch.Tensor, path: Path, info: Any, **_: Any) -> Path:
    """Rows [N, W] (model units) as a CSV with the training table's header, column order and types."""
    schema = info.extra["table"]
    return write_text(path, csv_text([c["name"] for c in schema["columns"]], decode_rows(schema, x)))
