"""The masked-diffusion language model: the absorbing process's math against exact values, the samplers, the text
data and a short real run through the command line."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from undiffuse.diffusion.masked import MASK_SCHEDULES, MaskingSchedule, elbo_stratified, mask_tokens
from undiffuse.rng import sample_generators
from undiffuse.samplers.masked import sample_left_to_right, sample_masked

# --- a toy distribution with an exact posterior: a Markov chain over V = 3 tokens, L = 4 -----------------------
V, L = 3, 4
P0 = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
P = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]], dtype=torch.float64)
SEQS = torch.tensor(list(itertools.product(range(V), repeat=L)))
PROB = torch.tensor([float(P0[s[0]] * math.prod(P[s[i], s[i + 1]] for i in range(L - 1))) for s in SEQS.tolist()],
                    dtype=torch.float64)  # fmt: skip


def perfect_logits(z: torch.Tensor) -> torch.Tensor:
    """log p(x^ℓ | the unmasked tokens of z) at every position [B, L, V] (the exact denoiser of the chain)."""
    out = torch.empty(*z.shape, V, dtype=torch.float64)
    for b, row in enumerate(z):
        seen = row != V
        fits = (SEQS[:, seen] == row[seen]).all(dim=1)
        w = PROB * fits
        for pos in range(L):
            p = torch.zeros(V, dtype=torch.float64).index_add_(0, SEQS[:, pos], w)
            out[b, pos] = (p / p.sum()).clamp_min(1e-300).log()
    return out


def exact_discrete_bound(x: torch.Tensor, sch: MaskingSchedule, T: int) -> float:
    """L_T of sequence x under the perfect denoiser, summing exactly over the 2^L mask patterns of every step."""
    total = 0.0
    for i in range(1, T + 1):
        t, s = torch.tensor(i / T), torch.tensor((i - 1) / T)
        a_t, w = float(sch.alpha(t)), float(sch.step_weight(s, t))
        for pat in itertools.product([False, True], repeat=L):
            m = torch.tensor(pat)
            k = int(m.sum())
            if k == 0:
                continue
            prob = a_t ** (L - k) * (1 - a_t) ** k
            z = torch.where(m, torch.full_like(x, V), x)
            logp = perfect_logits(z[None])[0]
            total += prob * w * float(-logp[m, x[m]].sum())
    return total


def test_schedules_end_points_and_weight():
    for name in MASK_SCHEDULES:
        s = MaskingSchedule(name)
        assert float(s.alpha(torch.tensor(0.0))) == 1.0
        assert float(s.alpha(torch.tensor(1.0))) == pytest.approx(s.alpha_end, abs=1e-15)
        t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
        h = 1e-6  # α'_t against a central difference, w(t) = −α'/(1 − α)
        fd = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
        assert torch.allclose(s.dalpha(t), fd, rtol=1e-6)
        assert torch.allclose(s.weight(t), -fd / (1 - s.alpha(t)), rtol=1e-6)
    assert torch.allclose(MaskingSchedule("linear").weight(torch.tensor([0.25])), torch.tensor([4.0], dtype=torch.float64))


def test_masking_marginals_exact_and_nested():
    """On an exact grid of N uniforms, the share of masked tokens is 1 − α_t to within 1/N, and masks are nested."""
    N = 100_000
    u = ((torch.arange(N, dtype=torch.float64) + 0.5) / N)[None]
    x = torch.zeros(1, N, dtype=torch.long)
    for name in MASK_SCHEDULES:
        sch = MaskingSchedule(name)
        prev = None
        for t in (0.0, 0.1, 0.5, 0.9, 1.0):
            a = sch.alpha(torch.tensor([t]))
            z = mask_tokens(x, a, u, mask_id=V)
            share = float((z == V).double().mean())
            assert abs(share - (1 - float(a))) <= 1.0 / N
            if prev is not None:
                assert bool(((prev == V) <= (z == V)).all())  # a token masked at s stays masked at t > s
            prev = z


def test_elbo_weight_against_monte_carlo():
    """The share of tokens masked at t that were still unmasked at t − h, from simulated masking times, matches
    (α_{t−h} − α_t)/(1 − α_t) and divided by h tends to w(t) = −α'_t/(1 − α_t)."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(2_000_000, generator=g, dtype=torch.float64)
    h = 0.02
    for name in ("linear", "cosine"):
        sch = MaskingSchedule(name)
        for t in (0.3, 0.7):
            a_t, a_s = float(sch.alpha(torch.tensor(t))), float(sch.alpha(torch.tensor(t - h)))
            masked_t = u >= a_t
            fresh = (u[masked_t] < a_s).double()  # masked at t but not at t − h
            mc, se = float(fresh.mean()), float(fresh.std() / math.sqrt(len(fresh)))
            exact = float(sch.step_weight(torch.tensor(t - h), torch.tensor(t)))
            assert abs(mc - exact) < 4 * se
            w = float(sch.weight(torch.tensor(t)))
            assert abs(mc / h - w) < 0.05 * w + 4 * se / h  # O(h) from the finite step


def test_perfect_denoiser_bound_tends_to_true_nll():
    """With the exact posterior of a Markov chain, L_T ≥ −log p(x), decreasing in T, and L_T → −log p(x)."""
    sch = MaskingSchedule("linear")
    for j in (0, 40, 77):
        x = SEQS[j]
        nll = -math.log(float(PROB[j]))
        bounds = [exact_discrete_bound(x, sch, T) for T in (1, 4, 16, 256)]
        assert all(b >= nll - 1e-9 for b in bounds)
        assert all(a >= b - 1e-9 for a, b in zip(bounds, bounds[1:]))
        assert bounds[0] == pytest.approx(float(-perfect_logits(torch.full((1, L), V))[0, torch.arange(L), x].sum()))
        assert bounds[-1] - nll < 0.01 * (bounds[0] - nll) + 1e-3


def test_stratified_estimates_are_unbiased():
    """The module's stratified Monte Carlo estimates of L_T and L_∞ agree with the exact values within their SE."""
    x = SEQS[[40]].repeat(3000, 1)
    nll = -math.log(float(PROB[40]))
    sch = MaskingSchedule("cosine")
    g = torch.Generator().manual_seed(1)
    est = elbo_stratified(perfect_logits, x, sch, V, 4, g, T=4)
    exact = exact_discrete_bound(x[0], sch, 4)
    assert abs(float(est.mean()) - exact) < 4 * float(est.std() / math.sqrt(len(est)))
    est = elbo_stratified(perfect_logits, x, sch, V, 4, g)  # continuous time: equals the true NLL
    assert abs(float(est.mean()) - nll) < 4 * float(est.std() / math.sqrt(len(est)))


def test_stratified_training_times_one_per_stratum_and_keyed():
    """The trainer's low-discrepancy t (MDLM Sec. 3.5): one t in each of the B strata of [0, 1) per batch, the same
    draws for the same (seed, step) (exact resume), other steps differ, and the noise and label uniforms are those
    of the independent draws (what the image trainer uses is unchanged)."""
    from undiffuse.training.keyed import draw_step, stratified_uniforms

    for u0 in (0.0, 0.37, 0.999999):
        u = stratified_uniforms(torch.tensor(u0, dtype=torch.float64), 32)
        assert sorted((u * 32).floor().long().tolist()) == list(range(32))
        assert torch.allclose(torch.remainder(u - u[0], 1.0), torch.arange(32, dtype=torch.float64) / 32)
    for step in (0, 1, 57):
        a = draw_step(3, step, 16, (8,), 1600, stratified=True)
        b = draw_step(3, step, 16, (8,), 1600, stratified=True)
        plain = draw_step(3, step, 16, (8,), 1600)
        assert torch.equal(a.t, b.t) and torch.equal(a.noise, b.noise) and torch.equal(a.u_label, b.u_label)
        assert torch.equal(a.noise, plain.noise) and torch.equal(a.u_label, plain.u_label)
        assert sorted(((a.t - 1) // 100).tolist()) == list(range(16))  # T/B = 100 steps per stratum: one t each
    assert not torch.equal(draw_step(3, 1, 16, (8,), 1600, stratified=True).t,
                           draw_step(3, 2, 16, (8,), 1600, stratified=True).t)  # fmt: skip


def test_training_loss_with_stratified_t_is_the_elbo():
    """The training loss at the trainer's stratified keyed draws, with the exact denoiser of the Markov chain,
    averages to L_∞ = −log p(x) (within 4 SE), as with independent t: stratifying keeps the estimate unbiased."""
    from undiffuse.diffusion.masked import MaskedDenoiser
    from undiffuse.training.keyed import draw_step

    class Perfect(torch.nn.Module):
        def forward(self, z):
            return perfect_logits(z)

    den = MaskedDenoiser(Perfect(), MaskingSchedule("linear"), V)
    j, B = 40, 16
    x = SEQS[[j]].repeat(B, 1)
    nll = -math.log(float(PROB[j]))
    means = {}
    for strat in (True, False):
        m = []
        for step in range(150):
            d = draw_step(0, step, B, (L,), 1000, stratified=strat)
            m.append(float(den.example_loss(None, x, d.t, d.noise).mean()) * L)  # nats per sequence
        means[strat] = torch.tensor(m, dtype=torch.float64)
    for strat, m in means.items():
        assert abs(float(m.mean()) - nll) < 4 * float(m.std() / math.sqrt(len(m))), strat


def test_sampler_exact_distribution_with_perfect_denoiser():
    """One position a step (K = L) with the exact posterior draws x from p exactly: frequencies match p(x)."""
    n = 2000
    z = torch.full((n, L), V)
    x, nfe = sample_masked(perfect_logits, z, MaskingSchedule("linear"), 64, sample_generators(0, range(n)), V)
    assert bool((x != V).all()) and int(nfe.max()) <= L  # the cache: at most one evaluation per unmasked change
    idx = (x * torch.tensor([V**3, V**2, V, 1])).sum(dim=1)
    freq = torch.bincount(idx, minlength=V**L).double() / n
    chi2 = float(((freq - PROB) ** 2 / PROB).sum() * n)
    assert chi2 < 81 + 4 * math.sqrt(2 * 80)  # χ² with 80 degrees of freedom


def test_nucleus_draws_the_renormalised_top_p_set():
    """Nucleus draws (top_p): only the fewest most probable tokens with mass ≥ p occur, with their renormalised
    probabilities (χ²); p = 1 is the plain draw, bit for bit; the AR sampler uses the same nucleus."""
    from undiffuse.samplers.masked import gumbel_draw, nucleus

    p = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15], dtype=torch.float64)
    lg = p.log()
    assert torch.equal(nucleus(lg, 0.69).isfinite(), torch.tensor([False, True, False, True, False]))  # 0.4 + 0.3 ≥ 0.69
    assert torch.equal(nucleus(lg, 0.71).isfinite(), torch.tensor([False, True, False, True, True]))
    g = torch.Generator().manual_seed(0)
    n = 40_000
    u = torch.rand(n, 5, generator=g, dtype=torch.float64)
    tok, prob = gumbel_draw(lg.expand(n, 5), u, 0.8)  # nucleus {0.4, 0.3, 0.15}
    freq = torch.bincount(tok, minlength=5).double() / n
    q = torch.tensor([0, 0.4, 0, 0.3, 0.15], dtype=torch.float64) / 0.85
    assert freq[[0, 2]].sum() == 0
    sel = q > 0
    assert float(((freq[sel] - q[sel]) ** 2 / q[sel]).sum() * n) < 2 + 4 * math.sqrt(2 * 2)  # χ², 2 d.o.f.
    assert torch.allclose(prob, q[tok])
    assert torch.equal(gumbel_draw(lg.expand(n, 5), u, 1.0)[0], gumbel_draw(lg.expand(n, 5), u)[0])
    z = torch.full((64, 3), 5)
    x, _ = sample_left_to_right(lambda t: lg.expand(*t.shape, 5), z, sample_generators(0, range(64)), 5, top_p=0.69)
    assert set(x.unique().tolist()) <= {1, 3}


@pytest.mark.parametrize("order", ["ancestral", "confidence"])
def test_sampler_determinism_and_infilling_keeps_given(order):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(V + 1, 8), torch.nn.Linear(8, V))
    z = torch.full((5, 12), V)
    z[:, [0, 5, 11]] = torch.tensor([2, 0, 1])
    alpha = MaskingSchedule("linear")
    with torch.no_grad():
        a, _ = sample_masked(net, z, alpha, 6, sample_generators(7, range(5)), V, order)
        b, _ = sample_masked(net, z[3:4], alpha, 6, sample_generators(7, [3]), V, order)
        c, _ = sample_masked(net, z, alpha, 6, sample_generators(8, range(5)), V, order)
        d, _ = sample_left_to_right(net, z, sample_generators(7, range(5)), V)
    assert torch.equal(a[3:4], b)  # sample i depends only on (seed, i)
    assert not torch.equal(a, c)
    for out in (a, d):
        assert bool((out != V).all())
        assert torch.equal(out[:, [0, 5, 11]], z[:, [0, 5, 11]])  # given characters kept


def test_sample_does_not_depend_on_the_other_rows_templates():
    """Row i's draws come from its generator alone, also when the rows of a batch have different given positions
    (a row with a given prefix batched with a fully masked one, and alone)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(V + 1, 8), torch.nn.Linear(8, V))
    z = torch.full((2, 8), V)
    z[0, :3] = torch.tensor([0, 1, 2])
    alpha = MaskingSchedule("linear")
    with torch.no_grad():
        for draw in (lambda zz, gens: sample_left_to_right(net, zz, gens, V)[0],
                     lambda zz, gens: sample_masked(net, zz, alpha, 8, gens, V)[0]):  # fmt: skip
            both, alone = draw(z, sample_generators(0, range(2))), draw(z[:1], sample_generators(0, [0]))
            assert torch.equal(both[0], alone[0])


# --- text data and the command line -------------------------------------------------------------------------------


def _cli(*args, ok=True):
    r = subprocess.run([sys.executable, "-m", "undiffuse.cli.main", *args], capture_output=True, text=True,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert (r.returncode == 0) == ok, r.stderr
    return r


def test_bad_text_files_one_line_errors(tmp_path):
    from undiffuse.data import load_dataset
    from undiffuse.data.errors import DataError

    (tmp_path / "bin.txt").write_bytes(b"abc\x00\x01def")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("  \n")
    for name, words in [("missing.txt", "no such text file"), ("bin.txt", "binary"), ("latin1.txt", "not UTF-8"),
                        ("empty.txt", "no text")]:  # fmt: skip
        with pytest.raises(DataError, match=words) as e:
            load_dataset(f"text:file:{tmp_path / name}", "train")
        assert "\n" not in str(e.value) and "—" in str(e.value)
    r = _cli("train", "--data", f"text:file:{tmp_path / 'bin.txt'}", "--out", str(tmp_path / "r"), ok=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "binary" in r.stderr


def test_text_windows_vocab_and_split(tmp_path):
    from undiffuse.data import load_dataset
    from undiffuse.data.textdata import decode

    text = "".join(f"line {i} of the text\n" for i in range(200))
    (tmp_path / "t.txt").write_text(text)
    tr = load_dataset(f"text:file:{tmp_path / 't.txt'}", "train", window=32)
    te = load_dataset(f"text:file:{tmp_path / 't.txt'}", "test", window=32)
    vocab = tr.extra["text"]["vocab"]
    assert vocab == "".join(sorted(set(text))) and tr.kind == "text" and tr.shape == (32,)
    assert decode(tr.x[0], vocab) == text[:32] and decode(tr.x[1], vocab) == text[16:48]  # half-overlapping
    cut = text.find(decode(te.x[0], vocab))
    assert cut >= 0.9 * len(text) and text.endswith("\n") and text[cut - 1] == "\n"  # test: the last block
    from types import SimpleNamespace

    from undiffuse.errors import UserError
    from undiffuse.language import text_eval_data

    run = SimpleNamespace(data=SimpleNamespace(kind="text", extra=tr.extra, name=f"text:file:{tmp_path / 't.txt'}"))
    assert torch.equal(text_eval_data(run, n=5), te.x[:5])  # the run's own test windows
    assert decode(text_eval_data(run, split="train", n=2)[1], vocab) == text[32:64]  # disjoint, also for train
    with pytest.raises(UserError, match="unknown split"):
        text_eval_data(run, split="val")


@pytest.mark.skipif(shutil.which("bible") is None, reason="Debian's bible-kjv is not installed")
def test_kjv_one_verse_per_line():
    from undiffuse.data.textdata import kjv_text

    lines = kjv_text().splitlines()
    assert len(lines) == 31102
    assert lines[0] == "In the beginning God created the heaven and the earth."
    assert lines[-1] == "The grace of our Lord Jesus Christ be with you all. Amen."


def test_short_training_run_through_the_cli(tmp_path):
    """Train both models a few steps on synthetic text, then sample, continue, infill and score them."""
    (tmp_path / "t.txt").write_text("".join(f"{w} sat on the mat.\n" for w in ["the cat", "a dog", "my hen"] * 120))
    data = f"text:file:{tmp_path / 't.txt'}"
    small = ["--set", "model.hidden=32", "--set", "model.depth=1", "--set", "model.num_heads=2", "--set", "data.window=32",
             "--set", "train.batch_size=16", "--set", "train.val_every=30", "--set", "train.warmup_steps=5",
             "--set", "train.precision=fp32", "--set", "train.lr=3e-3", "--no-progress"]  # fmt: skip
    for arch, extra in (("transformer", ()), ("causal-transformer", ()), ("block", ("diffusion.block_size=8",))):
        run = tmp_path / arch
        net = "transformer" if arch == "block" else arch
        _cli("train", "--data", data, "--out", str(run), "--steps", "30", "--set", f"model.arch={net}", *small,
             *(a for e in extra for a in ("--set", e)))  # fmt: skip
        log = [json.loads(s) for s in (run / "log.jsonl").read_text().splitlines()]
        assert log[-1]["val_loss"] < math.log(len(set((tmp_path / "t.txt").read_text()))) - 0.3  # it learned something
        _cli("sample", str(run), "--n", "3", "--seed", "0", "--out", str(tmp_path / "s.txt"))
        samples = (tmp_path / "s.txt").read_text().rstrip("\n").split("\n\n")
        assert len(samples) == 3 and all(len(s) <= 32 for s in samples)
        _cli("sample", str(run), "--n", "2", "--prefix", "the cat", "--length", "20", "--top-p", "0.9",
             "--out", str(tmp_path / "p.jsonl"))  # fmt: skip
        rows = [json.loads(s) for s in (tmp_path / "p.jsonl").read_text().splitlines()]
        assert [r["index"] for r in rows] == [0, 1] and all(r["text"].startswith("the cat") for r in rows)
        _cli("edit", str(run), "--text", "a dog s__ on the mat.", "--out", str(tmp_path / "e.txt"))
        filled = (tmp_path / "e.txt").read_text().rstrip("\n")
        assert len(filled) == 21 and filled[:7] == "a dog s" and filled[9:] == " on the mat." and "_" not in filled
        r = _cli("nll", str(run), "--n", "8", "--n-t", "4", "--json", "-")
        res = json.loads(r.stdout)
        assert 0 < res["bits_per_char"] < math.log2(20) and res["n"] == 8
    r = _cli("nll", str(tmp_path / "block"), "--n", "4", "--n-t", "2", "--discrete", "8", "--json", "-")
    assert "T = 8" in json.loads(r.stdout)["estimator"]
    _cli("eval", str(tmp_path / "block"), "--n", "2", "--nll-n", "4", "--reference", str(tmp_path / "causal-transformer"),
         "--out", str(tmp_path / "evb"))  # fmt: skip
    r = _cli("train", "--data", data, "--out", str(tmp_path / "b5"), *small, "--set", "diffusion.block_size=5", ok=False)
    assert r.returncode == 2 and "does not divide" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    _cli("eval", str(tmp_path / "transformer"), "--n", "2", "--nll-n", "4", "--reference", str(tmp_path / "causal-transformer"),
         "--out", str(tmp_path / "ev"))  # fmt: skip
    rep = json.loads((tmp_path / "ev.json").read_text())
    assert rep["samples"]["gen_ppl"]["ppl_per_char"] > 1 and 0 <= rep["infill"]["accuracy"] <= 1
    r = _cli("train", "--data", data, "--out", str(tmp_path / "r2"), "--set", "train.sample_every=5", ok=False)
    assert r.returncode == 2 and "sample_every=0" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("sample", str(tmp_path / "causal-transformer"), "--steps", "4", "--out", str(tmp_path / "x.txt"), ok=False)
    assert r.returncode == 2 and "left to right" in r.stderr
    r = _cli("sample", str(tmp_path / "transformer"), "--top-p", "1.5", "--out", str(tmp_path / "x.txt"), ok=False)
    assert r.returncode == 2 and "--top-p" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    for run, flags, words in [("transformer", ("--data", "table:wine"), "is not text"), ("transformer", ("--exact",), "--discrete"),
                              ("causal-transformer", ("--discrete", "4"), "exact")]:  # fmt: skip
        r = _cli("nll", str(tmp_path / run), *flags, ok=False)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1
    short = ["data.window=16" if a == "data.window=32" else a for a in small]  # a reference of shorter windows
    _cli("train", "--data", data, "--out", str(tmp_path / "ar16"), "--steps", "1", "--set",
         "model.arch=causal-transformer", *short)  # fmt: skip
    r = _cli("eval", str(tmp_path / "transformer"), "--n", "2", "--nll-n", "4", "--reference", str(tmp_path / "ar16"),
             "--out", str(tmp_path / "ev16"), ok=False)  # fmt: skip
    assert r.returncode == 2 and "at least 32 characters" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_transformer_causality_and_rotary_relative_positions():
    from undiffuse.nn.transformer import Transformer, rotary, rotate

    torch.manual_seed(0)
    x = torch.randint(0, 5, (2, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 5  # change the future
    with torch.no_grad():
        causal, both = Transformer(5, 16, 16, 2, 2, causal=True).eval(), Transformer(5, 16, 16, 2, 2).eval()
        assert torch.allclose(causal(x)[:, :6], causal(y)[:, :6], atol=1e-6)  # position ℓ sees only x^{≤ℓ}
        assert not torch.allclose(both(x)[:, :6], both(y)[:, :6], atol=1e-4)  # the denoiser sees both sides
    cos, sin = rotary(16, 8)
    q, k = torch.randn(8, dtype=torch.float64).float(), torch.randn(8).float()
    rq, rk = rotate(q.expand(16, 8), cos, sin), rotate(k.expand(16, 8), cos, sin)
    scores = rq @ rk.T  # q at position i against k at position j depends on j − i only
    assert torch.allclose(scores[2, 5], scores[9, 12], atol=1e-5) and torch.allclose(scores[7, 3], scores[11, 7], atol=1e-5)


# --- block diffusion (BD3-LM) -------------------------------------------------------------------------------------


def block_perfect_logits(z: torch.Tensor, x: torch.Tensor, block: int) -> torch.Tensor:
    """The exact x_θ of the chain for block diffusion: log p(x^ℓ | x of the blocks before ℓ's, the unmasked tokens of
    z in ℓ's block) [B, L, V]."""
    out = torch.empty(*z.shape, V, dtype=torch.float64)
    for b in range(len(z)):
        for lo in range(0, L, block):
            seen = torch.zeros(L, dtype=torch.bool)
            seen[:lo] = True
            row = torch.where(seen, x[b], z[b])
            seen[lo : lo + block] = row[lo : lo + block] != V  # later blocks are not seen
            w = PROB * (SEQS[:, seen] == row[seen]).all(dim=1)
            for pos in range(lo, min(L, lo + block)):
                p = torch.zeros(V, dtype=torch.float64).index_add_(0, SEQS[:, pos], w)
                out[b, pos] = (p / p.sum()).clamp_min(1e-300).log()
    return out


def exact_block_bound(x: torch.Tensor, sch: MaskingSchedule, T: int, block: int) -> float:
    """L_T of the block model with the exact x_θ: the sum over blocks of each block's T-step bound, every mask
    pattern of the block summed exactly (the other blocks do not enter block b's term)."""
    total = 0.0
    for lo in range(0, L, block):
        for i in range(1, T + 1):
            t, s = torch.tensor(i / T), torch.tensor((i - 1) / T)
            a_t, w = float(sch.alpha(t)), float(sch.step_weight(s, t))
            for pat in itertools.product([False, True], repeat=block):
                m = torch.zeros(L, dtype=torch.bool)
                m[lo : lo + block] = torch.tensor(pat)
                k = int(m.sum())
                if k == 0:
                    continue
                z = torch.where(m, torch.full_like(x, V), x)
                logp = block_perfect_logits(z[None], x[None], block)[0]
                total += a_t ** (block - k) * (1 - a_t) ** k * w * float(-logp[m, x[m]].sum())
    return total


def test_block_bound_is_ar_for_block_1_and_tends_to_nll():
    """With the exact x_θ: block size 1 gives −log p(x) exactly for every T (autoregression); block size 2 gives
    L_T ≥ −log p(x), decreasing in T, → −log p(x); block size L is the MDLM bound."""
    sch = MaskingSchedule("linear")
    for j in (0, 40, 77):
        x = SEQS[j]
        nll = -math.log(float(PROB[j]))
        for T in (1, 3, 16):
            assert exact_block_bound(x, sch, T, 1) == pytest.approx(nll, abs=1e-9)
        bounds = [exact_block_bound(x, sch, T, 2) for T in (1, 4, 16, 256)]
        assert all(b >= nll - 1e-9 for b in bounds) and all(a >= b - 1e-9 for a, b in zip(bounds, bounds[1:]))
        assert bounds[0] > nll + 1e-3 and bounds[-1] - nll < 0.01 * (bounds[0] - nll) + 1e-3
        assert exact_block_bound(x, sch, 4, L) == pytest.approx(exact_discrete_bound(x, sch, 4), abs=1e-9)


def test_block_stratified_estimates_and_training_loss_are_unbiased():
    """The stratified estimator with a time per block agrees with the exact block L_T and (continuous time) with
    −log p(x); the trainer's loss of a block model (2L pass, times per block from the keyed t) averages to
    −log p(x) with the exact x_θ reading [z_t ; x] (within 4 SE)."""
    from undiffuse.diffusion.masked import MaskedDenoiser
    from undiffuse.training.keyed import draw_step

    j, block = 40, 2
    nll = -math.log(float(PROB[j]))
    x = SEQS[[j]].repeat(2000, 1)
    sch = MaskingSchedule("cosine")
    g = torch.Generator().manual_seed(1)
    fn = lambda z: block_perfect_logits(z, x, block)  # noqa: E731
    est = elbo_stratified(fn, x, sch, V, 4, g, T=4, blocks=L // block)
    assert abs(float(est.mean()) - exact_block_bound(x[0], sch, 4, block)) < 4 * float(est.std() / math.sqrt(len(est)))
    est = elbo_stratified(fn, x, sch, V, 4, g, blocks=L // block)
    assert abs(float(est.mean()) - nll) < 4 * float(est.std() / math.sqrt(len(est)))

    class Perfect(torch.nn.Module):  # reads the 2L input [z ; x] and answers for z with the exact block x_θ
        def forward(self, tokens, pos=None, mask=None):
            assert mask is not None and tokens.shape[1] == 2 * L
            return torch.cat([block_perfect_logits(tokens[:, :L], tokens[:, L:], block)] * 2, dim=1)

    from undiffuse.diffusion.masked import block_times

    k = torch.arange(1, 1001)
    tb = block_times(k, 64, 1000)  # every block's time runs over the whole grid (k_b uniform when k is), never 0
    assert all(torch.equal(tb[:, b].sort().values, (k.double() - 0.5) / 1000) for b in range(64))
    assert torch.equal(block_times(k, 1, 1000)[:, 0], (k.double() - 0.5) / 1000)
    den = MaskedDenoiser(Perfect(), MaskingSchedule("linear"), V, block=block)
    xb = SEQS[[j]].repeat(16, 1)
    m = torch.tensor([float(den.example_loss(None, xb, d.t, d.noise).mean()) * L
                      for d in (draw_step(0, step, 16, (L,), 1000, stratified=True) for step in range(100))])  # fmt: skip
    assert abs(float(m.mean()) - nll) < 4 * float(m.std() / math.sqrt(len(m)))


def test_bd3_attention_mask_and_layouts():
    """Block b's outputs of the 2L pass do not change when clean blocks ≥ b or noisy tokens of other blocks change,
    equal the sampler's layout [x_{<b} ; z_b], and one block (block size L) is MDLM's net(z) exactly."""
    from undiffuse.diffusion.masked import MaskedDenoiser, bd3_mask
    from undiffuse.nn.transformer import Transformer

    torch.manual_seed(0)
    Lx, block, Vx = 12, 4, 5
    net = Transformer(Vx, Lx, 16, 2, 2).eval().double()
    den = MaskedDenoiser(net, MaskingSchedule("linear"), Vx, block=block)
    x = torch.randint(0, Vx, (3, Lx))
    z = torch.where(torch.rand(3, Lx) < 0.5, torch.full_like(x, Vx), x)
    with torch.no_grad():
        out = den.x_theta(z, x)
        for b in range(Lx // block):
            lo, hi = b * block, (b + 1) * block
            x2, z2 = x.clone(), z.clone()
            x2[:, lo:] = (x2[:, lo:] + 1) % Vx  # clean blocks ≥ b
            z2[:, :lo] = (z2[:, :lo] + 1) % (Vx + 1)  # noisy tokens of the other blocks
            z2[:, hi:] = (z2[:, hi:] + 2) % (Vx + 1)
            assert torch.allclose(den.x_theta(z2, x2)[:, lo:hi], out[:, lo:hi], atol=1e-12)
            assert torch.allclose(den.logits_after(x[:, :lo], z[:, lo:hi]), out[:, lo:hi], atol=1e-10)
            x3 = x.clone()
            x3[:, :lo] = (x3[:, :lo] + 1) % Vx
            if lo:  # … while the clean blocks before b do inform it
                assert not torch.allclose(den.x_theta(z, x3)[:, lo:hi], out[:, lo:hi], atol=1e-6)
        one = MaskedDenoiser(net, MaskingSchedule("linear"), Vx, block=Lx)
        assert torch.equal(one.x_theta(z, x), net(z))
        pos = torch.arange(Lx)
        two_l = net(torch.cat([z, x], 1), pos=torch.cat([pos, pos]), mask=bd3_mask(Lx, Lx))[:, :Lx]
        assert torch.allclose(two_l, net(z), atol=1e-12)  # the vectorised pass with one block is MDLM's x_θ
        assert bd3_mask(Lx, 1)[Lx:, Lx:].equal(torch.ones(Lx, Lx, dtype=torch.bool).tril())  # clean: causal


def test_block_sampler_exact_distribution_determinism_and_kept_characters():
    """Block by block with the exact x_θ the sampler draws the chain's distribution (χ²); row i depends only on its
    generator (also beside rows with other given positions); given characters are kept."""
    from undiffuse.samplers.masked import sample_blocks

    block = 2

    def after(prefix, zb):  # x_θ of block zb after the clean prefix (the rest of the L positions unseen)
        seq = torch.cat([prefix, zb, torch.full((len(zb), L - prefix.shape[1] - zb.shape[1]), V)], 1)
        return block_perfect_logits(seq, seq, block)[:, prefix.shape[1] : prefix.shape[1] + zb.shape[1]]

    n = 2000
    x, nfe = sample_blocks(after, torch.full((n, L), V), MaskingSchedule("linear"), 64, sample_generators(0, range(n)), V, block)
    assert bool((x != V).all()) and int(nfe.max()) <= L
    freq = torch.bincount((x * torch.tensor([V**3, V**2, V, 1])).sum(dim=1), minlength=V**L).double() / n
    assert float(((freq - PROB) ** 2 / PROB).sum() * n) < 81 + 4 * math.sqrt(2 * 80)
    z = torch.full((3, L), V)
    z[0, :2] = torch.tensor([1, 2])  # a given block
    z[1, 3] = 0  # a given character inside a block
    a, _ = sample_blocks(after, z, MaskingSchedule("linear"), 3, sample_generators(5, range(3)), V, block)
    for i in range(3):
        alone, _ = sample_blocks(after, z[i : i + 1], MaskingSchedule("linear"), 3, sample_generators(5, [i]), V, block)
        assert torch.equal(alone[0], a[i])
    assert a[0, :2].tolist() == [1, 2] and int(a[1, 3]) == 0 and bool((a != V).all())
    c, _ = sample_blocks(after, z, MaskingSchedule("linear"), 3, sample_generators(6, range(3)), V, block)
    assert not torch.equal(a, c)


def test_clipped_training_range_maps_times_and_leaves_the_bound_alone():
    """diffusion.mask_range: the training loss draws t on [low, high] (with the exact denoiser of the chain its mean
    is then the ELBO integrand averaged over that range, checked against the exact L_T of a fine grid restricted to
    it), and the evaluation bound does not change."""
    from undiffuse.config import DiffusionConfig
    from undiffuse.diffusion.masked import MaskedDenoiser
    from undiffuse.errors import ConfigError
    from undiffuse.training.keyed import draw_step

    class Perfect(torch.nn.Module):
        def forward(self, z):
            return perfect_logits(z)

    j, lo, hi = 40, 0.5, 1.0
    den = MaskedDenoiser(Perfect(), MaskingSchedule("linear"), V, train_range=(lo, hi))
    x = SEQS[[j]].repeat(16, 1)
    m = torch.tensor([float(den.example_loss(None, x, d.t, d.noise).mean()) * L
                      for d in (draw_step(0, step, 16, (L,), 1000, stratified=True) for step in range(100))])  # fmt: skip
    T = 64  # the integral of w(t)·E[CE] over [0.5, 1] / 0.5: the last T/2 step terms of L_T (×2), T large
    sch = MaskingSchedule("linear")
    part = 0.0
    for i in range(T // 2 + 1, T + 1):
        a_t, w = float(sch.alpha(torch.tensor(i / T))), float(sch.step_weight(torch.tensor((i - 1) / T), torch.tensor(i / T)))
        for pat in itertools.product([False, True], repeat=L):
            msk = torch.tensor(pat)
            if msk.any():
                z = torch.where(msk, torch.full_like(SEQS[j], V), SEQS[j])
                part += a_t ** (L - int(msk.sum())) * (1 - a_t) ** int(msk.sum()) * w * float(-perfect_logits(z[None])[0, msk, SEQS[j][msk]].sum())
    assert abs(float(m.mean()) - part / (hi - lo)) < 4 * float(m.std() / math.sqrt(len(m))) + 0.02 * part
    with pytest.raises(ConfigError, match="mask_range"):
        DiffusionConfig(mask_range=(0.9, 0.2))
