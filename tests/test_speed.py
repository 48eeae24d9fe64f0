"""Every speed path against the plain path: same numbers within fp32 (or bf16) tolerance."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from undiffuse import speed
from undiffuse.diffusion.precond import Precond
from undiffuse.nn import UNET_PRESETS, UNet
from undiffuse.samplers import sample_ddim
from undiffuse.schedules import make_schedule
from undiffuse.schedules.grids import discrete_sigmas


def tiny_unet(seed: int = 0) -> UNet:
    """The 'tiny' preset with its zero-initialised output layers randomised (so outputs are not 0)."""
    torch.manual_seed(seed)
    net = UNet(**UNET_PRESETS["tiny"])
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    return net


def batch(b: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, 8, 8, generator=g), torch.rand(b, generator=g) * 1000


def test_autocast_choices():
    assert speed.autocast_dtype("cpu") is None  # CPU: fp32 unless asked for
    assert speed.autocast_dtype("cpu", "bf16") == torch.bfloat16
    assert speed.autocast_dtype("cpu", "fp32") is None
    with pytest.raises(ValueError, match="fp16"):
        speed.autocast_dtype("cpu", "fp16")
    if torch.cuda.is_available():
        want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert speed.autocast_dtype("cuda") == want


def test_bf16_autocast_matches_fp32_within_bf16_tolerance():
    net, (x, c) = tiny_unet().eval(), batch()
    with torch.no_grad():
        ref = net(x, c)
        with speed.autocast("cpu", "bf16"):
            out = net(x, c)
        with speed.autocast("cpu"):  # auto on CPU: a no-op, bit-identical
            same = net(x, c)
    assert out.dtype == torch.bfloat16 and torch.equal(same, ref)
    err = (out.float() - ref).norm() / ref.norm()
    assert err < 3e-2, err  # bf16 has an 8-bit mantissa: ~0.4 % per op


def test_channels_last_forward_and_backward_match():
    net, (x, c) = tiny_unet(), batch()
    ref = net(x, c)
    ref.square().mean().backward()
    g_ref = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net_cl = speed.channels_last(net)
    assert net_cl.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    x_cl = speed.channels_last(x)
    out = net_cl(x_cl, c)
    out.square().mean().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, p in zip(g_ref, net_cl.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def _train(make_opt, steps: int = 3, cl: bool = False, amp=None) -> list[float]:
    """Losses of ``steps`` training steps of the tiny UNet (the loss after the last step included).
    Autocast wraps each forward only: its weight-cast cache lives until the context exits."""
    net, (x, c) = tiny_unet(), batch()
    if cl:
        net, x = speed.channels_last(net), speed.channels_last(x)
    opt = make_opt(net.parameters())
    losses = []
    for _ in range(steps):
        with speed.autocast("cpu", amp):
            loss = (net(x, c).float() - x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    with torch.no_grad():
        return losses + [(net(x, c) - x).square().mean().item()]


def _adamw_params(make_opt, steps: int = 3) -> list[torch.Tensor]:
    """AdamW on the tiny UNet's parameters with fixed gradients (one backward), ``steps`` times."""
    net, (x, c) = tiny_unet(), batch()
    (net(x, c) - x).square().mean().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    opt = make_opt(net.parameters())
    for _ in range(steps):
        for p, g in zip(net.parameters(), grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


def test_fused_adamw_matches_plain_adamw():
    opt = speed.make_adamw(tiny_unet().parameters(), lr=1e-3)
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")
    plain = _adamw_params(lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=False))
    for fused in (True, False):  # fused kernel, and the foreach fallback
        fast = _adamw_params(lambda p, f=fused: speed.make_adamw(p, fused=f, lr=1e-3))
        for a, b in zip(plain, fast):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_default_cpu_training_options_match_plain_training():
    """Whole training steps with the CPU defaults follow the plain fp32 loss curve: within fp32
    rounding for the fp32 parts (fused AdamW, channels_last), within bf16 tolerance with bf16.
    (Parameters are compared above: across steps Adam amplifies the rounding of near-zero
    gradients, so a loss curve is the meaningful end-to-end check.)"""
    opts = speed.default_train_options("cpu")
    assert opts.fused_adamw and opts.compile_mode is None
    assert opts.precision == ("bf16" if speed.bf16_supported("cpu") else "fp32")
    plain = _train(lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=False))
    fp32 = _train(lambda p: speed.make_adamw(p, fused=opts.fused_adamw, lr=1e-3), cl=True)
    np.testing.assert_allclose(fp32, plain, rtol=1e-3)
    default = _train(
        lambda p: speed.make_adamw(p, fused=opts.fused_adamw, lr=1e-3),
        cl=opts.channels_last,
        amp=opts.precision,
    )
    np.testing.assert_allclose(default, plain, rtol=3e-2)
    assert plain[-1] < plain[0] and default[-1] < default[0]


def test_unet_attention_uses_sdpa():
    net, (x, c) = tiny_unet().eval(), batch()
    n_attn = sum(1 for m in net.modules() if type(m).__name__ == "AttnBlock")
    with speed.sdpa_calls() as calls, torch.no_grad():
        net(x, c)
    assert n_attn > 0 and len(calls) == n_attn
    assert torch.nn.functional.scaled_dot_product_attention.__name__ != "counting"  # restored


def test_maybe_compile_without_mode_is_identity():
    net = tiny_unet()
    assert speed.maybe_compile(net, None) is net


@pytest.mark.slow
def test_compiled_network_matches_eager():
    net, (x, c) = tiny_unet().eval(), batch()
    t0 = time.perf_counter()
    compiled = speed.maybe_compile(net, "default")
    with torch.no_grad():
        out, ref = compiled(x, c), net(x, c)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    print(f"compile + first call: {time.perf_counter() - t0:.1f} s")


def test_cuda_graph_refuses_cpu_and_maybe_is_a_no_op():
    den = Precond(tiny_unet(), "eps", make_schedule("linear", 100))
    with pytest.raises(RuntimeError, match="CUDA"):
        speed.CudaGraphDenoiser(den)
    assert speed.maybe_cuda_graph(den) is den
    with pytest.raises(TypeError):
        speed.CudaGraphDenoiser(lambda x, s: x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_sampling_matches_eager():
    schedule = make_schedule("linear", 100)
    den = Precond(tiny_unet(), "eps", schedule).cuda().eval()
    sigmas = discrete_sigmas(schedule, 10, "trailing").cuda()
    x = torch.randn(4, 1, 8, 8, device="cuda") * sigmas[0].float()
    ref = sample_ddim(den, x, sigmas)
    graphed = speed.CudaGraphDenoiser(den)
    out = sample_ddim(graphed, x, sigmas)
    out2 = sample_ddim(graphed, x, sigmas)  # replayed from the captured graph
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out2, out)
    assert len(graphed.inner.net._graphs) == 1


def test_sample_to_disk_streams_and_equals_in_memory(tmp_path):
    schedule = make_schedule("linear", 100)
    den = Precond(tiny_unet(), "eps", schedule).eval()
    sigmas = discrete_sigmas(schedule, 4, "trailing")
    written = []
    path = speed.sample_to_disk(den, 7, (1, 8, 8), tmp_path / "s.npy", sigmas=sigmas, batch_size=3, seed=5,
                                on_batch=lambda a, b: written.append((a, b)))  # fmt: skip
    assert written == [(3, 7), (6, 7), (7, 7)]  # (done, total) after each batch
    arr = np.load(path, mmap_mode="r")
    assert arr.shape == (7, 8, 8, 1) and arr.dtype == np.uint8
    one = speed.sample_to_disk(den, 7, (1, 8, 8), tmp_path / "t.npy", sigmas=sigmas, batch_size=7, seed=5)
    assert np.array_equal(np.load(one), arr)  # independent of the batch size
    # the same samples as one in-memory run with the same per-sample noise
    from undiffuse.data.images import to_uint8
    from undiffuse.rng import derive_seed

    gens = [torch.Generator().manual_seed(derive_seed(5, "sample", i)) for i in range(7)]
    x = torch.stack([torch.randn((1, 8, 8), generator=g) for g in gens]) * sigmas[0].float()
    ref = to_uint8(sample_ddim(den, x, sigmas)).numpy()
    assert np.abs(ref.astype(int) - arr.astype(int)).max() <= 1  # ±1 from rounding at a .5 boundary
    pngs = speed.sample_to_disk(den, 5, (1, 8, 8), f"{tmp_path}/pngs/", sigmas=sigmas, batch_size=2, seed=5)
    assert sorted(p.name for p in pngs.iterdir()) == [f"{i:06d}.png" for i in range(5)]
    vec = speed.sample_to_disk(lambda x, s: x * 0, 4, (2,), tmp_path / "v.npy", sigmas=sigmas, batch_size=3)
    assert np.load(vec).dtype == np.float32 and np.load(vec).shape == (4, 2)


def test_cpu_bf16_attention_path_matches_sdpa():
    """The UNet's bf16-on-CPU attention (two matmuls, fp32 softmax) equals SDPA within bf16 tolerance."""
    from undiffuse.nn.unet import _self_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 49, 32, generator=g) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with speed.sdpa_calls() as calls:
        out = _self_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
        same = _self_attention(q, k, v)  # fp32: SDPA itself
    assert len(calls) == 1 and torch.equal(same, ref)
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=3e-2)
