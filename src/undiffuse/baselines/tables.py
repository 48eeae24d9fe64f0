"""Two classical generators of synthetic rows, the baselines of TabDDPM's comparison (Kotelnikov et al.
2023, Sec. 5): a Gaussian copula and SMOTE-style interpolation. Both read and write rows in model units
(:mod:`undiffuse.data.tables`: quantile-normal scores, then one-hot blocks; NaN for missing cells).

- :func:`gaussian_copula`: each column gets a latent standard normal — the numeric columns are already
  normal scores; a category k of frequency p_k maps to the normal score of the middle of its interval of
  the frequency CDF — and the latents are N(0, Σ) with Σ their correlation matrix on the training rows
  (Patki et al. 2016, the Synthetic Data Vault's copula). Sampling inverts both maps.
- :func:`smote`: a new row between a random training row a and one of its k nearest neighbours b of the
  same class: a + λ·(b − a) for the numbers, λ ~ U(0, 1), the categories of the nearer of the two
  (Chawla et al. 2002, as TabDDPM's SMOTE baseline).
- :func:`neural_rows`: the project's GAN or VAE (:mod:`undiffuse.baselines`, the MLP networks of vector
  data) fitted to the rows with the numbers' missing cells at 0 (the median score) and a missing category at
  the column's most frequent one; each block of a sampled row becomes the one-hot of its largest entry.
  Unconditional: the target is one more column (as CTGAN/TVAE's rows in TabDDPM's comparison).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from undiffuse.diffusion.multinomial import blocks

__all__ = ["gaussian_copula", "smote", "neural_rows"]


def ndtr(v: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.from_numpy(np.asarray(v, dtype=np.float64))).numpy()


def ndtri(v: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.from_numpy(np.asarray(v, dtype=np.float64))).numpy()


def _codes(x: np.ndarray, slices: Sequence[slice]) -> np.ndarray:
    """Category codes [N, C] of the one-hot blocks (missing blocks: the most frequent code)."""
    out = []
    for sl in slices:
        b = x[:, sl]
        miss = np.isnan(b).any(1)
        code = np.nan_to_num(b, nan=-1.0).argmax(1)
        code[miss] = np.bincount(code[~miss], minlength=b.shape[1]).argmax() if (~miss).any() else 0
        out.append(code)
    return np.stack(out, 1) if out else np.zeros((len(x), 0), dtype=np.int64)


def _onehot(codes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    return np.concatenate([np.eye(k)[codes[:, j]] for j, k in enumerate(sizes)], 1) if sizes else codes[:, :0]


def gaussian_copula(x: torch.Tensor, categories: Sequence[int], n: int, seed: int = 0) -> torch.Tensor:
    """n rows [n, W] from a Gaussian copula fitted to the training rows x [N, W]."""
    x = x.double().numpy()
    d = x.shape[1] - sum(categories)
    slices = blocks(categories, d)
    codes = _codes(x, slices)
    cdfs = [np.concatenate([[0.0], np.cumsum(np.bincount(codes[:, j], minlength=k) / len(x))]) for j, k in enumerate(categories)]
    lat = [ndtri(np.clip((c[codes[:, j]] + c[codes[:, j] + 1]) / 2, 1e-6, 1 - 1e-6)) for j, c in enumerate(cdfs)]
    z = np.concatenate([np.nan_to_num(x[:, :d]), np.stack(lat, 1) if lat else x[:, :0]], 1)
    cov = np.corrcoef(z, rowvar=False) if z.shape[1] > 1 else np.ones((1, 1))
    cov = np.nan_to_num(cov) + 1e-6 * np.eye(len(cov))
    draw = np.random.default_rng(seed).multivariate_normal(np.zeros(len(cov)), cov, size=n, method="eigh")
    u = ndtr(draw[:, d:])
    new = np.stack([np.clip(np.searchsorted(c, u[:, j], side="right") - 1, 0, len(c) - 2) for j, c in enumerate(cdfs)], 1) \
        if cdfs else draw[:, :0].astype(int)  # fmt: skip
    return torch.from_numpy(np.concatenate([draw[:, :d], _onehot(new, categories)], 1)).float()


def smote(x: torch.Tensor, categories: Sequence[int], n: int, y: Optional[torch.Tensor] = None, k: int = 5,
          seed: int = 0) -> torch.Tensor:  # fmt: skip
    """n rows [n, W] interpolated between training rows x [N, W] and their k nearest neighbours (of the
    same class ``y`` [N], if given)."""
    rng = np.random.default_rng(seed)
    x = x.double().numpy()
    d = x.shape[1] - sum(categories)
    codes = _codes(x, blocks(categories, d))
    num = np.nan_to_num(x[:, :d])
    dense = np.concatenate([num, _onehot(codes, categories)], 1)
    y = np.zeros(len(x), dtype=np.int64) if y is None else y.numpy()
    out_num, out_codes = np.empty((n, d)), np.empty((n, codes.shape[1]), dtype=np.int64)
    for i in range(n):
        a = rng.integers(len(x))
        same = np.flatnonzero(y == y[a])
        dist = np.linalg.norm(dense[same] - dense[a], axis=1)
        near = same[np.argsort(dist)[1 : k + 1]] if len(same) > 1 else same
        b = rng.choice(near)
        lam = rng.random()
        out_num[i] = num[a] + lam * (num[b] - num[a])
        out_codes[i] = codes[a] if lam < 0.5 else codes[b]
    return torch.from_numpy(np.concatenate([out_num, _onehot(out_codes, categories)], 1)).float()


def neural_rows(kind: str, x: torch.Tensor, categories: Sequence[int], n: int, seed: int = 0, steps: int = 500,
                batch_size: int = 256, z_dim: int = 16) -> torch.Tensor:  # fmt: skip
    """n rows [n, W] of a GAN (``kind="gan"``) or VAE (``"vae"``) trained ``steps`` minibatches of
    ``batch_size`` on the training rows x [N, W]; row i depends only on (seed, i) given the fitted model."""
    from undiffuse.baselines.train import fit_vectors, sample_indices

    x = x.double().numpy()
    d = x.shape[1] - sum(categories)
    slices = blocks(categories, d)
    dense = np.concatenate([np.nan_to_num(x[:, :d]), _onehot(_codes(x, slices), categories)], 1)
    net, cfg = fit_vectors(kind, torch.from_numpy(dense).float(), steps, seed=seed, batch_size=batch_size,
                           model={"z_dim": z_dim})  # fmt: skip
    s = sample_indices(net, cfg, range(n), seed).double().numpy()
    codes = np.stack([s[:, sl].argmax(1) for sl in slices], 1) if slices else np.zeros((n, 0), dtype=np.int64)
    return torch.from_numpy(np.concatenate([s[:, :d], _onehot(codes, categories)], 1)).float()
