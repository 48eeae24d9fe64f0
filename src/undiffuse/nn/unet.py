"""The DDPM U-Net (Ho et al. 2020, Appendix B), with optional class, text and image conditioning.

``UNet(x_in, c_noise, **cond) -> Tensor`` never sees a schedule. The backbone is a PixelCNN++-style
U-Net (Salimans et al. 2017) as in Ho et al.: per resolution ``num_res_blocks`` residual blocks
(GroupNorm → SiLU → conv, time embedding added between the two convolutions, dropout), single-head
self-attention at ``attn_resolutions`` and in the middle, stride-2 conv down-sampling, nearest + conv
up-sampling, and one skip connection per down-path block. Additions over DDPM, all off by default:

- ``scale_shift=True``: the time embedding modulates GroupNorm as h·(1+s)+b (Nichol & Dhariwal 2021).
- ``num_classes``: a label embedding added to the time embedding; label ``num_classes`` is the null
  label used for classifier-free guidance (Ho & Salimans 2022), and is used when no label is given.
- ``cond_dim``: cross-attention to ``context`` [B, L, cond_dim] after each self-attention
  (Rombach et al. 2022), with an optional key mask ``context_mask`` [B, L] (True = attend).
- ``extra_in_channels``: ``x_cond`` [B, extra, H, W] concatenated to the input (SR3, Saharia et al.
  2021); an ``x_cond`` of another size is resized bilinearly to the input's.

Any image size works: odd sizes after down-sampling (28 → 14 → 7 → 4) are undone by up-sampling
to the skip's exact size. ``model.to(memory_format=torch.channels_last)`` is supported as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from undiffuse.nn.embeddings import TimestepEmbedding, group_norm, zero_

__all__ = ["UNetConfig", "UNet"]


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))); h += W·emb (or GN scale-shift); h = conv(drop(SiLU(GN(h)))); x' + h."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, num_groups: int, scale_shift: bool
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = group_norm(in_ch, num_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch * (2 if scale_shift else 1))
        self.norm2 = group_norm(out_ch, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(emb)[:, :, None, None]  # [B, C or 2C, 1, 1]; emb is already SiLU'd
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def _self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v for [B, heads, N, d] (Vaswani et al. 2017) through SDPA (flash /
    memory-efficient kernels), except bf16 on CPU: there SDPA's flash kernel is 3–6× slower than two
    batched matmuls at these sequence lengths (N ≤ 256, measured with torch 2.13 / oneDNN), so the
    product is written out (softmax in fp32 under autocast). [speed: added by the bench engineer]"""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        w = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)  # [B, heads, N, N]
        return w.to(v.dtype) @ v
    return F.scaled_dot_product_attention(q, k, v)


def _heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, C] → [B, heads, N, C/heads]."""
    return t.unflatten(-1, (num_heads, -1)).transpose(1, 2)


class AttnBlock(nn.Module):
    """Self-attention over the H·W positions (Ho et al. 2020), then optional cross-attention to a
    context sequence (Rombach et al. 2022). Residual, output projections zero-initialised."""

    def __init__(self, ch: int, num_groups: int, num_heads: int, cond_dim: Optional[int]) -> None:
        super().__init__()
        if ch % num_heads:
            raise ValueError(f"{ch} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(ch, num_groups)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = zero_(nn.Linear(ch, ch))
        self.cross = cond_dim is not None
        if cond_dim is not None:
            self.norm_c = group_norm(ch, num_groups)
            self.q_c = nn.Linear(ch, ch)
            self.kv_c = nn.Linear(cond_dim, 2 * ch)
            self.proj_c = zero_(nn.Linear(ch, ch))

    def _tokens(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return norm(x).flatten(2).transpose(1, 2)  # [B, HW, C] (a view for channels_last)

    def _back(
        self, out: torch.Tensor, proj: nn.Module, x: torch.Tensor, gate: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        out = proj(out.transpose(1, 2).flatten(2))  # [B, HW, C]
        if gate is not None:
            out = out * gate[:, None, None]
        return x + out.transpose(1, 2).unflatten(2, x.shape[-2:])  # [B, C, H, W]

    def forward(
        self, x: torch.Tensor, context: Optional[torch.Tensor], context_mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        q, k, v = self.qkv(self._tokens(self.norm, x)).chunk(3, dim=-1)  # 3 × [B, HW, C]
        h = self.num_heads
        out = _self_attention(_heads(q, h), _heads(k, h), _heads(v, h))
        x = self._back(out, self.proj, x)
        if not self.cross or context is None:
            return x
        q = _heads(self.q_c(self._tokens(self.norm_c, x)), h)
        k, v = (_heads(t, h) for t in self.kv_c(context.to(q.dtype)).chunk(2, dim=-1))  # [B, h, L, d]
        mask = gate = None
        if context_mask is not None:
            valid = context_mask.any(dim=1)  # a row with no token attends to all, then is gated off
            mask = (context_mask | ~valid[:, None])[:, None, None, :]  # [B, 1, 1, L]
            gate = valid.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self._back(out, self.proj_c, x, gate)


class Stage(nn.Module):
    """One residual block, optionally followed by an attention block."""

    def __init__(self, res: ResBlock, attn: Optional[AttnBlock]) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context, context_mask) -> torch.Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x, context, context_mask)


class Downsample(nn.Module):
    """3×3 conv with stride 2 (size ⌈n/2⌉)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, *_) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour up-sampling to the skip's exact size, then a 3×3 conv."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))



@dataclass(frozen=True)
class UNetConfig:
    """The UNet's own hyperparameters (see :class:`UNet`); the sizes that follow from the data
    (channels, image size, classes, conditioning width) are given at build time by :meth:`UNet.from_config`.
    ``undiffuse.config.ModelConfig`` inherits these fields, so a new UNet option is one field here."""

    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (7,)
    dropout: float = 0.1
    num_groups: int = 8
    num_heads: int = 1
    scale_shift: bool = False

    def __post_init__(self) -> None:
        for name in ("base_channels", "num_res_blocks", "num_groups", "num_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} = {getattr(self, name)} must be > 0 — set a positive value")
        if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
            raise ValueError(f"channel_mult = {self.channel_mult} needs ≥ 1 positive multipliers — e.g. 1,2,2")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout = {self.dropout} must lie in [0, 1) — e.g. 0.1")


class UNet(nn.Module):
    """The U-Net of Ho et al. (2020) as ``net(x_in, c_noise, **cond) -> Tensor``.

    With the DDPM CIFAR-10 settings (``UNET_PRESETS["ddpm-cifar10"]``: base 128, mult (1, 2, 2, 2),
    2 residual blocks, attention at 16×16, dropout 0.1, 32×32×3) it has exactly 35,746,307
    parameters, the count of the official model (35.7 M).

    Args:
        in_channels / out_channels: image channels in and out (out = 2·C for a learned variance).
        base_channels: width at full resolution; level i has ``base_channels·channel_mult[i]``.
        channel_mult: one multiplier per resolution; a level halves the size (rounding up).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: spatial sizes (height of the feature map) that get attention.
        dropout: dropout rate inside residual blocks.
        num_groups: GroupNorm groups, clamped to a divisor of each width.
        image_size: the training height, used only to decide where attention goes.
        num_classes: enables ``class_labels`` (LongTensor [B], index ``num_classes`` = null label).
        cond_dim: enables cross-attention to ``context`` [B, L, cond_dim] (+ ``context_mask`` [B, L]).
        extra_in_channels: channels of ``x_cond`` concatenated to the input (super-resolution).
        num_heads: attention heads (1 as in DDPM).
        scale_shift: FiLM-style GroupNorm modulation by the time embedding (Nichol & Dhariwal 2021).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: Optional[int] = None,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        num_groups: int = 32,
        image_size: int = 32,
        num_classes: Optional[int] = None,
        cond_dim: Optional[int] = None,
        extra_in_channels: int = 0,
        num_heads: int = 1,
        scale_shift: bool = False,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.extra_in_channels, self.num_classes, self.cond_dim = extra_in_channels, num_classes, cond_dim
        ch, emb_dim = base_channels, 4 * base_channels
        self.time_embed = TimestepEmbedding(ch, emb_dim)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

        def stage(cin: int, cout: int, res: int) -> Stage:
            attn = AttnBlock(cout, num_groups, num_heads, cond_dim) if res in attn_resolutions else None
            return Stage(ResBlock(cin, cout, emb_dim, dropout, num_groups, scale_shift), attn)

        self.conv_in = nn.Conv2d(in_channels + extra_in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        sizes = [image_size]  # feature-map height per level
        for _ in channel_mult[1:]:
            sizes.append(math.ceil(sizes[-1] / 2))
        skips, cur = [ch], ch
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(stage(cur, ch * mult, sizes[level]))
                cur = ch * mult
                skips.append(cur)
            if level != len(channel_mult) - 1:
                self.down.append(Downsample(cur))
                skips.append(cur)
        mid_attn = AttnBlock(cur, num_groups, num_heads, cond_dim)
        self.mid = nn.ModuleList(
            [Stage(ResBlock(cur, cur, emb_dim, dropout, num_groups, scale_shift), mid_attn),
             Stage(ResBlock(cur, cur, emb_dim, dropout, num_groups, scale_shift), None)]
        )  # fmt: skip
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(cur + skips.pop(), ch * mult, sizes[level]))
                cur = ch * mult
            if level != 0:
                self.up.append(Upsample(cur))
        self.norm_out = group_norm(cur, num_groups)
        self.conv_out = zero_(nn.Conv2d(cur, out_channels, 3, padding=1))

    def _embedding(self, c_noise: torch.Tensor, class_labels: Optional[torch.Tensor]) -> torch.Tensor:
        emb = self.time_embed(c_noise)  # [B, 4·base]
        if self.label_embed is not None:
            if class_labels is None:  # unconditional: the classifier-free-guidance null label
                class_labels = torch.full_like(c_noise, self.num_classes, dtype=torch.long)
            emb = emb + self.label_embed(class_labels)
        elif class_labels is not None:
            raise ValueError("class_labels given but the UNet was built with num_classes=None")
        return F.silu(emb)

    @classmethod
    def from_config(cls, cfg: Any, **data_sizes: Any) -> "UNet":
        """A UNet with the :class:`UNetConfig` fields of ``cfg`` (a UNetConfig or anything carrying its
        fields, e.g. ``ModelConfig``) and the data-derived ``data_sizes`` (in_channels, out_channels,
        image_size, num_classes, cond_dim, extra_in_channels)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(UNetConfig)}, **data_sizes)

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        *,
        class_labels: Optional[torch.Tensor] = None,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        x_cond: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x [B, C, H, W], c_noise [B] → [B, out_channels, H, W]."""
        if context is not None and self.cond_dim is None:
            raise ValueError("context given but the UNet was built with cond_dim=None")
        if self.extra_in_channels:
            if x_cond is None:
                raise ValueError(f"this UNet needs x_cond with {self.extra_in_channels} channels")
            if x_cond.shape[-2:] != x.shape[-2:]:
                x_cond = F.interpolate(x_cond, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, x_cond.to(x.dtype)], dim=1)
        elif x_cond is not None:
            raise ValueError("x_cond given but the UNet was built with extra_in_channels=0")
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(x.shape[0])
        emb = self._embedding(c_noise, class_labels).to(x.dtype)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb, context, context_mask)
            hs.append(h)
        for block in self.mid:
            h = block(h, emb, context, context_mask)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h, hs[-1].shape[-2:])
            else:
                h = block(torch.cat([h, hs.pop()], dim=1), emb, context, context_mask)
        return self.conv_out(F.silu(self.norm_out(h)))
