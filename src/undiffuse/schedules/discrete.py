"""Discrete noise schedules β_1..β_T and their float64 tables (Ho et al. 2020, Nichol & Dhariwal 2021).

Index convention: Python index ``i = t - 1`` holds step ``t`` of the chain (t = 1..T), so
``schedule.betas[t - 1]`` is β_t. ``alpha_bar_prev[i]`` is ᾱ_{t-1} with ᾱ_0 = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import torch

__all__ = [
    "Schedule",
    "ScheduleError",
    "linear_betas",
    "exponential_betas",
    "constant_betas",
    "cosine_alpha_bar",
    "sigmoid_alpha_bar",
    "betas_from_alpha_bar",
    "make_schedule",
    "SCHEDULES",
]

F64 = torch.float64


class ScheduleError(ValueError):
    """An invalid noise schedule; the message says what is wrong."""


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_t linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020, Sec. 4)."""
    _check_T(T)
    if T == 1:
        return torch.tensor([beta_end], dtype=F64)
    return torch.linspace(beta_start, beta_end, T, dtype=F64)


def exponential_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_t geometric between ``beta_start`` and ``beta_end``: β_t = β_1 (β_T/β_1)^((t-1)/(T-1))."""
    _check_T(T)
    if beta_start <= 0 or beta_end <= 0:
        raise ScheduleError(f"exponential betas need positive endpoints, got {beta_start}, {beta_end}")
    if T == 1:
        return torch.tensor([beta_end], dtype=F64)
    return torch.logspace(math.log10(beta_start), math.log10(beta_end), T, dtype=F64)


def constant_betas(T: int, beta: float = 0.01) -> torch.Tensor:
    """β_t = β for all t."""
    _check_T(T)
    return torch.full((T,), float(beta), dtype=F64)


def cosine_alpha_bar(T: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2) (Nichol & Dhariwal 2021, Eq. 17).

    Returns ᾱ_1..ᾱ_T; :func:`make_schedule` clips the implied β_t at 0.999 as in the paper.
    """
    _check_T(T)
    tau = torch.arange(T + 1, dtype=F64) / T
    f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    return f[1:] / f[0]


def sigmoid_alpha_bar(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Sigmoid schedule on ᾱ (Jabri et al. 2022, Alg. 1): ᾱ(τ) = (s(end) − s((τ(end−start)+start)/tau)) / (s(end) − s(start)).

    Returns ᾱ_1..ᾱ_T (ᾱ_T → 0 is avoided by clipping the implied β at 0.999 in :func:`make_schedule`).
    """
    _check_T(T)
    u = torch.arange(T + 1, dtype=F64) / T
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=F64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=F64))
    out = (v_end - torch.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)
    return out[1:] / out[0]


def betas_from_alpha_bar(alpha_bar: torch.Tensor, max_beta: float = 0.999) -> torch.Tensor:
    """β_t = 1 − ᾱ_t/ᾱ_{t−1}, clipped at ``max_beta`` (Nichol & Dhariwal 2021, Sec. 3.2)."""
    alpha_bar = torch.as_tensor(alpha_bar, dtype=F64)
    prev = torch.cat([torch.ones(1, dtype=F64), alpha_bar[:-1]])
    return torch.clamp(1 - alpha_bar / prev, max=max_beta)


def _check_T(T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ScheduleError(f"the number of steps T must be an integer ≥ 1, got {T!r}")


@dataclass(frozen=True, eq=False)
class Schedule:
    """Float64 tables of a discrete diffusion with steps t = 1..T (index t − 1).

    ``timesteps`` maps each row to the step of the original (training) chain it stands for; for a
    schedule built from betas it is 1..T, for a respaced one the kept steps.
    """

    betas: torch.Tensor
    timesteps: torch.Tensor = field(default=None)  # type: ignore[assignment]
    allow_zero_terminal_snr: bool = False

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=F64).flatten().clone()
        object.__setattr__(self, "betas", betas)
        _validate_betas(betas, self.allow_zero_terminal_snr)
        ts = self.timesteps
        ts = torch.arange(1, len(betas) + 1) if ts is None else torch.as_tensor(ts, dtype=torch.long)
        if ts.shape != betas.shape:
            raise ScheduleError(f"timesteps has shape {tuple(ts.shape)}, betas {tuple(betas.shape)}")
        object.__setattr__(self, "timesteps", ts)

    # --- tables (all float64, length T) ---------------------------------------------------------
    @cached_property
    def T(self) -> int:
        return len(self.betas)

    @cached_property
    def alphas(self) -> torch.Tensor:
        """α_t = 1 − β_t."""
        return 1 - self.betas

    @cached_property
    def alpha_bar(self) -> torch.Tensor:
        """ᾱ_t = ∏_{s≤t} α_s (Ho et al. 2020, Eq. 4)."""
        return torch.cumprod(self.alphas, 0)

    @cached_property
    def alpha_bar_prev(self) -> torch.Tensor:
        """ᾱ_{t−1}, with ᾱ_0 = 1."""
        return torch.cat([torch.ones(1, dtype=F64), self.alpha_bar[:-1]])

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·β_t (Ho et al. 2020, Eq. 7)."""
        return (1 - self.alpha_bar_prev) / (1 - self.alpha_bar) * self.betas

    @cached_property
    def posterior_log_variance_clipped(self) -> torch.Tensor:
        """log β̃_t with β̃_1 = 0 replaced by β̃_2 (as in improved-diffusion), so the log is finite."""
        var = self.posterior_variance
        if self.T == 1:
            return torch.log(self.betas)
        return torch.log(torch.cat([var[1:2], var[1:]]))

    @cached_property
    def posterior_mean_coef1(self) -> torch.Tensor:
        """Coefficient of x_0 in μ̃_t: √ᾱ_{t−1}·β_t/(1 − ᾱ_t) (Ho et al. 2020, Eq. 7)."""
        return self.alpha_bar_prev.sqrt() * self.betas / (1 - self.alpha_bar)

    @cached_property
    def posterior_mean_coef2(self) -> torch.Tensor:
        """Coefficient of x_t in μ̃_t: √α_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t) (Ho et al. 2020, Eq. 7)."""
        return self.alphas.sqrt() * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    @cached_property
    def sigmas(self) -> torch.Tensor:
        """σ_t = √((1 − ᾱ_t)/ᾱ_t): the noise level of x_t/√ᾱ_t = x_0 + σ_t·n (∞ where ᾱ_t = 0)."""
        ab = self.alpha_bar
        return torch.sqrt((1 - ab) / ab)

    @cached_property
    def logsnr(self) -> torch.Tensor:
        """log SNR_t = log(ᾱ_t/(1 − ᾱ_t)) = −2 log σ_t."""
        ab = self.alpha_bar
        return torch.log(ab) - torch.log1p(-ab)

    # --- views ------------------------------------------------------------------------------
    def respace(self, keep: Sequence[int] | torch.Tensor) -> "Schedule":
        """A schedule over a subsequence of steps that keeps ᾱ at the kept steps (Nichol & Dhariwal 2021, App. B).

        ``keep`` lists steps t (1-based, strictly increasing); the new β'_k = 1 − ᾱ_{t_k}/ᾱ_{t_{k−1}}.
        """
        keep_t = torch.as_tensor(list(keep) if not torch.is_tensor(keep) else keep, dtype=torch.long)
        if keep_t.numel() == 0:
            raise ScheduleError("respacing needs at least one step to keep")
        if (keep_t < 1).any() or (keep_t > self.T).any():
            raise ScheduleError(f"respaced steps must lie in 1..{self.T}, got {keep_t.tolist()}")
        if (keep_t[1:] <= keep_t[:-1]).any():
            raise ScheduleError("respaced steps must be strictly increasing")
        ab = self.alpha_bar[keep_t - 1]
        return Schedule(
            betas_from_alpha_bar(ab, max_beta=1.0),
            timesteps=self.timesteps[keep_t - 1],
            allow_zero_terminal_snr=self.allow_zero_terminal_snr,
        )

    def spaced(self, n: int) -> "Schedule":
        """Respace to ``n`` evenly spaced steps that end at T (improved-diffusion's ``space_timesteps``)."""
        if n < 1 or n > self.T:
            raise ScheduleError(f"cannot respace {self.T} steps to {n}; choose 1 ≤ n ≤ {self.T}")
        keep = torch.round(torch.linspace(self.T, 1, n, dtype=F64)).long().flip(0)
        keep = torch.unique(keep)
        return self.respace(keep)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous step index t(σ) ∈ [1, T] by linear interpolation of log σ_t (k-diffusion's view).

        At the table's σ_t it returns the original step ``timesteps[t-1]`` exactly.
        """
        log_sig = self.sigmas.log().to(sigma.device)
        ts = self.timesteps.to(device=sigma.device, dtype=F64)
        s = sigma.to(F64).log().clamp(log_sig[0], log_sig[-1])
        idx = torch.searchsorted(log_sig, s.contiguous()).clamp(1, len(log_sig) - 1)
        lo, hi = log_sig[idx - 1], log_sig[idx]
        w = torch.where(hi > lo, (s - lo) / (hi - lo), torch.ones_like(s))
        out = ts[idx - 1] + w * (ts[idx] - ts[idx - 1]) if len(log_sig) > 1 else ts[0].expand_as(s)
        return out.to(sigma.dtype)

    def to_config(self) -> dict:
        return {"betas": self.betas.tolist(), "timesteps": self.timesteps.tolist()}


def _validate_betas(betas: torch.Tensor, allow_zero_terminal_snr: bool) -> None:
    if betas.ndim != 1 or betas.numel() < 1:
        raise ScheduleError("betas must be a non-empty 1-D sequence (T ≥ 1)")
    if torch.isnan(betas).any() or torch.isinf(betas).any():
        raise ScheduleError("betas contain NaN or inf")
    if (betas <= 0).any():
        raise ScheduleError(f"every β_t must be > 0; smallest is {betas.min().item():.3g}")
    if (betas > 1).any():
        raise ScheduleError(f"every β_t must be ≤ 1; largest is {betas.max().item():.3g}")
    if (betas[:-1] >= 1).any():
        raise ScheduleError("only the last step may have β_T = 1 (zero terminal SNR); an earlier β_t = 1")
    if betas[-1] >= 1 and not allow_zero_terminal_snr:
        raise ScheduleError(
            "β_T = 1 gives zero terminal SNR, which only x0- or v-prediction can use; "
            "pass allow_zero_terminal_snr=True with such a model"
        )


def _schedule_from_alpha_bar(alpha_bar: Sequence[float] | torch.Tensor, **kw) -> Schedule:
    ab = torch.as_tensor(alpha_bar, dtype=F64).flatten()
    if ab.numel() < 1:
        raise ScheduleError("alpha_bar must be non-empty (T ≥ 1)")
    if torch.isnan(ab).any():
        raise ScheduleError("alpha_bar contains NaN")
    if (ab > 1).any() or (ab < 0).any():
        raise ScheduleError("every ᾱ_t must lie in [0, 1]")
    prev = torch.cat([torch.ones(1, dtype=F64), ab[:-1]])
    if (ab >= prev).any():
        raise ScheduleError("ᾱ_t must be strictly decreasing in t (and below 1 at t = 1)")
    return Schedule(1 - ab / prev, **kw)


SCHEDULES = ("linear", "exponential", "constant", "cosine", "sigmoid", "betas", "alpha_bar")


def make_schedule(name: str = "linear", T: int = 1000, **kw) -> Schedule:
    """Build a :class:`Schedule` by name.

    - ``linear``/``exponential``: ``beta_start``, ``beta_end`` (default DDPM 1e-4 → 0.02; pass
      ``scale_to_T=True`` to scale that range by 1000/T as in improved-diffusion);
    - ``constant``: ``beta``; ``cosine``: ``s``, β clipped at ``max_beta`` (0.999);
    - ``sigmoid``: ``start``, ``end``, ``tau`` (Jabri et al. 2022);
    - ``betas``: ``betas=[...]``; ``alpha_bar``: ``alpha_bar=[...]`` (user-given tables).
    """
    allow = kw.pop("allow_zero_terminal_snr", False)
    if name in ("linear", "exponential"):
        if kw.pop("scale_to_T", False):
            scale = 1000 / T
            kw.setdefault("beta_start", 1e-4 * scale)
            kw.setdefault("beta_end", 0.02 * scale)
        fn = linear_betas if name == "linear" else exponential_betas
        return Schedule(fn(T, **kw), allow_zero_terminal_snr=allow)
    if name == "constant":
        return Schedule(constant_betas(T, **kw), allow_zero_terminal_snr=allow)
    if name in ("cosine", "sigmoid"):
        max_beta = kw.pop("max_beta", 0.999)
        ab = cosine_alpha_bar(T, **kw) if name == "cosine" else sigmoid_alpha_bar(T, **kw)
        return Schedule(betas_from_alpha_bar(ab, max_beta), allow_zero_terminal_snr=allow)
    if name == "betas":
        return Schedule(torch.as_tensor(kw["betas"], dtype=F64), allow_zero_terminal_snr=allow)
    if name == "alpha_bar":
        return _schedule_from_alpha_bar(kw["alpha_bar"], allow_zero_terminal_snr=allow)
    raise ScheduleError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
