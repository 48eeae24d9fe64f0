"""Denoising losses as weight(σ)·‖D(x; σ) − x_0‖², the hybrid loss, and importance sampling of t.

Every weighting is written as a weight on the x_0-error, with SNR = 1/σ² = ᾱ/(1 − ᾱ):

| weighting | loss it equals | x_0-space weight w(σ) |
|---|---|---|
| ``eps`` (L_simple, Ho et al. 2020 Eq. 14) | ‖ε̂ − ε‖² | SNR = 1/σ² |
| ``x0`` | ‖x̂_0 − x_0‖² | 1 |
| ``v`` (Salimans & Ho 2022) | ‖v̂ − v‖² | SNR + 1 = (1 + σ²)/σ² |
| ``min_snr`` (Hang et al. 2023) | min(SNR, γ)·‖x̂_0 − x_0‖², for any parameterization | min(SNR, γ) |
| ``edm`` (Karras et al. 2022, Eq. 8) | λ(σ)‖D − x_0‖² | (σ² + σ_d²)/(σ·σ_d)² |

All share the minimiser D*(x; σ) = E[x_0|x] and differ only in how they weight the noise levels.
The loss is computed on the raw network output as w(σ)·c_out²·‖F − F_target‖², which is exact and
avoids dividing by σ² at small σ; when the weighting matches the parameterization the factor is 1.
"""

from __future__ import annotations

from typing import Optional

import torch

from undiffuse.diffusion.precond import (
    DenoiserOutput,
    DenoiserWrapper,
    Precond,
    append_dims,
    precond_coefficients,
)
from undiffuse.diffusion.process import q_sample
from undiffuse.losses.vlb import LN2, vlb_term
from undiffuse.schedules.discrete import Schedule

__all__ = ["WEIGHTINGS", "x0_weight", "denoising_loss", "hybrid_loss", "ImportanceSampler", "sample_t", "mean_flat"]

WEIGHTINGS = ("eps", "x0", "v", "min_snr", "edm")
_NATIVE = {"eps": "eps", "x0": "x0", "v": "v", "edm": "edm"}


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension."""
    return x.reshape(x.shape[0], -1).mean(1)


def x0_weight(weighting: str, sigma: torch.Tensor, gamma: float = 5.0, sigma_data: float = 1.0) -> torch.Tensor:
    """w(σ) of the table above, in float64."""
    s2 = sigma.double() ** 2
    snr = 1 / s2
    if weighting == "eps":
        return snr
    if weighting == "x0":
        return torch.ones_like(s2)
    if weighting == "v":
        return snr + 1
    if weighting == "min_snr":
        return torch.clamp(snr, max=gamma)
    if weighting == "edm":
        return (s2 + sigma_data**2) / (s2 * sigma_data**2)
    raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {WEIGHTINGS}")


def denoising_loss(
    precond: Precond,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    weighting: Optional[str] = None,
    gamma: float = 5.0,
    **cond,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Per-example loss [B] of a preconditioned network at x = x_0 + σ·noise.

    ``weighting`` defaults to the parameterization's own (L_simple for eps). Returns (loss, raw network
    output F with the variance channels split off, the variance fraction or None) so the caller can add
    the VLB term without a second forward pass.
    """
    weighting = weighting or _NATIVE[precond.parameterization]
    x = torch.where(append_dims(torch.isinf(sigma), x0), noise, x0 + append_dims(sigma, x0) * noise)
    F, var_frac = precond.split(precond.raw(x, sigma, **cond))
    target = precond.target(x0, noise, sigma)
    mse = mean_flat((F.float() - target.float()) ** 2)
    if weighting == _NATIVE.get(precond.parameterization):
        return mse, F, var_frac
    _, c_out, _ = precond_coefficients(precond.parameterization, sigma.double(), precond.sigma_data)
    factor = x0_weight(weighting, sigma, gamma, precond.sigma_data) * c_out**2
    factor = torch.where(torch.isinf(sigma.double()), x0_weight(weighting, sigma, gamma).nan_to_num(0), factor)
    return mse * factor.to(mse.dtype), F, var_frac


def hybrid_loss(
    precond: Precond,
    schedule: Schedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    lambda_vlb: float = 0.001,
    decoder: str = "discrete",
    **cond,
) -> dict[str, torch.Tensor]:
    """L_hybrid = L_simple + λ·L_vlb (Nichol & Dhariwal 2021, Sec. 3.1), per example.

    The VLB term sees μ_θ with a stop-gradient, so it only trains the learned variance Σ_θ; it is
    in bits/dim and scaled by T so that λ·L_vlb estimates λ·Σ_t L_{t−1} (improved-diffusion's T/1000
    factor at λ = 0.001). Returns dict(loss, mse, vlb).
    """
    sigma = schedule.sigmas.to(x0.device)[t - 1]
    mse, F, var_frac = denoising_loss(precond, x0, sigma, noise, **cond)
    out = {"mse": mse, "loss": mse}
    if precond.learned_variance:
        x = x0 + append_dims(sigma, x0) * noise
        frozen = _Frozen(precond.combine(x, sigma, F).detach(), var_frac)
        x_t = q_sample(schedule, x0, t, noise)
        dims = x0[0].numel()
        vlb = vlb_term(frozen, schedule, x0, x_t, t, "learned", decoder) * schedule.T / (dims * LN2)
        out["vlb"] = vlb
        out["loss"] = mse + lambda_vlb * vlb
    return out


class _Frozen(DenoiserWrapper):
    """A denoiser that returns a precomputed output (reuses one forward pass for the VLB term)."""

    def __init__(self, denoised: torch.Tensor, var_frac: Optional[torch.Tensor]) -> None:
        self.out = (denoised, var_frac)

    def denoise(self, x, sigma, **cond):
        return DenoiserOutput(*self.out)


def sample_t(T: int, u: torch.Tensor) -> torch.Tensor:
    """Uniform t ∈ {1..T} from uniforms u ∈ [0, 1) (keying u to the example gives reproducible draws)."""
    return (u * T).long().clamp(0, T - 1) + 1


class ImportanceSampler:
    """Importance sampling of t for the VLB (Nichol & Dhariwal 2021, Eq. 16): p_t ∝ √E[L_t²], from a
    history of the last ``history`` losses per step; uniform until every step has a full history."""

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        self.T, self.history, self.uniform_prob = T, history, uniform_prob
        self.losses = torch.zeros(T, history, dtype=torch.float64)
        self.counts = torch.zeros(T, dtype=torch.long)

    def weights(self) -> torch.Tensor:
        if (self.counts < self.history).any():
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        w = (self.losses**2).mean(1).sqrt()
        w = w / w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(t [n] in 1..T, importance weights 1/(T·p_t) [n]) so E[weight·L_t] = mean_t L_t."""
        p = self.weights()
        idx = torch.multinomial(p, n, replacement=True, generator=generator)
        return idx + 1, 1.0 / (self.T * p[idx])

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        for ti, li in zip(t.tolist(), losses.detach().double().tolist()):
            i = ti - 1
            if self.counts[i] == self.history:
                self.losses[i, :-1] = self.losses[i, 1:].clone()
                self.losses[i, -1] = li
            else:
                self.losses[i, self.counts[i]] = li
                self.counts[i] += 1

    def state_dict(self) -> dict:
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.losses.copy_(state["losses"])
        self.counts.copy_(state["counts"])
