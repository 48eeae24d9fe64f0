"""Tables as model tensors and back: column types, quantile normalisation and one-hot categories.

A table's *schema* (a JSON-ready dict, kept in ``DataInfo.extra["table"]`` of every checkpoint) says
for each column its name, its type — ``"int"``, ``"float"`` or ``"category"`` — and how it is coded.
One row becomes a vector of width W = (number of numeric columns) + Σ_j K_j, numeric columns first,
then one one-hot block per categorical column (K_j labels), each group in the file's column order.
This is the representation of TabDDPM (Kotelnikov et al. 2023): Gaussian diffusion on the numeric
coordinates and multinomial diffusion (Hoogeboom et al. 2021) on the one-hot blocks.

Numeric columns are quantile-normalised: a value v maps to z = Φ⁻¹(F(v)), with F the piecewise-linear
interpolation between *knots* — the sorted distinct training values (at most ``MAX_KNOTS`` of them;
beyond that, evenly spaced quantiles) placed at their mid-ranks p_k = (#below + #equal/2)/N. F is
strictly increasing, so ``inverse(forward(v)) = v`` exactly at every knot, and every z maps back into
the observed range. Integers are rounded back; floats keep the input's number of decimals.

A missing cell is NaN in the tensor: one coordinate of a numeric column, the whole block of a
categorical one (training masks it out of the loss; imputation fills it).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from undiffuse.data.errors import DataError

__all__ = ["MAX_KNOTS", "fit_schema", "encode_rows", "decode_rows", "quantile_forward", "quantile_inverse",
           "categories", "numeric_count", "is_missing", "column_types"]  # fmt: skip

MAX_KNOTS = 1000
_Z_MAX = 5.2  # Φ(±5.2) ≈ 1e-7: the normal scores of the extreme knots stay finite
MISSING = frozenset({"", "na", "nan", "null", "none", "?", "n/a"})


def is_missing(cell: str) -> bool:
    """Whether a CSV cell counts as missing (empty, NA, NaN, null, ?, …)."""
    return cell.strip().lower() in MISSING


def _number(cell: str) -> Optional[float]:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _decimals(cell: str) -> int:
    text = cell.strip().lower()
    if "e" in text:
        return 6
    return len(text.split(".", 1)[1]) if "." in text else 0


def column_types(header: Sequence[str], rows: Sequence[Sequence[str]], categorical: Sequence[str] = ()) -> dict:
    """name → "int" | "float" | "category": numeric if every present cell parses as a finite number
    (int if each is written without a fraction), else categorical; ``categorical`` forces the named ones."""
    unknown = sorted(set(categorical) - set(header))
    if unknown:
        raise DataError(f"data.categorical names {', '.join(unknown)}, not columns of the table — use some of {', '.join(header)}")
    out = {}
    for j, name in enumerate(header):
        cells = [r[j].strip() for r in rows if not is_missing(r[j])]
        if not cells:
            raise DataError(f"column {name!r} has no values at all — drop it from the file")
        nums = [_number(c) for c in cells]
        if name in categorical or any(v is None for v in nums):
            out[name] = "category"
        elif all(v.is_integer() and _decimals(c) == 0 for v, c in zip(nums, cells)):
            out[name] = "int"
        else:
            out[name] = "float"
    return out


def _knots(values: np.ndarray) -> tuple[list[float], list[float]]:
    """(knots, mid-rank probabilities) of the observed values of one column (float64)."""
    v = np.sort(values)
    uniq, counts = np.unique(v, return_counts=True)
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])
    p = (below + counts / 2) / len(v)
    if len(uniq) > MAX_KNOTS:
        keep = np.unique(np.linspace(0, len(uniq) - 1, MAX_KNOTS).round().astype(int))
        uniq, p = uniq[keep], p[keep]
    return uniq.tolist(), p.tolist()


def fit_schema(header: Sequence[str], train: Sequence[Sequence[str]], every: Sequence[Sequence[str]],
               types: dict, target: Optional[str] = None) -> dict:  # fmt: skip
    """The schema of a table: types, category labels (from ``every`` row, so a label seen only in held-out
    rows still has a code), quantile knots and decimals (from the ``train`` rows only)."""
    cols = []
    for j, name in enumerate(header):
        typ = types[name]
        col: dict[str, Any] = {"name": name, "type": typ}
        if typ == "category":
            col["labels"] = sorted({r[j].strip() for r in every if not is_missing(r[j])}, key=_label_key)
            seen = [r[j].strip() for r in train if not is_missing(r[j])]
            col["counts"] = [seen.count(lab) for lab in col["labels"]]  # training frequencies (class prior)
        else:
            obs = [r[j] for r in train if not is_missing(r[j])]
            if not obs:
                raise DataError(f"column {name!r} has no values in the training rows — add rows or drop it")
            col["knots"], col["probs"] = _knots(np.array([float(c) for c in obs], dtype=np.float64))
            col["decimals"] = 0 if typ == "int" else min(6, max(_decimals(c) for c in obs))
        cols.append(col)
    numeric = [c["name"] for c in cols if c["type"] != "category"]
    cats = [c["name"] for c in cols if c["type"] == "category"]
    return {"columns": cols, "order": numeric + cats, "target": target}


def _label_key(label: str) -> tuple:
    v = _number(label)
    return (0, v, label) if v is not None else (1, 0.0, label)


def _by_name(schema: dict) -> dict:
    return {c["name"]: c for c in schema["columns"]}


def numeric_count(schema: dict) -> int:
    """How many numeric columns (the first coordinates of a row vector)."""
    return sum(c["type"] != "category" for c in schema["columns"])


def categories(schema: dict) -> tuple[int, ...]:
    """K_j of the one-hot blocks, in vector order."""
    cols = _by_name(schema)
    return tuple(len(cols[n]["labels"]) for n in schema["order"] if cols[n]["type"] == "category")


def quantile_forward(values: torch.Tensor, knots: Sequence[float], probs: Sequence[float]) -> torch.Tensor:
    """z = Φ⁻¹(F(v)) (float64; NaN stays NaN); values beyond the knots take the extreme scores."""
    k = torch.tensor(knots, dtype=torch.float64)
    p = torch.tensor(probs, dtype=torch.float64)
    if len(k) == 1:
        return torch.where(values.isnan(), values, torch.zeros_like(values))
    pos = torch.searchsorted(k, values.clamp(k[0], k[-1]).contiguous()).clamp(1, len(k) - 1)
    lo, hi = k[pos - 1], k[pos]
    w = ((values.clamp(k[0], k[-1]) - lo) / (hi - lo)).clamp(0, 1)
    u = p[pos - 1] + w * (p[pos] - p[pos - 1])
    z = torch.special.ndtri(u).clamp(-_Z_MAX, _Z_MAX)
    return torch.where(values.isnan(), values, z)


def quantile_inverse(z: torch.Tensor, knots: Sequence[float], probs: Sequence[float]) -> torch.Tensor:
    """v = F⁻¹(Φ(z)) (float64), clamped to the knots' range."""
    k = torch.tensor(knots, dtype=torch.float64)
    p = torch.tensor(probs, dtype=torch.float64)
    if len(k) == 1:
        return torch.full_like(z, k[0])
    u = torch.special.ndtr(z.double()).clamp(p[0], p[-1]).contiguous()
    pos = torch.searchsorted(p, u).clamp(1, len(p) - 1)
    w = ((u - p[pos - 1]) / (p[pos] - p[pos - 1])).clamp(0, 1)
    return k[pos - 1] + w * (k[pos] - k[pos - 1])


def encode_rows(schema: dict, header: Sequence[str], rows: Sequence[Sequence[str]]) -> torch.Tensor:
    """Text rows (in ``header``'s column order) → float32 [N, W] (NaN for missing cells)."""
    cols, where = _by_name(schema), {name: j for j, name in enumerate(header)}
    missing = [n for n in schema["order"] if n not in where]
    if missing:
        raise DataError(f"the table lacks column(s) {', '.join(missing)} of the run — give the same header as the training data")
    parts = []
    for name in schema["order"]:
        col, j = cols[name], where[name]
        if col["type"] == "category":
            code = {lab: i for i, lab in enumerate(col["labels"])}
            block = torch.zeros(len(rows), len(col["labels"]), dtype=torch.float64)
            for i, r in enumerate(rows):
                cell = r[j].strip()
                if is_missing(cell):
                    block[i] = float("nan")
                elif cell not in code:
                    raise DataError(f"column {name!r} has the label {cell[:40]!r}, unknown to the run — use one of its labels")
                else:
                    block[i, code[cell]] = 1.0
            parts.append(block)
        else:
            vals = [float("nan") if is_missing(r[j]) else _number(r[j]) for r in rows]
            if any(v is None for v in vals):
                bad = next(r[j] for r, v in zip(rows, vals) if v is None)
                raise DataError(f"column {name!r} is numeric but holds {bad.strip()[:40]!r} — fix the cell or leave it empty")
            parts.append(quantile_forward(torch.tensor(vals, dtype=torch.float64), col["knots"], col["probs"])[:, None])
    return torch.cat(parts, dim=1).float()


def decode_rows(schema: dict, x: torch.Tensor) -> list[list[str]]:
    """float [N, W] → text rows in the file's column order: numbers through the inverse quantile map
    (rounded to the column's decimals), categories as the label of the largest coordinate of their block;
    NaN cells (a missing value) become empty."""
    cols, x = _by_name(schema), x.detach().double().cpu()
    out: dict[str, list[str]] = {}
    at = 0
    for name in schema["order"]:
        col = cols[name]
        if col["type"] == "category":
            block = x[:, at : at + len(col["labels"])]
            at += len(col["labels"])
            idx = torch.nan_to_num(block, nan=-1.0).argmax(dim=1).tolist()
            out[name] = ["" if bool(b.isnan().any()) else col["labels"][i] for b, i in zip(block, idx)]
        else:
            v = quantile_inverse(torch.nan_to_num(x[:, at]), col["knots"], col["probs"])
            nan = x[:, at].isnan().tolist()
            at += 1
            out[name] = ["" if m else _format(float(a), col) for a, m in zip(v, nan)]
    return [[out[c["name"]][i] for c in schema["columns"]] for i in range(len(x))]


def _format(v: float, col: dict) -> str:
    if col["type"] == "int":
        return str(int(round(v)))
    d = col["decimals"]
    return f"{v:.{d}f}" if d > 0 else f"{v:.1f}"
