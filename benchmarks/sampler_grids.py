"""Each sampler's default σ grid, chosen by measurement (issue 10 §4, issue 16 point 3).

On the exact denoiser D*(x; σ) of the 25-Gaussian mixture (means {−4, −2, 0, 2, 4}², σ = 0.05), under the
two schedules undiffuse's presets train with — cosine, T = 1000 (the default run `bash scripts/main.sh`,
preset fmnist) and linear, T = 1000 (presets toy — the one `toy:25gaussians` gets —, digits-tiny and
ddpm-cifar10) — every registered sampler, with its registry options, runs 5, 10 and 20 steps on every grid
of `undiffuse.schedules.grids.make_sigmas` (uniform, trailing, leading, karras, logsnr) from the same n
starting noises. The protocol and the measures are those of `undiffuse.bench.quality.quality_per_nfe`
(budget = steps): the error is the mean per-sample RMS distance to the converged PF-ODE solution from the
same noise (Heun, 500 Karras steps); the stochastic samplers (ddpm, euler_ancestral) follow other paths,
so they are measured by the distance of their samples to the exact mixture (`mixture_distances`'
``mixture_w2``: the W₂ of the residuals to the nearest mode against N(0, σ²I) and the mass misplaced
between modes, at the mode spacing).

The rule: each sampler's default grid is the one with the lowest 10-step measure, taken as the geometric
mean over the two schedules (each schedule counts alike whatever its error scale).

The peer: diffusers' DDIM, Euler, DPMSolverMultistep (orders 2 and 3) and UniPC (orders 2 and 3) schedulers
with each timestep spacing they offer (leading, linspace, trailing) and Karras σ, driving the same oracle
(evaluated at each scheduler's own σ); the best one at 10 steps is the peer row.

    OMP_NUM_THREADS=1 python benchmarks/sampler_grids.py [--n 2500] [--out benchmarks/results]

writes `<out>/sampler_grids.json` and `<out>/sampler_grids.md` and says whether the registry's defaults
(`undiffuse.samplers.registry.SPECS[name].grid`) are the measured choices.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import subprocess
import time
from pathlib import Path

import torch

from undiffuse.bench.quality import STOCHASTIC, quality_per_nfe
from undiffuse.bench.report import device_name, versions
from undiffuse.data.toys import toy_modes
from undiffuse.diffusion.oracles import GaussianMixtureOracle
from undiffuse.io import atomic_path
from undiffuse.samplers.registry import SPECS, default_grid
from undiffuse.schedules import make_schedule
from undiffuse.schedules.grids import GRIDS

STEPS = (5, 10, 20)
CHOOSE_AT = 10
#: name → (make_schedule arguments, which runs train with it)
SCHEDULES = {
    "cosine": (("cosine", 1000), "the default run (preset fmnist)"),
    "linear": (("linear", 1000), "presets toy (toy:25gaussians), digits-tiny, ddpm-cifar10"),
}


def diffusers_peers() -> dict[str, tuple[str, dict]]:
    """label → (scheduler class, config): each scheduler at every spacing it offers, and Karras σ where it
    has them; DPM-Solver++ and UniPC at orders 2 (diffusers' default, for guided sampling) and 3 (its
    recommendation for unconditional sampling)."""
    peers: dict[str, tuple[str, dict]] = {}
    spacings = ("leading", "linspace", "trailing")
    for sp in spacings:
        peers[f"DDIM {sp}"] = ("DDIMScheduler", {"timestep_spacing": sp})
    variants = [("Euler", "EulerDiscreteScheduler", {})]
    variants += [(f"DPM++{k}M", "DPMSolverMultistepScheduler", {"solver_order": k}) for k in (2, 3)]
    variants += [(f"UniPC-{k}", "UniPCMultistepScheduler", {"solver_order": k}) for k in (2, 3)]
    for short, cls, cfg in variants:
        for sp in spacings:
            peers[f"{short} {sp}"] = (cls, {**cfg, "timestep_spacing": sp})
        peers[f"{short} karras"] = (cls, {**cfg, "use_karras_sigmas": True})
    return peers


def measure_key(name: str) -> str:
    """What ranks a sampler's grids: the per-sample error, or the mixture W₂ for a stochastic one."""
    return "mixture_w2" if name in STOCHASTIC else "error"


def value(q: dict, key: str, steps: int, measure: str) -> float:
    if measure == "error":
        return q["errors"][key][steps]
    return q["modes"][key][steps][measure]


def measure_all(n: int, seed: int) -> dict:
    means, std = toy_modes("25gaussians")
    oracle = GaussianMixtureOracle(means, std)
    out = {}
    for label, ((sched_name, T), _) in SCHEDULES.items():
        t0 = time.perf_counter()
        out[label] = quality_per_nfe(oracle, make_schedule(sched_name, T), (2,), n=n, nfes=STEPS, grids=GRIDS,
                                     samplers=tuple(SPECS), diffusers=diffusers_peers(), budget="steps",
                                     seed=seed, mixture=(means, std))  # fmt: skip
        out[label]["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def choose(results: dict, steps: int = CHOOSE_AT) -> dict[str, dict]:
    """sampler → {"grid": the chosen grid, "measure", "score": {grid: geometric mean over schedules}}."""
    chosen = {}
    for name in SPECS:
        m = measure_key(name)
        score = {g: math.exp(sum(math.log(value(q, f"undiffuse:{name}@{g}", steps, m)) for q in results.values())
                             / len(results)) for g in GRIDS}  # fmt: skip
        chosen[name] = {"grid": min(score, key=score.get), "measure": m, "score": score}
    return chosen


def best_peer(q: dict, steps: int) -> tuple[str, float]:
    cands = [(v[steps], k.split(":", 1)[1]) for k, v in q["errors"].items() if k.startswith("diffusers:") and steps in v]
    err, label = min(cands)
    return label, err


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v >= 1e-3 else f"{v:.1e}"


def markdown(result: dict) -> str:
    res, chosen = result["results"], result["chosen"]
    v = result["versions"]
    lines = [
        "# Sampler × grid on the 25-Gaussian oracle",
        "",
        f"{result['date']}, {result['device']}; torch {v['torch']}, diffusers {v['diffusers']}, python "
        f"{v['python']}, undiffuse {result['commit']}; n = {result['n']} samples, seed {result['seed']}.",
        "",
        "Cells: mean per-sample RMS error to the PF-ODE reference (deterministic samplers) or † the W₂ to the "
        "exact mixture (stochastic samplers: `mixture_w2`, within modes and between them); **bold** = the "
        "chosen default (lowest 10-step geometric mean over both schedules). NFE = steps except Heun "
        "(2·steps − 1, fewer where it takes Euler steps).",
    ]
    for label, q in res.items():
        peer_cell = lambda k, s, q=q: _fmt(q["errors"][k][s]) if s in q["errors"].get(k, {}) else "–"  # noqa: E731
        ref = q["reference"]
        exact = ref["exact_samples"]
        lines += ["", f"## {label}, T = 1000 — {SCHEDULES[label][1]}", "",
                  f"Reference: Heun {ref['steps']} Karras steps (its error vs {ref['steps'] // 2} steps: "
                  f"{ref['error_vs_half_steps']:.1e}); {result['n']} exact samples score mixture W₂ "
                  f"{exact['mixture_w2']:.3g} (mode TV {exact['mode_tv']:.3f}: the floor at this n); σ_T = "
                  f"{ref['sigma_start']:.4g}.", "",
                  f"{CHOOSE_AT} steps:", "",
                  "| sampler | " + " | ".join(GRIDS) + " |", "|---|" + "---|" * len(GRIDS)]  # fmt: skip
        for name in SPECS:
            m = measure_key(name)
            cells = []
            for g in GRIDS:
                cell = _fmt(value(q, f"undiffuse:{name}@{g}", CHOOSE_AT, m))
                cells.append(f"**{cell}**" if g == chosen[name]["grid"] else cell)
            lines.append(f"| {name}{' †' if m != 'error' else ''} | " + " | ".join(cells) + " |")
        lines += ["", "On the chosen grids, by steps (NFE at 10 steps):", "",
                  "| sampler | grid | " + " | ".join(f"{s} steps" for s in STEPS) + " | NFE@10 |",
                  "|---|---|" + "---|" * (len(STEPS) + 1)]  # fmt: skip
        for name in SPECS:
            key, m = f"undiffuse:{name}@{chosen[name]['grid']}", measure_key(name)
            vals = " | ".join(_fmt(value(q, key, s, m)) for s in STEPS)
            lines.append(f"| {name}{' †' if m != 'error' else ''} | {chosen[name]['grid']} | {vals} | "
                         f"{q['nfe'][key][CHOOSE_AT]} |")  # fmt: skip
        peer, _ = best_peer(q, CHOOSE_AT)
        key = f"diffusers:{peer}"
        lines.append(f"| diffusers best at {CHOOSE_AT}: {peer} | – | "
                     + " | ".join(peer_cell(key, s) for s in STEPS) + f" | {q['nfe'][key][CHOOSE_AT]} |")
        lines += ["", "diffusers, every configuration (error at " + ", ".join(map(str, STEPS)) + " steps; – = the "
                  "scheduler raised, see `failed` in the JSON):", ""]  # fmt: skip
        keys = {k for k in list(q["errors"]) + list(q.get("failed", {})) if k.startswith("diffusers:")}
        peers = sorted(keys, key=lambda k: q["errors"].get(k, {}).get(CHOOSE_AT, math.inf))
        lines += ["| scheduler | " + " | ".join(f"{s}" for s in STEPS) + " |", "|---|" + "---|" * len(STEPS)]
        lines += [f"| {k.split(':', 1)[1]} | " + " | ".join(peer_cell(k, s) for s in STEPS) + " |" for k in peers]
    lines += ["", "## Chosen defaults", "", "| sampler | grid | 10-step score per grid (geometric mean) |", "|---|---|---|"]
    for name, c in chosen.items():
        lines.append(f"| {name} | **{c['grid']}** | " + ", ".join(f"{g} {_fmt(s)}" for g, s in c["score"].items()) + " |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2500, help="samples (the 25-Gaussian protocol's 2,500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = measure_all(args.n, args.seed)
    chosen = choose(results)
    result = {"date": dt.date.today().isoformat(), "device": device_name("cpu"), "versions": versions(),
              "commit": _commit(), "n": args.n, "seed": args.seed, "steps": list(STEPS), "grids": list(GRIDS),
              "schedules": {k: {"make_schedule": list(v[0]), "used_by": v[1]} for k, v in SCHEDULES.items()},
              "rule": f"lowest {CHOOSE_AT}-step error (mixture W2 for stochastic samplers), geometric mean "
                      "over the schedules",
              "chosen": chosen, "registry": {name: default_grid(name) for name in SPECS},
              "results": results}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(result, indent=1)), (".md", markdown(result))):
        with atomic_path(out / f"sampler_grids{suffix}") as tmp:
            Path(tmp).write_text(text)
    print(markdown(result))
    differ = {k: (result["registry"][k], c["grid"]) for k, c in chosen.items() if result["registry"][k] != c["grid"]}
    print("registry defaults match the measurement" if not differ else f"registry (now, measured) differ: {differ}")
    return result


if __name__ == "__main__":
    main()
