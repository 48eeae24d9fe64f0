"""Stylised facts of return windows, a GARCH(1,1)-t and a block-bootstrap baseline, and the discriminative
score — the checks of synthetic financial series (Cont 2001; TimeGAN, Yoon et al. 2019, for the score).

For windows r [N, L] of one channel (data units):

- heavy tails: the excess kurtosis of each window (and of all returns pooled);
- no linear autocorrelation: the mean over lags 1–5 of the autocorrelation of r in each window;
- volatility clustering: the autocorrelation of |r| at lags 1–``max_lag`` (default 20 ≤ L/3), averaged
  over windows, and its mean over those lags per window;
- leverage: corr(r_t, |r_{t+1}|) per window (negative for equities).

A synthetic set "reproduces" a fact when its median per-window value lies within the 5–95 % range of the
real windows' values. The discriminative score is |accuracy − 0.5| of a gradient-boosted classifier telling
real held-out windows from as many synthetic ones (5-fold cross-validated; features: the sorted returns
and the sorted |r| products at lags 1–5, so that it sees tails and clustering, not positions). The predictive
score is TimeGAN's other check (train on synthetic, test on real): a regressor of each step from the ``lags``
steps before it, fitted on the synthetic windows and scored by its mean absolute error on the real held-out
windows — for the returns r and for their size |r| (next-day returns are close to unpredictable, their size is
not: volatility clustering). The same regressor fitted on real training windows is the reference.
"""

from __future__ import annotations

import numpy as np

__all__ = ["acf", "stylised_facts", "discriminative_score", "predictive_score", "garch_windows", "fit_garch",
           "bootstrap_windows", "compare_facts"]  # fmt: skip


def acf(x: np.ndarray, lags: int) -> np.ndarray:
    """Autocorrelation [N, lags] at lags 1..lags of each row of x [N, L] (each row's own mean and variance)."""
    x = x - x.mean(1, keepdims=True)
    var = (x * x).mean(1)
    out = [(x[:, k:] * x[:, :-k]).mean(1) / np.maximum(var, 1e-300) for k in range(1, lags + 1)]
    return np.stack(out, 1)


def stylised_facts(r: np.ndarray, max_lag: int = 20) -> dict:
    """Per-window facts of windows r [N, L] (see the module docstring), as arrays [N] and the pooled kurtosis."""
    lag = max(1, min(max_lag, r.shape[1] // 3))
    z = r - r.mean(1, keepdims=True)
    kurt = (z**4).mean(1) / np.maximum((z**2).mean(1) ** 2, 1e-300) - 3
    pooled = r.reshape(-1) - r.mean()
    abs_acf = acf(np.abs(r), lag)
    lev = [np.corrcoef(w[:-1], np.abs(w[1:]))[0, 1] if w.std() > 0 else 0.0 for w in r]
    return {"kurtosis": kurt, "acf_r": acf(r, 5).mean(1), "acf_abs": abs_acf.mean(1), "leverage": np.nan_to_num(lev),
            "acf_abs_by_lag": abs_acf.mean(0), "pooled_kurtosis": float((pooled**4).mean() / (pooled**2).mean() ** 2 - 3)}  # fmt: skip


def compare_facts(real: dict, synth: dict) -> dict:
    """For each per-window fact: the synthetic median, the real 5–95 % range, and whether it lies inside."""
    out = {}
    for k in ("kurtosis", "acf_r", "acf_abs", "leverage"):
        lo, hi = np.percentile(real[k], [5, 95])
        med = float(np.median(synth[k]))
        out[k] = {"synthetic_median": med, "real_median": float(np.median(real[k])), "real_p5": float(lo),
                  "real_p95": float(hi), "within": bool(lo <= med <= hi)}  # fmt: skip
    out["pooled_kurtosis"] = {"synthetic": synth["pooled_kurtosis"], "real": real["pooled_kurtosis"]}
    out["acf_abs_by_lag"] = {"synthetic": synth["acf_abs_by_lag"].tolist(), "real": real["acf_abs_by_lag"].tolist()}
    return out


def _features(r: np.ndarray) -> np.ndarray:
    """Each window's sorted values and its mean |r_t·r_{t−k}| at lags k = 1..5."""
    prods = [np.abs(r[:, k:] * r[:, :-k]).mean(1, keepdims=True) for k in range(1, 6)]
    return np.concatenate([np.sort(r, 1), *prods], 1)


def discriminative_score(real: np.ndarray, synth: np.ndarray, seed: int = 0) -> float:
    """|cross-validated accuracy − 0.5| of a classifier telling real windows from synthetic ones."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n = min(len(real), len(synth))
    rng = np.random.default_rng(seed)
    a, b = real[rng.permutation(len(real))[:n]], synth[rng.permutation(len(synth))[:n]]
    x, y = _features(np.concatenate([a, b])), np.r_[np.zeros(n), np.ones(n)]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    acc = cross_val_score(HistGradientBoostingClassifier(max_iter=100, random_state=seed), x, y, cv=folds).mean()
    return float(abs(acc - 0.5))


def _lagged(w: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """(the ``lags`` steps before t [M, lags], the step t [M]) for every t ≥ lags of every window w [N, L]."""
    x = np.lib.stride_tricks.sliding_window_view(w, lags + 1, axis=1)  # [N, L − lags, lags + 1]
    return x[..., :-1].reshape(-1, lags), x[..., -1].reshape(-1)


def predictive_score(real: np.ndarray, synth: np.ndarray, lags: int = 5, seed: int = 0) -> dict:
    """TimeGAN's predictive score (Yoon et al. 2019, Sec. 4): the MAE on real windows [N, L] of a next-step
    regressor (gradient boosting, absolute loss) fitted on synthetic windows [M, L]; ``"r"`` for the returns,
    ``"abs_r"`` for their size (see the module docstring). Lower is better. Windows of L ≤ ``lags`` steps use
    the L − 1 steps they have."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    lags = max(1, min(lags, real.shape[1] - 1, synth.shape[1] - 1))
    out = {}
    for key, f in (("r", lambda w: w), ("abs_r", np.abs)):
        x, y = _lagged(f(synth), lags)
        xt, yt = _lagged(f(real), lags)
        m = HistGradientBoostingRegressor(loss="absolute_error", max_iter=100, random_state=seed).fit(x, y)
        out[key] = float(np.abs(m.predict(xt) - yt).mean())
    return out


def fit_garch(returns: np.ndarray):
    """GARCH(1,1) with Student-t innovations (Bollerslev 1986/1987) fitted with ``arch`` to returns [T]
    (the arch result; no rescaling)."""
    from arch.univariate import GARCH, ConstantMean, StudentsT

    return ConstantMean(returns, volatility=GARCH(1, 0, 1), distribution=StudentsT(), rescale=False).fit(disp="off")


def garch_windows(train: np.ndarray, n: int, length: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """n windows of GARCH(1,1)-t (:func:`fit_garch`) fitted to the training returns [T]; each window starts
    from the fitted model's stationary state (500 burn-in steps)."""
    from arch.univariate import GARCH, ConstantMean, StudentsT

    res = fit_garch(train)
    sim = ConstantMean(None, volatility=GARCH(1, 0, 1), distribution=StudentsT(seed=np.random.default_rng(seed)))
    out = np.stack([sim.simulate(res.params.to_numpy(), length, burn=500)["data"].to_numpy() for _ in range(n)])
    return out, {k: float(v) for k, v in res.params.items()}


def bootstrap_windows(train: np.ndarray, n: int, length: int, block: int = 8, seed: int = 0) -> np.ndarray:
    """n windows glued from random blocks of ``block`` consecutive training returns (moving-block bootstrap)."""
    rng = np.random.default_rng(seed)
    k = -(-length // block)
    starts = rng.integers(0, len(train) - block + 1, size=(n, k))
    return np.stack([np.concatenate([train[s : s + block] for s in row])[:length] for row in starts])
