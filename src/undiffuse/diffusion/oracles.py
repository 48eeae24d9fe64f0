"""Analytic denoisers: the exact D*(x; σ) = E[x_0 | x_0 + σ·n = x] for Gaussian and Gaussian-mixture data.

They implement the denoiser interface, so every sampler, loss and bound can be checked against closed
forms without training (EDM2's toy oracle; Karras et al. 2024).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from undiffuse.diffusion.precond import DenoiserOutput, DenoiserWrapper, append_dims
from undiffuse.schedules.discrete import Schedule

__all__ = ["GaussianOracle", "GaussianMixtureOracle"]


class GaussianOracle(DenoiserWrapper):
    """Data x_0 ~ N(m, s²·I). D*(x; σ) = m + s²/(s² + σ²)·(x − m); Var[x_0|x] = s²σ²/(s² + σ²).

    With ``schedule`` and ``optimal_variance`` it also returns the variance fraction ν that makes
    Σ_θ equal the true reverse variance Var[x_{t−1}|x_t] = β̃_t + c_1²·Var[x_0|x_t] (c_1 the posterior
    coefficient of x_0), so the discrete reverse chain is exact.
    """

    def __init__(self, m: float = 0.0, s: float = 1.0, schedule: Optional[Schedule] = None,
                 optimal_variance: bool = False) -> None:
        self.m, self.s = float(m), float(s)
        self.schedule, self.optimal_variance = schedule, optimal_variance

    def _gain(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s2 = sigma.double().reshape(-1, *([1] * (x.ndim - 1))) ** 2  # float64 (append_dims would cast to x's dtype)
        return (self.s**2 / (self.s**2 + s2)).to(x.dtype)

    def posterior_var(self, sigma: torch.Tensor) -> torch.Tensor:
        """Var[x_0 | x] = s²σ²/(s² + σ²) (float64)."""
        s2 = sigma.double() ** 2
        return torch.where(torch.isinf(s2), torch.full_like(s2, self.s**2), self.s**2 * s2 / (self.s**2 + s2))

    def log_density(self, x0: torch.Tensor) -> torch.Tensor:
        """log N(x_0; m, s²·I) per example."""
        d = x0[0].numel()
        z = ((x0.double() - self.m) ** 2).reshape(x0.shape[0], -1).sum(1) / self.s**2
        return -0.5 * (z + d * math.log(2 * math.pi * self.s**2))


    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> DenoiserOutput:
        inf = append_dims(torch.isinf(sigma), x)
        denoised = torch.where(inf, torch.full_like(x, self.m), self.m + self._gain(sigma, x) * (x - self.m))
        return DenoiserOutput(denoised, self._var_frac(sigma, x) if self.optimal_variance else None)

    def _var_frac(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sch = self.schedule
        if sch is None:
            raise ValueError("optimal_variance needs the schedule")
        # row of the schedule for each σ: the nearest table entry (a grid rebuilt from the same ᾱ,
        # e.g. by schedule_from_sigmas, can differ from the table in the last ulp)
        table = sch.sigmas.to(sigma.device)
        s = sigma.double().contiguous()
        i = torch.searchsorted(table, s).clamp(1, max(sch.T - 1, 1))
        i = torch.where((s - table[i - 1]).abs() <= (table[i] - s).abs(), i - 1, i) if sch.T > 1 else i * 0
        c1 = sch.posterior_mean_coef1.to(sigma.device)[i]
        var = sch.posterior_variance.to(sigma.device)[i] + c1**2 * self.posterior_var(sigma)
        log_small = sch.posterior_log_variance_clipped.to(sigma.device)[i]
        log_large = sch.betas.log().to(sigma.device)[i]
        frac = (var.log() - log_small) / (log_large - log_small)
        return append_dims(frac, x).expand_as(x)


class GaussianMixtureOracle:
    """Data from Σ_k w_k N(μ_k, s²·I). D*(x; σ) = Σ_k r_k(x)·(μ_k + s²/(s² + σ²)(x − μ_k)), with
    responsibilities r_k ∝ w_k N(x; μ_k, (s² + σ²)I)."""

    def __init__(self, means: torch.Tensor, s: float, weights: Optional[torch.Tensor] = None) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float64)  # [K, D]
        K = self.means.shape[0]
        self.weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights).double()
        self.s = float(s)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        mu = self.means.to(x.device)  # [K, D]
        xd = x.double().reshape(x.shape[0], -1)  # [B, D]
        s2 = sigma.double().reshape(-1, 1) ** 2
        var = self.s**2 + s2  # [B, 1]
        d2 = ((xd[:, None, :] - mu[None]) ** 2).sum(-1)  # [B, K]
        logits = self.weights.to(x.device).log()[None] - 0.5 * d2 / var
        r = torch.softmax(logits, dim=1)  # [B, K]
        gain = self.s**2 / var
        comp = mu[None] + gain[:, :, None] * (xd[:, None, :] - mu[None])  # [B, K, D]
        return (r[:, :, None] * comp).sum(1).reshape(x.shape).to(x.dtype)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + self.s * noise
