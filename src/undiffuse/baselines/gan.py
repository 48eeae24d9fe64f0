"""GAN baselines: a DCGAN for images and an MLP GAN for 2-D data, with the non-saturating loss.

- Images (Radford et al. 2016, "DCGAN"): the generator projects z to a small feature map, doubles it
  with stride-2 transposed convolutions (BatchNorm + ReLU) and ends in a 3×3 convolution and tanh; the
  discriminator mirrors it with stride-2 convolutions (BatchNorm + LeakyReLU 0.2, none on the first
  layer) and a linear read-out. Any size ≥ 8 works: the base map is ⌈H/2ⁿ⌉ × ⌈W/2ⁿ⌉ and the output is
  centre-cropped to H × W (28 → 7·2·2 = 28 exactly; 8 → 4·2). Weights start at N(0, 0.02) as in DCGAN.
- 2-D data (the setup of VEEGAN, Srivastava et al. 2017, and PacGAN, Lin et al. 2018): an MLP generator
  (ReLU, BatchNorm as in PacGAN) and an MLP discriminator with maxout units. ``pack > 1`` gives PacGAN:
  the discriminator judges ``pack`` samples concatenated, which penalises mode collapse.

The losses are the non-saturating ones of Goodfellow et al. (2014):
L_D = −log σ(D(x)) − log(1 − σ(D(G(z)))) and L_G = −log σ(D(G(z))), written with softplus.
The convolutional stacks are shared with the VAE (:mod:`undiffuse.baselines.vae`).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "GAN",
    "Maxout",
    "build_gan",
    "dcgan_init_",
    "mlp",
    "num_levels",
]

Size = Union[int, Sequence[int]]


def _hw(image_size: Size) -> tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(h, w) < 8:
        raise ValueError(f"image size must be at least 8×8, got {h}×{w}")
    return int(h), int(w)


def num_levels(image_size: Size) -> int:
    """Stride-2 levels n so that the base map ⌈size/2ⁿ⌉ is 4..7 pixels: 8 → 1, 28 → 2, 32 → 3, 64 → 4."""
    return max(1, int(math.floor(math.log2(min(_hw(image_size)) / 4))))


def _norm2d(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose 'batch' or 'none'")


class ConvDecoder(nn.Module):
    """z [B, z_dim] → image [B, out_channels, H, W] (the DCGAN generator body).

    Linear(z) → (width·2ⁿ, ⌈H/2ⁿ⌉, ⌈W/2ⁿ⌉) → n × [ConvTranspose 4×4 stride 2, halving channels, norm,
    ReLU] → Conv 3×3 → centre crop to H × W → ``final`` (tanh for a GAN, none for a VAE).
    """

    def __init__(
        self, image_size: Size, z_dim: int, out_channels: int, width: int = 64, norm: str = "batch",
        final: str = "tanh",
    ) -> None:  # fmt: skip
        super().__init__()
        self.size, n = _hw(image_size), num_levels(image_size)
        self.base = (math.ceil(self.size[0] / 2**n), math.ceil(self.size[1] / 2**n))
        self.c0 = width * 2**n
        self.fc = nn.Linear(z_dim, self.c0 * self.base[0] * self.base[1])
        layers: list[nn.Module] = [_norm2d(norm, self.c0), nn.ReLU()]
        for k in range(n):
            cin, cout = width * 2 ** (n - k), width * 2 ** (n - k - 1)
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), _norm2d(norm, cout), nn.ReLU()]
        layers.append(nn.Conv2d(width, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        if final not in ("tanh", "none"):
            raise ValueError(f"unknown final activation {final!r}")
        self.final = final

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.c0, *self.base)  # [B, width·2ⁿ, h0, w0]
        h = self.body(h)  # [B, C, h0·2ⁿ, w0·2ⁿ]
        top, left = (h.shape[2] - self.size[0]) // 2, (h.shape[3] - self.size[1]) // 2
        h = h[:, :, top : top + self.size[0], left : left + self.size[1]]
        return torch.tanh(h) if self.final == "tanh" else h


class ConvEncoder(nn.Module):
    """image [B, in_channels, H, W] → [B, out_features] (the DCGAN discriminator body).

    Conv 3×3 → LeakyReLU(0.2) → n × [Conv 4×4 stride 2, doubling channels, norm, LeakyReLU(0.2)]
    → flatten → Linear. Stride 2 with padding 1 maps a side s to ⌊s/2⌋.
    """

    def __init__(
        self, image_size: Size, in_channels: int, out_features: int, width: int = 64, norm: str = "batch"
    ) -> None:
        super().__init__()
        (h, w), n = _hw(image_size), num_levels(image_size)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for k in range(n):
            cin, cout = width * 2**k, width * 2 ** (k + 1)
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), _norm2d(norm, cout), nn.LeakyReLU(0.2)]
            h, w = h // 2, w // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(width * 2**n * h * w, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013): the max over ``pieces`` affine maps, [B, in] → [B, out]."""

    def __init__(self, d_in: int, d_out: int, pieces: int) -> None:
        super().__init__()
        self.d_out, self.pieces = d_out, pieces
        self.linear = nn.Linear(d_in, d_out * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(x.shape[0], self.d_out, self.pieces).amax(-1)


def mlp(
    d_in: int, d_out: int, hidden: int, depth: int, act: str = "relu", norm: bool = False, maxout: int = 1
) -> nn.Sequential:
    """``depth`` hidden layers of ``hidden`` units, then a linear read-out.

    Args:
        act: "relu", "leaky_relu" (slope 0.2) or "silu"; ignored for maxout layers.
        norm: BatchNorm1d after each hidden linear layer (PacGAN's generator).
        maxout: pieces per maxout unit; 1 gives plain linear + ``act`` layers.
    """
    acts = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU}
    if act not in acts:
        raise ValueError(f"unknown activation {act!r}; choose one of {sorted(acts)}")
    layers: list[nn.Module] = []
    for i in range(depth):
        cin = d_in if i == 0 else hidden
        if maxout > 1:
            layers.append(Maxout(cin, hidden, maxout))
        else:
            layers += [nn.Linear(cin, hidden)] + ([nn.BatchNorm1d(hidden)] if norm else []) + [acts[act]()]
    layers.append(nn.Linear(d_in if depth == 0 else hidden, d_out))
    return nn.Sequential(*layers)


def dcgan_init_(module: nn.Module) -> nn.Module:
    """DCGAN initialisation: conv / linear weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class GAN(nn.Module):
    """A generator G(z) and a discriminator D(x) with the non-saturating losses.

    Args:
        generator: z [B, z_dim] → x [B, *data_shape] in data units.
        discriminator: packed x [B / pack, pack·C, ...] (images: channels concatenated; vectors:
            features concatenated) → logits [B / pack, 1].
        z_dim: latent width; z ~ N(0, I).
        pack: PacGAN packing degree (1 = an ordinary GAN).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, z_dim: int, pack: int = 1) -> None:
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.z_dim, self.pack = z_dim, pack

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): latents [B, z_dim] → samples in data units."""
        return self.generator(z)

    def _packed(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.pack:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of pack={self.pack}")
        b = x.shape[0] // self.pack
        # [B, C, ...] → [B/pack, pack·C, ...]: consecutive samples side by side along dim 1
        return x.reshape(b, self.pack * x.shape[1], *x.shape[2:])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """D's logits [B / pack] for a batch of samples."""
        return self.discriminator(self._packed(x)).reshape(-1)

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """L_D = E[softplus(−D(x))] + E[softplus(D(G(z)))] (G's output detached)."""
        return F.softplus(-self.logits(real)).mean() + F.softplus(self.logits(fake.detach())).mean()

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Non-saturating L_G = E[softplus(−D(G(z)))] = E[−log σ(D(G(z)))]."""
        return F.softplus(-self.logits(fake)).mean()


def build_gan(
    data_kind: str,
    data_shape: Sequence[int],
    *,
    width: int | None = None,
    z_dim: int | None = None,
    depth: int = 4,
    d_width: int | None = None,
    d_depth: int = 3,
    pack: int = 1,
    maxout: int = 5,
    norm: str = "batch",
) -> GAN:
    """The baseline GAN for a data kind.

    Args:
        data_kind: "image" (data_shape = (C, H, W)) → DCGAN; "vector" (data_shape = (D,)) → MLP GAN.
        width: images: the generator's channel width at full resolution (default 64); vectors: hidden
            units of the generator (default 400, as PacGAN).
        z_dim: latent width (default 100 for images as DCGAN, 2 for vectors as PacGAN).
        depth: hidden layers of the MLP generator (PacGAN: 4).
        d_width: the discriminator's width (default: ``width`` for images, 200 for vectors as PacGAN).
        d_depth: hidden layers of the MLP discriminator (PacGAN: 3).
        pack: PacGAN packing degree of the discriminator.
        maxout: pieces per maxout unit in the MLP discriminator (PacGAN: 5; 1 = LeakyReLU).
        norm: "batch" (DCGAN / PacGAN) or "none": BatchNorm in the generator and (images) discriminator.
    """
    if data_kind == "image":
        c = data_shape[0]
        width, z_dim = width or 64, z_dim or 100
        g = ConvDecoder(tuple(data_shape[1:]), z_dim, c, width, norm, "tanh")
        d = ConvEncoder(tuple(data_shape[1:]), c * pack, 1, d_width or width, norm)
        return GAN(dcgan_init_(g), dcgan_init_(d), z_dim, pack)
    if data_kind == "vector":
        (dim,) = data_shape
        width, z_dim = width or 400, z_dim or 2
        g = mlp(z_dim, dim, width, depth, "relu", norm == "batch")
        d = mlp(dim * pack, 1, d_width or 200, d_depth, "leaky_relu", maxout=maxout)
        return GAN(g, d, z_dim, pack)
    raise ValueError(f"unknown data kind {data_kind!r}; choose 'image' or 'vector'")
