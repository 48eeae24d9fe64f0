"""A denoiser network for windows of time series: dilated 1-D convolutions over time with the channels
of the series as input channels, after DiffWave (Kong et al. 2021, Sec. 3.1) and WaveNet.

``SeqNet(x_in [B, L·C], c_noise [B], class_labels=None) -> [B, L·C]``: the flat, time-major window (as
:mod:`undiffuse.data.series` stores it) is read as [B, C, L]; a 1×1 convolution lifts it to ``hidden``
channels; ``depth`` residual blocks of kernel-3 convolutions with dilations 1, 2, 4, … (cycling at 32) see
up to ~2·Σ dilations steps of context; the noise level enters every block as in the MLP (sinusoidal
embedding, two-layer MLP, a per-block projection added to the features); the output is zero-initialised.
The hyperparameters are the MLP's (:class:`~undiffuse.nn.mlp.MLPConfig`: hidden channels, depth, emb_dim,
dropout), so ``--set model.arch=seq model.hidden=48`` works without new config fields.

With ``observed=True`` (``model.obs_cond``, CSDI: Tashiro et al. 2021, Sec. 4) the network also reads what is
observed of the window: ``forward(..., obs=x_obs, obs_mask=m)`` with both [B, L·C] joins the input as 2·C more
channels, [x_in, m·x_obs, m] → conv_in (the caller zeroes x_in where m = 1; see
:class:`undiffuse.diffusion.conditional.ObservedPrecond`). Without them (unconditional sampling) m = 0.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from undiffuse.nn.embeddings import TimestepEmbedding, group_norm, zero_

__all__ = ["SeqNet"]


class _Block(nn.Module):
    """h + Conv(drop(SiLU(Conv_d(SiLU(GN(h)) + W·emb))))."""

    def __init__(self, hidden: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.norm = group_norm(hidden, 8)
        self.conv1 = nn.Conv1d(hidden, hidden, 3, padding=dilation, dilation=dilation)
        self.emb = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv1d(hidden, hidden, 3, padding=1))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        r = self.conv1(F.silu(self.norm(h))) + self.emb(emb)[:, :, None]  # [B, hidden, L]
        return h + self.conv2(self.dropout(F.silu(r)))


class SeqNet(nn.Module):
    """Dilated 1-D convolutions over windows [B, L·C] (see the module docstring)."""

    def __init__(self, length: int, channels: int, hidden: int = 64, depth: int = 6, emb_dim: int = 128,
                 num_classes: Optional[int] = None, dropout: float = 0.0, observed: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.length, self.channels, self.num_classes, self.observed = length, channels, num_classes, observed
        self.time_embed = TimestepEmbedding(emb_dim, hidden)
        self.label_embed = nn.Embedding(num_classes + 1, hidden) if num_classes is not None else None
        self.conv_in = nn.Conv1d(channels * (3 if observed else 1), hidden, 1)
        self.blocks = nn.ModuleList(_Block(hidden, 2 ** (i % 6), dropout) for i in range(depth))
        self.norm_out = group_norm(hidden, 8)
        self.conv_out = zero_(nn.Conv1d(hidden, channels, 1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, *, class_labels: Optional[torch.Tensor] = None,
                obs: Optional[torch.Tensor] = None, obs_mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # fmt: skip
        B = x.shape[0]
        if self.observed:
            m = torch.zeros_like(x) if obs_mask is None else obs_mask.to(x.dtype).expand_as(x)
            x_obs = torch.zeros_like(x) if obs is None else torch.nan_to_num(obs.to(x.dtype)).expand_as(x)
            x = torch.stack([x, m * x_obs, m], dim=2)  # [B, L·C, 3], read below as [B, L, 3·C]
        elif obs_mask is not None:
            raise ValueError("this SeqNet was built without observed inputs (model.obs_cond = false)")
        width = self.channels * (3 if self.observed else 1)
        h = self.conv_in(x.reshape(B, self.length, width).transpose(1, 2))  # [B, hidden, L]
        emb = self.time_embed(c_noise.expand(B) if c_noise.ndim == 0 else c_noise)
        if self.label_embed is not None:
            labels = class_labels if class_labels is not None else torch.full((B,), self.num_classes, device=x.device)
            emb = emb + self.label_embed(labels)
        emb = F.silu(emb).to(h.dtype)
        for block in self.blocks:
            h = block(h, emb)
        out = self.conv_out(F.silu(self.norm_out(h)))  # [B, C, L]
        return out.transpose(1, 2).reshape(B, -1)
