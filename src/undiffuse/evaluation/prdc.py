"""Improved precision and recall, density and coverage, from k-nearest-neighbour balls in feature space.

Each set's manifold is estimated as the union of balls B(φ, NND_k(φ)) around its feature vectors, where
NND_k(φ) is the distance from φ to its k-th nearest neighbour within the same set (the point itself
excluded).

- precision = (1/M) Σ_j 1[fake_j ∈ manifold(real)],  recall = (1/N) Σ_i 1[real_i ∈ manifold(fake)]
  Implements Eq. 1–2 of Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
  Generative Models" (k = 3, ball membership with ≤ as in their code).
- density = (1/(kM)) Σ_j Σ_i 1[fake_j ∈ B(real_i, NND_k(real_i))],
  coverage = (1/N) Σ_i 1[∃ j: fake_j ∈ B(real_i, NND_k(real_i))]
  Implements Eq. 5–6 of Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models"
  (strict < as in their reference code).

Distances are computed in row chunks with torch.cdist, so memory is O(chunk · max(N, M)): 10k × 10k
features of dimension 2048 need ~40 MB per chunk of 1,000 rows.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(x: ArrayLike, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach()
    if t.ndim != 2:
        raise ValueError(f"features must be [N, D], got {tuple(t.shape)}")
    return t.to(device, dtype)


def knn_radii(features: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """NND_k: distance of each row of features [N, D] to its k-th nearest other row → [N]."""
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"need more than k={k} samples, got {n}")
    radii = []
    for start in range(0, n, chunk):
        d = torch.cdist(features[start : start + chunk], features)  # [c, N]
        # the k+1 smallest include the point itself at distance 0
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def prdc(
    real: ArrayLike,
    fake: ArrayLike,
    *,
    k: int = 3,
    chunk: int = 1024,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Precision, recall (Kynkäänniemi et al. 2019) and density, coverage (Naeem et al. 2020).

    Args:
        real: reference features [N, D].
        fake: generated features [M, D].
        k: neighbourhood size of the manifold balls (3 in both papers; Naeem et al. suggest 5 for D/C).
        chunk: rows per cdist block.
        dtype, device: where and in which precision distances are computed.
    Returns:
        dict(precision, recall, density, coverage, k, n_real, n_fake).
    """
    device = torch.device(device)
    r, f = _as_tensor(real, dtype, device), _as_tensor(fake, dtype, device)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} vs {f.shape[1]}")
    radius_real, radius_fake = knn_radii(r, k, chunk), knn_radii(f, k, chunk)  # [N], [M]
    fake_in_real = torch.zeros(f.shape[0], dtype=torch.bool, device=device)  # precision
    fake_ball_count = torch.zeros((), dtype=torch.float64, device=device)  # density numerator
    real_in_fake, real_covered = [], []  # recall, coverage
    for start in range(0, r.shape[0], chunk):
        d = torch.cdist(r[start : start + chunk], f)  # [c, M]
        rad = radius_real[start : start + chunk, None]  # [c, 1]
        fake_in_real |= (d <= rad).any(dim=0)
        fake_ball_count += (d < rad).sum(dtype=torch.float64)
        real_in_fake.append((d <= radius_fake[None]).any(dim=1))
        real_covered.append(d.min(dim=1).values < rad[:, 0])
    return {
        "precision": fake_in_real.double().mean().item(),
        "recall": torch.cat(real_in_fake).double().mean().item(),
        "density": (fake_ball_count / (k * f.shape[0])).item(),
        "coverage": torch.cat(real_covered).double().mean().item(),
        "k": k,
        "n_real": r.shape[0],
        "n_fake": f.shape[0],
    }


def precision_recall(real: ArrayLike, fake: ArrayLike, *, k: int = 3, **kwargs) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of fake features against real ones."""
    out = prdc(real, fake, k=k, **kwargs)
    return out["precision"], out["recall"]
