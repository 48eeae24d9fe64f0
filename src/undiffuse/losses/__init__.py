"""Losses: the variational bound (Gaussian KL terms, decoders, bits/dim) and denoising losses."""

from undiffuse.losses.denoising import (
    WEIGHTINGS,
    ImportanceSampler,
    denoising_loss,
    hybrid_loss,
    mean_flat,
    sample_t,
    x0_weight,
)
from undiffuse.losses.edm import edm_loss, edm_sigma
from undiffuse.losses.vlb import (
    DECODERS,
    VLBResult,
    bits_per_dim,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    normal_kl,
    prior_kl,
    vlb_full,
    vlb_term,
)

__all__ = [
    "edm_loss",
    "edm_sigma",
    "DECODERS",
    "WEIGHTINGS",
    "ImportanceSampler",
    "VLBResult",
    "bits_per_dim",
    "denoising_loss",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_likelihood",
    "hybrid_loss",
    "mean_flat",
    "normal_kl",
    "prior_kl",
    "sample_t",
    "vlb_full",
    "vlb_term",
    "x0_weight",
]
