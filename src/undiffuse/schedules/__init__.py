"""Noise schedules: discrete β tables (float64), respacing, and sampling grids in σ."""

from undiffuse.schedules.discrete import (
    SCHEDULES,
    Schedule,
    ScheduleError,
    betas_from_alpha_bar,
    constant_betas,
    cosine_alpha_bar,
    exponential_betas,
    linear_betas,
    make_schedule,
    sigmoid_alpha_bar,
)
from undiffuse.schedules.grids import (
    GRIDS,
    SPACINGS,
    append_zero,
    discrete_sigmas,
    discrete_steps,
    karras_sigmas,
    logsnr_sigmas,
    make_sigmas,
)

__all__ = [
    "GRIDS",
    "karras_sigmas",
    "logsnr_sigmas",
    "make_sigmas",
    "SPACINGS",
    "append_zero",
    "discrete_sigmas",
    "discrete_steps",
    "SCHEDULES",
    "Schedule",
    "ScheduleError",
    "betas_from_alpha_bar",
    "constant_betas",
    "cosine_alpha_bar",
    "exponential_betas",
    "linear_betas",
    "make_schedule",
    "sigmoid_alpha_bar",
]
