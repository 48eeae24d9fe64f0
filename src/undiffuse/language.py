"""Text models (runs on ``text:`` data): sampling, infilling, prefix continuation and bits per character, for
the masked-diffusion model (:class:`undiffuse.diffusion.masked.MaskedDenoiser`) and its autoregressive baseline
(:class:`undiffuse.diffusion.autoregressive.CausalLM`) alike.

Sampling goes through the one driver (:func:`undiffuse.samplers.driver.drive`): sample i's draws come from its
generator keyed to (seed, i). A template is a string whose ``_`` characters are generated and whose other
characters are kept (``"In the beginning ____ created"``); a prefix is kept at the start and the rest generated.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from undiffuse.data.textdata import MASK_CHAR, decode, encode, source_text, split_text, windows
from undiffuse.diffusion.autoregressive import CausalLM, shift_right
from undiffuse.diffusion.masked import elbo_stratified
from undiffuse.errors import UserError
from undiffuse.rng import derive_seed, generator
from undiffuse.samplers.driver import drive
from undiffuse.samplers.masked import sample_blocks, sample_left_to_right, sample_masked

__all__ = ["is_autoregressive", "block_of", "text_meta", "text_eval_data", "template", "generate", "sample_text", "infill", "texts", "token_nll",
           "text_nll", "ORDERS"]  # fmt: skip

ORDERS = ("ancestral", "confidence")


def is_autoregressive(model) -> bool:
    """Whether ``model`` is the autoregressive baseline (a causal transformer)."""
    return isinstance(model.denoiser, CausalLM)


def block_of(model, length: int) -> int:
    """The block size of a block-diffusion model for sequences of ``length`` characters (``length`` for MDLM and
    for the baseline)."""
    den = model.denoiser
    return length if is_autoregressive(model) else den.block_size(length)


def text_meta(model) -> dict:
    """The run's text info: vocab, length, source (refusing a model of another kind of data)."""
    if model.data.kind != "text":
        raise UserError(f"this run was trained on {model.data.kind} data, not text — use a run trained on text:")
    return model.data.extra["text"]


def template(model, n: int, length: Optional[int] = None, prefix: Optional[str] = None,
             pattern: Optional[str] = None) -> torch.Tensor:  # fmt: skip
    """Starting sequences [n, L] (mask id where to generate): ``pattern`` (``_`` = generate, its length is L), or
    ``prefix`` kept at the start of ``length`` (default: the training length) characters."""
    meta = text_meta(model)
    vocab, max_len = meta["vocab"], meta["length"]
    V = len(vocab)
    if pattern is not None:
        if not pattern or len(pattern) > max_len:
            raise UserError(f"--text has {len(pattern)} characters; give 1 to {max_len} (the model's sequence length)")
        keep = torch.tensor([c != MASK_CHAR for c in pattern])
        ids = torch.full((len(pattern),), V, dtype=torch.long)
        if keep.any():
            ids[keep] = encode("".join(c for c in pattern if c != MASK_CHAR), vocab)
        return ids.expand(n, -1).clone()
    L = length or max_len
    if not 1 <= L <= max_len:
        raise UserError(f"--length {L} must lie in 1..{max_len} (the model's sequence length)")
    z = torch.full((n, L), V, dtype=torch.long)
    if prefix:
        if len(prefix) >= L:
            raise UserError(f"--prefix has {len(prefix)} characters, not fewer than --length {L} — shorten it")
        z[:, : len(prefix)] = encode(prefix, vocab)
    return z


def generate(model, z: torch.Tensor, seed: int = 0, steps: Optional[int] = None, order: str = "ancestral",
             batch_size: int = 64, indices=None, info: Optional[dict] = None, top_p: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Fill the mask ids of ``z`` [n, L]: the masked model in ``steps`` steps (default L), ancestral or
    confidence-ordered — a block-diffusion model block by block, ``steps`` per block (default the block size);
    the autoregressive baseline left to right (``steps`` and ``order`` do not apply); each
    draw from the nucleus of probability ``top_p`` (1: the model's full distribution). ``info`` receives ``nfe``
    (mean network evaluations per sample) and ``steps``."""
    if order not in ORDERS:
        raise UserError(f"unknown order {order!r} — use {' or '.join(ORDERS)}")
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"--top-p {top_p} must lie in (0, 1] — e.g. 0.9, or 1 for the full distribution")
    den, dev = model.denoiser, model.device
    n, L = z.shape
    ar = is_autoregressive(model)
    block = block_of(model, model.data.extra["text"]["length"])
    steps = steps or min(block, L)
    used: list[torch.Tensor] = []

    def run_batch(_x, gens, cond, offset):
        zb = cond["z"].to(dev)
        if ar:
            out, nfe = sample_left_to_right(lambda t: den.net(shift_right(t, den.start_id)), zb, gens, den.vocab, top_p)
        elif block < L:
            out, nfe = sample_blocks(den.logits_after, zb, den.schedule, steps, gens, den.mask_id, block, order, top_p)
        else:
            out, nfe = sample_masked(den.net, zb, den.schedule, steps, gens, den.mask_id, order, top_p)
        used.append(nfe)
        return out.float()

    with torch.no_grad():
        driven = drive(run_batch, (1,), indices if indices is not None else n, seed=seed, sigma_max=1.0,
                       batch_size=batch_size, cond={"z": z})  # fmt: skip
    if info is not None:
        info.update(nfe=float(torch.cat(used).double().mean()) if used else 0.0, steps=None if ar else steps)
    return driven.x.long()


def sample_text(model, n: int, seed: int = 0, length: Optional[int] = None, steps: Optional[int] = None,
                prefix: Optional[str] = None, order: str = "ancestral", batch_size: int = 64,
                info: Optional[dict] = None, top_p: float = 1.0) -> torch.Tensor:  # fmt: skip
    """n samples [n, L] of token ids (sample i depends only on (seed, i)), optionally continuing ``prefix``."""
    return generate(model, template(model, n, length, prefix), seed, steps, order, batch_size, info=info, top_p=top_p)


def infill(model, pattern: str, n: int = 1, seed: int = 0, steps: Optional[int] = None, order: str = "ancestral",
           info: Optional[dict] = None) -> torch.Tensor:  # fmt: skip
    """n fillings [n, len(pattern)] of the ``_`` characters of ``pattern``; the other characters are kept."""
    if MASK_CHAR not in pattern:
        raise UserError(f"--text has no {MASK_CHAR} to fill — mark each character to generate with {MASK_CHAR}")
    return generate(model, template(model, n, pattern=pattern), seed, steps, order, info=info)


def texts(model, ids: torch.Tensor) -> list[str]:
    """The strings of token ids [n, L]."""
    vocab = text_meta(model)["vocab"]
    return [decode(row, vocab) for row in ids]


def text_eval_data(model, spec: Optional[str] = None, split: str = "test", n: Optional[int] = None) -> torch.Tensor:
    """The first ``n`` disjoint windows [n, L] of ``split`` of ``spec`` (default: the run's own text) in the run's
    vocabulary and window length (another text is encoded in the run's vocabulary; for the run's own test split
    these are the windows of :func:`undiffuse.data.textdata.load_text`)."""
    meta = text_meta(model)
    spec = spec or model.data.name
    if not spec.startswith("text:"):
        raise UserError(f"--data {spec} is not text — a text run is scored on text:kjv or text:file:PATH")
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}: use 'train' or 'test'")
    ids = encode(split_text(source_text(spec.partition(":")[2]), split), meta["vocab"])
    return windows(ids, meta["length"], meta["length"])[:n]


@torch.no_grad()
def token_nll(model, x: torch.Tensor) -> torch.Tensor:
    """The autoregressive baseline's exact −log p(x^ℓ | x^{<ℓ}) [B, L] (nats)."""
    if not is_autoregressive(model):
        raise UserError("exact per-token likelihoods need the autoregressive baseline (model.arch=causal-transformer)")
    return model.denoiser.token_nll(x.to(model.device)).double().cpu()


@torch.no_grad()
def text_nll(model, x: torch.Tensor, n_t: int = 32, seed: int = 0, T: Optional[int] = None,
             batch_size: int = 64, keep: Optional[torch.Tensor] = None) -> dict:  # fmt: skip
    """Bits per character on sequences x [N, L] with the standard error over sequences: the autoregressive
    baseline's exact NLL, or the masked model's bound (``T`` None: the continuous-time ELBO L_∞; else the
    discrete-time L_T), estimated with ``n_t`` strata of t per sequence. With ``keep`` [N, L] (True = given), the
    bits per character of the other positions given the kept ones (infilling; the baseline sees only what lies
    to the left of a position)."""
    per_seq = []
    den, ar = model.denoiser, is_autoregressive(model)
    g = generator(derive_seed(seed, "text-nll"))
    for lo in range(0, len(x), batch_size):
        xb = x[lo : lo + batch_size].to(model.device)
        kb = keep[lo : lo + batch_size].to(model.device) if keep is not None else None
        if ar:
            nll = den.token_nll(xb).double()
            per_seq.append((nll if kb is None else nll * ~kb).sum(dim=1).cpu())
        else:
            n_blocks = x.shape[1] // block_of(model, x.shape[1])
            per_seq.append(elbo_stratified(lambda z, xb=xb: den.x_theta(z, xb), xb, den.schedule, den.vocab, n_t, g, T, kb, n_blocks).cpu())
    free = torch.full((len(x),), x.shape[1], dtype=torch.float64) if keep is None else (~keep).sum(dim=1).double().cpu()
    nats = torch.cat(per_seq) / free
    bpc = nats / math.log(2)
    se = float(bpc.std(unbiased=True) / math.sqrt(len(bpc))) if len(bpc) > 1 else float("nan")
    how = "exact" if ar else ("continuous-time ELBO" if T is None else f"discrete-time bound, T = {T}")
    return {"bits_per_char": float(bpc.mean()), "stderr": se, "n": len(bpc), "length": int(x.shape[1]),
            "estimator": how, "n_t": None if ar else n_t,
            "model": "autoregressive" if ar else "masked diffusion"}  # fmt: skip
