"""Adapters: foreign checkpoints as undiffuse denoisers, converted at the boundary so that no sampler
ever sees integer timesteps or ᾱ.

- :func:`load_diffusers_unet`: a diffusers ``UNet2DModel`` saved with ``save_pretrained``
  (safetensors only) plus its DDPM/DDIM scheduler config → ``(denoiser, Schedule)``.
- :class:`DenoiserAsEpsModel`: the other way round, an undiffuse denoiser as ``model(x_t, t) → ε``
  for diffusers' schedulers (used by the quality benchmark).

diffusers is an optional extra (``pip install 'undiffuse[bench]'``); it is imported only when an
adapter is used.
"""

from undiffuse.adapters.diffusers import (
    DenoiserAsEpsModel,
    DiffusersPrecond,
    DiffusersUNet,
    diffusers_betas,
    load_diffusers_unet,
    require_diffusers,
    schedule_from_scheduler_config,
)

__all__ = [
    "DenoiserAsEpsModel",
    "DiffusersPrecond",
    "DiffusersUNet",
    "diffusers_betas",
    "load_diffusers_unet",
    "require_diffusers",
    "schedule_from_scheduler_config",
]
