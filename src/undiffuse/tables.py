"""Sampling and imputing rows of a trained table model (TabDDPM, Kotelnikov et al. 2023), through the
one sampling path (:func:`undiffuse.sampling.sample` → the driver → the ``multinomial`` sampler).

- :func:`sample_rows`: synthetic rows. A model conditioned on a categorical target draws sample i's
  class y_i from the training class frequencies with its own generator, keyed to (seed, i) — as TabDDPM
  samples y first — then conditions on it twice: the label embedding, and the target block held at y
  (replacement), so the written target is y.
- :func:`impute`: fill the missing cells of given rows, conditioning on the observed ones by RePaint's
  replacement (Lugmayr et al. 2022) inside :func:`undiffuse.samplers.mixed.sample_multinomial`; the
  observed cells come back exactly as given.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from undiffuse.data.tables import categories, decode_rows, encode_rows, is_missing, numeric_count
from undiffuse.diffusion.multinomial import blocks
from undiffuse.errors import UserError
from undiffuse.model import Model
from undiffuse.rng import derive_seed, generator
from undiffuse.sampling import sample

__all__ = ["TABLE_STEPS", "schema_of", "class_draws", "target_block", "sample_rows", "impute", "impute_rows"]

#: Default sampler steps for tables (a trailing subset of T = 1000; see docs/tables.md for the measurement).
TABLE_STEPS = 100


def schema_of(model: Model) -> dict:
    """The table schema of a table model (UserError for another kind of run)."""
    if model.data.kind != "table":
        raise UserError(f"{model.data.name} is {model.data.kind} data, not a table — use a run trained on table: data")
    return model.data.extra["table"]


def target_block(schema: dict) -> Optional[slice]:
    """The columns of the categorical target's one-hot block in a row vector (None: no such target)."""
    d = numeric_count(schema)
    names = schema["order"][d:]
    return blocks(categories(schema), d)[names.index(schema["target"])] if schema["target"] in names else None


def class_draws(schema: dict, indices: Sequence[int], seed: int) -> torch.Tensor:
    """Class codes [n] of the target drawn from its training frequencies, sample i from (seed, "class", i)."""
    counts = torch.tensor(next(c for c in schema["columns"] if c["name"] == schema["target"])["counts"], dtype=torch.float64)
    cdf = counts.cumsum(0) / counts.sum()
    u = torch.stack([torch.rand((), generator=generator(derive_seed(seed, "class", i)), dtype=torch.float64)
                     for i in indices])  # fmt: skip
    return (cdf[None] < u[:, None]).sum(1).clamp(max=len(counts) - 1)


def _label_cond(model: Model, schema: dict, labels: torch.Tensor, width: int, known=None, x_known=None) -> dict:
    """Condition on class codes ``labels`` [n]: the label embedding, and the target block held at y."""
    n, sl = len(labels), target_block(schema)
    known = torch.zeros(n, width, dtype=torch.bool) if known is None else known.clone()
    x_known = torch.zeros(n, width) if x_known is None else x_known.clone()
    real = labels < sl.stop - sl.start  # the null label (K) leaves the target free
    known[:, sl] |= real[:, None]
    x_known[:, sl] = torch.where(real[:, None], torch.nn.functional.one_hot(labels.clamp(max=sl.stop - sl.start - 1),
                                 sl.stop - sl.start).float(), x_known[:, sl])  # fmt: skip
    cond = {"known": known, "x_known": x_known}
    if model.config.model.class_cond:
        cond["class_labels"] = labels.long()
    return {k: v.to(model.device) for k, v in cond.items()}


def sample_rows(model: Model, n: int, seed: int = 0, steps: int = TABLE_STEPS, class_label: Optional[int] = None,
                batch_size: int = 1024, indices: Optional[Sequence[int]] = None, **kw) -> torch.Tensor:  # fmt: skip
    """Rows [n, W] in model units (write them with :func:`undiffuse.data.kinds.save_samples`)."""
    schema = schema_of(model)
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    cond, sl = None, target_block(schema)
    if sl is not None:
        K = model.data.num_classes or (sl.stop - sl.start)
        if class_label is not None and not 0 <= class_label < K:
            raise UserError(f"class {class_label} is out of range — the target has classes 0..{K - 1} ({', '.join(model.data.class_names or ())})")
        labels = class_draws(schema, idx, seed) if class_label is None else torch.full((len(idx),), int(class_label))
        cond = _label_cond(model, schema, labels, model.data.shape[0])
    elif class_label is not None:
        raise UserError("this table has no categorical target to condition on — drop --class (or train with --set data.target=COL)")
    return sample(model, len(idx), seed, sampler="multinomial", steps=steps, batch_size=batch_size, cond=cond,
                  indices=idx, categories=categories(schema), **kw)  # fmt: skip


def impute(model: Model, x: torch.Tensor, seed: int = 0, steps: int = TABLE_STEPS, batch_size: int = 1024) -> torch.Tensor:
    """Rows x [n, W] with NaN for missing cells → completed rows: observed cells fixed (replacement),
    a known categorical target also through the label embedding."""
    schema = schema_of(model)
    known = ~x.isnan()
    x_known = torch.nan_to_num(x)
    sl = target_block(schema)
    if sl is not None:
        K = sl.stop - sl.start
        labels = torch.where(known[:, sl.start], x_known[:, sl].argmax(1), torch.full((len(x),), K))
        cond = _label_cond(model, schema, labels, x.shape[1], known, x_known)
    else:
        cond = {"known": known.to(model.device), "x_known": x_known.to(model.device)}
    return sample(model, len(x), seed, sampler="multinomial", steps=steps, batch_size=batch_size, cond=cond,
                  categories=categories(schema))  # fmt: skip


def impute_rows(model: Model, header: Sequence[str], rows: Sequence[Sequence[str]], seed: int = 0,
                steps: int = TABLE_STEPS) -> list[list[str]]:  # fmt: skip
    """Text rows with empty/NA cells → the same rows with those cells filled; every given cell is kept
    verbatim. ``header`` must hold the run's columns (any order, extra columns kept as they are)."""
    schema = schema_of(model)
    filled = decode_rows(schema, impute(model, encode_rows(schema, header, rows), seed, steps))
    names = [c["name"] for c in schema["columns"]]
    out = []
    for r, f in zip(rows, filled):
        by = dict(zip(names, f))
        out.append([by[h] if h in by and is_missing(c) else c for h, c in zip(header, r)])
    return out
