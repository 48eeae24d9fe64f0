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
- infilling of a 16-character span in the middle of held-out windows: exact-character accuracy and bits/char.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import undiffuse
from undiffuse.evaluation.text_report import gen_ppl, infill_scores, text_stats
from undiffuse.io import write_json, write_text
from undiffuse.language import sample_text, text_eval_data, text_nll, texts
from undiffuse.runs import list_checkpoints


def _steps(run: str) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in list_checkpoints(Path(run)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mdlm", required=True)
    ap.add_argument("--ar", required=True)
    ap.add_argument("--cpu-seconds", default=None, help="CPU-seconds of the two training runs: MDLM,AR")
    ap.add_argument("--n-eval", type=int, default=200, help="test windows for bits/char")
    ap.add_argument("--n-t", type=int, default=16)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--ks", default="16,64,256,1024")
    ap.add_argument("--out", default="benchmarks/results/text_lm")
    ap.add_argument("--samples-out", default="docs/text_samples.txt")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cpu = [float(c) for c in a.cpu_seconds.split(",")] if a.cpu_seconds else [None, None]
    t_start = time.process_time()
    res: dict = {"device": "2-core AMD EPYC, torch " + torch.__version__, "load_avg_start": os.getloadavg(),
                 "python": platform.python_version(), "undiffuse": undiffuse.__version__ if hasattr(undiffuse, "__version__") else "",
                 "threads": 1, "runs": {"mdlm": a.mdlm, "ar": a.ar}, "curve": []}  # fmt: skip
    final = {}
    for name, run, cs in (("mdlm", a.mdlm, cpu[0]), ("ar", a.ar, cpu[1])):
        steps = _steps(run)
        for s in steps:
            m = undiffuse.load(run, checkpoint=s, device="cpu")
            x = text_eval_data(m, n=a.n_eval)
            r = text_nll(m, x, n_t=a.n_t)
            r.update(model=name, step=s, cpu_seconds=None if cs is None else cs * s / steps[-1])
            res["curve"].append(r)
            print(json.dumps(r), flush=True)
        final[name] = undiffuse.load(run, device="cpu")
    mdlm, ar = final["mdlm"], final["ar"]
    x = text_eval_data(ar, n=a.n_eval)
    res["discrete_bounds"] = [{"T": T, **text_nll(mdlm, x, n_t=a.n_t, T=T)} for T in (16, 64, 256)]
    real = texts(ar, x[: a.n_samples])
    res["real"] = {**text_stats(real), "gen_ppl": gen_ppl(ar, x[: a.n_samples])}
    rows, shown = [], []
    settings = [("mdlm", int(k), "ancestral") for k in a.ks.split(",")] + [("mdlm", 256, "confidence"), ("ar", None, "left to right")]
    for name, k, order in settings:
        model = final[name]
        info: dict = {}
        t0, c0 = time.perf_counter(), time.process_time()
        ids = sample_text(model, a.n_samples, seed=0, steps=k, order=order if name == "mdlm" else "ancestral", info=info)
        wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        s = texts(model, ids)
        row = {"model": name, "steps": k, "order": order, "nfe": info["nfe"], "chars_per_s": ids.numel() / wall,
               "chars_per_cpu_s": ids.numel() / cpu_s, **text_stats(s), "gen_ppl": gen_ppl(ar, ids)}  # fmt: skip
        rows.append(row)
        shown.append(f"### {name}, {order}{'' if k is None else f', K = {k}'}\n\n" + "\n\n".join(s[:2]))
        print(json.dumps(row), flush=True)
    res["samples"] = rows
    res["infill"] = {name: infill_scores(final[name], x[:100], 16) for name in ("mdlm", "ar")}
    print(json.dumps(res["infill"]), flush=True)
    res["eval_cpu_seconds"] = time.process_time() - t_start
    res["load_avg_end"] = os.getloadavg()
    write_json(a.out + ".json", res)
    write_text(a.out + ".md", markdown(res))
    write_text(a.samples_out, "\n\n".join(shown) + "\n")
    print(f"wrote {a.out}.json, {a.out}.md and {a.samples_out}")


def markdown(r: dict) -> str:
    out = [f"# Text: masked diffusion vs autoregressive (KJV, characters)\n\n{r['device']}, 1 thread per process; "
           f"load average {r['load_avg_start'][0]:.1f} at the start.\n",
           "## Test bits/char over the training budget\n", "| model | step | CPU-s | bits/char | ± SE | estimator |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for c in r["curve"]:
        cs = "–" if c["cpu_seconds"] is None else f"{c['cpu_seconds']:.0f}"
        out.append(f"| {c['model']} | {c['step']} | {cs} | {c['bits_per_char']:.4f} | {c['stderr']:.4f} | {c['estimator']} |")
    out += ["", "## Discrete-time bounds of the last diffusion checkpoint\n", "| T | bits/char | ± SE |", "|---|---|---|"]
    out += [f"| {d['T']} | {d['bits_per_char']:.4f} | {d['stderr']:.4f} |" for d in r["discrete_bounds"]]
    out += ["", "## Samples (gen-PPL under the AR baseline, per character)\n",
            "| model | order | K | NFE | chars/CPU-s | gen bits/char | gen-PPL | entropy | distinct-1/2/3 |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rr = r["real"]
    out.append(f"| held-out text | – | – | – | – | {rr['gen_ppl']['bits_per_char']:.3f} | {rr['gen_ppl']['ppl_per_char']:.2f} | "
               f"{rr['entropy']:.3f} | {rr['distinct_1']:.2f}/{rr['distinct_2']:.2f}/{rr['distinct_3']:.2f} |")  # fmt: skip
    for s in r["samples"]:
        out.append(f"| {s['model']} | {s['order']} | {s['steps'] or '–'} | {s['nfe']:.0f} | {s['chars_per_cpu_s']:.0f} | "
                   f"{s['gen_ppl']['bits_per_char']:.3f} | {s['gen_ppl']['ppl_per_char']:.2f} | {s['entropy']:.3f} | "
                   f"{s['distinct_1']:.2f}/{s['distinct_2']:.2f}/{s['distinct_3']:.2f} |")  # fmt: skip
    n_inf = next(iter(r["infill"].values()))["n"]
    out += ["", f"## Infilling (16 hidden characters in the middle of {n_inf} held-out windows)\n",
            "| model | context | exact-char accuracy | bits/char of the span | ± SE |", "|---|---|---|---|---|"]  # fmt: skip
    for name, f in r["infill"].items():
        out.append(f"| {name} | {f['context']} | {f['accuracy']:.3f} | {f['bits_per_char']:.3f} | {f['stderr']:.3f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
