"""How good, useful and private synthetic rows are — the table protocol of TabDDPM (Kotelnikov et al.
2023, Sec. 5) with the fidelity and privacy checks of the synthetic-data literature.

All metrics compare a set of rows S (model units [N, W], :mod:`undiffuse.data.tables`) with the real
training rows R and the real held-out rows H:

- ``wasserstein``: mean over numeric columns of W₁(S_j, R_j) / std(R_j) in data units;
  ``total_variation``: mean over categorical columns of ½·Σ_k |p_S(k) − p_R(k)|.
- ``correlation_diff``: mean |C_S − C_R| over the off-diagonal pairs of the Pearson matrices of the rows
  in model units (normal scores and one-hot columns).
- ML efficacy (TabDDPM's protocol): scikit-learn's HistGradientBoosting classifier (regressor) trained
  on S, scored on H — accuracy and macro F1 (R²); the row "real" is the same trained on R.
- privacy: the distance to the closest record (DCR) in R of each row of S, against the same for the
  rows of H (model units, L2): 5th percentiles, and the share of S closer to R than H's 5th percentile
  (≈ 5 % for rows as far from R as fresh real rows are).
- ``detection_auc``: 5-fold cross-validated ROC AUC of a HistGradientBoosting classifier telling real
  held-out rows H from as many rows of S (0.5: indistinguishable). H, not R: rows of S that copy rows of R
  would have twins across the folds, and push the AUC *below* 0.5.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from undiffuse.data.tables import categories, numeric_count, quantile_inverse
from undiffuse.diffusion.multinomial import blocks

__all__ = ["TableParts", "column_distances", "correlation_diff", "efficacy", "privacy", "detection_auc",
           "table_metrics"]  # fmt: skip


class TableParts:
    """The columns of rows x [N, W] (model units): ``numeric`` [N, d] normal scores, ``codes`` [N, C]
    category codes (−1: missing), ``values`` [N, d] numbers in data units, and the target's position."""

    def __init__(self, schema: dict, x: torch.Tensor) -> None:
        cols = {c["name"]: c for c in schema["columns"]}
        d = numeric_count(schema)
        x = x.detach().double().cpu()
        self.schema, self.d = schema, d
        self.numeric = x[:, :d].numpy()
        self.values = np.stack([quantile_inverse(torch.nan_to_num(x[:, j]), cols[n]["knots"], cols[n]["probs"]).numpy()
                                for j, n in enumerate(schema["order"][:d])], 1) if d else np.zeros((len(x), 0))  # fmt: skip
        self.values[np.isnan(self.numeric)] = np.nan
        self.sizes = list(categories(schema))
        codes = []
        for sl in blocks(self.sizes, d):
            block = x[:, sl]
            codes.append(torch.where(block.isnan().any(1), -1, torch.nan_to_num(block, nan=-1.0).argmax(1)).numpy())
        self.codes = np.stack(codes, 1) if codes else np.zeros((len(x), 0), dtype=np.int64)
        self.onehot = torch.nan_to_num(x[:, d:]).numpy()

    def features(self, drop_target: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(features [N, F] for gradient boosting, categorical mask [F]) without the target column."""
        keep = [n for n in self.schema["order"] if not (drop_target and n == self.schema["target"])]
        cols = {n: self.values[:, j] for j, n in enumerate(self.schema["order"][: self.d])}
        cols.update({n: self.codes[:, j].astype(float) for j, n in enumerate(self.schema["order"][self.d :])})
        cat = np.array([n in self.schema["order"][self.d :] for n in keep])
        feats = np.stack([cols[n] for n in keep], 1)
        feats[:, cat] = np.where(feats[:, cat] < 0, np.nan, feats[:, cat])
        return feats, cat

    def target(self) -> tuple[Optional[np.ndarray], bool]:
        """(target values, whether it is categorical); (None, False) without a target."""
        t = self.schema["target"]
        if t is None:
            return None, False
        order = self.schema["order"]
        if order.index(t) < self.d:
            return self.values[:, order.index(t)], False
        return self.codes[:, order.index(t) - self.d], True

    def dense(self) -> np.ndarray:
        """Rows for distances and detection: normal scores (missing → 0) and one-hot blocks."""
        return np.concatenate([np.nan_to_num(self.numeric), self.onehot], 1)


def _wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """W₁ between two empirical distributions on the line: ∫|F_a − F_b|."""
    a, b = np.sort(a[~np.isnan(a)]), np.sort(b[~np.isnan(b)])
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(a, grid[:-1], side="right") / len(a)
    fb = np.searchsorted(b, grid[:-1], side="right") / len(b)
    return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


def column_distances(s: TableParts, r: TableParts) -> dict:
    """Mean normalised W₁ over numeric columns and mean total variation over categorical ones."""
    w = [_wasserstein1(s.values[:, j], r.values[:, j]) / max(float(np.nanstd(r.values[:, j])), 1e-12) for j in range(s.d)]
    tv = []
    for j, k in enumerate(s.sizes):
        ps = np.bincount(s.codes[s.codes[:, j] >= 0, j], minlength=k) / max(1, (s.codes[:, j] >= 0).sum())
        pr = np.bincount(r.codes[r.codes[:, j] >= 0, j], minlength=k) / max(1, (r.codes[:, j] >= 0).sum())
        tv.append(0.5 * float(np.abs(ps - pr).sum()))
    return {"wasserstein": float(np.mean(w)) if w else None, "total_variation": float(np.mean(tv)) if tv else None}


def correlation_diff(s: TableParts, r: TableParts) -> float:
    """Mean absolute difference of the off-diagonal Pearson correlations (constant columns count as 0)."""
    def corr(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(np.corrcoef(x, rowvar=False))

    cs, cr = corr(s.dense()), corr(r.dense())
    off = ~np.eye(len(cs), dtype=bool)
    return float(np.abs(cs - cr)[off].mean())


def efficacy(train: TableParts, test: TableParts, seed: int = 0) -> Optional[dict]:
    """HistGradientBoosting trained on ``train`` rows, scored on the real held-out ``test`` rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, f1_score, r2_score

    y, classify = train.target()
    if y is None:
        return None
    x, cat = train.features()
    xt, _ = test.features()
    yt, _ = test.target()
    ok = ~np.isnan(y.astype(float)) & (y >= 0 if classify else True)
    if classify:
        if len(np.unique(y[ok])) < 2:
            return {"accuracy": float(np.mean(yt == y[ok][0])), "f1": 0.0}
        m = HistGradientBoostingClassifier(categorical_features=cat, random_state=seed).fit(x[ok], y[ok])
        p = m.predict(xt)
        return {"accuracy": float(accuracy_score(yt, p)), "f1": float(f1_score(yt, p, average="macro"))}
    m = HistGradientBoostingRegressor(categorical_features=cat, random_state=seed).fit(x[ok], y[ok])
    return {"r2": float(r2_score(yt, m.predict(xt)))}


def _dcr(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The distance of each row of ``a`` to its closest row of ``ref`` (L2)."""
    d = torch.cdist(torch.from_numpy(a).double(), torch.from_numpy(ref).double())
    return d.min(dim=1).values.numpy()


def privacy(s: TableParts, r: TableParts, h: TableParts) -> dict:
    """DCR of synthetic rows to the training rows beside that of held-out rows (module docstring)."""
    ds, dh = _dcr(s.dense(), r.dense()), _dcr(h.dense(), r.dense())
    p5 = float(np.percentile(dh, 5))
    return {"dcr_p5": float(np.percentile(ds, 5)), "dcr_holdout_p5": p5, "dcr_median": float(np.median(ds)),
            "dcr_holdout_median": float(np.median(dh)), "share_closer_than_holdout_p5": float(np.mean(ds < p5)),
            "exact_copies": int(np.sum(ds < 1e-9))}  # fmt: skip


def detection_auc(s: TableParts, r: TableParts, seed: int = 0) -> float:
    """Cross-validated AUC of a classifier telling the real rows ``r`` (held-out ones) from synthetic ones."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n = min(len(s.numeric), len(r.numeric))
    rng = np.random.default_rng(seed)
    a = r.dense()[rng.permutation(len(r.numeric))[:n]]
    b = s.dense()[rng.permutation(len(s.numeric))[:n]]
    x, y = np.concatenate([a, b]), np.r_[np.zeros(n), np.ones(n)]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    return float(cross_val_score(clf, x, y, cv=folds, scoring="roc_auc").mean())


def table_metrics(schema: dict, synth: torch.Tensor, train: torch.Tensor, test: torch.Tensor, seed: int = 0) -> dict:
    """Every metric of the module docstring for one set of synthetic rows."""
    s, r, h = TableParts(schema, synth), TableParts(schema, train), TableParts(schema, test)
    return {"n": len(synth), **column_distances(s, r), "correlation_diff": correlation_diff(s, r),
            "efficacy": efficacy(s, h, seed), **privacy(s, r, h), "detection_auc": detection_auc(s, h, seed)}  # fmt: skip
