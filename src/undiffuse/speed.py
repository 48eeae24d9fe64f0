"""Optional speed paths, each a function or flag that leaves the math unchanged (checked against the
plain path in ``tests/test_speed.py``), and the defaults the trainer and benchmarks use.

| path | function | effect |
|---|---|---|
| mixed precision | :func:`autocast`, :func:`autocast_dtype` | bf16 on CUDA where supported (fp16 where not); on CPU only on request |
| memory format | :func:`channels_last` | NHWC weights and inputs: oneDNN convolutions without layout reorders |
| compilation | :func:`maybe_compile` | ``torch.compile`` when a mode is given and it is available |
| optimizer | :func:`make_adamw` | fused AdamW (one kernel per step on CUDA and CPU), else foreach |
| attention | :func:`sdpa_calls` | counts ``F.scaled_dot_product_attention`` calls (flash/memory-efficient kernels) |
| CUDA graphs | :class:`CudaGraphDenoiser` | replays the captured network for a static batch shape (CUDA only) |
| large N | :func:`sample_to_disk` | samples batch by batch straight to PNGs or a memory-mapped .npy |

:func:`default_train_options` records what undiffuse uses out of the box on each device (measured
in ``benchmarks/results``): fused AdamW everywhere; bf16 autocast on CUDA and on CPUs with native
bf16 (AVX512-BF16/AMX); channels_last on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CudaGraphDenoiser",
    "GraphedNet",
    "TrainOptions",
    "autocast",
    "autocast_dtype",
    "bf16_supported",
    "channels_last",
    "default_sample_options",
    "default_train_options",
    "make_adamw",
    "maybe_compile",
    "maybe_cuda_graph",
    "sample_to_disk",
    "sdpa_calls",
]

DeviceLike = Union[str, torch.device]
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def _device(device: DeviceLike) -> torch.device:
    return torch.device(device) if not isinstance(device, torch.device) else device


# --- mixed precision ----------------------------------------------------------------------------
def bf16_supported(device: DeviceLike) -> bool:
    """Whether ``device`` has native bf16 math: CUDA compute capability ≥ 8 (Ampere+), or a CPU with
    AVX512-BF16 or AMX (oneDNN then runs bf16 convolutions and matmuls natively)."""
    dev = _device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def autocast_dtype(
    device: DeviceLike, dtype: Union[str, torch.dtype, None] = "auto"
) -> Optional[torch.dtype]:
    """The autocast dtype to use, or None for fp32.

    ``"auto"``: bf16 on CUDA where supported, else fp16; None on CPU (fp32 unless asked for).
    ``"bf16"`` / ``"fp16"`` / a dtype: that dtype (fp16 on CPU is refused: it is slow and needs loss
    scaling); ``None`` / ``"fp32"``: None.
    """
    dev = _device(device)
    if dtype is None or dtype in ("fp32", "float32", torch.float32):
        return None
    if dtype == "auto":
        if dev.type != "cuda":
            return None
        return torch.bfloat16 if bf16_supported(dev) else torch.float16
    dt = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if dt not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast dtype must be bf16, fp16, fp32 or auto, got {dtype!r}")
    if dt == torch.float16 and dev.type == "cpu":
        raise ValueError("fp16 autocast on CPU is not supported here — use bf16 or fp32")
    return dt


def autocast(
    device: DeviceLike, dtype: Union[str, torch.dtype, None] = "auto"
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` with :func:`autocast_dtype`'s choice, or a no-op context for fp32."""
    dev = _device(device)
    dt = autocast_dtype(dev, dtype)
    if dt is None:
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=dt)


# --- memory format, compilation, optimizer, attention ---------------------------------------------
def channels_last(obj):
    """A module or a 4-D tensor in channels_last (NHWC) memory format; anything else unchanged.
    Modules are converted in place (as ``Module.to`` does) and returned."""
    if isinstance(obj, nn.Module):
        return obj.to(memory_format=torch.channels_last)
    if torch.is_tensor(obj) and obj.ndim == 4:
        return obj.contiguous(memory_format=torch.channels_last)
    return obj


def maybe_compile(module: Callable, mode: Optional[str] = None, **kw) -> Callable:
    """``torch.compile(module, mode=...)`` when ``mode`` is given ("default", "reduce-overhead",
    "max-autotune", …) and torch.compile is available; otherwise ``module`` unchanged."""
    if mode is None or mode is False or not hasattr(torch, "compile"):
        return module
    return torch.compile(module, mode=None if mode in ("default", True) else mode, **kw)


def make_adamw(params, fused: Union[bool, str] = "auto", **kw) -> torch.optim.AdamW:
    """AdamW, fused (one kernel for all parameters) when ``fused`` is True or "auto" and the
    parameters' device supports it, else the multi-tensor ``foreach`` implementation."""
    params = list(params)
    if fused:
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            if fused is True:
                raise
    return torch.optim.AdamW(params, foreach=True, **kw)


@contextlib.contextmanager
def sdpa_calls() -> Iterator[list]:
    """Count calls of ``F.scaled_dot_product_attention`` made inside the block (the yielded list gets
    one entry per call: the query shape). Used to check that a network's attention goes through SDPA
    (and so through flash / memory-efficient kernels) rather than a hand-written softmax."""
    calls: list = []
    orig = F.scaled_dot_product_attention

    def counting(q, *args, **kwargs):
        calls.append(tuple(q.shape))
        return orig(q, *args, **kwargs)

    F.scaled_dot_product_attention = counting
    try:
        yield calls
    finally:
        F.scaled_dot_product_attention = orig


# --- defaults -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainOptions:
    """Speed options of a training step. ``precision``: "fp32" | "bf16" | "fp16" (autocast)."""

    channels_last: bool = False
    precision: str = "fp32"
    fused_adamw: bool = True
    compile_mode: Optional[str] = None

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        return None if self.precision == "fp32" else DTYPES[self.precision]

    def to_dict(self) -> dict:
        return asdict(self)


def default_train_options(device: DeviceLike) -> TrainOptions:
    """undiffuse's out-of-the-box training options on ``device`` (eager; compile is opt-in).

    - CPU with native bf16 (AVX512-BF16 or AMX): bf16 autocast + fused AdamW, NCHW. oneDNN runs the
      convolutions and matmuls in bf16 (≈ 1.8× fp32 on the DDPM CIFAR-10 UNet, measured in
      ``benchmarks/results``) while weights, optimizer state, GroupNorm, softmax and the loss stay
      fp32 (autocast's lists), so no loss scaling is needed; the loss curve follows fp32's
      (``tests/test_speed.py``). channels_last gains nothing on CPU here (and loses on small widths).
    - CPU without native bf16: fp32 + fused AdamW.
    - CUDA: bf16 autocast where supported (fp16 otherwise), fused AdamW, NCHW. channels_last is left
      to the best path (with ``torch.compile``): eager on an H100 it is slower for both libraries'
      UNets (training 2,095 vs 2,491 img/s, DDIM sampling 130 vs 162 img/s for undiffuse's CIFAR-10 UNet,
      bf16; ``benchmarks/results/*-layout-probe.json``), GroupNorm and the attention reshapes converting
      layouts.
    """
    dev = _device(device)
    if dev.type == "cuda":
        dt = autocast_dtype(dev, "auto")
        return TrainOptions(channels_last=False, precision="bf16" if dt == torch.bfloat16 else "fp16")
    if dev.type == "cpu":
        return TrainOptions(precision="bf16" if bf16_supported(dev) else "fp32", fused_adamw=True)
    return TrainOptions(precision="fp32", fused_adamw=True)


def default_sample_options(device: DeviceLike) -> TrainOptions:
    """Options for sampling (no optimizer): fp32 eager on CPU (the reference numerics); on CUDA bf16, NCHW.
    CUDA graphs (:func:`maybe_cuda_graph`) and compile are opted into separately."""
    dev = _device(device)
    if dev.type == "cuda":
        return replace(default_train_options(dev), fused_adamw=False)
    return TrainOptions(precision="fp32", fused_adamw=False)


# --- CUDA graphs ----------------------------------------------------------------------------------
class GraphedNet(nn.Module):
    """A network whose calls are replayed from CUDA graphs, one per (input shape, dtype, autocast
    state). Keyword conditioning and calls with autograd enabled fall back to eager."""

    def __init__(self, net: nn.Module, warmup: int = 3) -> None:
        super().__init__()
        self.net = net
        self.warmup = warmup
        self._graphs: dict = {}
        self._pool = None

    def _capture(self, x: torch.Tensor, c_noise: torch.Tensor):
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        sx, sc = x.clone(), c_noise.clone()
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):  # lets cuDNN/cuBLAS pick and allocate outside the graph
                self.net(sx, sc)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.net(sx, sc)
        return graph, sx, sc, out

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, **cond) -> torch.Tensor:
        if cond or torch.is_grad_enabled() or x.device.type != "cuda":
            return self.net(x, c_noise, **cond)
        c_noise = c_noise.expand(x.shape[0]) if c_noise.ndim == 0 else c_noise
        amp = torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda")
        key = (tuple(x.shape), x.dtype, tuple(x.stride()), c_noise.dtype, amp)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x, c_noise)
        graph, sx, sc, out = self._graphs[key]
        sx.copy_(x)
        sc.copy_(c_noise)
        graph.replay()
        return out.clone()  # the next replay overwrites ``out``


class CudaGraphDenoiser(nn.Module):
    """A Precond-style denoiser (anything with a ``.net`` network and ``c_noise``) whose network is
    replayed from CUDA graphs: every sampler step with the same batch shape costs one graph launch
    instead of hundreds of kernel launches. The σ-dependent preconditioning stays eager, so any
    grid and any sampler work. Needs a CUDA device; raises ``RuntimeError`` on CPU (use
    :func:`maybe_cuda_graph` to fall back silently)."""

    def __init__(self, denoiser: nn.Module, warmup: int = 3) -> None:
        super().__init__()
        net = getattr(denoiser, "net", None)
        if not isinstance(net, nn.Module):
            raise TypeError("CudaGraphDenoiser wraps a Precond-like denoiser with a .net network module")
        dev = next(net.parameters()).device
        if dev.type != "cuda" or not torch.cuda.is_available():
            raise RuntimeError(f"CUDA graphs need a CUDA device; this network is on {dev.type}")
        inner = copy.copy(denoiser)  # shares parameters and schedule; only .net is swapped
        inner._modules = dict(denoiser._modules)
        inner._modules["net"] = GraphedNet(net, warmup)
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond):
        return self.inner.denoise(x, sigma, **cond)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        return self.inner(x, sigma, **cond)


def maybe_cuda_graph(denoiser, enabled: bool = True):
    """:class:`CudaGraphDenoiser` on a CUDA network when ``enabled``; the denoiser unchanged otherwise."""
    net = getattr(denoiser, "net", None)
    if not enabled or not isinstance(net, nn.Module) or not torch.cuda.is_available():
        return denoiser
    if next(net.parameters()).device.type != "cuda":
        return denoiser
    return CudaGraphDenoiser(denoiser)


# --- streaming to disk ------------------------------------------------------------------------------
def sample_to_disk(
    denoiser: Callable,
    n: int,
    shape: tuple[int, ...],
    out: Union[str, os.PathLike],
    *,
    sigmas: torch.Tensor,
    sampler: str = "ddim",
    batch_size: int = 256,
    seed: int = 0,
    device: DeviceLike = "cpu",
    images: Optional[bool] = None,
    cond: Optional[dict] = None,
    on_batch: Optional[Callable[[int, int], None]] = None,
    **options,
) -> Path:
    """Draw ``n`` samples of ``shape`` with the registered ``sampler`` and stream each batch to disk
    (:class:`undiffuse.data.kinds.SampleStream`: a memory-mapped ``.npy`` or one PNG per sample in a
    directory), holding at most one batch in memory. The one driver draws them, so sample i is the
    one :func:`undiffuse.api.sample` gives for (seed, i), whatever ``batch_size``. ``images`` defaults
    to ``len(shape) == 3``; ``on_batch(done, total)`` is called after each batch. Returns ``out``."""
    from types import SimpleNamespace

    from undiffuse.data.kinds import SampleStream
    from undiffuse.samplers.driver import drive, registry_batch

    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be positive, got {n} and {batch_size}")
    dev = _device(device)
    images = len(shape) == 3 if images is None else images
    info = SimpleNamespace(kind="image" if images else "vector", shape=tuple(shape), name="samples")
    sigmas = sigmas.to(dev)
    run_batch, counted = registry_batch(sampler, denoiser, sigmas, **options)
    with SampleStream(out, info, n) as stream:
        drive(run_batch, shape, n, seed=seed, sigma_max=sigmas[0], device=dev, batch_size=batch_size,
              cond=cond, write=stream, counted=counted, on_batch=on_batch)  # fmt: skip
    return Path(out)
