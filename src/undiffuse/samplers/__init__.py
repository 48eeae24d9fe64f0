"""Samplers: pure functions ``sample_<name>(denoiser, x, sigmas, *, generator=None, callback=None, ...)``."""

from undiffuse.samplers.common import Counted, randn_like, to_d
from undiffuse.samplers.ddpm import ancestral_step, sample_ddim, sample_ddpm, schedule_from_sigmas

__all__ = [
    "Counted",
    "ancestral_step",
    "randn_like",
    "sample_ddim",
    "sample_ddpm",
    "schedule_from_sigmas",
    "to_d",
]
