"""Mode coverage of 2-D Gaussian-mixture toys (the VEEGAN / PacGAN protocol).

Protocol (Srivastava et al. 2017, "VEEGAN", Sec. 5.1; Lin et al. 2018, "PacGAN", Sec. 5.1; also
Metz et al. 2017, "Unrolled GANs"): each sample is assigned to its nearest mode mean; a sample is
*high quality* when it lies within 3 standard deviations of that mean (Euclidean distance ≤ 3σ); a mode
is *covered* ("captured") when at least one high-quality sample is assigned to it. PacGAN additionally
reports the reverse KL divergence between the histogram of high-quality samples over modes and the true
(uniform) mode weights. The published 25-Gaussian grid numbers use 2,500 samples, σ = 0.05.

``min_count`` raises the coverage threshold above one sample, for stricter variants of the protocol.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(x: ArrayLike) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach().cpu()).double()


def mode_histogram_kl(counts: np.ndarray, weights: np.ndarray | None = None) -> float:
    """KL(p ‖ q) between p = counts / Σ counts and q = weights (uniform when None); 0·log 0 = 0.

    Returns +inf when there is no count at all (no high-quality sample: the histogram is undefined).
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return math.inf
    q = np.full(counts.size, 1.0 / counts.size) if weights is None else np.asarray(weights, np.float64)
    q = q / q.sum()
    p = counts / total
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def mode_coverage(
    samples: ArrayLike,
    means: ArrayLike,
    std: float,
    *,
    n_std: float = 3.0,
    min_count: int = 1,
    weights: ArrayLike | None = None,
) -> dict[str, Any]:
    """Modes covered and share of high-quality samples for a Gaussian mixture with isotropic std σ.

    Args:
        samples: generated points [N, D] (D = 2 for the usual toys; any D works).
        means: mode means [K, D].
        std: the mixture's standard deviation σ.
        n_std: high-quality radius in units of σ (3 in VEEGAN / PacGAN).
        min_count: high-quality samples a mode needs to count as covered (1 in VEEGAN / PacGAN).
        weights: true mode weights [K] for the KL (uniform when None).
    Returns:
        dict(modes_covered: int, n_modes: int, high_quality_share: float in [0, 1],
        per_mode_counts: list[int] of high-quality samples per mode, kl_mode_hist: KL(hq histogram ‖ weights)).
    """
    x, mu = _as_float64(samples), _as_float64(means)
    if x.ndim != 2 or mu.ndim != 2 or x.shape[1] != mu.shape[1]:
        raise ValueError(f"samples [N, D] and means [K, D] expected, got {tuple(x.shape)}, {tuple(mu.shape)}")
    d = torch.cdist(x, mu, compute_mode="donot_use_mm_for_euclid_dist")  # [N, K]
    dist, nearest = d.min(dim=1)  # [N], [N]
    high_quality = dist <= n_std * std  # [N]
    counts = torch.bincount(nearest[high_quality], minlength=mu.shape[0]).numpy()
    w = None if weights is None else np.asarray(_as_float64(weights).numpy())
    return {
        "modes_covered": int((counts >= min_count).sum()),
        "n_modes": int(mu.shape[0]),
        "high_quality_share": float(high_quality.double().mean()) if x.shape[0] else 0.0,
        "per_mode_counts": [int(c) for c in counts],
        "kl_mode_hist": mode_histogram_kl(counts, w),
    }
