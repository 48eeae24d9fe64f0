"""The peer row on Fashion-MNIST: diffusers' unconditional-training example, adapted to 28×28 grey and a CPU budget."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from undiffuse.io import write_json
from undiffuse.study.common import FMNIST, CpuBudget

# --- the peer row: diffusers' own unconditional-training recipe -------------------------------------------

# diffusers examples/unconditional_image_generation/train_unconditional.py, defaults kept except where noted:
# 64×64 RGB, block_out_channels (128, 128, 256, 256, 512, 512) with six levels (attention in the 5th) →
# 28×28 grey padded to 32×32 with the background value −1, four levels (32, 32, 64, 64), attention in the
# 3rd (at 8×8: the example attends at 4×4 of 64, i.e. its second-lowest level, as here). Everything else
# as the example: layers_per_block 2, AdamW(1e-4, β = (0.95, 0.999), wd 1e-6, eps 1e-8), cosine schedule
# with 500 warm-up steps, gradient clipping 1.0, EMA (EMAModel: max decay 0.9999, inv_gamma 1, power 3/4),
# ε-prediction, linear β over 1000 steps, batch 16.
PEER_UNET = dict(sample_size=32, in_channels=1, out_channels=1, layers_per_block=2,
                 block_out_channels=(32, 32, 64, 64),
                 down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))  # fmt: skip
PEER_TRAIN = dict(lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8, warmup=500, batch=16, grad_clip=1.0,
                  ema_max_decay=0.9999, ema_inv_gamma=1.0, ema_power=0.75, T=1000, beta_schedule="linear")  # fmt: skip
PEER_SAMPLER = ("ddim", 50)  # the example samples with 1000 DDPM steps; 50 DDIM steps here (20× cheaper)


def _pad32(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)


def train_peer(run_dir: Path, budget: float, seed: int) -> dict:
    """diffusers' recipe (see PEER_UNET / PEER_TRAIN) on Fashion-MNIST for ``budget`` CPU seconds."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    from undiffuse.data import load_dataset

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    hp = PEER_TRAIN
    x_all = load_dataset(FMNIST, "train").x
    torch.manual_seed(seed)
    model = UNet2DModel(**PEER_UNET)
    sched = DDPMScheduler(
        num_train_timesteps=hp["T"], beta_schedule=hp["beta_schedule"], prediction_type="epsilon"
    )
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], betas=hp["betas"], weight_decay=hp["weight_decay"],
                            eps=hp["eps"])  # fmt: skip
    horizon = {"steps": None}

    def lr_lambda(step: int) -> float:  # = diffusers.optimization.get_cosine_schedule_with_warmup
        if step < hp["warmup"]:
            return step / max(1, hp["warmup"])
        total = horizon["steps"] or 10**9
        progress = (step - hp["warmup"]) / max(1, total - hp["warmup"])
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    ema = EMAModel(model.parameters(), decay=hp["ema_max_decay"], use_ema_warmup=True, inv_gamma=hp["ema_inv_gamma"],
                   power=hp["ema_power"])  # fmt: skip
    gen = torch.Generator().manual_seed(seed + 1)
    clock = CpuBudget(budget)
    step, losses, nan = 0, [], False
    model.train()
    while not clock.expired():
        idx = torch.randint(len(x_all), (hp["batch"],), generator=gen)
        x0 = _pad32(x_all[idx])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, hp["T"], (len(x0),), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(model(xt, t).sample.float(), noise)
        if not torch.isfinite(loss):
            nan = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        opt.step()
        lr_sched.step()
        ema.step(model.parameters())
        step += 1
        losses.append(loss.item())
        if step == 20:  # the cosine horizon: the steps the budget affords at the measured rate
            horizon["steps"] = max(hp["warmup"] + 1, int(step * budget / max(clock.used, 1e-6)))
    ema.copy_to(model.parameters())
    model.save_pretrained(run_dir / "unet", safe_serialization=True)
    sched.save_pretrained(run_dir / "scheduler")
    write_json(run_dir / "peer.json", {"unet": PEER_UNET, "train": PEER_TRAIN, "steps": step,
                                        "cosine_horizon": horizon["steps"], "sampler": PEER_SAMPLER})  # fmt: skip
    return {"steps": step, "cpu_seconds": clock.used, "loss": float(np.mean(losses[-50:])) if losses else None,
            "params": sum(p.numel() for p in model.parameters()), "cosine_horizon": horizon["steps"],
            "batch_size": hp["batch"], "nan_loss": nan, "has_checkpoint": True, "recipe": {**PEER_UNET, **PEER_TRAIN}}  # fmt: skip


@torch.no_grad()
def sample_peer(run_dir: Path, n: int, seed: int = 0, batch_size: int = 250) -> tuple[torch.Tensor, dict]:
    """DDIM (η = 0, 50 steps, diffusers' DDIMScheduler from the training DDPMScheduler config), like
    DDIMPipeline; sample i's initial noise from its own generator; cropped back to 28×28."""
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    from undiffuse.samplers.driver import drive

    run_dir = Path(run_dir)
    model = UNet2DModel.from_pretrained(run_dir / "unet", use_safetensors=True).eval()
    sched = DDIMScheduler.from_config(DDPMScheduler.from_pretrained(run_dir / "scheduler").config)
    sched.set_timesteps(PEER_SAMPLER[1])

    def run_batch(x: torch.Tensor, gens: list, cond: dict, offset: int) -> torch.Tensor:
        for t in sched.timesteps:
            x = sched.step(model(x, t).sample, t, x, eta=0.0).prev_sample
        return x[..., 2:30, 2:30].clamp(-1, 1)

    t0 = time.perf_counter()
    x = drive(run_batch, (1, 32, 32), n, seed=seed, sigma_max=1.0, batch_size=batch_size).x  # x_T ~ N(0, I)
    seconds = time.perf_counter() - t0
    return x, {"kind": "diffusers", "nfe": len(sched.timesteps), "sampler": "diffusers DDIMScheduler, eta 0",
               "steps": PEER_SAMPLER[1], "seconds": seconds, "seconds_per_sample": seconds / n, "n": n}  # fmt: skip
