"""The diffusers adapter: a randomly initialised UNet2DModel saved locally must behave, through
undiffuse, exactly as it does under diffusers' own schedulers (nothing is downloaded)."""

from __future__ import annotations

import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from undiffuse.adapters import load_diffusers_unet, require_diffusers, schedule_from_scheduler_config  # noqa: E402
from undiffuse.adapters.diffusers import MissingExtraError  # noqa: E402
from undiffuse.errors import CheckpointError, ConfigError  # noqa: E402
from undiffuse.samplers import sample_ddim  # noqa: E402
from undiffuse.schedules.grids import discrete_sigmas  # noqa: E402


def tiny_unet(seed: int = 0, channels: int = 2, out_channels: int | None = None):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=out_channels or channels, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pipeline-style layout: <root>/unet (safetensors) and <root>/scheduler (DDIM config)."""
    root = tmp_path_factory.mktemp("pipe")
    unet = tiny_unet()
    unet.save_pretrained(root / "unet", safe_serialization=True)
    sched = diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False, prediction_type="epsilon")
    sched.save_pretrained(root / "scheduler")
    return root, unet


def vp_to_sigma_space(x_t: torch.Tensor, sigma) -> torch.Tensor:
    return x_t * torch.sqrt(1 + torch.as_tensor(sigma, dtype=torch.float64) ** 2).float()


def test_eps_prediction_equals_unet_output(saved):
    root, unet = saved
    den, schedule = load_diffusers_unet(root / "unet")  # finds ../scheduler by itself
    assert schedule.T == 1000 and den.parameterization == "eps"
    g = torch.Generator().manual_seed(1)
    for t_d in (0, 1, 17, 500, 998, 999):
        x_t = torch.randn(3, 2, 8, 8, generator=g)
        sigma = schedule.sigmas[t_d].expand(3)
        assert float(den.c_noise(sigma)[0]) == t_d  # the network sees diffusers' index exactly
        x = vp_to_sigma_space(x_t, sigma[0])
        eps = (x - den(x, sigma)) / sigma[0].float()
        with torch.no_grad():
            ref = unet(x_t, t_d).sample
        torch.testing.assert_close(eps, ref, rtol=1e-4, atol=2e-5)


def test_schedules_match_diffusers_alphas_cumprod():
    for kw in (
        dict(beta_schedule="linear"),
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        dict(beta_schedule="squaredcos_cap_v2"),
        dict(beta_schedule="linear", num_train_timesteps=200),
    ):
        ref = diffusers.DDPMScheduler(**kw).alphas_cumprod.double()
        schedule, param, learned = schedule_from_scheduler_config(None, **kw)
        assert param == "eps" and not learned
        torch.testing.assert_close(schedule.alpha_bar, ref, rtol=2e-6, atol=1e-9)
    zsnr, param, _ = schedule_from_scheduler_config(
        {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction"}
    )
    assert param == "v" and float(zsnr.alpha_bar[-1]) == 0.0
    with pytest.raises(ConfigError):
        schedule_from_scheduler_config(None, beta_schedule="bogus")
    with pytest.raises(ConfigError):
        schedule_from_scheduler_config(None, not_a_key=1)


def _diffusers_ddim(unet, sched, latents, n):
    sched.set_timesteps(n)
    x = latents.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    return x, sched.timesteps


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("n", [1, 10, 25])
def test_ddim_sampling_equals_diffusers_ddim_trailing(saved, prediction_type, n):
    """diffusers' DDIMScheduler with timestep_spacing='trailing' (T divisible by n) visits exactly
    undiffuse's trailing grid (steps T, T − T/n, …, T/n), so DDIM(η = 0) agrees to float32 rounding."""
    root, unet = saved
    den, schedule = load_diffusers_unet(root / "unet", prediction_type=prediction_type)
    sched = diffusers.DDIMScheduler(
        clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing", prediction_type=prediction_type
    )
    noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    ref, timesteps = _diffusers_ddim(unet, sched, noise, n)
    sigmas = discrete_sigmas(schedule, n, "trailing")
    assert torch.equal(schedule.sigmas[timesteps], sigmas[:-1])  # same grid, index t_d = t − 1
    out = sample_ddim(den, vp_to_sigma_space(noise, sigmas[0]), sigmas)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_ddim_leading_spacing_also_matches(saved):
    """diffusers' default 'leading' spacing (steps 1, 1 + T/n, …, never T) is undiffuse's 'leading'."""
    root, unet = saved
    den, schedule = load_diffusers_unet(root / "unet")
    sched = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    ref, _ = _diffusers_ddim(unet, sched, noise, 20)
    sigmas = discrete_sigmas(schedule, 20, "leading")
    out = sample_ddim(den, vp_to_sigma_space(noise, sigmas[0]), sigmas)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_pickled_bin_only_is_refused(tmp_path, monkeypatch):
    tiny_unet().save_pretrained(tmp_path / "unet", safe_serialization=False)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the adapter must never unpickle"))
    with pytest.raises(CheckpointError, match="pickled") as err:
        load_diffusers_unet(tmp_path / "unet")
    assert "\n" not in str(err.value)


def test_missing_files_and_wrong_class(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_diffusers_unet(tmp_path)
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    with pytest.raises(CheckpointError, match="UNet2DModel"):
        load_diffusers_unet(tmp_path)


def test_learned_range_variance(tmp_path):
    tiny_unet(channels=1, out_channels=2).save_pretrained(tmp_path / "u")
    den, _ = load_diffusers_unet(tmp_path / "u", {"variance_type": "learned_range"})
    assert den.learned_variance
    x = torch.randn(2, 1, 8, 8)
    out = den.denoise(x, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert out.denoised.shape == x.shape and out.var_frac.shape == x.shape


def test_missing_diffusers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'undiffuse\[bench\]'"):
        require_diffusers()
