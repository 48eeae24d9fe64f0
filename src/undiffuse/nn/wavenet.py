"""A waveform denoiser in the style of DiffWave (Kong et al. 2021, Sec. 3 and Fig. 2).

``WaveNet(x_in [B, L], c_noise [B], class_labels=None, mel=None) -> [B, L]``:

- a 1×1 convolution lifts the waveform to C residual channels (ReLU);
- N residual layers; layer i adds the diffusion-step embedding (projected per layer) to its input, applies a
  dilated kernel-3 convolution C → 2C with dilation 2^(i mod cycle), adds the conditioner (a class embedding
  projected to 2C, and/or the mel spectrogram upsampled to the waveform's rate by transposed convolutions
  and mapped 1×1 to 2C — DiffWave's local conditioner for the vocoder), and gates it: tanh(a) ⊙ σ(b)
  (WaveNet's gated unit, van den Oord et al. 2016). A 1×1 convolution splits the result into a residual
  ((h + r)/√2) and a skip output;
- the skips are summed (÷√N), then ReLU → 1×1 → ReLU → 1×1 (zero-initialised) → one channel.

The receptive field of N kernel-3 layers is 1 + 2·Σ_i 2^(i mod cycle) samples (:meth:`WaveNet.receptive_field`).
Sizes come from the model config's MLP fields (:class:`WaveNetConfig.from_model`): ``hidden`` = C,
``depth`` = N, ``emb_dim`` = the step embedding's width; the dilation cycle is DiffWave's 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from undiffuse.nn.embeddings import TimestepEmbedding, zero_

__all__ = ["WaveNet", "WaveNetConfig"]


@dataclass(frozen=True)
class WaveNetConfig:
    """C residual channels, N layers, dilation cycle, step-embedding width; mel bands and hop of the
    vocoder's local conditioner (0 bands: no mel input)."""

    channels: int = 64
    layers: int = 20
    cycle: int = 10
    emb_dim: int = 128
    n_mels: int = 0
    hop: int = 256

    @classmethod
    def from_model(cls, cfg: Any, **changes: Any) -> "WaveNetConfig":
        """From a :class:`~undiffuse.config.ModelConfig`: hidden → channels, depth → layers, emb_dim."""
        return cls(channels=cfg.hidden, layers=cfg.depth, emb_dim=cfg.emb_dim, **changes)


class _Layer(nn.Module):
    """One gated residual layer (see the module docstring)."""

    def __init__(self, C: int, dilation: int) -> None:
        super().__init__()
        self.step = nn.Linear(C, C)
        self.conv = nn.Conv1d(C, 2 * C, 3, padding=dilation, dilation=dilation)
        self.out = nn.Conv1d(C, 2 * C, 1)

    def forward(self, h: torch.Tensor, step: torch.Tensor, cond: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(h + self.step(step)[:, :, None])
        if cond is not None:
            y = y + cond
        a, b = y.chunk(2, dim=1)
        r, skip = self.out(torch.tanh(a) * torch.sigmoid(b)).chunk(2, dim=1)
        return (h + r) / math.sqrt(2.0), skip


class WaveNet(nn.Module):
    """The DiffWave-style denoiser network (see the module docstring)."""

    def __init__(self, config: WaveNetConfig = WaveNetConfig(), num_classes: Optional[int] = None) -> None:
        super().__init__()
        C, self.config, self.num_classes = config.channels, config, num_classes
        self.inp = nn.Conv1d(1, C, 1)
        self.time_embed = TimestepEmbedding(config.emb_dim, C)
        self.label_embed = nn.Embedding(num_classes + 1, C) if num_classes is not None else None  # last row: no label
        self.layers = nn.ModuleList(_Layer(C, 2 ** (i % config.cycle)) for i in range(config.layers))
        self.label_proj = nn.ModuleList(nn.Linear(C, 2 * C) for _ in range(config.layers)) if num_classes is not None else None
        if config.n_mels:
            ups = []
            for f in _factors(config.hop):  # transposed convolutions that stretch one mel frame to `hop` samples
                ups += [nn.ConvTranspose2d(1, 1, (3, 2 * f), stride=(1, f), padding=(1, f // 2)), nn.LeakyReLU(0.4)]
            self.upsample = nn.Sequential(*ups)
            self.mel_proj = nn.ModuleList(nn.Conv1d(config.n_mels, 2 * C, 1) for _ in range(config.layers))
        self.skip_out = nn.Conv1d(C, C, 1)
        self.final = zero_(nn.Conv1d(C, 1, 1))

    @property
    def receptive_field(self) -> int:
        """Samples that can influence one output sample: 1 + 2·Σ_i 2^(i mod cycle)."""
        return 1 + 2 * sum(2 ** (i % self.config.cycle) for i in range(self.config.layers))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, *, class_labels: Optional[torch.Tensor] = None,
                mel: Optional[torch.Tensor] = None) -> torch.Tensor:  # fmt: skip
        B, L = x.shape
        h = F.relu(self.inp(x[:, None, :]))
        emb = self.time_embed(c_noise.expand(B) if c_noise.ndim == 0 else c_noise)
        step = F.silu(emb)
        label = None
        if self.label_embed is not None:
            labels = class_labels if class_labels is not None else torch.full((B,), self.num_classes, device=x.device)
            label = self.label_embed(labels)
        local = None
        if self.config.n_mels:
            if mel is None:
                raise ValueError("this WaveNet is a vocoder: pass mel=[B, n_mels, frames]")
            local = self.upsample(mel[:, None])[:, 0, :, :L]  # [B, n_mels, L]
            if local.shape[-1] != L:
                local = F.pad(local, (0, L - local.shape[-1]))
        skips = 0.0
        for i, layer in enumerate(self.layers):
            cond = None
            if label is not None:
                cond = self.label_proj[i](label)[:, :, None]
            if local is not None:
                cond = self.mel_proj[i](local) if cond is None else cond + self.mel_proj[i](local)
            h, skip = layer(h, step, cond)
            skips = skips + skip
        out = F.relu(self.skip_out(skips / math.sqrt(len(self.layers))))
        return self.final(out)[:, 0, :]


def _factors(hop: int) -> list[int]:
    """``hop`` as a product of factors ≤ 16 (e.g. 256 → [16, 16], 200 → [10, 10, 2] … via 2s and the rest)."""
    out, rest = [], hop
    for f in (16, 10, 8, 5, 4, 2):
        while rest % f == 0 and rest > 1:
            out.append(f)
            rest //= f
    if rest != 1:
        raise ValueError(f"mel hop {hop} must factor into 2, 4, 5, 8, 10, 16")
    return out
