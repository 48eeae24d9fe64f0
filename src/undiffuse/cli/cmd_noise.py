"""``undiffuse noise IMAGE --t 0,100,…``: a picture of the forward process q(x_t|x_0) at chosen steps."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from undiffuse.cli.common import int_list, nonneg_int

#: the smallest tile of the strip, in pixels: small images (28×28) are enlarged so that the noise can be seen
MIN_TILE_PX = 128


def add_parser(sub) -> None:
    p = sub.add_parser("noise", help="picture of the forward process at chosen steps",
                       description="Noise IMAGE with q(x_t|x_0) = N(√ᾱ_t·x_0, (1−ᾱ_t)·I) at each step t and write them side by side.")
    p.add_argument("image", help="a PNG/JPEG image")
    p.add_argument("--t", type=int_list, default=[0, 100, 250, 500, 1000], help="steps to show, comma-separated (0 = the image)")
    p.add_argument("--schedule", default="linear", help="noise schedule name (linear, cosine, sigmoid, exponential, constant)")
    p.add_argument("--T", type=int, default=1000, help="number of diffusion steps T")
    p.add_argument("--size", type=int, default=None, help="resize and centre-crop to this size first")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (the same noise for every t)")
    p.add_argument("--min-px", type=nonneg_int, default=MIN_TILE_PX, help="enlarge each tile (nearest neighbour, "
                   f"an integer factor) to at least this many pixels for viewing (default {MIN_TILE_PX}; 0: the image's size)")
    p.add_argument("--out", default="noise.png", help="output PNG")
    p.set_defaults(func=run)


def forward_process_strip(x0: torch.Tensor, steps: list[int], schedule, seed: int = 0) -> torch.Tensor:
    """x_t for each t in ``steps`` from one x_0 [C, H, W] and one draw of noise; t = 0 gives x_0."""
    from undiffuse.diffusion import q_sample

    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows = []
    for t in steps:
        if t == 0:
            rows.append(x0.double())
        else:
            rows.append(q_sample(schedule, x0[None].double(), torch.tensor([t]), noise[None])[0])
    return torch.stack(rows).float()


def upscale(x: torch.Tensor, min_px: int) -> torch.Tensor:
    """Images [N, C, H, W] enlarged by the smallest integer factor that makes each side ≥ ``min_px``, by
    repeating pixels (nearest neighbour: every pixel of the noise stays visible as it is)."""
    k = max(1, math.ceil(min_px / min(x.shape[-2:])))
    return x.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)


def run(args: argparse.Namespace) -> int:
    from undiffuse.data import DataError
    from undiffuse.data.images import read_image, save_image_grid
    from undiffuse.schedules import make_schedule

    path = Path(args.image)
    if not path.is_file():
        raise DataError(f"{path}: no such image — give the path of a PNG or JPEG file")
    bad = [t for t in args.t if t < 0 or t > args.T]
    if bad:
        raise DataError(f"--t {bad}: steps must lie in 0..T={args.T} — choose steps in that range")
    x0 = read_image(path, None, args.size)[0][0]  # [C, H, W] at the file's bit depth
    strip = forward_process_strip(x0, args.t, make_schedule(args.schedule, args.T), args.seed)
    save_image_grid(upscale(strip.clamp(-1, 1), args.min_px), args.out, nrow=len(args.t))
    print(f"wrote {args.out} (t = {', '.join(map(str, args.t))})")
    return 0
