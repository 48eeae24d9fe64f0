"""Evaluation of text models (the masked-diffusion model and its autoregressive baseline), as ``undiffuse eval``
and ``benchmarks/text_lm.py`` report it:

- bits per character on held-out windows: the diffusion bound with its standard error, the baseline's exact NLL;
- sample quality: generative perplexity (per character, 2^bits) of samples under an autoregressive model **together
  with** the samples' character entropy and distinct word n-gram rates, beside the same numbers of held-out real
  text — a low gen-PPL with collapsed entropy is repetition, not quality (Zheng et al. 2024; ReMDM);
- infilling: a span of ``span`` characters in the middle of each held-out window is hidden; exact-character
  accuracy of greedy filling and bits/char of the span. The diffusion model sees both sides of the gap (greedy:
  the most confident position first, MaskGIT-style) — a block-diffusion model only the given characters of its
  own block and the blocks before it (block by block, left to right); the baseline sees only the left context (greedy left to
  right; its bits/char are the exact −log p(span | left context)).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Optional, Sequence

import torch

from undiffuse.diffusion.autoregressive import shift_right
from undiffuse.errors import UserError
from undiffuse.language import (
    block_of,
    is_autoregressive,
    sample_text,
    text_eval_data,
    text_meta,
    text_nll,
    texts,
    token_nll,
)
from undiffuse.rng import derive_seed, generator

__all__ = ["char_entropy", "distinct_ngrams", "text_stats", "gen_ppl", "infill_spans", "greedy_fill", "infill_scores",
           "evaluate_text_run", "markdown"]  # fmt: skip


def char_entropy(text: str) -> float:
    """Unigram character entropy of ``text`` in bits/char."""
    counts = Counter(text)
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def distinct_ngrams(samples: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over ``samples`` (Li et al. 2016's distinct-n)."""
    grams = [tuple(w[i : i + n]) for s in samples for w in [s.split()] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def text_stats(samples: Sequence[str]) -> dict:
    """Mean per-sample character entropy (bits/char) and distinct word 1/2/3-grams."""
    return {"entropy": sum(char_entropy(s) for s in samples) / max(len(samples), 1),
            **{f"distinct_{n}": distinct_ngrams(samples, n) for n in (1, 2, 3)}}  # fmt: skip


def gen_ppl(ar_model, ids: torch.Tensor) -> dict:
    """Generative perplexity of token ids [n, L] under the autoregressive ``ar_model``: bits/char and 2^bits."""
    nll = torch.cat([token_nll(ar_model, ids[i : i + 32]) for i in range(0, len(ids), 32)])
    bits = float(nll.mean()) / math.log(2)
    return {"bits_per_char": bits, "ppl_per_char": 2.0**bits}


def infill_spans(x: torch.Tensor, span: int, seed: int = 0) -> torch.Tensor:
    """keep [N, L] (False on the hidden span): a span of ``span`` characters starting uniformly in the middle half."""
    N, L = x.shape
    if not 0 < span <= L // 2:
        raise ValueError(f"an infilling span of {span} characters does not fit the middle half of {L}-character windows")
    g = generator(derive_seed(seed, "infill"))
    start = L // 4 + torch.randint(0, max(1, L // 2 - span), (N,), generator=g)
    pos = torch.arange(L)
    return ~((pos >= start[:, None]) & (pos < start[:, None] + span))


@torch.no_grad()
def greedy_fill(model, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Greedy filling of the positions not kept: diffusion — repeatedly the most confident masked position to its
    argmax (both sides seen; a block model block by block, seeing its own block and the filled blocks before it);
    the baseline — left to right, each position its argmax given the left context."""
    den = model.denoiser
    z = torch.where(keep, x, torch.full_like(x, den.vocab)).to(model.device)
    if not is_autoregressive(model):  # block by block (MDLM: one block, no prefix)
        block = block_of(model, x.shape[1])
        for lo in range(0, x.shape[1], block):
            after = lambda zb, lo=lo: den.logits_after(z[:, :lo], zb)  # noqa: E731
            z[:, lo : lo + block] = _greedy_block(after, z[:, lo : lo + block], den.vocab)
        return z.cpu()
    while (z == den.vocab).any():
        masked = z == den.vocab
        rows = masked.any(dim=1).nonzero().squeeze(1)
        pos = masked.float().argmax(dim=1)  # first masked position of each row (rows may differ)
        logits = den.net(shift_right(z, den.start_id))
        z[rows, pos[rows]] = logits[rows, pos[rows]].argmax(-1)
    return z.cpu()


def _greedy_block(logits_fn, z: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Greedy confidence-ordered filling of the mask ids of z [B, n] with x_θ = ``logits_fn``."""
    z = z.clone()
    while (z == mask_id).any():
        masked = z == mask_id
        rows = masked.any(dim=1).nonzero().squeeze(1)
        p = torch.softmax(logits_fn(z).double(), dim=-1)
        conf, tok = p.max(dim=-1)
        pos = torch.where(masked, conf, torch.full_like(conf, -1.0)).argmax(dim=1)
        z[rows, pos[rows]] = tok[rows, pos[rows]]
    return z


def infill_scores(model, x: torch.Tensor, span: int = 16, seed: int = 0, n_t: int = 16) -> dict:
    """Exact-character accuracy of greedy filling and bits/char of hidden spans (see the module docstring)."""
    span = min(span, x.shape[1] // 2)  # short windows: the span fits their middle half (reported below)
    keep = infill_spans(x, span, seed)
    filled = greedy_fill(model, x, keep)
    hidden = ~keep
    acc = float((filled[hidden] == x[hidden]).double().mean())
    r = text_nll(model, x, n_t=n_t, seed=seed, keep=keep)
    how = "left context only, greedy left to right" if is_autoregressive(model) else "both sides, greedy by confidence"
    if not is_autoregressive(model) and block_of(model, x.shape[1]) < x.shape[1]:
        how = f"left context and its own block of {block_of(model, x.shape[1])}, greedy by confidence"
    return {"span": span, "n": len(x), "accuracy": acc, "bits_per_char": r["bits_per_char"], "stderr": r["stderr"],
            "context": how}  # fmt: skip


def evaluate_text_run(run_dir, n: int = 32, steps: Optional[int] = None, seed: int = 0, reference: Optional[str] = None,
                      device: str = "cpu", nll_n: int = 200, n_t: int = 16, span: int = 16) -> dict:  # fmt: skip
    """A text run's report: bits/char, samples (gen-PPL under ``reference`` — an autoregressive run, default the run
    itself when it is one — entropy, distinct-n beside real held-out windows), speed and infilling."""
    from undiffuse.model import load

    model = load(run_dir, device=device)
    meta = text_meta(model)
    x = text_eval_data(model, n=nll_n)
    result: dict = {"target": str(run_dir), "model": "autoregressive" if is_autoregressive(model) else "masked diffusion",
                    "data": model.data.name, "step": model.step, "length": meta["length"]}  # fmt: skip
    result["bits_per_char"] = text_nll(model, x, n_t=n_t, seed=seed)
    info: dict = {}
    t0 = time.perf_counter()
    ids = sample_text(model, n, seed, steps=steps, info=info)
    seconds = time.perf_counter() - t0
    samples, real = texts(model, ids), texts(model, x[:n])
    result["samples"] = {**text_stats(samples), "n": n, "steps": info.get("steps"), "nfe": info.get("nfe"),
                         "chars_per_s": ids.numel() / max(seconds, 1e-9), "first": samples[0]}  # fmt: skip
    result["real"] = text_stats(real)
    ar = model if is_autoregressive(model) else (load(reference, device=device) if reference else None)
    if ar is not None:
        ref = text_meta(ar)
        if not is_autoregressive(ar) or ref["vocab"] != meta["vocab"] or ref["length"] < meta["length"]:
            raise UserError(f"--reference {reference} must be an autoregressive text run on the same text, of windows of "
                            f"at least {meta['length']} characters — train one with --set model.arch=causal-transformer")  # fmt: skip
        result["samples"]["gen_ppl"] = gen_ppl(ar, ids)
        result["real"]["gen_ppl"] = gen_ppl(ar, x[:n])
    result["infill"] = infill_scores(model, x[: min(len(x), 100)], span, seed)
    return result


def markdown(r: dict) -> str:
    """The report of :func:`evaluate_text_run` as markdown."""
    b, s, real, f = r["bits_per_char"], r["samples"], r["real"], r["infill"]
    ppl = lambda d: f"{d['gen_ppl']['ppl_per_char']:.2f}" if "gen_ppl" in d else "–"  # noqa: E731
    rows = [f"# Evaluation of {r['target']} ({r['model']}, step {r['step']}, {r['data']})", "",
            f"Test bits/char: **{b['bits_per_char']:.4f} ± {b['stderr']:.4f}** ({b['estimator']}; {b['n']} windows of "
            f"{b['length']} characters).", "",
            "| text | gen-PPL per char | entropy (bits/char) | distinct-1 | distinct-2 | distinct-3 |", "|---|---|---|---|---|---|",
            f"| {s['n']} samples ({s['nfe']:.0f} NFE, {s['chars_per_s']:.0f} chars/s) | {ppl(s)} | {s['entropy']:.3f} | "
            f"{s['distinct_1']:.3f} | {s['distinct_2']:.3f} | {s['distinct_3']:.3f} |",
            f"| held-out text | {ppl(real)} | {real['entropy']:.3f} | {real['distinct_1']:.3f} | {real['distinct_2']:.3f} | "
            f"{real['distinct_3']:.3f} |", "",
            f"Infilling ({f['span']} hidden characters, {f['n']} windows; {f['context']}): exact-character accuracy "
            f"{f['accuracy']:.3f}, {f['bits_per_char']:.3f} ± {f['stderr']:.3f} bits/char.", "",
            "First sample:", "", "```", s["first"], "```"]  # fmt: skip
    return "\n".join(rows) + "\n"
