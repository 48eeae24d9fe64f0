"""Training and sampling throughput of undiffuse's UNet against diffusers' ``UNet2DModel`` built in
the same configuration (same parameter count), on one device, with the libraries interleaved.

- Training step (both): a fixed batch x_0 ∈ [−1, 1], t ~ U{1..T}, ε ~ N(0, I), ε-MSE, backward,
  AdamW step. undiffuse goes through its own path (``Precond`` + ``denoising_loss``); diffusers
  through its documented one (``DDPMScheduler.add_noise``, ``model(x_t, t).sample``, ``F.mse_loss``).
  Data loading is not timed.
- Sampling (both): DDIM(η = 0), 50 steps from the last training step (trailing spacing): undiffuse's
  ``sample_ddim`` on its σ grid, diffusers' ``DDIMScheduler`` loop (what ``DDIMPipeline`` runs).
  Network evaluations are counted by wrapping each network (:class:`CountingNet`).

Timings come after warm-up as the median of the repeats, the two libraries alternating (and the
order of each pair reversed every repeat so drift cancels).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from undiffuse.diffusion.precond import Precond
from undiffuse.losses.denoising import denoising_loss
from undiffuse.nn import UNET_PRESETS, UNet
from undiffuse.samplers import sample_ddim
from undiffuse.schedules import make_schedule
from undiffuse.schedules.grids import discrete_sigmas
from undiffuse.speed import TrainOptions, autocast, channels_last, make_adamw, maybe_compile, maybe_cuda_graph

__all__ = [
    "CountingNet",
    "diffusers_twin",
    "interleaved",
    "peak_memory_mb",
    "sampler_fn",
    "trainer_fn",
]

T_TRAIN = 1000
LR = 1e-4


def diffusers_twin(kw: dict) -> nn.Module:
    """diffusers' ``UNet2DModel`` in the configuration of ``UNet(**kw)``: same widths, blocks per
    level, attention resolutions (one head), GroupNorm groups and ε, dropout — the same parameter count
    (35,746,307 for ``ddpm-cifar10``)."""
    from diffusers import UNet2DModel

    sizes = [kw["image_size"]]
    for _ in kw["channel_mult"][1:]:
        sizes.append(math.ceil(sizes[-1] / 2))
    attn = [s in tuple(kw["attn_resolutions"]) for s in sizes]
    return UNet2DModel(
        sample_size=kw["image_size"], in_channels=kw["in_channels"], out_channels=kw["out_channels"],
        layers_per_block=kw["num_res_blocks"], block_out_channels=tuple(kw["base_channels"] * m for m in kw["channel_mult"]),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        norm_num_groups=kw["num_groups"], norm_eps=1e-6, dropout=kw["dropout"], attention_head_dim=None,
    )  # fmt: skip


class CountingNet(nn.Module):
    """Wraps a network and counts its forward calls (network evaluations, NFE)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.nfe = 0

    def forward(self, *args, **kwargs):
        self.nfe += 1
        return self.net(*args, **kwargs)


class _DiffusersEps(nn.Module):
    """``UNet2DModel`` as ``net(x_t, t) -> tensor`` (so graph capture and counting see a tensor)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, return_dict=False)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Setup:
    """What one benchmark side runs: library, network preset, batch, device and speed options."""

    lib: str  # "undiffuse" | "diffusers"
    preset: str
    batch: int
    device: str
    opts: TrainOptions
    torch_default_adamw: bool = False  # diffusers out of the box: torch.optim.AdamW(params, lr)
    cuda_graph: bool = False

    def to_dict(self) -> dict:
        return {**self.__dict__, "opts": self.opts.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Setup":
        return cls(**{**d, "opts": TrainOptions(**d["opts"])})


def _build(setup: Setup, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    kw = UNET_PRESETS[setup.preset]
    torch.manual_seed(seed)
    net = UNet(**kw) if setup.lib == "undiffuse" else _DiffusersEps(diffusers_twin(kw))
    dev = torch.device(setup.device)
    g = torch.Generator().manual_seed(seed + 1)
    x0 = (
        torch.rand(setup.batch, kw["in_channels"], kw["image_size"], kw["image_size"], generator=g) * 2 - 1
    ).to(dev)
    net = net.to(dev)
    if setup.opts.channels_last:
        net, x0 = channels_last(net), channels_last(x0)
    return net, x0


def trainer_fn(setup: Setup, seed: int = 0) -> Callable[[], None]:
    """A closure that runs one full training step (forward, ε-MSE, backward, AdamW step)."""
    net, x0 = _build(setup, seed)
    dev, opts = torch.device(setup.device), setup.opts
    fwd = maybe_compile(net, opts.compile_mode)
    params = list(net.parameters())
    if setup.torch_default_adamw:
        opt = torch.optim.AdamW(params, lr=LR)
    elif setup.lib == "undiffuse":
        opt = make_adamw(params, fused=opts.fused_adamw, lr=LR)
    else:
        opt = torch.optim.AdamW(params, lr=LR, fused=True if opts.fused_adamw else None)
    g = torch.Generator(device=dev).manual_seed(seed + 2)
    B = setup.batch
    if setup.lib == "undiffuse":
        schedule = make_schedule("linear", T_TRAIN)
        precond = Precond(fwd, "eps", schedule)
        sigmas_table = schedule.sigmas.to(dev)

        def loss_fn() -> torch.Tensor:
            t = torch.randint(1, T_TRAIN + 1, (B,), generator=g, device=dev)
            noise = torch.randn(x0.shape, generator=g, device=dev).contiguous(memory_format=_fmt(x0))
            loss, _, _ = denoising_loss(precond, x0, sigmas_table[t - 1], noise)
            return loss.mean()
    else:
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(num_train_timesteps=T_TRAIN)

        def loss_fn() -> torch.Tensor:
            noise = torch.randn(x0.shape, generator=g, device=dev).contiguous(memory_format=_fmt(x0))
            t = torch.randint(0, T_TRAIN, (B,), generator=g, device=dev)
            noisy = scheduler.add_noise(x0, noise, t)
            return F.mse_loss(fwd(noisy, t).float(), noise)

    def step() -> None:
        with autocast(dev, opts.precision):
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    net.train()
    return step


def _fmt(x: torch.Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )


def sampler_fn(setup: Setup, steps: int = 50, run_steps: Optional[int] = None, seed: int = 0):
    """(closure running DDIM for ``run_steps`` of a ``steps``-step trailing grid, the NFE counter)."""
    net, x0 = _build(setup, seed)
    dev, opts = torch.device(setup.device), setup.opts
    net.eval().requires_grad_(False)
    counter = CountingNet(maybe_compile(net, opts.compile_mode))
    run_steps = steps if run_steps is None else run_steps
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 3)).to(dev)
    noise = noise.contiguous(memory_format=_fmt(x0))
    if setup.lib == "undiffuse":
        schedule = make_schedule("linear", T_TRAIN)
        den = Precond(counter, "eps", schedule)
        den = maybe_cuda_graph(den, setup.cuda_graph)
        sigmas = discrete_sigmas(schedule, steps, "trailing").to(dev)[: run_steps + 1]
        x_start = noise * torch.sqrt(1 + sigmas[0] ** 2).float()  # x_T = noise in the VP view

        def run() -> torch.Tensor:
            with autocast(dev, opts.precision):
                return sample_ddim(den, x_start, sigmas)
    else:
        from diffusers import DDIMScheduler

        from undiffuse.speed import GraphedNet

        model = GraphedNet(counter) if setup.cuda_graph and dev.type == "cuda" else counter
        scheduler = DDIMScheduler(num_train_timesteps=T_TRAIN, clip_sample=False, timestep_spacing="trailing")
        scheduler.set_timesteps(steps, device=dev)
        timesteps = scheduler.timesteps[:run_steps]

        @torch.no_grad()
        def run() -> torch.Tensor:
            x = noise
            with autocast(dev, opts.precision):
                for t in timesteps:
                    x = scheduler.step(model(x, t), t, x).prev_sample
            return x

    return run, counter


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device, cpu_times: Optional[dict] = None
) -> dict[str, list[float]]:
    """Wall times (s) of each closure: ``warmup`` untimed rounds, then ``repeats`` timed rounds in
    which the closures alternate (order reversed every round). ``cpu_times``, if given, receives the
    process CPU times of the same calls (a load-independent cross-check on a shared CPU)."""
    dev = torch.device(device)
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            fns[k]()
    _sync(dev)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            _sync(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            _sync(dev)
            times[k].append(time.perf_counter() - t0)
            if cpu_times is not None:
                cpu_times.setdefault(k, []).append(time.process_time() - c0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# --- peak memory ----------------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    try:  # VmHWM: this process's peak resident set
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def peak_memory_mb(setup: Setup, steps: int = 2) -> Optional[float]:
    """Peak memory (MB) of ``steps`` training steps: max allocated on CUDA (in this process); on CPU
    the peak RSS of a fresh Python process that builds the model and trains (so the two libraries
    never share a process, and nothing else the benchmark holds is counted)."""
    dev = torch.device(setup.device)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        step = trainer_fn(setup)
        for _ in range(steps):
            step()
        _sync(dev)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        del step
        torch.cuda.empty_cache()
        return peak
    cmd = [
        sys.executable,
        "-m",
        "undiffuse.bench.throughput",
        "memory",
        json.dumps(setup.to_dict()),
        str(steps),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def _memory_main(argv: list[str]) -> None:
    try:  # both sides import the same modules, so the peak differs only by what training holds
        import diffusers  # noqa: F401
    except ImportError:
        pass
    setup, steps = Setup.from_dict(json.loads(argv[0])), int(argv[1])
    step = trainer_fn(setup)
    for _ in range(steps):
        step()
    print(json.dumps({"peak_rss_mb": _peak_rss_mb()}))


def with_options(setup: Setup, **kw) -> Setup:
    return replace(setup, **kw)


if __name__ == "__main__":  # python -m undiffuse.bench.throughput memory '<setup json>' <steps>
    if len(sys.argv) >= 4 and sys.argv[1] == "memory":
        _memory_main(sys.argv[2:])
    else:
        raise SystemExit("usage: python -m undiffuse.bench.throughput memory '<setup json>' <steps>")
