"""Networks: shapes, conditioning, presets, memory formats (Ho et al. 2020 U-Net; residual MLP)."""

import math

import pytest
import torch

from undiffuse.nn import MLP, UNET_PRESETS, UNet, num_groups_for, timestep_embedding


def randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised output layers random weights, so every path reaches the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


def small_unet(**kw) -> UNet:
    cfg = dict(in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
               attn_resolutions=(4,), dropout=0.0, num_groups=4, image_size=8)  # fmt: skip
    cfg.update(kw)
    torch.manual_seed(0)
    return randomize(UNet(**cfg))


@pytest.mark.parametrize(
    "size, cin, cout, mult, attn",
    [
        (8, 1, 1, (1, 2), (4,)),
        (28, 1, 2, (1, 2, 2), (7,)),  # learned variance: 2·C outputs
        (28, 1, 1, (1, 2, 2, 2), (7,)),  # 28 → 14 → 7 → 4: the odd size must come back to 7
        (32, 3, 6, (1, 2, 2, 2), (16,)),
        (12, 4, 4, (1, 2, 2), ()),  # 12 → 6 → 3, any channel count, no attention
    ],
)
def test_unet_output_shape(size, cin, cout, mult, attn):
    net = small_unet(in_channels=cin, out_channels=cout, channel_mult=mult, attn_resolutions=attn,
                     image_size=size)  # fmt: skip
    x = torch.randn(2, cin, size, size)
    out = net(x, torch.tensor([3.0, 700.0]))
    assert out.shape == (2, cout, size, size)
    assert torch.isfinite(out).all()


def test_unet_scale_shift_and_heads():
    net = small_unet(scale_shift=True, num_heads=2, cond_dim=4)
    x = torch.randn(2, 1, 8, 8)
    y = net(x, torch.tensor([1.0, 2.0]), context=torch.randn(2, 3, 4))
    assert y.shape == (2, 1, 8, 8) and torch.isfinite(y).all()
    with pytest.raises(ValueError):
        UNet(1, base_channels=16, num_heads=3, num_groups=4)


def test_unet_non_square_and_scalar_c_noise():
    net = small_unet()
    out = net(torch.randn(3, 1, 8, 12), torch.tensor(10.0))
    assert out.shape == (3, 1, 8, 12)


def test_unet_starts_at_zero_and_backprops():
    torch.manual_seed(0)
    net = UNet(**UNET_PRESETS["tiny"])
    x = torch.randn(4, 1, 8, 8)
    out = net(x, torch.rand(4) * 1000)
    assert out.abs().max() == 0  # zero-initialised output conv, as in Ho et al.
    out.sum().backward()
    assert net.conv_out.weight.grad.abs().sum() > 0


def test_unet_depends_on_c_noise_in_vp_and_edm_ranges():
    net = small_unet()
    x = torch.randn(2, 1, 8, 8)
    for a, b in [(10.0, 500.0), (-1.2, 0.3)]:  # 1000·t/T and ln(σ)/4
        ya = net(x, torch.full((2,), a))
        yb = net(x, torch.full((2,), b))
        assert (ya - yb).abs().max() > 1e-3


def test_class_labels_condition_and_null_label():
    net = small_unet(num_classes=10)
    x, c = torch.randn(2, 1, 8, 8), torch.full((2,), 100.0)
    y3 = net(x, c, class_labels=torch.tensor([3, 3]))
    y5 = net(x, c, class_labels=torch.tensor([5, 5]))
    assert (y3 - y5).abs().max() > 1e-4
    null = net(x, c, class_labels=torch.tensor([10, 10]))  # index num_classes = the CFG null label
    torch.testing.assert_close(net(x, c), null)
    with pytest.raises(ValueError):
        small_unet()(x, c, class_labels=torch.tensor([1, 2]))


def test_context_cross_attention_and_mask():
    net = small_unet(cond_dim=12)
    x, c = torch.randn(2, 1, 8, 8), torch.full((2,), 100.0)
    ctx = torch.randn(2, 5, 12)
    y = net(x, c, context=ctx)
    assert (y - net(x, c)).abs().max() > 1e-4
    assert (y - net(x, c, context=torch.randn(2, 5, 12))).abs().max() > 1e-4
    # masking a token is the same as removing it
    mask = torch.tensor([[True, True, False, True, True]] * 2)
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(net(x, c, context=ctx, context_mask=mask), net(x, c, context=ctx[:, keep]))
    # a row with no valid token gets no cross-attention at all
    none = torch.zeros(2, 5, dtype=torch.bool)
    torch.testing.assert_close(net(x, c, context=ctx, context_mask=none), net(x, c))
    with pytest.raises(ValueError):
        small_unet()(x, c, context=ctx)


def test_x_cond_super_resolution_input():
    net = small_unet(extra_in_channels=1)
    x, c = torch.randn(2, 1, 8, 8), torch.full((2,), 100.0)
    low = torch.randn(2, 1, 8, 8)
    y = net(x, c, x_cond=low)
    assert (y - net(x, c, x_cond=torch.randn(2, 1, 8, 8))).abs().max() > 1e-4
    assert net(x, c, x_cond=torch.randn(2, 1, 4, 4)).shape == (2, 1, 8, 8)  # resized to the input
    with pytest.raises(ValueError):
        net(x, c)
    with pytest.raises(ValueError):
        small_unet()(x, c, x_cond=low)


def test_unknown_kwargs_raise_type_error():
    x, c = torch.randn(1, 1, 8, 8), torch.ones(1)
    with pytest.raises(TypeError):
        small_unet()(x, c, labels=torch.tensor([1]))
    with pytest.raises(TypeError):
        MLP(2)(torch.randn(1, 2), c, context=None)


def test_ddpm_cifar10_preset_parameter_count():
    with torch.device("meta"):
        net = UNet(**UNET_PRESETS["ddpm-cifar10"])
    n = sum(p.numel() for p in net.parameters())
    assert n == 35_746_307  # the official DDPM CIFAR-10 model
    assert abs(n - 35.7e6) / 35.7e6 < 0.01


@pytest.mark.parametrize("name, lo, hi", [("fmnist-small", 1e6, 2e6), ("tiny", 5e4, 5e5)])
def test_small_presets(name, lo, hi):
    torch.manual_seed(0)
    net = UNet(**UNET_PRESETS[name]).eval()
    assert lo <= sum(p.numel() for p in net.parameters()) <= hi
    s, c = UNET_PRESETS[name]["image_size"], UNET_PRESETS[name]["in_channels"]
    assert net(torch.randn(2, c, s, s), torch.ones(2)).shape == (2, c, s, s)


def test_channels_last_matches_contiguous():
    net = small_unet(in_channels=3, channel_mult=(1, 2, 2), attn_resolutions=(4,), image_size=16,
                     num_classes=4, cond_dim=8)  # fmt: skip
    x, c = torch.randn(2, 3, 16, 16), torch.tensor([5.0, 900.0])
    cond = dict(class_labels=torch.tensor([0, 3]), context=torch.randn(2, 3, 8))
    ref = net(x, c, **cond)
    net_cl = net.to(memory_format=torch.channels_last)
    out = net_cl(x.contiguous(memory_format=torch.channels_last), c, **cond)
    assert (out - ref).abs().max() < 1e-5


def test_timestep_embedding_and_groups():
    e = timestep_embedding(torch.tensor([0.0, 1.0, 999.0]), 7)
    assert e.shape == (3, 7) and (e[:, -1] == 0).all()
    torch.testing.assert_close(e[0, :3], torch.zeros(3))  # sin(0) = 0
    torch.testing.assert_close(e[0, 3:6], torch.ones(3))  # cos(0) = 1
    assert math.isclose(e[1, 0].item(), math.sin(1.0), rel_tol=1e-6)
    with pytest.raises(ValueError):
        timestep_embedding(torch.zeros(2, 1), 8)
    assert [num_groups_for(c, 32) for c in (128, 48, 20, 7)] == [32, 24, 20, 7]
    assert num_groups_for(12, 8) == 6


def test_mlp_shapes_labels_and_noise():
    torch.manual_seed(0)
    net = randomize(MLP(2, hidden=32, depth=2, emb_dim=16, num_classes=3))
    x, c = torch.randn(5, 2), torch.full((5,), 50.0)
    y = net(x, c)
    assert y.shape == (5, 2)
    assert (net(x, c, class_labels=torch.full((5,), 1)) - y).abs().max() > 1e-4
    torch.testing.assert_close(net(x, c, class_labels=torch.full((5,), 3)), y)  # null label
    assert (net(x, torch.full((5,), -1.0)) - y).abs().max() > 1e-4
    assert MLP(7, hidden=16, depth=1, out_dim=14)(torch.randn(4, 7), torch.zeros(4)).shape == (4, 14)
    with pytest.raises(ValueError):
        net(torch.randn(5, 3), c)
