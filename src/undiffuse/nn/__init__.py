"""Networks ``net(x_in, c_noise, **cond) -> Tensor``: the DDPM U-Net and a residual MLP.

Networks never see a schedule; ``c_noise`` [B] is whatever the preconditioner feeds them (1000·t/T
for VP models, ln(σ)/4 for EDM). ``UNET_PRESETS`` holds keyword sets for :class:`UNet`; override a
field with ``UNet(**{**UNET_PRESETS[name], "out_channels": 2})`` (e.g. for a learned variance).

| preset | data | parameters | notes |
|---|---|---|---|
| ``ddpm-cifar10`` | 32×32×3 | 35,746,307 | Ho et al. (2020), Appendix B, exactly |
| ``fmnist-small`` | 28×28×1 | 1,623,169 | CPU preset: ≈130 img/s forward+backward at batch 64 on 2 cores |
| ``tiny`` | 8×8×1 | 176,849 | for tests on the 8×8 digits |
"""

from __future__ import annotations

from undiffuse.nn.embeddings import TimestepEmbedding, group_norm, num_groups_for, timestep_embedding
from undiffuse.nn.mlp import MLP, MLPConfig
from undiffuse.nn.unet import UNet, UNetConfig

__all__ = [
    "MLP",
    "MLPConfig",
    "UNET_PRESETS",
    "TimestepEmbedding",
    "UNet",
    "UNetConfig",
    "group_norm",
    "num_groups_for",
    "timestep_embedding",
]

UNET_PRESETS: dict[str, dict] = {
    # Ho et al. (2020), CIFAR-10: 35.7 M parameters.
    "ddpm-cifar10": dict(
        in_channels=3, out_channels=3, base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
        attn_resolutions=(16,), dropout=0.1, num_groups=32, image_size=32,
    ),
    # Fashion-MNIST on a 2-core CPU: widths 32/64/64 at 28/14/7, attention at 7×7 only.
    "fmnist-small": dict(
        in_channels=1, out_channels=1, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
        attn_resolutions=(7,), dropout=0.1, num_groups=8, image_size=28,
    ),
    # Unit tests on 8×8 digits: widths 16/32 at 8/4, attention at 4×4.
    "tiny": dict(
        in_channels=1, out_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
        attn_resolutions=(4,), dropout=0.0, num_groups=4, image_size=8,
    ),
}  # fmt: skip
