"""Fréchet distance between Gaussians fitted to features, and the kernel inception distance.

The Fréchet (2-Wasserstein) distance between N(μ1, S1) and N(μ2, S2) is

    d² = ‖μ1 − μ2‖² + tr(S1 + S2 − 2·(S1^½ S2 S1^½)^½),

Implements Eq. 6 of Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium" (FID), which writes the last term as tr(S1 + S2 − 2·(S1 S2)^½). The two forms
agree: S1 S2 and Rᵀ S2 R (for S1 = R Rᵀ, e.g. R = S1^½ or the Cholesky factor) share their eigenvalues,
and the trace of a principal square root is the sum of the square roots of the eigenvalues. The symmetric
form is computed here by a Cholesky factorisation (or a symmetric eigen decomposition when S1 is
singular) and a symmetric eigenvalue solve: no spurious imaginary parts, unlike scipy.linalg.sqrtm(S1 @ S2)
on near-singular covariances (the reference tools, pytorch-fid and clean-fid, then add ε·I to both
covariances and drop small imaginary parts; ``method="sqrtm"`` reproduces that path exactly), and about
an order of magnitude fewer flops than the Schur-based sqrtm.

The kernel inception distance (KID) is the unbiased estimate of the squared maximum mean discrepancy with
the cubic polynomial kernel k(x, y) = (xᵀy/d + 1)³, averaged over random subsets. Implements Eq. 4 and
Sec. 3 ("KID") of Bińkowski et al. 2018, "Demystifying MMD GANs".

All statistics are float64 numpy arrays, as in the reference implementations.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(x: ArrayLike) -> np.ndarray:
    """A float64 numpy copy of a tensor or array (CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def feature_stats(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (divisor N − 1) of features [N, D], as float64 arrays [D], [D, D]."""
    f = _as_float64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape [N >= 2, D], got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^½) = Σ √λ_i(Rᵀ S2 R) for any factor S1 = R Rᵀ: the matrix is symmetric PSD, so real.

    R is the Cholesky factor when S1 is positive definite (fast: one factorisation and one eigvalsh;
    D = 2048 takes ~2 s on two cores), else the symmetric square root S1^½ from a full eigh (rank-deficient
    S1, e.g. fewer samples than feature dimensions).
    """
    try:
        r1 = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:
        r1 = _psd_sqrt(s1)
    m = r1.T @ s2 @ r1  # [D, D], symmetric PSD
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def _trace_sqrt_product_sqrtm(s1: np.ndarray, s2: np.ndarray, eps: float) -> float:
    """tr((S1 S2)^½) by scipy.linalg.sqrtm, with the ε·I fallback of pytorch-fid (fid_score.py)."""
    import scipy.linalg  # optional dependency: only this method needs it

    with warnings.catch_warnings():  # a singular product warns; the ε·I retry below handles it
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm(S1 S2)")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    mu1: ArrayLike,
    sigma1: ArrayLike,
    mu2: ArrayLike,
    sigma2: ArrayLike,
    *,
    eps: float = 1e-6,
    method: Literal["eigh", "sqrtm"] = "eigh",
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Implements Eq. 6 of Heusel et al. 2017 (see the module docstring).

    Args:
        mu1, mu2: means [D].
        sigma1, sigma2: covariances [D, D] (symmetric positive semi-definite).
        eps: diagonal offset added to both covariances if the result is not finite (as pytorch-fid does
            when S1 S2 is singular).
        method: "eigh" (symmetric eigenvalues of Rᵀ S2 R, default, stable) or "sqrtm" (scipy's sqrtm of
            S1 S2, the reference tools' exact path; needs scipy).
    Returns:
        d², a non-negative float (tiny negative round-off is clipped to 0).
    """
    m1, m2 = _as_float64(mu1).reshape(-1), _as_float64(mu2).reshape(-1)
    s1, s2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.size, m1.size):
        raise ValueError(f"shape mismatch: mu {m1.shape}, {m2.shape}; sigma {s1.shape}, {s2.shape}")
    diff = m1 - m2
    if method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(s1, s2, eps)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(s1, s2)
        if not math.isfinite(tr_covmean):
            offset = np.eye(s1.shape[0]) * eps
            tr_covmean = _trace_sqrt_product_eigh(s1 + offset, s2 + offset)
    else:
        raise ValueError(f"unknown method {method!r}")
    d2 = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(d2, 0.0)


def frechet_distance_from_features(features_a: ArrayLike, features_b: ArrayLike, **kwargs) -> float:
    """Squared Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D]."""
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b), **kwargs)


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (xᵀy / d + 1)³ for rows of x [n, d] and y [m, d] → [n, m]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² with the cubic polynomial kernel between samples x [m, d] and y [n, d].

    Implements Eq. 4 of Bińkowski et al. 2018 (Gretton et al. 2012's unbiased estimator):
    MMD²_u = Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(n(n−1)) − 2 Σ_{i,j} k(x_i, y_j)/(mn).
    """
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.sum() / (m * n))


def kid(
    features_a: ArrayLike,
    features_b: ArrayLike,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel inception distance: mean and standard deviation of MMD²_u over random subsets.

    Implements Sec. 3 ("KID") of Bińkowski et al. 2018: each of ``subsets`` draws takes
    min(subset_size, N, M) rows of each set without replacement (as clean-fid and StyleGAN3's metrics do).

    Args:
        features_a, features_b: [N, D] and [M, D] features.
        subsets: number of random subsets.
        subset_size: rows per subset (clipped to the smaller set).
        generator: torch.Generator for the subset draws (reproducible results).
    Returns:
        (mean, std) of the per-subset MMD² estimates (std with divisor `subsets`, 0 for one subset).
    """
    fa = torch.from_numpy(_as_float64(features_a))
    fb = torch.from_numpy(_as_float64(features_b))
    m = min(subset_size, fa.shape[0], fb.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    values = []
    for _ in range(subsets):
        ia = torch.randperm(fa.shape[0], generator=generator)[:m]
        ib = torch.randperm(fb.shape[0], generator=generator)[:m]
        values.append(mmd2_unbiased(fa[ia], fb[ib]))
    v = np.asarray(values)
    return float(v.mean()), float(v.std())
