"""Distillation (issue 15): progressive distillation's target, the consistency function and its sampler, and
students as ordinary runs — exact resume, few-step default sampling, per-sample determinism, the CLI."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from undiffuse.diffusion.consistency import ConsistencyFunction, consistency_coefficients
from undiffuse.diffusion.oracles import GaussianOracle
from undiffuse.diffusion.precond import DenoiserOutput, DenoiserWrapper, Precond
from undiffuse.losses.distill import ddim_step, lognormal_pairs, progressive_target, pseudo_huber
from undiffuse.samplers.ddpm import sample_ddim
from undiffuse.samplers.registry import sample as run_sampler

pytestmark = pytest.mark.usefixtures("one_thread_module")
F64 = torch.float64
M, S = 0.3, 0.5  # the Gaussian oracle's data: N(M, S²)


def test_progressive_target_is_two_teacher_ddim_steps():
    """Salimans & Ho 2022, Alg. 2 with the exact Gaussian teacher: one DDIM step σ → σ'' with x̂_0 = x̃ lands
    exactly where two teacher DDIM steps σ → σ' → σ'' land (sample_ddim, the registry's DDIM), and x̃ equals the
    closed form: each DDIM step maps x − m to (g + (σ'/σ)(1 − g))(x − m), g = S²/(S² + σ²)."""
    teacher = GaussianOracle(M, S)
    sig = torch.tensor([80.0, 3.0, 1.0, 0.4, math.inf, 2.0], dtype=F64)
    mid = torch.tensor([10.0, 1.5, 0.5, 0.1, 5.0, 1.0], dtype=F64)
    nxt = torch.tensor([2.0, 0.0, 0.2, 0.0, 1.0, 0.5], dtype=F64)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * torch.where(sig.isinf(), 1.0, sig)[:, None]
    target = progressive_target(teacher, x, sig, mid, nxt, {})
    for i in range(6):  # two teacher steps of the registry's DDIM, one example at a time
        two = sample_ddim(teacher, x[i : i + 1], torch.stack([sig[i], mid[i], nxt[i]]))
        one = sample_ddim(lambda x_, s_, i=i: target[i : i + 1], x[i : i + 1], torch.stack([sig[i], nxt[i]]))
        torch.testing.assert_close(one, two, rtol=1e-12, atol=1e-12)

    def factor(s, s_next):  # (x' − m) / (x − m) of one exact DDIM step on N(m, S²) data
        g = S**2 / (S**2 + s**2) if math.isfinite(s) else 0.0
        return g + (s_next / s) * (1 - g) if math.isfinite(s) else None

    for i in [0, 1, 2, 3, 5]:
        s, s1, s2 = (float(v) for v in (sig[i], mid[i], nxt[i]))
        a = factor(s, s1) * factor(s1, s2)  # x'' − m = a (x − m)
        r = s2 / s
        closed = M + (a - r) / (1 - r) * (x[i] - M)  # x̃ = (x'' − r x)/(1 − r)
        torch.testing.assert_close(target[i], closed, rtol=1e-12, atol=1e-12)


def _oracle_model(schedule: str = "cosine"):
    """What TeacherPool reads of a run, around the exact Gaussian denoiser (no clipping)."""
    from types import SimpleNamespace

    from undiffuse.schedules import make_schedule

    cfg = SimpleNamespace(model=SimpleNamespace(class_cond=False, text_cond=False), diffusion=SimpleNamespace(clip=None))
    return SimpleNamespace(schedule=make_schedule(schedule, 1000), data=SimpleNamespace(shape=(3,)), config=cfg,
                           denoiser=GaussianOracle(M, S))  # fmt: skip


def test_teacher_pool_targets_land_on_the_teachers_ode_solution(tmp_path):
    """Accurate-teacher targets with the exact Gaussian teacher: the stored states are those of one run of the
    registry's unipc over the 16-step grid (its output, and the states it holds at the 4-step grid's points);
    for the rounds of 4, 2 and 1 steps, one student DDIM step with x̂_0 = ddim_target lands exactly on the
    teacher's multi-step solution; and that solution is the PF-ODE's, (x − m)/√(S² + σ²) = const, up to the
    solver's error, far below that of two DDIM steps."""
    from undiffuse.config import DistillConfig
    from undiffuse.losses.distill import ddim_target
    from undiffuse.training.distill import TeacherPool

    d = DistillConfig(method="progressive", teacher_solver="unipc", teacher_steps=16, pool=40)
    pool = TeacherPool(_oracle_model(), d, 4, seed=7)
    x = pool.load_or_make(tmp_path / "pool.safetensors", torch.device("cpu"), batch=16).double()
    sig = pool.sigmas
    assert x.shape == (40, 5, 3) and torch.equal(sig, pool.fine[::4]) and sig[-1] == 0
    held = {}
    out = run_sampler("unipc", GaussianOracle(M, S), x[:, 0], pool.fine, callback=lambda c: held.setdefault(c["i"], c["x"]))
    torch.testing.assert_close(out, x[:, 4], rtol=1e-5, atol=1e-5)
    for k in range(1, 4):
        torch.testing.assert_close(held[4 * k - 1], x[:, k], rtol=1e-5, atol=1e-5)
    j = torch.arange(40)
    for m in (1, 2, 4):  # the rounds of 4, 2 and 1 steps
        for i in range(4 // m):
            xi, xn, s, sn = (v.double() for v in pool.pairs(j, torch.full((40,), i), m))
            target = ddim_target(xi, xn, s, sn)
            one = sample_ddim(lambda x_, s_, t=target: t, xi, torch.stack([s[0], sn[0]]))
            torch.testing.assert_close(one, xn, rtol=1e-10, atol=1e-10)
    exact = M + (x[:, 0] - M) * S / torch.sqrt(S**2 + sig[0] ** 2)  # the ODE's endpoint at σ = 0
    err = (x[:, 4] - exact).abs().max().item()
    two_ddim = sample_ddim(GaussianOracle(M, S), x[:, 0], torch.stack([sig[0], sig[2], sig[4]]))
    assert err < 0.05 * S and err < 0.1 * (two_ddim - exact).abs().max().item()
    again = TeacherPool(_oracle_model(), d, 4, seed=7).load_or_make(tmp_path / "pool.safetensors", torch.device("cpu"))
    assert torch.equal(again.double(), x)  # a resumed run reads the same pool back
    with pytest.raises(Exception, match="not a multiple"):
        TeacherPool(_oracle_model(), replace_(d, teacher_steps=6), 4, seed=7)


def test_teacher_pool_runs_the_teacher_under_the_students_autocast(tiny_run, tmp_path):
    """``train.precision = bf16``: the pool's teacher runs under bf16 autocast, so its states move a little from
    the fp32 ones (not equal, within a few % of the data's scale) and stay fp32; the pool's metadata records the
    autocast, so a pool solved in fp32 is not read back for a bf16 student (nor the other way round)."""
    from safetensors import safe_open

    from undiffuse.config import DistillConfig
    from undiffuse.model import load
    from undiffuse.training.distill import TeacherPool

    teacher = load(tiny_run, ema=True, device="cpu")
    d = DistillConfig(method="progressive", teacher_solver="unipc", teacher_steps=8, pool=6)
    path, cpu = tmp_path / "pool.safetensors", torch.device("cpu")
    fp32 = TeacherPool(teacher, d, 2, seed=3, precision="fp32").load_or_make(path, cpu)
    bf16 = TeacherPool(teacher, d, 2, seed=3, precision="bf16").load_or_make(path, cpu)  # not fp32's file
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["autocast"] == "bfloat16"
    assert bf16.dtype == torch.float32 and torch.equal(bf16[:, 0], fp32[:, 0])  # the same starting noise
    diff = (bf16 - fp32)[:, 1:]
    assert 0 < diff.abs().max() and diff.pow(2).mean().sqrt() < 0.05 * fp32[:, -1].pow(2).mean().sqrt()
    again = TeacherPool(teacher, d, 2, seed=3, precision="fp32").load_or_make(path, cpu)
    assert torch.equal(again, fp32)  # solved again in fp32, not the bf16 pool read back


def replace_(d, **kw):
    from dataclasses import replace

    return replace(d, **kw)


def test_ddim_step_per_example_matches_the_sampler():
    """The per-example step used by both objectives is the registry's DDIM step."""
    teacher = GaussianOracle(M, S)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64) * 5
    s, s_next = torch.tensor([5.0, 5.0, 5.0, 5.0], dtype=F64), torch.tensor([2.0, 2.0, 2.0, 2.0], dtype=F64)
    torch.testing.assert_close(ddim_step(teacher, x, s, s_next, {}), sample_ddim(teacher, x, torch.tensor([5.0, 2.0], dtype=F64)))


def _tiny_precond() -> Precond:
    from undiffuse.nn.mlp import MLP

    torch.manual_seed(0)
    return Precond(MLP(dim=2, hidden=16, depth=2, emb_dim=8), "v").double()


def test_consistency_function_boundary_condition():
    """Song et al. 2023, Eq. 5: f(x, σ_min) = x exactly for any network; f → D_θ far above σ_min."""
    pre = _tiny_precond()
    f = ConsistencyFunction(pre, sigma_min=0.002)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    with torch.no_grad():
        assert torch.equal(f(x, torch.full((5,), 0.002, dtype=F64)), x)
        far = torch.full((5,), 50.0, dtype=F64)
        torch.testing.assert_close(f(x * 50, far), pre(x * 50, far), rtol=1e-6, atol=1e-6)
    c_skip, c_out = consistency_coefficients(torch.tensor([0.002, 0.004, 1.0], dtype=F64), 0.002, 0.002)
    assert c_skip.tolist()[:2] == [1.0, 0.5] and c_out[0] == 0 and c_skip[2] < 1e-5
    assert f.with_net(pre.net).net is pre.net and f.net is pre.net  # training and EMA see the Precond's network


class ExactConsistency(DenoiserWrapper):
    """The exact consistency function of N(m, s²) data: the PF-ODE keeps (x − m)/√(s² + σ²) constant, so
    f*(x, σ) = m + s·(x − m)/√(s² + σ²)."""

    def denoise(self, x, sigma, **cond):
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return DenoiserOutput(M + S * (x - M) / torch.sqrt(S**2 + s**2))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_sampler_with_the_exact_consistency_function(steps):
    """Multistep consistency sampling (Song et al. 2023, Alg. 1) with the exact f* of Gaussian data: the output
    law is Gaussian with moments from the recursion mean_{k+1} = m + (mean_k + 0 − m)·a_k,
    var_{k+1} = (var_k + σ_k²)·a_k², a_k = S/√(S² + σ_k²) (start: mean 0, var σ_0², no added noise at k = 0),
    which the samples match within 5 standard errors; and at 1 step it is f*(σ_0·n, σ_0) exactly."""
    from undiffuse.schedules import make_schedule
    from undiffuse.schedules.grids import make_sigmas

    sig = make_sigmas(make_schedule("linear", 1000), steps, "trailing")
    n = torch.randn(20000, 1, generator=torch.Generator().manual_seed(3), dtype=F64)
    out = run_sampler("consistency", ExactConsistency(), n * sig[0], sig, generator=torch.Generator().manual_seed(4))
    mean, var = 0.0, float(sig[0]) ** 2
    for k in range(steps):
        s = float(sig[k])
        var = var + (s**2 if k > 0 else 0.0)
        a = S / math.sqrt(S**2 + s**2)
        mean, var = M + (mean - M) * a, var * a * a
    assert abs(out.mean().item() - mean) < 5 * math.sqrt(var / len(out))
    assert out.var().item() == pytest.approx(var, rel=0.05)
    assert math.hypot(mean - M, math.sqrt(var) - S) < 0.01  # and that law is N(m, S²) up to σ_0's finite size
    if steps == 1:
        torch.testing.assert_close(out, M + S * (n * sig[0] - M) / math.sqrt(S**2 + float(sig[0]) ** 2))


def test_lognormal_pairs_and_pseudo_huber():
    """iCT's pairs are adjacent points of the grid, log-normally placed; the pseudo-Huber metric is ≈ ‖·‖²/(2c)
    for small differences and ≈ ‖·‖ − c for large ones (Song & Dhariwal 2023, Eq. 10)."""
    grid = torch.tensor([80.0, 10.0, 2.0, 0.5, 0.1, 0.002], dtype=F64)
    u = torch.rand(4000, generator=torch.Generator().manual_seed(5), dtype=F64)
    hi, lo = lognormal_pairs(u, grid, -1.1, 2.0)
    idx = torch.searchsorted(-grid, -hi)
    assert torch.equal(grid[idx], hi) and torch.equal(grid[idx + 1], lo) and bool((hi > lo).all())
    # P(σ* > 2) = P(Z > (ln 2 + 1.1)/2) for the log-normal density
    share = float((lo >= 2.0).double().mean())
    expect = 0.5 * math.erfc((math.log(2.0) + 1.1) / 2 / math.sqrt(2))
    assert share == pytest.approx(expect, abs=0.03)
    a, b, c = torch.zeros(2, 3), torch.tensor([[1e-4, 0, 0], [30.0, 40.0, 0]]), 0.01
    d = pseudo_huber(a, b, c)
    assert d[0].item() == pytest.approx(1e-8 / (2 * c), rel=1e-3) and d[1].item() == pytest.approx(50 - c, rel=1e-6)


# --- students as runs ------------------------------------------------------------------------------------

FP32 = ["train.precision=fp32", "train.batch_size=16", "train.ckpt_every=2"]


def _weights(run):
    from undiffuse.runs import latest_checkpoint, load_checkpoint

    ck = load_checkpoint(latest_checkpoint(run), optimizer=False)
    return ck.step, ck.model, ck.ema


@pytest.mark.parametrize("method", ["progressive", "consistency", "progressive-pool", "progressive-pool-one"])
def test_distill_resume_is_exact(tiny_run, tmp_path, method):
    """6 steps in one go = 4 steps, then --resume to 6, bit for bit (progressive: rounds of 3 steps, so the
    resume falls inside the second round, whose teacher — the EMA at step 3 — comes back from the run; with
    accurate-teacher targets the teacher pool comes back instead; "-one": the default plan, one round with
    the cosine-decayed learning rate, here over 6 steps in both runs)."""
    from undiffuse.runs import saved_config
    from undiffuse.training.distill import distill

    pool = ["distill.teacher_solver=unipc", "distill.teacher_steps=8", "distill.pool=12"] if "pool" in method else []
    rounds = ["train.decay_steps=6"] if "one" in method else ["distill.round_steps=3"]
    kw = dict(target_steps=1, start_steps=2 if "one" in method else 4, overrides=[*FP32, *rounds, *pool], progress=False)
    if method == "progressive":
        kw["teacher_solver"] = ""  # Salimans & Ho's targets: two DDIM steps of each round's teacher
    method = method.split("-")[0]
    distill(tiny_run, tmp_path / "a", method, steps=6, **kw)
    distill(tiny_run, tmp_path / "b", method, steps=4, **kw)
    if pool:
        assert (tmp_path / "b" / "teacher_pool.safetensors").is_file()
        assert not (tmp_path / "b" / "round_teacher.safetensors").exists()
    elif method == "progressive":
        assert (tmp_path / "b" / "round_teacher.safetensors").is_file()
    if "one" in method:
        assert saved_config(tmp_path / "b").train.lr_schedule == "cosine"
    distill(None, tmp_path / "b", steps=6, resume=True, progress=False)
    (sa, ma, ea), (sb, mb, eb) = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert sa == sb == 6
    assert all(torch.equal(ma[k], mb[k]) for k in ma) and all(torch.equal(ea[k], eb[k]) for k in ea)


def test_student_starts_as_the_teacher_and_samples_by_default(tiny_run, tmp_path):
    """A consistency student is an ordinary run: its config records method, teacher and sampler; before any
    update it holds the teacher's weights; api.sample (and the server) use its few-step sampler, f(x, σ_min) = x,
    and sample i depends only on (seed, i) through the driver."""
    import undiffuse.api as api
    from undiffuse.training.distill import distill

    teacher = api.load(tiny_run)
    distill(tiny_run, tmp_path / "s", "consistency", target_steps=2, steps=1,
            overrides=[*FP32, "train.lr=1e-12"], progress=False)  # fmt: skip
    student = api.load(tmp_path / "s")
    cfg = student.config
    assert (cfg.distill.method, cfg.sample.sampler, cfg.sample.steps) == ("consistency", "consistency", 2)
    assert cfg.distill.teacher == str(tiny_run.resolve()) and cfg.diffusion.parameterization == "v"  # ε teacher
    t, s = teacher.denoiser.net.state_dict(), student.denoiser.net.state_dict()
    assert all(torch.allclose(t[k], s[k], atol=1e-6) for k in t)
    x = torch.randn(3, *student.data.shape)
    sigma_min = float(student.schedule.sigmas[0])
    assert torch.equal(student.denoiser(x, torch.full((3,), sigma_min)), x)
    info: dict = {}
    batch = api.sample(student, 5, seed=3, info=info)
    assert (info["sampler"], info["steps"], info["nfe"]) == ("consistency", 2, 2)
    alone = api.sample(student, 1, seed=3, indices=[4], batch_size=1)
    torch.testing.assert_close(alone, batch[4:5], rtol=1e-5, atol=1e-5)
    pytest.importorskip("pydantic")
    from undiffuse.serve.catalog import Catalog
    from undiffuse.serve.limits import Limits
    from undiffuse.serve.requests import SampleBody, sample_work

    catalog = Catalog([tmp_path / "s"])
    work, _ = sample_work(SampleBody(model=next(iter(catalog.entries)), n=2), catalog, Limits())
    assert (work.sampler, work.steps) == ("consistency", 2)  # the server samples a student its own way too


def test_progressive_student_samples_ddim_on_its_grid_and_cli(tiny_run, tmp_path, capsys):
    """`undiffuse distill … --method progressive` makes a student that `undiffuse sample` samples with DDIM
    in target_steps steps on the distillation grid; one-line errors for a bad --start-steps and for --resume
    on an ordinary run."""
    from undiffuse.cli.main import main

    out = tmp_path / "p"
    args = ["distill", str(tiny_run), "--out", str(out), "--method", "progressive", "--target-steps", "2",
            "--start-steps", "8", "--steps", "4", "--teacher-solver", "none", "--quiet"]  # fmt: skip
    for s in FP32:
        args += ["--set", s]
    assert main(args) == 0
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "x.npy"), "--quiet"]) == 0
    assert "sampler ddim, 2 steps, 2 network evaluations" in capsys.readouterr().out
    import undiffuse.api as api

    assert api.resolve_sampling(api.load(out)) == ("ddim", 2, "trailing")
    assert api.resolve_sampling(api.load(out), "unipc") == ("unipc", 2, None)  # another sampler: its own grid
    assert main(["distill", str(tiny_run), "--out", str(tmp_path / "q"), "--method", "progressive",
                 "--target-steps", "3", "--start-steps", "8"]) == 2  # fmt: skip
    assert "power of 2" in capsys.readouterr().err
    copy = tmp_path / "plain"
    shutil.copytree(tiny_run, copy)
    assert main(["distill", "--out", str(copy), "--resume"]) == 2
    assert "not a distilled student" in capsys.readouterr().err


@pytest.mark.parametrize("target", [4, 1])
def test_progressive_default_is_one_round_on_the_teacher_pool(tiny_run, tmp_path, target, capsys):
    """`distill --method progressive --target-steps K` without --start-steps or --teacher-solver: accurate-teacher
    targets (unipc), one round of K steps from 2K teacher steps holding every optimizer step, a pool of K + 1
    states per trajectory, and the student samples DDIM in K steps; `--teacher-solver none` keeps Salimans & Ho's
    halving from 64 teacher DDIM steps (rounds 32, 16, …, K)."""
    from undiffuse.cli.main import main
    from undiffuse.runs import saved_config
    from undiffuse.training.distill import progressive_rounds

    base = ["--method", "progressive", "--target-steps", str(target), "--steps", "3", "--quiet", "--set", "distill.pool=6"]
    for s in FP32:
        base += ["--set", s]
    out = tmp_path / "d"
    assert main(["distill", str(tiny_run), "--out", str(out), *base]) == 0
    cfg = saved_config(out)
    d = cfg.distill
    assert (d.teacher_solver, d.start_steps, d.round_steps, cfg.train.steps) == ("unipc", 2 * target, 3, 3)
    assert (cfg.train.lr_schedule, cfg.train.decay_steps) == ("cosine", 3)  # decayed over the run
    assert progressive_rounds(d.start_steps, d.target_steps) == [target]
    assert (cfg.sample.sampler, cfg.sample.steps) == ("ddim", target)
    from safetensors import safe_open

    with safe_open(str(out / "teacher_pool.safetensors"), "pt") as f:
        assert f.get_slice("x").get_shape()[:2] == [6, target + 1]
    old = tmp_path / "old"
    assert main(["distill", str(tiny_run), "--out", str(old), *base, "--teacher-solver", "none"]) == 0
    d = saved_config(old).distill
    assert (d.teacher_solver, d.start_steps, d.round_steps) == ("", 64, 1)
    assert progressive_rounds(d.start_steps, d.target_steps)[0] == 32 and not (old / "teacher_pool.safetensors").exists()
    assert saved_config(old).train.lr_schedule == "constant"
    capsys.readouterr()  # continuing a decayed run past its decay is refused in one line
    assert main(["distill", "--out", str(out), "--resume", "--steps", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert "decayed to train.min_lr = 0 by step" in err and "new run" in err and len(err.splitlines()) == 1


def test_student_config_defaults():
    """Without --steps: 500 optimizer steps with the teacher pool (one round or rounds), 600 otherwise; a
    progressive student drops the teacher's dropout (deterministic targets), a consistency student
    keeps it (iCT). The default plan (one round on the pool) has 4096 trajectories and the learning rate
    cosine-decayed over the run; `--set distill.pool=2048 --set train.lr_schedule=constant` is the earlier
    recipe; rounds and consistency keep the constant rate."""
    from dataclasses import replace
    from types import SimpleNamespace

    from undiffuse.config import get_preset
    from undiffuse.training.distill import student_config

    base = get_preset("digits-tiny")
    teacher = SimpleNamespace(config=replace(base, model=replace(base.model, dropout=0.1)), step=4,
                              data=SimpleNamespace(kind="image"))  # fmt: skip
    pa = student_config(teacher, "runs/t", "progressive", 4)
    assert (pa.train.steps, pa.distill.start_steps, pa.distill.teacher_solver, pa.model.dropout) == (500, 8, "unipc", 0.0)
    assert (pa.distill.pool, pa.train.lr_schedule, pa.train.decay_steps, pa.train.lr) == (4096, "cosine", 500, base.train.lr / 2)
    k1 = student_config(teacher, "runs/t", "progressive", 1, steps=650)
    assert (k1.distill.start_steps, k1.distill.pool, k1.train.decay_steps) == (2, 4096, 650)
    earlier = student_config(teacher, "runs/t", "progressive", 4, overrides=["distill.pool=2048", "train.lr_schedule=constant"])
    assert (earlier.distill.pool, earlier.train.lr_schedule) == (2048, "constant")
    rounds = student_config(teacher, "runs/t", "progressive", 1, start_steps=8)  # pool targets in rounds 4, 2, 1
    assert (rounds.distill.pool, rounds.train.lr_schedule, rounds.train.steps) == (2048, "constant", 501)  # 3 × 167
    old = student_config(teacher, "runs/t", "progressive", 4, teacher_solver="")
    assert (old.train.steps, old.distill.start_steps, old.distill.round_steps, old.model.dropout) == (600, 64, 150, 0.0)
    cd = student_config(teacher, "runs/t", "consistency", 2)
    assert (cd.train.steps, cd.distill.teacher_solver, cd.model.dropout, cd.train.lr_schedule) == (600, "", 0.1, "constant")


def test_cli_teacher_solver(tiny_run, tmp_path, capsys):
    """`--teacher-solver unipc` makes a progressive student of accurate-teacher targets (its config records the
    solver, its run holds the teacher pool); an unknown sampler, or the option with consistency, is a one-line
    error."""
    from undiffuse.cli.main import main
    from undiffuse.runs import saved_config

    base = ["--target-steps", "2", "--start-steps", "8", "--steps", "2", "--quiet", "--set", "distill.pool=8"]
    for s in FP32:
        base += ["--set", s]
    out = tmp_path / "pa"
    assert main(["distill", str(tiny_run), "--out", str(out), "--method", "progressive", "--teacher-solver", "unipc", *base]) == 0
    assert saved_config(out).distill.teacher_solver == "unipc" and (out / "teacher_pool.safetensors").is_file()
    assert main(["distill", str(tiny_run), "--out", str(tmp_path / "q"), "--method", "progressive",
                 "--teacher-solver", "rk4", *base]) == 2  # fmt: skip
    assert "is not a sampler" in capsys.readouterr().err
    assert main(["distill", str(tiny_run), "--out", str(tmp_path / "r"), "--method", "consistency",
                 "--teacher-solver", "unipc", *base]) == 2  # fmt: skip
    assert "for --method progressive" in capsys.readouterr().err


def test_distillation_needs_a_gaussian_process():
    """Both methods step the PF-ODE in σ-space: a run of the tables' mixed (multinomial) process is refused."""
    from types import SimpleNamespace

    from undiffuse.errors import UserError
    from undiffuse.training.distill import student_config

    if "table" not in __import__("undiffuse.data.kinds", fromlist=["KINDS"]).KINDS:
        pytest.skip("no table kind in this build")
    with pytest.raises(UserError, match="Gaussian"):
        student_config(SimpleNamespace(data=SimpleNamespace(kind="table")), "runs/t", "consistency")
