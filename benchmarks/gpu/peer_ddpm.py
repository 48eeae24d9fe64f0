"""The study's diffusers peer sampled as its training example does: DDPMPipeline's 1000 ancestral DDPM steps
(the study uses 50 DDIM steps for every diffusion model, for CPU cost). Writes OUT/peer-ddpm1000.npy (uint8
[N, 28, 28, 1], cropped from 32×32). Usage: python benchmarks/gpu/peer_ddpm.py RUN_DIR OUT_DIR [N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def main(run_dir: str, out_dir: str, n: int = 2000) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = UNet2DModel.from_pretrained(Path(run_dir) / "unet", use_safetensors=True).to(dev).eval()
    sched = DDPMScheduler.from_pretrained(Path(run_dir) / "scheduler")
    sched.set_timesteps(1000)
    g = torch.Generator(device=dev).manual_seed(0)
    t0 = time.perf_counter()
    x = torch.randn((n, 1, 32, 32), generator=g, device=dev)
    for t in sched.timesteps:
        x = sched.step(model(x, t).sample, t, x, generator=g).prev_sample
    x = x[..., 2:30, 2:30].clamp(-1, 1)
    u8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    np.save(Path(out_dir) / "peer-ddpm1000.npy", u8)
    print(f"{n} samples, 1000 DDPM steps in {time.perf_counter() - t0:.1f} s on {dev}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
