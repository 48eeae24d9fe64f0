"""Samplers: pure functions ``sample_<name>(denoiser, x, sigmas, *, generator=None, callback=None, ...)``.

:data:`SAMPLERS` maps names to them and :func:`sample` dispatches by name (see
:mod:`undiffuse.samplers.registry` for the table of algorithms and evaluation counts);
:mod:`undiffuse.samplers.likelihood` gives the probability-flow ODE log-likelihood.
"""

from undiffuse.samplers.common import Counted, randn_like, to_d
from undiffuse.samplers.ddpm import ancestral_step, sample_ddim, sample_ddpm, schedule_from_sigmas
from undiffuse.samplers.dpmsolver import sample_dpmpp_2m, sample_dpmpp_3m
from undiffuse.samplers.heun import sample_heun
from undiffuse.samplers.likelihood import dequantized_pf_ode_bpd, pf_ode_nll
from undiffuse.samplers.registry import (
    SAMPLERS,
    USES_LEARNED_VARIANCE,
    expected_nfe,
    has_learned_variance,
    sample,
    sample_euler,
    sample_euler_ancestral,
)
from undiffuse.samplers.unipc import sample_unipc

__all__ = [
    "SAMPLERS",
    "USES_LEARNED_VARIANCE",
    "Counted",
    "ancestral_step",
    "dequantized_pf_ode_bpd",
    "expected_nfe",
    "has_learned_variance",
    "pf_ode_nll",
    "randn_like",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_3m",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_unipc",
    "schedule_from_sigmas",
    "to_d",
]
