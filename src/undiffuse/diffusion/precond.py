"""The denoiser interface and the one preconditioner that turns a raw network into a denoiser.

A *denoiser* is any callable ``D(x, sigma, **cond) -> denoised`` where ``x = x_0 + σ·n`` (σ-space,
Karras et al. 2022) and ``sigma`` has shape [B]. A VP state x_t is ``√ᾱ_t·x`` with σ_t² = (1−ᾱ_t)/ᾱ_t.
Samplers only ever call this. A denoiser may also offer ``denoise(x, sigma, **cond) ->
DenoiserOutput`` to expose a learned variance (Nichol & Dhariwal 2021); :func:`denoise` reads either.

Convention at σ = ∞ (zero terminal SNR, ᾱ_T = 0): the state holds the unit noise n = lim x/σ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch
from torch import nn

from undiffuse.schedules.discrete import Schedule

__all__ = ["allows_zero_terminal_snr", "Denoiser", "DenoiserOutput", "DenoiserWrapper", "append_dims", "Precond", "PARAMETERIZATIONS", "denoise", "precond_coefficients"]

PARAMETERIZATIONS = ("eps", "x0", "v", "edm")


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, /, **cond) -> torch.Tensor: ...


@dataclass
class DenoiserOutput:
    """x̂_0 and, for a learned-variance model, the interpolation fraction ν ∈ [0, 1] of
    log Σ_θ = ν·log β_t + (1 − ν)·log β̃_t (Nichol & Dhariwal 2021, Eq. 15)."""

    denoised: torch.Tensor
    var_frac: Optional[torch.Tensor] = None


def denoise(denoiser: Callable, x: torch.Tensor, sigma: torch.Tensor, **cond) -> DenoiserOutput:
    """Call a denoiser and always get a :class:`DenoiserOutput` back."""
    fn = getattr(denoiser, "denoise", None)
    if fn is not None:
        return fn(x, sigma, **cond)
    return DenoiserOutput(denoiser(x, sigma, **cond))


def precond_coefficients(
    parameterization: str, sigma: torch.Tensor, sigma_data: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) with D(x; σ) = c_skip·x + c_out·F(c_in·x) (Karras et al. 2022, Table 1).

    eps: (1, −σ, 1/√(1+σ²));  x0: (0, 1, 1/√(1+σ²));  v: (1/(1+σ²), −σ/√(1+σ²), 1/√(1+σ²)), with
    v = √ᾱ·ε − √(1−ᾱ)·x_0 (Salimans & Ho 2022);  edm: (σd²/(σ²+σd²), σσd/√(σ²+σd²), 1/√(σ²+σd²)).
    Written so that σ = ∞ gives the limits (c_in·x is handled by the caller).
    """
    one = torch.ones_like(sigma)
    if parameterization in ("eps", "x0", "v"):
        sd2 = 1.0
    elif parameterization == "edm":
        sd2 = sigma_data**2
    else:
        raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")
    c_in = 1 / torch.sqrt(sigma**2 + sd2)
    # σ/√(σ²+σd²) = 1/√(1+σd²/σ²) is finite at σ = ∞
    frac = 1 / torch.sqrt(1 + sd2 / sigma**2)
    if parameterization == "eps":
        return one, -sigma, c_in
    if parameterization == "x0":
        return torch.zeros_like(sigma), one, c_in
    c_skip = sd2 / (sigma**2 + sd2)
    if parameterization == "v":
        return c_skip, -frac, c_in
    return c_skip, frac * sigma_data, c_in


def allows_zero_terminal_snr(parameterization: str) -> bool:
    """Whether a model of this parameterization can be trained and sampled with ᾱ_T = 0 (σ_T = ∞):
    ε-prediction cannot — at σ = ∞ x̂_0 = (x − σ·ε̂) is undefined — x0 / v / EDM can (Lin et al. 2024).
    The one place this rule lives."""
    return parameterization != "eps"


def append_dims(c, x: torch.Tensor) -> torch.Tensor:
    """A per-sample value c [B] (or a 0-d scalar) shaped [B, 1, …] to broadcast against x [B, …]
    (k-diffusion's ``append_dims``). Floating values take x's dtype; boolean masks stay boolean."""
    c = torch.as_tensor(c, device=x.device)
    c = c.to(x.dtype) if c.is_floating_point() else c
    return c if c.ndim == 0 else c.reshape(-1, *([1] * (x.ndim - 1)))


class DenoiserWrapper:
    """Base of the denoiser combinators (guidance, clipping, counting, oracles): a subclass implements
    ``denoise(x, sigma, **cond) -> DenoiserOutput``; calling it returns x̂_0 = ``denoise(...).denoised``."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        return self.denoise(x, sigma, **cond).denoised


class Precond(nn.Module):
    """Wrap a network ``F(x_in, c_noise, **cond)`` as a denoiser for one parameterization.

    ``c_noise`` is 1000·t(σ)/T for a discrete-time (VP) model trained on ``schedule`` — t(σ) by
    interpolating log σ over the schedule's table, so respaced and off-grid σ work — and ln(σ)/4 for
    ``edm`` or when no schedule is given. With ``learned_variance`` the network returns 2·C channels,
    the second half ν_raw ∈ [−1, 1] mapped to ν = (ν_raw + 1)/2.
    """

    def __init__(
        self,
        net: nn.Module,
        parameterization: str = "eps",
        schedule: Schedule | None = None,
        learned_variance: bool = False,
        sigma_data: float = 1.0,
    ) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")
        if schedule is not None and schedule.alpha_bar[-1] == 0 and not allows_zero_terminal_snr(parameterization):
            raise ValueError("zero terminal SNR (ᾱ_T = 0) cannot be used with eps-prediction; use x0 or v")
        self.net = net
        self.parameterization = parameterization
        self.schedule = schedule
        self.learned_variance = learned_variance
        self.sigma_data = sigma_data

    def with_net(self, net: nn.Module) -> "Precond":
        """The same preconditioning around another network (the EMA copy, a DDP-wrapped one)."""
        return Precond(net, self.parameterization, self.schedule, self.learned_variance, self.sigma_data)

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.schedule is None or self.parameterization == "edm":
            return sigma.log() / 4
        return self.schedule.sigma_to_t(sigma.to(torch.float64)) * (1000.0 / self.schedule.T)

    def scaled_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """c_in·x, the network's input (for VP models exactly x_t = √ᾱ_t·x)."""
        _, _, c_in = precond_coefficients(self.parameterization, sigma, self.sigma_data)
        inf = append_dims(torch.isinf(sigma), x)
        return torch.where(inf, x, x * append_dims(c_in, x))

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        """The network output F(c_in·x, c_noise) (with variance channels, if any)."""
        x_in = self.scaled_input(x, sigma)
        return self.net(x_in, self.c_noise(sigma).to(x.dtype), **cond)

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
        """D = c_skip·x + c_out·F (with c_skip·x → 0 at σ = ∞ for x0/v)."""
        c_skip, c_out, _ = precond_coefficients(self.parameterization, sigma, self.sigma_data)
        skip = torch.where(append_dims(torch.isinf(sigma), x), torch.zeros_like(x), append_dims(c_skip, x) * x)
        return skip + append_dims(c_out, x) * F.to(x.dtype)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if not self.learned_variance:
            return out, None
        F, v = out.chunk(2, dim=1)
        return F, (v + 1) / 2

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> DenoiserOutput:
        F, var_frac = self.split(self.raw(x, sigma, **cond))
        return DenoiserOutput(self.combine(x, sigma, F), var_frac)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        return self.denoise(x, sigma, **cond).denoised

    def target(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """What F should output for x = x_0 + σ·noise: (x_0 − c_skip·x)/c_out, in closed form per row
        (eps: noise; x0: x_0; v: (noise − σ·x_0)/√(1+σ²) = √ᾱ·ε − √(1−ᾱ)·x_0)."""
        s = append_dims(sigma, x0)
        if self.parameterization == "eps":
            return noise
        if self.parameterization == "x0":
            return x0
        if self.parameterization == "v":
            return torch.where(torch.isinf(s), -x0, (noise - s * x0) / torch.sqrt(1 + s**2))
        c_skip, c_out, _ = precond_coefficients("edm", sigma, self.sigma_data)
        return (x0 - append_dims(c_skip, x0) * (x0 + s * noise)) / append_dims(c_out, x0)
