"""Masked diffusion (MDLM) vs the autoregressive baseline on the King James Bible, character level, on a CPU.

Trains nothing itself: give it the two runs of the same preset, trained by the same command, e.g.

    OMP_NUM_THREADS=1 /usr/bin/time -v undiffuse train --data text:kjv --out runs/textlm/mdlm
    OMP_NUM_THREADS=1 /usr/bin/time -v undiffuse train --data text:kjv --out runs/textlm/ar --set model.arch=causal-transformer
    OMP_NUM_THREADS=1 python benchmarks/text_lm.py --mdlm runs/textlm/mdlm --ar runs/textlm/ar \\
        --cpu-seconds 1234,1200   # the two runs' user+system seconds (from /usr/bin/time -v)

and it writes benchmarks/results/text_lm.json and .md:

- test bits/char of every saved checkpoint of both runs (the budget curve; CPU-seconds of a checkpoint = its share
  of the steps × the run's measured CPU-seconds): the diffusion bound (continuous-time ELBO, stratified t, ± SE over
  windows) and the baseline's exact NLL; at the last checkpoint also the discrete-time bound for T = 16/64/256;
- samples: gen-PPL under the baseline with character entropy and distinct word n-grams, beside held-out windows;
  diffusion at K = 16, 64, 256, 1024 steps (ancestral) and 256 confidence-ordered; the baseline's own samples;
  network evaluations and characters/s;
- infilling of a 16-character span in the middle of held-out windows: exact-character accuracy and bits/char;
- with ``--top-p 0.9``: nucleus rows (the diffusion model at K = 256 and the baseline).

Block diffusion (BD3-LM; ``diffusion.block_size``): ``--part block --block RUN --name NAME --block-cpu-seconds S
--block-ks 2,4`` computes a block run's curve, discrete bounds, samples (K steps per block; gen-PPL under ``--ar``)
and infilling into OUT.NAME.json, and ``--part add --name NAME`` adds it to OUT.json/.md (the earlier rows stay)
and its shown samples to the samples file.

``--part ar|mdlm-bits|mdlm-samples`` computes one third (the baseline's rows alone; the diffusion model's curve and
discrete bounds; its samples and infilling) into OUT.PART.json — the three can run at the same time, one thread
each — and ``--part merge`` writes OUT.json/.md and the samples file from them.

Recipe probes at fixed CPU (docs/text.md): ``--part per-t --mdlm RUN --ar RUN`` writes OUT.per-t.json — the
masked model's integrand c(t) = E[Σ_masked −log₂ x_θ(z_t)^ℓ[x^ℓ]] / (t·L) (bits per masked character at masking
rate t, linear schedule; the bound is ∫₀¹ c(t) dt) on a grid of t for every checkpoint, beside the baseline's
exact bits/char; ``--part probe --run RUN --name NAME --time-log LOG`` scores a probe run's last checkpoint on the
same test windows and estimator into OUT.probe.NAME.json (its training CPU-seconds = user + system from the
``/usr/bin/time -v`` log); ``--part add-probes --from PREFIX`` puts PREFIX.per-t.json and every PREFIX.probe.*.json
into OUT.json/.md (the earlier rows stay).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

import undiffuse
from undiffuse.diffusion.masked import mask_tokens, masked_cross_entropy
from undiffuse.evaluation.text_report import gen_ppl, infill_scores, text_stats
from undiffuse.io import write_json, write_text
from undiffuse.language import sample_text, text_eval_data, text_nll, texts
from undiffuse.rng import derive_seed, generator
from undiffuse.runs import list_checkpoints


def _steps(run: str) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in list_checkpoints(Path(run)))


def _curve(name: str, run: str, cs, a) -> list[dict]:
    steps, out = _steps(run), []
    for s in steps:
        m = undiffuse.load(run, checkpoint=s, device="cpu")
        r = text_nll(m, text_eval_data(m, n=a.n_eval), n_t=a.n_t)
        r.update(model=name, step=s, cpu_seconds=None if cs is None else cs * s / steps[-1])
        out.append(r)
        print(json.dumps(r), flush=True)
    return out


def _sample_row(name: str, model, ar, k, order: str, top_p: float, n: int) -> tuple[dict, str]:
    info: dict = {}
    t0, c0 = time.perf_counter(), time.process_time()
    ids = sample_text(model, n, seed=0, steps=k, order=order if name != "ar" else "ancestral", info=info, top_p=top_p)
    wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    s = texts(model, ids)
    row = {"model": name, "steps": k, "order": order, "top_p": top_p, "nfe": info["nfe"], "chars_per_s": ids.numel() / wall,
           "chars_per_cpu_s": ids.numel() / cpu_s, **text_stats(s), "gen_ppl": gen_ppl(ar, ids)}  # fmt: skip
    print(json.dumps(row), flush=True)
    nucleus = "" if top_p >= 1 else f", nucleus p = {top_p}"
    per = " per block" if name.startswith("bd3") else ""
    return row, f"### {name}, {order}{'' if k is None else f', K = {k}{per}'}{nucleus}\n\n" + "\n\n".join(s[:2])


def _block_part(a) -> dict:
    """A block-diffusion run: its curve, discrete bounds, samples at K steps per block (and nucleus at K = the
    block size) and infilling, on the same windows and protocol as the other parts."""
    ar = undiffuse.load(a.ar, device="cpu")
    m = undiffuse.load(a.block, device="cpu")
    x = text_eval_data(ar, n=a.n_eval)
    res: dict = {"run": a.block, "block_size": m.denoiser.block, "cpu_seconds": a.block_cpu_seconds,
                 "curve": _curve(a.name, a.block, a.block_cpu_seconds, a), "samples": [], "shown": []}  # fmt: skip
    res["discrete_bounds"] = [{"T": T, **text_nll(m, x, n_t=a.n_t, T=T)} for T in _ints(a.discrete)]
    print(json.dumps(res["discrete_bounds"]), flush=True)
    settings = [(k, 1.0) for k in _ints(a.block_ks)] + [(m.denoiser.block, float(p)) for p in a.top_p.split(",") if p]
    for k, p in settings:
        row, shown = _sample_row(a.name, m, ar, k, "ancestral", p, a.n_samples)
        res["samples"].append(row)
        res["shown"].append(shown)
    res["infill"] = infill_scores(m, x[:100], 16)
    print(json.dumps(res["infill"]), flush=True)
    return res


def _part(a, part: str) -> dict:
    """One part of the benchmark (``ar``: everything of the baseline alone; ``mdlm-bits``: the diffusion model's
    curve and discrete bounds; ``mdlm-samples``: its samples and infilling) — parts can run at the same time."""
    cpu = [float(c) for c in a.cpu_seconds.split(",")] if a.cpu_seconds else [None, None]
    res: dict = {"curve": [], "samples": [], "shown": [], "infill": {}}
    ar = undiffuse.load(a.ar, device="cpu")
    x = text_eval_data(ar, n=a.n_eval)
    tops = [float(p) for p in a.top_p.split(",") if p]
    if part == "ar":
        res["curve"] = _curve("ar", a.ar, cpu[1], a)
        real = texts(ar, x[: a.n_samples])
        res["real"] = {**text_stats(real), "gen_ppl": gen_ppl(ar, x[: a.n_samples])}
        for p in [1.0] + tops:
            row, shown = _sample_row("ar", ar, ar, None, "left to right", p, a.n_samples)
            res["samples"].append(row)
            res["shown"].append(shown)
        res["infill"]["ar"] = infill_scores(ar, x[:100], 16)
    elif part == "mdlm-bits":
        mdlm = undiffuse.load(a.mdlm, device="cpu")
        res["curve"] = _curve("mdlm", a.mdlm, cpu[0], a)
        res["discrete_bounds"] = [{"T": T, **text_nll(mdlm, x, n_t=a.n_t, T=T)} for T in _ints(a.discrete)]
    elif part == "mdlm-samples":
        mdlm = undiffuse.load(a.mdlm, device="cpu")
        settings = [(k, "ancestral", 1.0) for k in _ints(a.ks)] + [(k, "confidence", 1.0) for k in _ints(a.confidence)]
        settings += [(256, "ancestral", p) for p in tops]
        for k, order, p in settings:
            row, shown = _sample_row("mdlm", mdlm, ar, k, order, p, a.n_samples)
            res["samples"].append(row)
            res["shown"].append(shown)
        res["infill"]["mdlm"] = infill_scores(mdlm, x[:100], 16)
        print(json.dumps(res["infill"]), flush=True)
    else:
        raise SystemExit(f"unknown part {part!r}: ar, mdlm-bits, mdlm-samples or all")
    return res


@torch.no_grad()
def _per_t_curve(m, x: torch.Tensor, ts: list[float], batch: int = 50) -> list[dict]:
    """c(t) in bits per masked character for each t of ``ts``: one masking draw per window and t (keyed by t), the
    window's Σ_masked −log₂ x_θ divided by its expected number of masks t·L (so the mean over t of a midpoint grid
    is a quadrature of the bound ∫₀¹ c(t) dt), ± SE over windows; also the drawn-masks ratio."""
    den = m.denoiser
    rows = []
    for t in ts:
        g = generator(derive_seed(0, "per-t", f"{t:.6f}"))
        ce, n = [], []
        for lo in range(0, len(x), batch):
            xb = x[lo : lo + batch].to(m.device)
            u = torch.rand(xb.shape, generator=g, dtype=torch.float64)
            z = mask_tokens(xb, den.schedule.alpha(torch.full((len(xb),), t, dtype=torch.float64)), u, den.mask_id)
            ce.append(masked_cross_entropy(den.x_theta(z, xb).float(), xb, z, den.mask_id).double().cpu())
            n.append((z == den.mask_id).sum(-1).double().cpu())
        ce_b, n_b = torch.cat(ce) / math.log(2), torch.cat(n)
        L = x.shape[1]
        c = ce_b / (t * L)
        rows.append({"t": t, "bits_per_masked_char": float(c.mean()), "stderr": float(c.std() / math.sqrt(len(c))),
                     "bits_per_drawn_mask": float(ce_b.sum() / n_b.sum().clamp(min=1))})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _per_t_part(a) -> dict:
    ar = undiffuse.load(a.ar, device="cpu")
    x = text_eval_data(ar, n=a.n_eval)
    ts = [(k + 0.5) / a.n_grid for k in range(a.n_grid)]
    res: dict = {"mdlm": a.mdlm, "ar": a.ar, "grid": "midpoints of " + str(a.n_grid) + " equal strata of [0, 1]",
                 "ar_bits_per_char": text_nll(ar, x)["bits_per_char"], "checkpoints": []}  # fmt: skip
    for s in _steps(a.mdlm):
        m = undiffuse.load(a.mdlm, checkpoint=s, device="cpu")
        rows = _per_t_curve(m, x, ts)
        res["checkpoints"].append({"step": s, "rows": rows,
                                   "quadrature_bits_per_char": sum(r["bits_per_masked_char"] for r in rows) / len(rows)})  # fmt: skip
    return res


def _time_log_cpu(path: str) -> float:
    """user + system seconds from a ``/usr/bin/time -v`` log."""
    got = {}
    for line in Path(path).read_text().splitlines():
        key, _, val = line.strip().partition(": ")
        if key in ("User time (seconds)", "System time (seconds)"):
            got[key] = float(val)
    if len(got) != 2:
        raise SystemExit(f"{path}: no user/system time lines (run the training under /usr/bin/time -v)")
    return sum(got.values())


def _probe_part(a) -> dict:
    """A probe run's last checkpoint (EMA) on the same test windows and estimator, with its recipe and CPU."""
    cfg = json.loads((Path(a.run) / "config.json").read_text())
    tr, mo = cfg["train"], cfg["model"]
    m = undiffuse.load(a.run, device="cpu")
    r = text_nll(m, text_eval_data(m, n=a.n_eval), n_t=a.n_t)
    r.update(name=a.name, run=a.run, step=_steps(a.run)[-1], arch=mo["arch"], hidden=mo["hidden"], depth=mo["depth"],
             heads=mo["num_heads"], params=sum(p.numel() for p in m.denoiser.parameters()), batch=tr["batch_size"],
             lr=tr["lr"], warmup=tr["warmup_steps"], decay=tr["decay_steps"], min_lr=tr["min_lr"], seed=tr["seed"],
             train_cpu_seconds=_time_log_cpu(a.time_log) if a.time_log else None, command=a.command)  # fmt: skip
    if a.probe_curve:  # every checkpoint (CPU-seconds = its share of the steps)
        r["curve"] = _curve(a.name, a.run, r["train_cpu_seconds"], a)
    if a.probe_samples:  # one ancestral sample row at K steps, gen-PPL under --ar
        ar = undiffuse.load(a.ar, device="cpu")
        r["samples"] = [_sample_row(a.name, m, ar, k, "ancestral", 1.0, a.n_samples)[0] for k in _ints(a.probe_samples)]
    return r


def _ints(spec: str) -> list[int]:
    return [int(k) for k in spec.split(",") if k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mdlm", default=None)
    ap.add_argument("--ar", required=True)
    ap.add_argument("--cpu-seconds", default=None, help="CPU-seconds of the two training runs: MDLM,AR")
    ap.add_argument("--n-eval", type=int, default=200, help="test windows for bits/char")
    ap.add_argument("--n-t", type=int, default=16)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--ks", default="16,64,256,1024", help="ancestral sampling steps of the diffusion rows")
    ap.add_argument("--confidence", default="256", help="steps of the confidence-ordered rows ('' for none)")
    ap.add_argument("--discrete", default="16,64,256", help="T of the discrete-time bounds ('' for none)")
    ap.add_argument("--top-p", default="", help="nucleus rows (diffusion at K = 256 and the baseline), e.g. 0.9")
    ap.add_argument("--part", default="all", help="all, or one of ar, mdlm-bits, mdlm-samples (written to OUT.PART.json); "
                    "--part merge combines the three into OUT.json/.md")  # fmt: skip
    ap.add_argument("--block", default=None, help="--part block: a block-diffusion run (diffusion.block_size)")
    ap.add_argument("--name", default="bd3", help="--part block/add: the block run's name in the tables")
    ap.add_argument("--block-cpu-seconds", type=float, default=None, help="--part block: the block run's CPU-seconds")
    ap.add_argument("--block-ks", default="", help="--part block: sampling steps per block of its rows")
    ap.add_argument("--n-grid", type=int, default=20, help="--part per-t: midpoints of this many strata of t")
    ap.add_argument("--run", default=None, help="--part probe: the probe's run directory")
    ap.add_argument("--time-log", default=None, help="--part probe: the /usr/bin/time -v log of its training")
    ap.add_argument("--command", default=None, help="--part probe: the training command, recorded with the row")
    ap.add_argument("--probe-curve", action="store_true", help="--part probe: score every checkpoint, not only the last")
    ap.add_argument("--probe-samples", default="", help="--part probe: ancestral sample rows at these K, e.g. 256")
    ap.add_argument("--from", dest="from_", default=None, help="--part add-probes: the prefix of the per-t/probe files")
    ap.add_argument("--out", default="benchmarks/results/text_lm")
    ap.add_argument("--samples-out", default="docs/text_samples.txt")
    a = ap.parse_args()
    torch.set_num_threads(1)
    parts = ("ar", "mdlm-bits", "mdlm-samples")
    if a.part == "block":
        t0, load0 = time.process_time(), os.getloadavg()
        r = _block_part(a)
        r.update(eval_cpu_seconds=time.process_time() - t0, load_avg_start=load0, load_avg_end=os.getloadavg())
        write_json(f"{a.out}.{a.name}.json", r)
        print(f"wrote {a.out}.{a.name}.json")
        return
    if a.part == "add":
        res = json.loads(Path(a.out + ".json").read_text())
        part = json.loads(Path(f"{a.out}.{a.name}.json").read_text())
        res.setdefault("block_runs", {})[a.name] = part
        write_json(a.out + ".json", res)
        write_text(a.out + ".md", markdown(res))
        shown = Path(a.samples_out).read_text() if Path(a.samples_out).exists() else ""
        write_text(a.samples_out, shown + "\n" + "\n\n".join(part["shown"]) + "\n")
        print(f"wrote {a.out}.json, {a.out}.md and {a.samples_out}")
        return
    if a.part in ("per-t", "probe"):
        t0, load0 = time.process_time(), os.getloadavg()
        r = _per_t_part(a) if a.part == "per-t" else _probe_part(a)
        r.update(eval_cpu_seconds=time.process_time() - t0, load_avg_start=load0, load_avg_end=os.getloadavg())
        dest = f"{a.out}.per-t.json" if a.part == "per-t" else f"{a.out}.probe.{a.name}.json"
        write_json(dest, r)
        print(f"wrote {dest}")
        return
    if a.part == "add-probes":
        res = json.loads(Path(a.out + ".json").read_text())
        src = Path(a.from_)
        per_t = src.parent / (src.name + ".per-t.json")
        if per_t.exists():
            res["per_t"] = json.loads(per_t.read_text())
        probes = {p["name"]: p for p in res.get("probes", [])}
        for f in sorted(src.parent.glob(src.name + ".probe.*.json")):
            p = json.loads(f.read_text())
            probes[p["name"]] = p
        res["probes"] = list(probes.values())
        write_json(a.out + ".json", res)
        write_text(a.out + ".md", markdown(res))
        print(f"wrote {a.out}.json and {a.out}.md")
        return
    if a.part in parts:
        t0, load0 = time.process_time(), os.getloadavg()
        r = _part(a, a.part)
        r.update(eval_cpu_seconds=time.process_time() - t0, load_avg_start=load0, load_avg_end=os.getloadavg())
        write_json(f"{a.out}.{a.part}.json", r)
        print(f"wrote {a.out}.{a.part}.json")
        return
    t_start, load0 = time.process_time(), os.getloadavg()
    if a.part == "merge":
        got = [json.loads(Path(f"{a.out}.{p}.json").read_text()) for p in parts]
    elif a.part == "all":
        got = [_part(a, p) for p in parts]
    else:
        raise SystemExit(f"unknown part {a.part!r}: all, merge, {', '.join(parts)}")
    res: dict = {"device": "2-core AMD EPYC, torch " + torch.__version__, "load_avg_start": load0,
                 "python": platform.python_version(), "threads": 1, "runs": {"mdlm": a.mdlm, "ar": a.ar},
                 "curve": got[1]["curve"] + got[0]["curve"], "discrete_bounds": got[1].get("discrete_bounds", []),
                 "real": got[0]["real"], "samples": got[2]["samples"] + got[0]["samples"],
                 "infill": {**got[2]["infill"], **got[0]["infill"]}}  # fmt: skip
    if a.part == "merge":
        res["load_avg_start"] = [g["load_avg_start"] for g in got]
        res["eval_cpu_seconds"] = sum(g["eval_cpu_seconds"] for g in got)
    else:
        res["eval_cpu_seconds"] = time.process_time() - t_start
    res["load_avg_end"] = os.getloadavg()
    shown = got[2]["shown"] + got[0]["shown"]
    write_json(a.out + ".json", res)
    write_text(a.out + ".md", markdown(res))
    write_text(a.samples_out, "\n\n".join(shown) + "\n")
    print(f"wrote {a.out}.json, {a.out}.md and {a.samples_out}")


def markdown(r: dict) -> str:
    la = r["load_avg_start"]
    la = ", ".join(f"{v[0]:.1f}" for v in la) if isinstance(la[0], list) else f"{la[0]:.1f}"
    out = [f"# Text: masked diffusion vs autoregressive (KJV, characters)\n\n{r['device']}, 1 thread per process; "
           f"load average {la} at the start.\n",
           "## Test bits/char over the training budget\n", "| model | step | CPU-s | bits/char | ± SE | estimator |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for c in r["curve"]:
        cs = "–" if c["cpu_seconds"] is None else f"{c['cpu_seconds']:.0f}"
        out.append(f"| {c['model']} | {c['step']} | {cs} | {c['bits_per_char']:.4f} | {c['stderr']:.4f} | {c['estimator']} |")
    out += ["", "## Discrete-time bounds of the last diffusion checkpoint\n", "| T | bits/char | ± SE |", "|---|---|---|"]
    out += [f"| {d['T']} | {d['bits_per_char']:.4f} | {d['stderr']:.4f} |" for d in r["discrete_bounds"]]
    out += ["", "## Samples (gen-PPL under the AR baseline, per character)\n",
            "| model | order | K | top-p | NFE | chars/CPU-s | gen bits/char | gen-PPL | entropy | distinct-1/2/3 |",
            "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rr = r["real"]
    out.append(f"| held-out text | – | – | – | – | – | {rr['gen_ppl']['bits_per_char']:.3f} | {rr['gen_ppl']['ppl_per_char']:.2f} | "
               f"{rr['entropy']:.3f} | {rr['distinct_1']:.2f}/{rr['distinct_2']:.2f}/{rr['distinct_3']:.2f} |")  # fmt: skip
    for s in r["samples"]:
        out.append(f"| {s['model']} | {s['order']} | {s['steps'] or '–'} | {s.get('top_p', 1.0):g} | {s['nfe']:.0f} | {s['chars_per_cpu_s']:.0f} | "
                   f"{s['gen_ppl']['bits_per_char']:.3f} | {s['gen_ppl']['ppl_per_char']:.2f} | {s['entropy']:.3f} | "
                   f"{s['distinct_1']:.2f}/{s['distinct_2']:.2f}/{s['distinct_3']:.2f} |")  # fmt: skip
    n_inf = next(iter(r["infill"].values()))["n"]
    out += ["", f"## Infilling (16 hidden characters in the middle of {n_inf} held-out windows)\n",
            "| model | context | exact-char accuracy | bits/char of the span | ± SE |", "|---|---|---|---|---|"]  # fmt: skip
    for name, f in r["infill"].items():
        out.append(f"| {name} | {f['context']} | {f['accuracy']:.3f} | {f['bits_per_char']:.3f} | {f['stderr']:.3f} |")
    blocks = r.get("block_runs", {})
    if blocks:
        out += ["", "## Block diffusion (BD3-LM): test bits/char over the training budget\n",
                "| model | block | step | CPU-s | bits/char | ± SE | estimator |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, b in blocks.items():
            for c in b["curve"]:
                cs = "–" if c["cpu_seconds"] is None else f"{c['cpu_seconds']:.0f}"
                out.append(f"| {name} | {b['block_size']} | {c['step']} | {cs} | {c['bits_per_char']:.4f} | {c['stderr']:.4f} | "
                           f"{c['estimator']} |")  # fmt: skip
            out += [f"| {name} | {b['block_size']} | last | – | {d['bits_per_char']:.4f} | {d['stderr']:.4f} | "
                    f"{d['estimator']} |" for d in b["discrete_bounds"]]  # fmt: skip
        out += ["", "## Block diffusion: samples (gen-PPL under the AR baseline; K = steps per block)\n",
                "| model | K per block | top-p | NFE | chars/CPU-s | gen bits/char | gen-PPL | entropy | distinct-1/2/3 |",
                "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, b in blocks.items():
            for s in b["samples"]:
                out.append(f"| {name} | {s['steps']} | {s.get('top_p', 1.0):g} | {s['nfe']:.0f} | {s['chars_per_cpu_s']:.0f} | "
                           f"{s['gen_ppl']['bits_per_char']:.3f} | {s['gen_ppl']['ppl_per_char']:.2f} | {s['entropy']:.3f} | "
                           f"{s['distinct_1']:.2f}/{s['distinct_2']:.2f}/{s['distinct_3']:.2f} |")  # fmt: skip
        out += ["", "## Block diffusion: infilling (the same 16-character spans)\n",
                "| model | context | exact-char accuracy | bits/char of the span | ± SE |", "|---|---|---|---|---|"]  # fmt: skip
        for name, b in blocks.items():
            f = b["infill"]
            out.append(f"| {name} | {f['context']} | {f['accuracy']:.3f} | {f['bits_per_char']:.3f} | {f['stderr']:.3f} |")
    if r.get("per_t"):
        pt = r["per_t"]
        cks = pt["checkpoints"]
        out += ["", "## Where the masked model loses: bits per masked character at masking rate t (same test windows)\n",
                f"c(t) = E[Σ_masked −log₂ x_θ(z_t)] / (t·L); the bound is ∫₀¹ c(t) dt. The baseline's exact bits/char: "
                f"{pt['ar_bits_per_char']:.4f}.\n",
                "| t | " + " | ".join(f"step {c['step']}" for c in cks) + " |", "|---|" + "---|" * len(cks)]  # fmt: skip
        for i, row in enumerate(cks[0]["rows"]):
            out.append(f"| {row['t']:.3f} | " + " | ".join(f"{c['rows'][i]['bits_per_masked_char']:.3f} ± "
                                                        f"{c['rows'][i]['stderr']:.3f}" for c in cks) + " |")  # fmt: skip
        out.append("| ∫ (midpoint rule) | " + " | ".join(f"{c['quadrature_bits_per_char']:.3f}" for c in cks) + " |")
    if r.get("probes"):
        out += ["", "## Recipe probes at fixed CPU (EMA weights of the last checkpoint, same test windows and estimator)\n",
                "| probe | model | hidden × depth | params | batch | lr | warm-up / decay | seed | steps | train CPU-s | "
                "bits/char | ± SE | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for p in r["probes"]:
            cs = "–" if p["train_cpu_seconds"] is None else f"{p['train_cpu_seconds']:.0f}"
            model = "ar" if p["arch"] == "causal-transformer" else "mdlm"
            out.append(f"| {p['name']} | {model} | {p['hidden']} × {p['depth']} | {p['params'] / 1e6:.2f} M | {p['batch']} | "
                       f"{p['lr']:g} | {p['warmup']} / {p['decay']} | {p['seed']} | {p['step']} | {cs} | "
                       f"{p['bits_per_char']:.4f} | {p['stderr']:.4f} | {p['load_avg_start'][0]:.1f} |")  # fmt: skip
        full = [p for p in r["probes"] if p.get("curve")]
        if full:
            out += ["", "## Full-budget probe runs: every checkpoint, and samples (K = 256, gen-PPL under the earlier baseline)\n",
                    "| run | step | CPU-s | bits/char | ± SE |", "|---|---|---|---|---|"]  # fmt: skip
            out += [f"| {p['name']} | {c['step']} | {c['cpu_seconds']:.0f} | {c['bits_per_char']:.4f} | {c['stderr']:.4f} |"
                    for p in full for c in p["curve"]]  # fmt: skip
            out += ["", "| run | K | NFE | chars/CPU-s | gen-PPL | entropy | distinct-1/2/3 |", "|---|---|---|---|---|---|---|"]
            out += [f"| {p['name']} | {x['steps']} | {x['nfe']:.0f} | {x['chars_per_cpu_s']:.0f} | {x['gen_ppl']['ppl_per_char']:.2f} | "
                    f"{x['entropy']:.3f} | {x['distinct_1']:.2f}/{x['distinct_2']:.2f}/{x['distinct_3']:.2f} |"
                    for p in full for x in p.get("samples", [])]  # fmt: skip
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
