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
| ``multinomial`` | DDPM on numbers + multinomial diffusion on one-hot blocks (TabDDPM; tables) | N | yes |
| ``consistency`` | Song et al. 2023 Alg. 1, multistep consistency sampling (a consistency model's f_θ) | N | yes |

Every sampler takes any ε / x_0 / v / EDM model through the denoiser interface D(x; σ) → x̂_0.
Only ``ddpm`` can use a learned variance Σ_θ (Nichol & Dhariwal 2021): the σ-space samplers step
along the probability-flow ODE or its ancestral variant whose noise is fixed by the grid, so they
use the model's mean (x̂_0) alone; :func:`sample` warns when a learned variance is being ignored.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch

from undiffuse.errors import ConfigError
from undiffuse.samplers.common import Generators
from undiffuse.samplers.consistency import sample_consistency
from undiffuse.samplers.ddpm import sample_ddim, sample_ddpm
from undiffuse.samplers.dpmsolver import sample_dpmpp_2m, sample_dpmpp_3m
from undiffuse.samplers.heun import MAX_RATIO, corrected_steps, sample_heun
from undiffuse.samplers.mixed import sample_multinomial
from undiffuse.samplers.unipc import sample_unipc

__all__ = [
    "SPECS",
    "SamplerSpec",
    "SAMPLERS",
    "default_grid",
    "resolve_options",
    "spec",
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


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: its function, the options it declares (name → default), whether it reads a learned
    Σ_θ, the σ grid it uses by default (:func:`undiffuse.schedules.grids.make_sigmas` names), and what its
    callable must be: ``model="denoiser"`` D(x; σ) = E[x_0|x], or ``"consistency"`` a consistency function
    f_θ(x, σ), the origin of x's probability-flow ODE trajectory (Song et al. 2023; a distilled student), or
    ``"mixed"`` a denoiser of rows of numbers then one-hot blocks (tables: :mod:`undiffuse.diffusion.mixed`)."""

    fn: Callable
    options: Mapping[str, Any] = field(default_factory=dict)
    learned_variance: bool = False
    grid: str = "uniform"
    model: str = "denoiser"


#: The one registry: every name the API, CLI, bench and evaluation accept.
SPECS: dict[str, SamplerSpec] = {
    # grid=: each sampler's default grid, the lowest 10-step error on the 25-Gaussian oracle under the cosine
    # and linear schedules (benchmarks/sampler_grids.py; table and rule in benchmarks/README.md)
    "ddpm": SamplerSpec(sample_ddpm, {"var_type": "fixed_small"}, learned_variance=True, grid="trailing"),
    "ddim": SamplerSpec(sample_ddim, {"eta": 0.0}, grid="leading"),
    "euler": SamplerSpec(sample_euler, grid="leading"),
    "euler_ancestral": SamplerSpec(sample_euler_ancestral, {"eta": 1.0}, grid="trailing"),
    "heun": SamplerSpec(sample_heun, {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0,
                                      "max_ratio": MAX_RATIO}, grid="leading"),  # fmt: skip
    "dpmpp_2m": SamplerSpec(sample_dpmpp_2m, {"lower_order_final": True}, grid="trailing"),
    "dpmpp_3m": SamplerSpec(sample_dpmpp_3m, {"lower_order_final": True}, grid="trailing"),
    "unipc": SamplerSpec(sample_unipc, {"order": 2, "corrector": True, "lower_order_final": True}, grid="trailing"),
    # mixed rows (the "mixed" process of tables): categories = the one-hot block sizes; trailing starts at t = T
    "multinomial": SamplerSpec(sample_multinomial, {"categories": ()}, grid="trailing", model="mixed"),
    # for consistency models (a distilled student's f_θ): trailing starts at σ_T, the σ the student was trained at
    "consistency": SamplerSpec(sample_consistency, {"sigma_min": 0.0}, grid="trailing", model="consistency"),
}

#: name → function (derived from :data:`SPECS`).
SAMPLERS: dict[str, Callable] = {name: spec.fn for name, spec in SPECS.items()}

#: Which samplers read Σ_θ of a learned-variance model; all others use the model's mean only.
USES_LEARNED_VARIANCE = {name: spec.learned_variance for name, spec in SPECS.items()}


def spec(name: str) -> SamplerSpec:
    """The :class:`SamplerSpec` of ``name`` (ConfigError naming the choices for an unknown one)."""
    if name not in SPECS:
        raise ConfigError(f"unknown sampler {name!r} — choose one of {', '.join(SPECS)}")
    return SPECS[name]


def default_grid(name: str) -> str:
    """The σ grid ``name`` samples on when the user names none."""
    return spec(name).grid


def resolve_options(name: str, **given: Any) -> dict[str, Any]:
    """The options to pass to sampler ``name``: those ``given`` that are not None. An option the sampler
    does not declare is refused (ConfigError), so ``--eta`` never silently does nothing."""
    declared = spec(name).options
    chosen = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(chosen) - set(declared))
    if unknown:
        opts = ", ".join(declared) if declared else "none"
        raise ConfigError(f"sampler {name!r} has no option {', '.join(unknown)} (its options: {opts}) — drop it "
                          "or choose a sampler that takes it")  # fmt: skip
    return chosen


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


def sample(name: str, denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
           generator: Generators = None, callback: Optional[Callable] = None, cond: Optional[dict] = None,
           **options: Any) -> torch.Tensor:  # fmt: skip
    """Run the sampler ``name`` (a key of :data:`SPECS`) with the common keyword arguments and its
    declared ``options`` (None values are dropped: the sampler's default applies; undeclared ones are
    refused).

    For a learned-variance model, ``ddpm`` samples with Σ_θ (``var_type='learned'`` unless given);
    every other sampler warns once and uses the model's mean x̂_0.
    """
    kw = resolve_options(name, **options)
    if has_learned_variance(denoiser):
        if USES_LEARNED_VARIANCE[name]:
            kw.setdefault("var_type", "learned")
        else:
            warnings.warn(
                f"sampler {name!r} works in σ-space and cannot use the model's learned variance; "
                "it uses the model's mean (x̂_0) only. Use 'ddpm' to sample with Σ_θ.",
                stacklevel=2,
            )
    return SAMPLERS[name](denoiser, x, sigmas, generator=generator, callback=callback, cond=cond, **kw)
