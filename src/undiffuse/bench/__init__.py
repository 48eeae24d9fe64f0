"""``undiffuse bench``: undiffuse against diffusers, side by side, on one device, in one run.

:func:`run_bench` measures (a) training throughput and peak memory of undiffuse's UNet and
diffusers' ``UNet2DModel`` in the same configuration (DDPM's CIFAR-10 network, 35.7 M parameters,
and a small CPU one), (b) DDIM sampling throughput at 50 steps, and (c), given trained run
directories, the error per network evaluation of every sampler against a converged probability-flow
ODE solution (:mod:`undiffuse.bench.quality`). It prints a markdown table and writes
``<out_dir>/<YYYY-MM-DD>-<device>.json`` (+ ``.md``).

Rows ``train_speedup`` / ``sample_speedup`` compare the out-of-the-box paths (each library's
defaults, eager); ``*_best`` the best paths, with the same speed options given to both. See
``benchmarks/README.md`` for the protocol.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from undiffuse.bench.report import device_name, format_table, row, versions, write_results
from undiffuse.bench.throughput import (
    Setup,
    interleaved,
    median,
    peak_memory_mb,
    sampler_fn,
    trainer_fn,
)
from undiffuse.progress import note, progress
from undiffuse.rng import torch_threads
from undiffuse.speed import TrainOptions, bf16_supported, default_sample_options, default_train_options

__all__ = ["add_quality", "format_table", "run_bench", "torch_threads"]

#: network preset and batch sizes per mode: (tiny test, quick CPU, full CPU, CUDA)
CASES = {
    "cifar10": ("ddpm-cifar10", dict(quick=8, full=32, cuda=128)),
    "small": ("fmnist-small", dict(quick=32, full=64, cuda=256)),
}
SAMPLE_BATCH = dict(quick=8, full=32, cuda=256)


def _has_diffusers() -> bool:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False
    return True


def _best_options(dev: torch.device, quick: bool, compile_best: bool = True) -> TrainOptions:
    """The best path, given to both libraries alike: bf16 autocast where the hardware has native bf16,
    channels_last on CUDA (on CPU oneDNN gains nothing from it here), fused AdamW, and
    ``torch.compile`` unless quick."""
    prec = "bf16" if bf16_supported(dev) else ("fp16" if dev.type == "cuda" else "fp32")
    return TrainOptions(channels_last=dev.type == "cuda", precision=prec, fused_adamw=True,
                        compile_mode="default" if compile_best and not quick else None)  # fmt: skip


def _opts_note(o: TrainOptions) -> str:
    parts = [o.precision, "channels_last" if o.channels_last else "NCHW",
             "fused AdamW" if o.fused_adamw else "AdamW"]  # fmt: skip
    return "+".join(parts + ([f"compile({o.compile_mode})"] if o.compile_mode else ["eager"]))


def _train_jobs(case: str, preset: str, batch: int, dev: torch.device, quick: bool, repeats: int,
                warmup: int, diff: bool, memory: bool, compile_best: bool) -> list["_Job"]:  # fmt: skip
    """One job per row pair: out of the box, same precision, fp32 both (when undiffuse's default is not
    fp32), and the best path (compiled unless ``compile_best`` is False)."""
    ours = default_train_options(dev)
    best = _best_options(dev, quick, compile_best)
    theirs_default = TrainOptions(channels_last=False, precision="fp32", fused_adamw=False)
    theirs_same = TrainOptions(channels_last=False, precision=ours.precision, fused_adamw=False)
    d = str(dev)
    pairs = {  # row suffix → (undiffuse setup, diffusers setup, note)
        "": (Setup("undiffuse", preset, batch, d, ours),
             Setup("diffusers", preset, batch, d, theirs_default, torch_default_adamw=True),
             f"out of the box, eager: undiffuse {_opts_note(ours)} (its trainer's precision=auto) vs diffusers "
             "fp32+NCHW+torch AdamW (its training example's default mixed_precision=no)"),
        "_same_precision": (Setup("undiffuse", preset, batch, d, ours),
                            Setup("diffusers", preset, batch, d, theirs_same, torch_default_adamw=True),
                            f"undiffuse out of the box vs diffusers eager at the same precision ({ours.precision}"
                            " autocast, NCHW, torch AdamW)"),
        "_fp32": (Setup("undiffuse", preset, batch, d, with_options_(ours, precision="fp32")),
                  Setup("diffusers", preset, batch, d, theirs_default, torch_default_adamw=True),
                  "fp32 both, eager; undiffuse defaults otherwise"),
        "_best": (Setup("undiffuse", preset, batch, d, best), Setup("diffusers", preset, batch, d, best),
                  f"best path, same options both: {_opts_note(best)}"),
    }  # fmt: skip
    if ours.precision == "fp32":  # both identical to the out-of-the-box row
        pairs.pop("_fp32")
        pairs.pop("_same_precision")
    tag = "" if case == "cifar10" else f"_{case}"

    def measure(suffix: str, su: Setup, sd: Setup, note: str) -> list[dict]:
        fns = {"undiffuse": trainer_fn(su)}
        if diff:
            fns["diffusers"] = trainer_fn(sd)
        cpu: dict = {}
        times = interleaved(fns, repeats, warmup, dev, cpu)
        del fns
        ips = {k: batch / median(v) for k, v in times.items()}
        rows = [row(f"train_speedup{tag}{suffix}", "img/s", ips["undiffuse"], ips.get("diffusers"),
                    f"{preset}, batch {batch}; {note}; median of {repeats}{_cpu_note(cpu, dev)}")]  # fmt: skip
        # (memory of a compiled path is not measured: its twin process would compile again)
        if memory and suffix in ("", "_best") and not su.opts.compile_mode:
            mu, md = peak_memory_mb(su), (peak_memory_mb(sd) if diff else None)
            kind = "max allocated" if dev.type == "cuda" else "peak RSS of a fresh process"
            rows.append(row(f"train_memory{tag}{suffix}", "MB", mu, md,
                            f"{kind}; speedup = diffusers ÷ undiffuse", higher_is_better=False))  # fmt: skip
        return rows

    return [_Job(f"train_speedup{tag}{suffix}", bool(su.opts.compile_mode),
                 lambda suffix=suffix, su=su, sd=sd, note=note: measure(suffix, su, sd, note))
            for suffix, (su, sd, note) in pairs.items()]  # fmt: skip


def _cpu_note(cpu: dict, dev: torch.device) -> str:
    """On CPU, the ratio of median process CPU times (diffusers ÷ undiffuse): what the wall-clock
    speedup would be without other load on the machine."""
    if dev.type != "cpu" or len(cpu) < 2:
        return ""
    return f"; CPU-time ratio {median(cpu['diffusers']) / median(cpu['undiffuse']):.2f}×"


def with_options_(o: TrainOptions, **kw) -> TrainOptions:
    from dataclasses import replace

    return replace(o, **kw)


def _sample_jobs(preset: str, batch: int, dev: torch.device, quick: bool, repeats: int, warmup: int,
                 diff: bool, run_steps: Optional[int], compile_best: bool) -> list["_Job"]:  # fmt: skip
    d = str(dev)
    plain = default_sample_options(dev)
    best = with_options_(_best_options(dev, quick, compile_best), fused_adamw=False)
    cuda = dev.type == "cuda"
    pairs = {
        "": (Setup("undiffuse", preset, batch, d, plain), Setup("diffusers", preset, batch, d, TrainOptions()),
             f"out of the box, eager: undiffuse {plain.precision}{'+channels_last' if plain.channels_last else ''} "
             "vs diffusers fp32"),
        "_same_precision": (Setup("undiffuse", preset, batch, d, plain),
                            Setup("diffusers", preset, batch, d, TrainOptions(precision=plain.precision)),
                            f"undiffuse out of the box vs diffusers eager at the same precision ({plain.precision})"),
        "_best": (Setup("undiffuse", preset, batch, d, best, cuda_graph=cuda),
                  Setup("diffusers", preset, batch, d, best, cuda_graph=cuda),
                  f"best path, same options both: {best.precision}"
                  f"{'+channels_last' if best.channels_last else ''}"
                  f"{'+compile' if best.compile_mode else ''}{'+CUDA graph' if cuda else ''}"),
    }  # fmt: skip
    if plain.precision == "fp32":
        pairs.pop("_same_precision")

    def measure(suffix: str, su: Setup, sd: Setup, note: str) -> list[dict]:
        built = {"undiffuse": sampler_fn(su, 50, run_steps)}
        if diff:
            built["diffusers"] = sampler_fn(sd, 50, run_steps)
        cpu: dict = {}
        times = interleaved({k: v[0] for k, v in built.items()}, repeats, warmup, dev, cpu)
        steps_run = run_steps or 50
        nfe = {k: c.nfe // (warmup + repeats) for k, (_, c) in built.items()}
        ips = {k: batch / (median(v) * 50 / steps_run) for k, v in times.items()}
        how = (
            "full 50-step runs"
            if steps_run == 50
            else f"{steps_run} of the 50 steps timed, × {50 / steps_run:g}"
        )
        return [row(f"sample_speedup{suffix}", "img/s", ips["undiffuse"], ips.get("diffusers"),
                    f"{preset}, DDIM 50 steps (trailing), batch {batch}; {note}; {how}; "
                    f"counted NFE per run {nfe}; median of {repeats}{_cpu_note(cpu, dev)}")]  # fmt: skip

    return [_Job(f"sample_speedup{suffix}", bool(su.opts.compile_mode) or su.cuda_graph,
                 lambda suffix=suffix, su=su, sd=sd, note=note: measure(suffix, su, sd, note))
            for suffix, (su, sd, note) in pairs.items()]  # fmt: skip


@dataclass
class _Job:
    """One measurement (a row pair): its name, whether it compiles or captures graphs (run last), and
    the closure that returns its rows."""

    name: str
    slow: bool
    run: Callable[[], list]


def run_bench(
    quick: bool = True,
    device: Union[str, torch.device, None] = None,
    out_dir: Union[str, os.PathLike, None] = "bench-results",
    run_dirs: Optional[dict] = None,
    *,
    tiny: bool = False,
    repeats: Optional[int] = None,
    memory: bool = True,
    quality_samples: Optional[int] = None,
    fd_samples: Optional[int] = None,
    oracle: bool = True,
    threads: Optional[int] = None,
    compile_best: bool = True,
    echo: bool = True,
) -> dict:
    """Run the side-by-side benchmark and return the result dict (also written to ``out_dir``).

    Args:
        quick: a few minutes on CPU: small batches, few repeats, sampling timed on 2 of the 50 steps
            and scaled (the row says so), no ``torch.compile``.
        device: "cpu", "cuda", … (default: cuda when available).
        out_dir: where the JSON and markdown go (None: nothing written; the repository's committed results
            are refreshed with ``benchmarks/results``).
        run_dirs: trained runs for the quality rows, e.g. {"fmnist": "runs/fmnist", "toy": "runs/toy"}.
        tiny: tests only — the 8×8 "tiny" network, 2 repeats, tiny batches.
        repeats: timed repeats per measurement (default 5; ≥ 5 is the protocol).
        memory: also measure peak memory.
        quality_samples: samples per quality evaluation (default 64 quick, 256 otherwise; a
            Gaussian-mixture toy run uses at least the protocol's 2,500).
        fd_samples: samples per image distance (classifier FD) of a trained image run's best samplers at
            10 and 20 NFE and of 1000-step DDPM (default 100 quick, 500 otherwise; 0 skips them).
        oracle: also the quality rows on the exact denoiser of the 25-Gaussian mixture (no training
            needed: every sampler's error against the converged PF-ODE solution, and mode coverage).
        threads: torch CPU threads for the run (default: torch's). On a CPU shared with other jobs,
            1 thread avoids OpenMP barrier stalls that otherwise dominate and randomise the timings.
        compile_best: use ``torch.compile`` in the best paths (not in quick mode).
        echo: print the markdown table (and each row on stderr as it is measured).

    Eager measurements run first and compiled / CUDA-graph ones last; a measurement that fails becomes
    a row with unit "failed" and the error, and the JSON is rewritten after every measurement.
    """
    with torch_threads(threads):
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        diff = _has_diffusers()
        mode = "cuda" if dev.type == "cuda" else ("quick" if quick else "full")
        repeats = repeats or (2 if tiny else 5)
        warmup = 1 if (tiny or quick) else 3
        rows = _Rows(echo)
        jobs: list[_Job] = []
        cases = {"tiny": ("tiny", {mode: 4})} if tiny else CASES
        for case, (preset, batches) in cases.items():
            jobs += _train_jobs(
                case, preset, batches[mode], dev, quick, repeats, warmup, diff, memory, compile_best
            )
        s_preset = "tiny" if tiny else "ddpm-cifar10"
        s_batch = 4 if tiny else SAMPLE_BATCH[mode]
        run_steps = 2 if (tiny or (quick and dev.type == "cpu")) else None
        jobs += _sample_jobs(s_preset, s_batch, dev, quick, repeats, warmup, diff, run_steps, compile_best)
        quality: dict = {}
        if oracle:

            def oracle_job() -> list:
                from undiffuse.bench.quality import oracle_quality

                q_rows, quality["gmm25-oracle"] = oracle_quality(dev, n=100 if tiny else (500 if quick else 2500),
                                                                 tiny=tiny, with_diffusers=diff)  # fmt: skip
                return q_rows

            jobs.append(_Job("quality_gmm25_oracle", False, oracle_job))
        for label, path in (run_dirs or {}).items():

            def run_job(label=label, path=path) -> list:
                from undiffuse.bench.quality import quality_rows

                q_rows, quality[label] = quality_rows(path, label, dev, n=quality_samples or (64 if quick else 256),
                                                      fd_samples=(100 if quick else 500) if fd_samples is None else fd_samples,
                                                      with_diffusers=diff)  # fmt: skip
                return q_rows

            jobs.append(_Job(f"quality_{label}", False, run_job))
        # eager measurements first, compiled / graph-captured ones last: a run cut short keeps the eager rows
        files: list[str] = []
        with progress(total=len(jobs), desc="bench", unit="measurement") as bar:
            for job in sorted(jobs, key=lambda j: j.slow):
                bar.set_postfix_str(job.name)
                try:
                    rows += job.run()
                except Exception as e:  # one failed measurement (e.g. a compiler error) must not lose the others
                    if tiny:
                        raise
                    error = f"failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
                    rows += [row(job.name, "failed", None, None, error)]
                if out_dir is not None:  # the results so far, rewritten after every measurement
                    files = [str(p) for p in write_results(_result(dev, quick, tiny, repeats, warmup, rows, quality,
                                                                   diff), out_dir, dev)]  # fmt: skip
                bar.update(1)
        result = _result(dev, quick, tiny, repeats, warmup, rows, quality, diff)
        if out_dir is not None:
            result["files"] = files or [str(p) for p in write_results(result, out_dir, dev)]
        if echo:
            print(format_table(result))
        return result


def _result(dev: torch.device, quick: bool, tiny: bool, repeats: int, warmup: int, rows: list, quality: dict,
            diff: bool) -> dict:  # fmt: skip
    return {
        "device": device_name(dev),
        "date": _dt.date.today().isoformat(),
        "versions": versions(),
        "settings": {
            "quick": quick,
            "tiny": tiny,
            "repeats": repeats,
            "warmup": warmup,
            "torch_threads": torch.get_num_threads(),
            "undiffuse_train_defaults": default_train_options(dev).to_dict(),
        },
        "results": list(rows),
        "quality": quality,
        "summary": _summary(rows, diff),
    }


def add_quality(
    json_path: Union[str, os.PathLike],
    run_dirs: dict,
    device: Union[str, torch.device, None] = None,
    *,
    n: int = 64,
    echo: bool = True,
    **quality_kw,
) -> dict:
    """Add the quality rows of trained runs to an existing result file (same device), replacing rows
    of the same names, and rewrite its JSON and markdown. For runs trained after the speed run."""
    import json
    from pathlib import Path

    from undiffuse.bench.quality import quality_rows

    path = Path(json_path)
    result = json.loads(path.read_text())
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device_name(dev).split(" (")[0] != result["device"].split(" (")[0]:
        raise ValueError(f"{path} was measured on {result['device']}, not on {device_name(dev)}")
    for label, run in run_dirs.items():
        rows, details = quality_rows(run, label, dev, n=n, with_diffusers=_has_diffusers(), **quality_kw)
        names = {r["name"] for r in rows}
        result["results"] = [r for r in result["results"] if r["name"] not in names] + rows
        result.setdefault("quality", {})[label] = {**details, "run": str(run)}
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(format_table(result))
    if echo:
        print(format_table(result))
    return result


class _Rows(list):
    """The result rows; with ``echo``, each is reported on stderr as it is measured."""

    def __init__(self, echo: bool) -> None:
        super().__init__()
        self.echo = echo

    def __iadd__(self, new):
        for r in new:
            if self.echo:
                note(f"[bench] {r['name']}: undiffuse {r['undiffuse']}, diffusers {r['diffusers']}, speedup {r['speedup']}")
            self.append(r)
        return self


def _summary(rows: list[dict], diff: bool) -> str:
    if not diff:
        return "diffusers is not installed (pip install 'undiffuse[bench]'): undiffuse measured alone."
    get = {r["name"]: r["speedup"] for r in rows}
    keys = ("train_speedup", "train_speedup_best", "sample_speedup", "sample_speedup_best")
    return "; ".join(f"{k} {get[k]:.2f}×" for k in keys if get.get(k) is not None)
