"""The Gaussian diffusion process: forward q, posterior, reverse p_θ, and the denoiser interface."""

from undiffuse.diffusion.precond import (
    PARAMETERIZATIONS,
    Denoiser,
    DenoiserOutput,
    Precond,
    denoise,
    precond_coefficients,
)
from undiffuse.diffusion.process import (
    extract,
    q_mean_variance,
    q_posterior_mean_variance,
    q_sample,
    q_step,
    ve_to_vp,
    vp_to_ve,
)
from undiffuse.diffusion.reverse import (
    VAR_TYPES,
    ReverseStep,
    clip_denoised,
    dynamic_threshold,
    eps_from_x0,
    model_log_variance,
    mu_from_eps,
    p_mean_variance,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)

__all__ = [
    "PARAMETERIZATIONS",
    "VAR_TYPES",
    "Denoiser",
    "DenoiserOutput",
    "Precond",
    "ReverseStep",
    "clip_denoised",
    "denoise",
    "dynamic_threshold",
    "eps_from_x0",
    "extract",
    "model_log_variance",
    "mu_from_eps",
    "p_mean_variance",
    "precond_coefficients",
    "q_mean_variance",
    "q_posterior_mean_variance",
    "q_sample",
    "q_step",
    "v_from_x0_eps",
    "ve_to_vp",
    "vp_to_ve",
    "x0_from_eps",
    "x0_from_v",
]
