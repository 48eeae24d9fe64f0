"""Quality per network evaluation: each sampler's distance to a converged probability-flow ODE
solution from the same starting noise at the same starting noise level.

Protocol. n starting points x_T = noise ~ N(0, I) (the VP state at the last training step T; in
σ-space x = x_T·√(1+σ_T²)). The reference solves the PF-ODE dx/dσ = (x − D(x; σ))/σ from σ_T to 0
with Heun (Karras et al. 2022, Alg. 1) on a ρ = 7 grid of ``reference_steps`` steps; its own error
is estimated against half as many steps and reported. Each undiffuse deterministic sampler runs at
5, 10, 20 and 50 network evaluations (NFE; counted) on each grid of ``grids``; diffusers' DDIM,
DPMSolverMultistep (2M, DPM-Solver++) and UniPC schedulers run on the same network (through
:class:`~undiffuse.adapters.DenoiserAsEpsModel`) with ``timestep_spacing="trailing"`` so that they too
start at step T. The error of a sample is the RMS difference to its reference (data units);
reported is the mean over the n samples. On a Gaussian-mixture toy also the modes covered and the
high-quality share (VEEGAN/PacGAN protocol, :func:`undiffuse.evaluation.modes.mode_coverage`).
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Union

import torch

from undiffuse.bench.report import row
from undiffuse.samplers.common import Counted
from undiffuse.schedules.discrete import Schedule
from undiffuse.schedules.grids import make_sigmas

__all__ = [
    "DIFFUSERS_SCHEDULERS",
    "UNDIFFUSE_SAMPLERS",
    "oracle_quality",
    "quality_per_nfe",
    "quality_rows",
    "distances_per_nfe",
    "rows_from_distances",
    "rows_from_quality",
    "sigmas_for_nfe",
]

#: deterministic undiffuse samplers compared (ddim = euler on the PF-ODE)
UNDIFFUSE_SAMPLERS = ("ddim", "heun", "dpmpp_2m", "dpmpp_3m", "unipc")
DIFFUSERS_SCHEDULERS = ("DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
NFES = (5, 10, 20, 50)


def sigmas_for_nfe(name: str, nfe: int, schedule: Schedule, grid: str) -> torch.Tensor:
    """The ``grid`` with the most steps whose cost is at most ``nfe`` evaluations (``expected_nfe``: N for
    the one-evaluation samplers; for Heun 2N − 1, less where it takes large-ratio steps as Euler steps)."""
    from undiffuse.samplers.registry import expected_nfe

    if name != "heun":
        return make_sigmas(schedule, nfe, grid)
    for steps in range(nfe, 0, -1):
        sig = make_sigmas(schedule, steps, grid)
        if expected_nfe(name, sig) <= nfe:
            return sig
    raise ValueError(f"no {grid} grid costs ≤ {nfe} evaluations with {name}")


def _start(schedule: Schedule, n: int, shape: Sequence[int], seed: int, dev: torch.device):
    """(noise, x_start): n starting points x_T = noise ~ N(0, I) at the last training step T (what diffusers'
    schedulers start from) and the same state in σ-space, x = x_T·√(1 + σ_T²) (what undiffuse's start from)."""
    sigma_T = schedule.sigmas[-1]
    if torch.isinf(sigma_T):
        raise ValueError(
            "zero-terminal-SNR schedules start at σ = ∞; the diffusers comparison needs a finite σ_T"
        )
    noise = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)).to(dev)
    return noise, noise * torch.sqrt(1 + sigma_T**2).float()


def _rms(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-sample RMS difference [n]."""
    return (x.double() - ref.double()).flatten(1).pow(2).mean(1).sqrt()


def _run_undiffuse(name: str, denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, int]:
    from undiffuse.samplers.registry import sample

    counted = Counted(denoiser)
    with torch.no_grad():
        out = sample(name, counted, x, sigmas)
    return out, counted.nfe


def _run_diffusers(cls_name: str, denoiser, schedule: Schedule, noise: torch.Tensor, steps: int):
    import diffusers

    from undiffuse.adapters.diffusers import DenoiserAsEpsModel

    kw = dict(num_train_timesteps=schedule.T, trained_betas=schedule.betas.float().tolist(),
              prediction_type="epsilon", timestep_spacing="trailing")  # fmt: skip
    if cls_name == "DDIMScheduler":
        kw.update(clip_sample=False, set_alpha_to_one=True)
    sched = getattr(diffusers, cls_name)(**kw)
    sched.set_timesteps(steps, device=noise.device)
    model = DenoiserAsEpsModel(denoiser, schedule)
    x = noise * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model(sched.scale_model_input(x, t), t), t, x).prev_sample
    return x, model.nfe


def quality_per_nfe(
    denoiser: Callable,
    schedule: Schedule,
    shape: Sequence[int],
    *,
    n: int = 64,
    nfes: Sequence[int] = NFES,
    grids: Sequence[str] = ("trailing", "karras", "logsnr"),
    samplers: Sequence[str] = UNDIFFUSE_SAMPLERS,
    with_diffusers: bool = True,
    reference_steps: int = 500,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    mixture: Optional[tuple[torch.Tensor, float]] = None,
) -> dict:
    """Errors (and, with ``mixture`` = (means, σ), mode coverage) per sampler and NFE; see the module
    docstring. Returns {"reference": {...}, "errors": {"undiffuse:<sampler>@<grid>" |
    "diffusers:<Scheduler>": {nfe: mean error}}, "nfe": {... counted ...}, "modes": {...}}."""
    dev = torch.device(device)
    noise, x_start = _start(schedule, n, shape, seed, dev)
    sigma_T = schedule.sigmas[-1]
    with torch.no_grad():
        ref_sig = make_sigmas(schedule, reference_steps, "karras").to(dev)
        ref, _ = _run_undiffuse("heun", denoiser, x_start, ref_sig)
        half, _ = _run_undiffuse(
            "heun", denoiser, x_start, make_sigmas(schedule, reference_steps // 2, "karras").to(dev)
        )
    out: dict = {
        "reference": {"sampler": "heun", "grid": "karras", "steps": reference_steps, "nfe": 2 * reference_steps - 1,
                      "error_vs_half_steps": float(_rms(half, ref).mean()), "n": n, "sigma_start": float(sigma_T)},
        "errors": {}, "nfe": {}, "modes": {},
    }  # fmt: skip
    results: dict[str, dict[int, torch.Tensor]] = {}
    for name in samplers:
        for grid in grids:
            key = f"undiffuse:{name}@{grid}"
            for nfe in nfes:
                sig = sigmas_for_nfe(name, nfe, schedule, grid).to(dev)
                x, used = _run_undiffuse(name, denoiser, x_start, sig)
                results.setdefault(key, {})[nfe] = x
                out["nfe"].setdefault(key, {})[nfe] = used
    if with_diffusers:
        for cls_name in DIFFUSERS_SCHEDULERS:
            key = f"diffusers:{cls_name}"
            for nfe in nfes:
                x, used = _run_diffusers(cls_name, denoiser, schedule, noise, nfe)
                results.setdefault(key, {})[nfe] = x
                out["nfe"].setdefault(key, {})[nfe] = used
    for key, per in results.items():
        out["errors"][key] = {nfe: float(_rms(x, ref).mean()) for nfe, x in per.items()}
    if mixture is not None:
        from undiffuse.evaluation.modes import mode_coverage

        means, std = mixture
        cov = lambda x: {k: v for k, v in mode_coverage(x.flatten(1).cpu(), means, std).items()
                         if k in ("modes_covered", "n_modes", "high_quality_share")}  # fmt: skip
        out["modes"]["reference"] = cov(ref)
        for key, per in results.items():
            out["modes"][key] = {nfe: cov(x) for nfe, x in per.items()}
    return out


def _best(errors: dict, lib: str, nfe: int, higher: bool = False) -> tuple[Optional[float], str]:
    cands = [(v[nfe], k.split(":", 1)[1]) for k, v in errors.items() if k.startswith(lib + ":") and nfe in v]
    if not cands:
        return None, ""
    return max(cands) if higher else min(cands)


def rows_from_quality(q: dict, label: str) -> list[dict]:
    """Rows: best undiffuse vs best diffusers error at each NFE (and modes covered on a toy)."""
    rows = []
    nfes = sorted({nfe for v in q["errors"].values() for nfe in v})
    ref = q["reference"]
    for nfe in nfes:
        u, uk = _best(q["errors"], "undiffuse", nfe)
        d, dk = _best(q["errors"], "diffusers", nfe)
        rows.append(row(f"quality_{label}_err@{nfe}", "RMS to PF-ODE ref", u, d,
                        f"best undiffuse {uk} vs best diffusers {dk or '–'}; n = {ref['n']}, ref Heun "
                        f"{ref['steps']} steps (±{ref['error_vs_half_steps']:.1e}); speedup = diffusers ÷ undiffuse "
                        "error", higher_is_better=False))  # fmt: skip
    if q.get("modes"):
        share = {k: {nfe: m["high_quality_share"] for nfe, m in v.items()} for k, v in q["modes"].items()
                 if k != "reference"}  # fmt: skip
        covered = {k: {nfe: m["modes_covered"] for nfe, m in v.items()} for k, v in q["modes"].items()
                   if k != "reference"}  # fmt: skip
        for nfe in nfes:
            u, uk = _best(covered, "undiffuse", nfe, higher=True)
            d, dk = _best(covered, "diffusers", nfe, higher=True)
            rows.append(row(f"quality_{label}_modes@{nfe}", "modes covered", u, d, f"{uk} vs {dk or '–'}"))
            u, uk = _best(share, "undiffuse", nfe, higher=True)
            d, dk = _best(share, "diffusers", nfe, higher=True)
            rows.append(row(f"quality_{label}_hq@{nfe}", "high-quality share", u, d, f"{uk} vs {dk or '–'}"))
    return rows


def quality_rows(
    run: Union[str, os.PathLike, tuple], label: str, device: Union[str, torch.device] = "cpu", *,
    n: int = 64, with_diffusers: bool = True, **kw,
) -> tuple[list[dict], dict]:  # fmt: skip
    """(rows, details) for a trained run directory (loaded with ``undiffuse.model.load``, raw weights
    of the EMA) or a tuple (denoiser, schedule, shape[, mixture])."""
    mixture = None
    if isinstance(run, tuple):
        denoiser, schedule, shape = run[:3]
        mixture = run[3] if len(run) > 3 else None
    else:
        from undiffuse.model import load

        model = load(run, device=device)
        denoiser, schedule, shape = model.denoiser, model.schedule, model.data.shape
        toy = model.data.name.split(":")[-1]
        if model.data.kind == "vector" and toy in ("25gaussians", "8gaussians"):
            from undiffuse.data.toys import toy_modes

            mixture = toy_modes(toy)
            n = max(n, 2500 if kw.pop("full_protocol", True) else n)  # the published protocol: 2,500 samples
    fd_samples = kw.pop("fd_samples", 0)
    q = quality_per_nfe(denoiser, schedule, tuple(shape), n=n, device=device, with_diffusers=with_diffusers,
                        mixture=mixture, **kw)  # fmt: skip
    rows = rows_from_quality(q, label)
    if fd_samples and not isinstance(run, tuple) and model.data.kind == "image":
        q["distances"] = distances_per_nfe(denoiser, schedule, tuple(shape), model.data.name, q, n=fd_samples,
                                           device=device, with_diffusers=with_diffusers)  # fmt: skip
        rows += rows_from_distances(q["distances"], label)
    return rows, q


def distances_per_nfe(
    denoiser: Callable, schedule: Schedule, shape: Sequence[int], data_spec: str, q: dict, *, n: int = 500,
    nfes: Optional[Sequence[int]] = None, with_diffusers: bool = True, seed: int = 1,
    device: Union[str, torch.device] = "cpu",
) -> dict:  # fmt: skip
    """Image distribution distances (step 4's metric) beside the per-NFE errors: the Fréchet distance in the
    features of undiffuse's in-domain classifier (``evaluate_samples``' ``classifier_fd``) against the test
    split, of n samples from the best undiffuse sampler and the best diffusers scheduler at each NFE (best =
    lowest error in ``q``), and of 1000-step ancestral DDPM (fixed-small variance, Ho et al. 2020) from the
    same starting noise — the reference the issue's "within 20 % at 10 NFE" goal is stated against.
    ``nfes`` defaults to those of 10 and 20 that ``q`` has (else its smallest)."""
    from undiffuse.evaluation.report import classifier_fd_to
    from undiffuse.schedules.grids import discrete_sigmas

    dev = torch.device(device)
    have = sorted({nfe for v in q["errors"].values() for nfe in v})
    nfes = nfes or ([k for k in (10, 20) if k in have] or have[:1])
    noise, x_start = _start(schedule, n, shape, seed, dev)

    fd_to_test = classifier_fd_to(data_spec, "test", dev)
    fd = lambda x: float(fd_to_test(x.clamp(-1, 1).cpu()))  # noqa: E731

    with torch.no_grad():
        ddpm, ddpm_nfe = _run_undiffuse("ddpm", denoiser, x_start, discrete_sigmas(schedule).to(dev))
    out: dict = {"n": n, "data": data_spec, "split": "test", "metric": "classifier_fd",
                 "ddpm": {"nfe": ddpm_nfe, "fd": fd(ddpm)}, "per_nfe": {}}  # fmt: skip
    for nfe in nfes:
        per: dict = {}
        best_u, key_u = _best(q["errors"], "undiffuse", nfe)
        if best_u is not None:
            name, grid = key_u.split("@")
            x, used = _run_undiffuse(name, denoiser, x_start, sigmas_for_nfe(name, nfe, schedule, grid).to(dev))
            per["undiffuse"] = {"sampler": key_u, "nfe": used, "fd": fd(x)}
        best_d, key_d = _best(q["errors"], "diffusers", nfe)
        if with_diffusers and best_d is not None:
            x, used = _run_diffusers(key_d, denoiser, schedule, noise, nfe)
            per["diffusers"] = {"sampler": key_d, "nfe": used, "fd": fd(x)}
        out["per_nfe"][nfe] = per
    return out


def rows_from_distances(d: dict, label: str) -> list[dict]:
    """Rows ``quality_<label>_fd@<nfe>`` (lower is better; speedup = diffusers ÷ undiffuse) and the
    ratio of each to 1000-step DDPM's distance in the note."""
    ref = d["ddpm"]["fd"]
    rows = [row(f"quality_{label}_fd_ddpm1000", "classifier FD", ref, None,
                f"1000-step DDPM, n = {d['n']} vs the {d['split']} split", higher_is_better=False)]  # fmt: skip
    for nfe, per in d["per_nfe"].items():
        u, t = per.get("undiffuse", {}), per.get("diffusers", {})
        ratios = ", ".join(f"{k} {v['fd'] / ref:.2f}× DDPM-1000's" for k, v in (("undiffuse", u), ("diffusers", t)) if v)
        rows.append(row(f"quality_{label}_fd@{nfe}", "classifier FD", u.get("fd"), t.get("fd"),
                        f"{u.get('sampler', '–')} vs {t.get('sampler', '–')} (best by error), n = {d['n']}; {ratios}; "
                        "speedup = diffusers ÷ undiffuse", higher_is_better=False))  # fmt: skip
    return rows


def oracle_quality(device: Union[str, torch.device] = "cpu", *, n: int = 500, tiny: bool = False,
                   with_diffusers: bool = True) -> tuple[list[dict], dict]:  # fmt: skip
    """Quality rows on the exact denoiser D*(x; σ) of the 25-Gaussian mixture (σ = 0.05) under DDPM's
    linear schedule (T = 1000): no trained network, so the differences are the samplers' alone."""
    from undiffuse.data.toys import toy_modes
    from undiffuse.diffusion.oracles import GaussianMixtureOracle
    from undiffuse.schedules import make_schedule

    means, std = toy_modes("25gaussians")
    kw = dict(nfes=(5, 10), reference_steps=200, grids=("trailing", "logsnr")) if tiny else {}
    q = quality_per_nfe(GaussianMixtureOracle(means, std), make_schedule("linear", 1000), (2,), n=n,
                        device=device, with_diffusers=with_diffusers, mixture=(means, std), **kw)  # fmt: skip
    return rows_from_quality(q, "gmm25_oracle"), q
