"""Adapters: foreign checkpoints as undiffuse denoisers, converted at the boundary so that no sampler
ever sees integer timesteps or ᾱ.

- :func:`load_diffusers_unet`: a diffusers ``UNet2DModel`` saved with ``save_pretrained``
  (safetensors only) plus its DDPM/DDIM scheduler config → ``(denoiser, Schedule)``.

diffusers is an optional extra (``pip install 'undiffuse[bench]'``); it is imported only when an
adapter is used.
"""

from undiffuse.adapters.diffusers import (
    DiffusersPrecond,
    DiffusersUNet,
    diffusers_betas,
    load_diffusers_unet,
    require_diffusers,
    schedule_from_scheduler_config,
)

__all__ = [
    "DiffusersPrecond",
    "DiffusersUNet",
    "diffusers_betas",
    "load_diffusers_unet",
    "require_diffusers",
    "schedule_from_scheduler_config",
]
