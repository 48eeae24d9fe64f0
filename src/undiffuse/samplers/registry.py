"""All samplers by name, one dispatcher, and what each needs from the model.

| name | algorithm | NFE for N steps (grid ending at 0) | stochastic |
|---|---|---|---|
| ``ddpm`` | ancestral sampling, Ho et al. 2020 Alg. 2 (fixed-small, fixed-large or learned Σ) | N | yes |
| ``ddim`` | Song et al. 2021 Eq. 12, η ∈ [0, 1] | N | if η > 0 |
| ``euler`` | = ``ddim`` with η = 0 (Euler on the PF-ODE in σ) | N | no |
| ``euler_ancestral`` | = ``ddim`` with η = 1 by default | N | yes |
| ``heun`` | Karras et al. 2022 Alg. 2, optional churn; Euler on steps with σ_i/σ_{i+1} > 10 | 2N − 1 (fewer with such steps) | if S_churn > 0 |
| ``dpmpp_2m`` / ``dpmpp_3m`` | Lu et al. 2022 (DPM-Solver++) multistep | N | no |
| ``unipc`` | Zhao et al. 2023 UniP-2 + UniC, B(h) = expm1(h) | N | no |

Every sampler takes any ε / x_0 / v / EDM model through the denoiser interface D(x; σ) → x̂_0.
Only ``ddpm`` can use a learned variance Σ_θ (Nichol & Dhariwal 2021): the σ-space samplers step
along the probability-flow ODE or its ancestral variant whose noise is fixed by the grid, so they
use the model's mean (x̂_0) alone; :func:`sample` warns when a learned variance is being ignored.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch

from undiffuse.samplers.common import Generators
from undiffuse.samplers.ddpm import sample_ddim, sample_ddpm
from undiffuse.samplers.dpmsolver import sample_dpmpp_2m, sample_dpmpp_3m
from undiffuse.samplers.heun import MAX_RATIO, corrected_steps, sample_heun
from undiffuse.samplers.unipc import sample_unipc

__all__ = [
    "SAMPLERS",
    "USES_LEARNED_VARIANCE",
    "expected_nfe",
    "has_learned_variance",
    "sample",
    "sample_euler",
    "sample_euler_ancestral",
]


def sample_euler(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
) -> torch.Tensor:
    """Euler on dx/dσ = (x − D)/σ (Karras et al. 2022, Alg. 1): exactly DDIM with η = 0."""
    return sample_ddim(denoiser, x, sigmas, eta=0.0, generator=generator, callback=callback, cond=cond)


def sample_euler_ancestral(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    eta: float = 1.0,
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
) -> torch.Tensor:
    """Euler-ancestral: an Euler step to σ_down then fresh noise σ_up, which is DDIM with η (default 1)."""
    return sample_ddim(denoiser, x, sigmas, eta=eta, generator=generator, callback=callback, cond=cond)


SAMPLERS: dict[str, Callable] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_3m": sample_dpmpp_3m,
    "unipc": sample_unipc,
}

#: Which samplers read Σ_θ of a learned-variance model; all others use the model's mean only.
USES_LEARNED_VARIANCE = {name: name == "ddpm" for name in SAMPLERS}


def expected_nfe(name: str, sigmas: torch.Tensor, max_ratio: float = MAX_RATIO) -> int:
    """The number of denoiser evaluations ``name`` makes on the grid ``sigmas`` (see the table above)."""
    n = len(sigmas) - 1
    if name != "heun":
        return n
    return n + sum(corrected_steps(sigmas, max_ratio))


def has_learned_variance(denoiser: Callable) -> bool:
    """True when the denoiser (or one it wraps, e.g. in :class:`Counted`) has ``learned_variance``."""
    seen = 0
    while denoiser is not None and seen < 16:
        if getattr(denoiser, "learned_variance", False):
            return True
        denoiser, seen = getattr(denoiser, "denoiser", None), seen + 1
    return False


def sample(name: str, denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, **kw) -> torch.Tensor:
    """Run the sampler ``name`` (a key of :data:`SAMPLERS`) with the common keyword arguments.

    For a learned-variance model, ``ddpm`` samples with Σ_θ (``var_type='learned'`` unless given);
    every other sampler warns once and uses the model's mean x̂_0.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if has_learned_variance(denoiser):
        if USES_LEARNED_VARIANCE[name]:
            kw.setdefault("var_type", "learned")
        else:
            warnings.warn(
                f"sampler {name!r} works in σ-space and cannot use the model's learned variance; "
                "it uses the model's mean (x̂_0) only. Use 'ddpm' to sample with Σ_θ.",
                stacklevel=2,
            )
    return SAMPLERS[name](denoiser, x, sigmas, **kw)
