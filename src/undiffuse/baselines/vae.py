"""VAE baselines (Kingma & Welling 2014) with the diffusion VLB's decoders, so bits/dim compare.

Model: p(z) = N(0, I), q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x)), p_θ(x|z) a per-dimension Gaussian
N(m_θ(z), s_θ(z)²) that is either

- *discretized* over the 256 bins of 8-bit data in [−1, 1] (``likelihood="discrete"``; the decoder
  L_0 of Ho et al. 2020, Eq. 13, i.e. :func:`undiffuse.losses.vlb.discretized_gaussian_log_likelihood`),
  giving discrete bits/dim ≥ 0 that compare with the diffusion VLB on the same data, or
- a density (``likelihood="continuous"``; :func:`undiffuse.losses.vlb.gaussian_log_likelihood`), for
  continuous data (2-D toys), giving continuous bits/dim that may be negative.

Bounds, per example in nats (both ≤ log p(x)):

- ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))  (Kingma & Welling 2014, Eq. 3; KL in closed form),
- IWAE_k = E[log (1/k) Σ_j p(x, z_j)/q(z_j|x)], z_j ~ q (Burda et al. 2016, Eq. 8); IWAE_1 is the
  ELBO, and IWAE_k increases with k towards log p(x).

Networks: for images the DCGAN stacks of :mod:`undiffuse.baselines.gan` (encoder and decoder without
normalisation, so every bound is per example); for vectors MLPs with SiLU.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from undiffuse.baselines.gan import ConvDecoder, ConvEncoder, mlp
from undiffuse.losses.vlb import (
    DECODERS,
    bits_per_dim,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    mean_flat_sum,
    normal_kl,
)

__all__ = ["VAE", "build_vae"]

LOG_2PI = math.log(2 * math.pi)


def _log_normal(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag e^{logvar}) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * torch.exp(-logvar)).sum(-1)


class VAE(nn.Module):
    """A Gaussian-latent VAE whose bounds are in the same units as the diffusion VLB.

    Args:
        encoder: x [B, *data_shape] → [B, 2·z_dim] = (μ, log σ²) of q(z|x).
        decoder: z [B, z_dim] → [B, 2·C, ...] = (mean, log scale) of p(x|z), split along dim 1.
        z_dim: latent width.
        data_shape: shape of one example, (C, H, W) or (D,).
        likelihood: "discrete" (8-bit data in [−1, 1]) or "continuous".
        bins: levels of the discrete data (256 for 8 bits).
        min_log_scale: lower clamp of the decoder's log scale (σ ≥ e^{−7}), so a continuous density
            cannot collapse onto a point and a discrete one keeps gradients.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        z_dim: int,
        data_shape: Sequence[int],
        likelihood: str = "discrete",
        bins: int = 256,
        min_log_scale: float = -7.0,
    ) -> None:
        super().__init__()
        if likelihood not in DECODERS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {DECODERS}")
        self.encoder, self.decoder = encoder, decoder
        self.z_dim, self.data_shape = z_dim, tuple(data_shape)
        self.likelihood, self.bins, self.min_log_scale = likelihood, bins, min_log_scale

    @property
    def dims(self) -> int:
        """Dimensions per example (the denominator of bits/dim)."""
        return math.prod(self.data_shape)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): (μ [B, z_dim], log σ² [B, z_dim])."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(x|z): (mean, log scale), each [B, *data_shape]."""
        mean, log_scale = self.decoder(z).chunk(2, dim=1)
        return mean, log_scale.clamp(min=self.min_log_scale)

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example [B] in nats (discretized or continuous Gaussian decoder)."""
        mean, log_scale = self.decode(z)
        if self.likelihood == "discrete":
            ll = discretized_gaussian_log_likelihood(x, mean, log_scale, bins=self.bins)
        else:
            ll = gaussian_log_likelihood(x, mean, 2.0 * log_scale)
        return mean_flat_sum(ll)

    def _noise(self, shape, ref: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        dev = generator.device if generator is not None else ref.device
        return torch.randn(shape, generator=generator, device=dev, dtype=ref.dtype).to(ref.device)

    def _draws(
        self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, k: int,
        generator: Optional[torch.Generator], chunk: int,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
        """k reparameterised draws z = μ + σ·ε ~ q(z|x), ``chunk`` at a time: (z [c, B, z_dim],
        log p(x|z) [c, B])."""
        B = x.shape[0]
        for start in range(0, k, chunk):
            c = min(chunk, k - start)
            z = mu + torch.exp(0.5 * logvar) * self._noise((c, *mu.shape), mu, generator)  # [c, B, z_dim]
            x_rep = x.unsqueeze(0).expand(c, *x.shape).reshape(c * B, *x.shape[1:])
            yield z, self.log_px_given_z(x_rep, z.reshape(c * B, -1)).view(c, B)

    def elbo(
        self, x: torch.Tensor, n_samples: int = 1, generator: Optional[torch.Generator] = None,
        chunk: int = 64,
    ) -> torch.Tensor:  # fmt: skip
        """ELBO per example [B] in nats: the mean of log p(x|z) over ``n_samples`` draws z ~ q(z|x),
        minus KL(q(z|x) ‖ N(0, I)) in closed form (Kingma & Welling 2014, Eq. 10)."""
        mu, logvar = self.encode(x)
        kl = normal_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar)).sum(1)  # [B]
        rec = sum(ll.sum(0) for _, ll in self._draws(x, mu, logvar, n_samples, generator, chunk))
        return rec / n_samples - kl

    def iwae(
        self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None, chunk: int = 64
    ) -> torch.Tensor:
        """The importance-weighted bound IWAE_k per example [B] in nats (Burda et al. 2016, Eq. 8):
        log (1/k) Σ_j w_j with w_j = p(x|z_j) p(z_j) / q(z_j|x), z_j ~ q(z|x); ``chunk`` draws at a time."""
        mu, logvar = self.encode(x)
        zero = torch.zeros_like(mu)
        log_w = [ll + _log_normal(z, zero, zero) - _log_normal(z, mu, logvar)  # [c, B]
                 for z, ll in self._draws(x, mu, logvar, k, generator, chunk)]  # fmt: skip
        return torch.logsumexp(torch.cat(log_w, 0), dim=0) - math.log(k)

    def bits_per_dim(
        self, x: torch.Tensor, k: int = 1, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Upper bound on −log₂ p(x) per dimension [B]: from the ELBO (k = 1) or IWAE_k (k > 1).
        Discrete bits/dim for ``likelihood="discrete"``, continuous otherwise."""
        bound = self.elbo(x, generator=generator) if k == 1 else self.iwae(x, k, generator)
        return bits_per_dim(-bound, self.dims)

    def loss(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Training loss: the batch mean of −ELBO per dimension (nats/dim), one draw of z."""
        return -self.elbo(x, generator=generator).mean() / self.dims

    def sample(self, z: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x from latents z [B, z_dim]: the decoder mean, plus ``noise`` [B, *data_shape] times the
        decoder scale when given (a full draw from p(x|z))."""
        mean, log_scale = self.decode(z)
        return mean if noise is None else mean + torch.exp(log_scale) * noise


def build_vae(
    data_kind: str,
    data_shape: Sequence[int],
    likelihood: str = "discrete",
    *,
    width: int | None = None,
    z_dim: int | None = None,
    depth: int = 3,
    bins: int = 256,
    init_log_scale: float | None = None,
) -> VAE:
    """The baseline VAE for a data kind.

    Args:
        data_kind: "image" (data_shape = (C, H, W)) → convolutional; "vector" (data_shape = (D,)) → MLP.
        likelihood: "discrete" (8-bit data) or "continuous".
        width: images: channel width at full resolution (default 64); vectors: hidden units (default 256).
        z_dim: latent width (default 32 for images, 2 for vectors).
        depth: hidden layers of each MLP (vectors only).
        bins: levels of the discrete data.
        init_log_scale: initial decoder log scale (the bias of its scale outputs; default −2 for
            images, −1 for vectors), so Adam does not spend its first thousands of steps shrinking σ
            from e⁰ = 1 (a 2-unit move at lr 1e-3 takes ~2,000 steps).
    """
    if data_kind == "image":
        c, size = data_shape[0], tuple(data_shape[1:])
        width, z_dim = width or 64, z_dim or 32
        enc = ConvEncoder(size, c, 2 * z_dim, width, norm="none")
        dec = ConvDecoder(size, z_dim, 2 * c, width, norm="none", final="none")
        out_layer, default_log_scale = dec.body[-1], -2.0
    elif data_kind == "vector":
        (dim,) = data_shape
        width, z_dim = width or 256, z_dim or 2
        enc = mlp(dim, 2 * z_dim, width, depth, "silu")
        dec = mlp(z_dim, 2 * dim, width, depth, "silu")
        out_layer, default_log_scale = dec[-1], -1.0
    else:
        raise ValueError(f"unknown data kind {data_kind!r}; choose 'image' or 'vector'")
    with torch.no_grad():  # the second half of the decoder's outputs is the log scale
        half = out_layer.bias.shape[0] // 2
        out_layer.bias[half:] = default_log_scale if init_log_scale is None else init_log_scale
    return VAE(enc, dec, z_dim, data_shape, likelihood, bins)
