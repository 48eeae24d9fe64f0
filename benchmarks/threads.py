"""CPU throughput of the default run's network against torch's thread count, idle and under load.

    python benchmarks/threads.py [--kinds sample,train] [--threads 1,2] [--rounds 3]
                                 [--out benchmarks/results/threads.json]

The network is the default run's (``bash scripts/main.sh``: the ``fmnist`` preset, UNet "fmnist-small",
1.6 M parameters, 28×28×1) with random weights — the speed of a pass does not depend on them.

- ``sample``: DDIM (η = 0) at batch 256 through the one sampling driver, as ``undiffuse sample`` runs it;
  one warm-up step, then ``--sample-steps`` steps timed and scaled to 50 (every step is one network
  evaluation of the same cost). Reported in samples/s.
- ``train``: the optimizer step of ``undiffuse bench`` (forward, ε-MSE, backward, AdamW) at the default run's
  batch 64 with the trainer's default precision on this CPU (bf16 autocast where the CPU has native bf16);
  two warm-up steps, then ``--train-steps`` timed. Reported in img/s.

Each setting runs in a fresh process (torch's thread pool is set before the first op) and is timed by wall
clock and by the process's user + system CPU time. "Load" is one extra process spinning a Python busy loop
(one core) for the duration of the setting: what a second job — a test run, another user — does to a small
machine. The machine's 1-minute load average is recorded beside each setting, since other users may add to it.

Reported per setting: the rate (median over ``--rounds`` and its range) and CPU-seconds per item (user +
system of the measured process: what the work costs the machine, spinning OpenMP threads included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

STEPS = 50  # the default sampler's steps (DDIM 50), to which the timed steps are scaled
BATCH = {"sample": 256, "train": 64}  # the CLI's sampling batch; the default run's training batch


def _default_network():
    from undiffuse.build import DataInfo, build_denoiser
    from undiffuse.config import resolve_config

    cfg = resolve_config(None, None, [])  # the default run's config (preset fmnist)
    info = DataInfo("fashion-mnist", "image", (1, 28, 28), 10, None, True)
    return build_denoiser(cfg, info), info


def _sample_runner(batch: int):
    """run(k): k DDIM steps of the default network on a batch; items per run(k) = batch; scale to 50 steps."""
    from undiffuse.samplers.driver import drive, registry_batch
    from undiffuse.schedules.grids import discrete_sigmas

    den, info = _default_network()
    den.eval().requires_grad_(False)
    sigmas = discrete_sigmas(den.schedule, STEPS)

    def run(k: int) -> None:
        run_batch, counted = registry_batch("ddim", den, sigmas[: k + 1])
        drive(run_batch, info.shape, batch, seed=0, sigma_max=sigmas[0], batch_size=batch, counted=counted)

    return run


def _train_runner(batch: int):
    """run(k): k optimizer steps of the default network's UNet at the trainer's default precision."""
    import torch

    from undiffuse.bench.throughput import Setup, trainer_fn
    from undiffuse.speed import default_train_options

    dev = torch.device("cpu")
    step = trainer_fn(Setup("undiffuse", "fmnist-small", batch, "cpu", default_train_options(dev)))

    def run(k: int) -> None:
        for _ in range(k):
            step()

    return run


def worker(kind: str, threads: int, batch: int, timed: int) -> dict:
    """Time ``timed`` units (sampler steps or optimizer steps) of ``kind`` with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    run = _sample_runner(batch) if kind == "sample" else _train_runner(batch)
    run(1 if kind == "sample" else 2)  # warm-up: allocator, oneDNN primitives
    t0, c0 = time.perf_counter(), os.times()
    run(timed)
    wall, c1 = time.perf_counter() - t0, os.times()
    user, system = c1.user - c0.user, c1.system - c0.system
    # a sample needs all 50 sampler steps; an image of training one optimizer step
    items = batch * (timed / STEPS if kind == "sample" else timed)
    return {"kind": kind, "threads": threads, "batch": batch, "per_s": items / wall,
            "cpu_s_per_item": (user + system) / items, "user_s_per_item": user / items,
            "system_s_per_item": system / items}  # fmt: skip


def _measure(kind: str, threads: int, args: argparse.Namespace) -> dict:
    timed = args.sample_steps if kind == "sample" else args.train_steps
    cmd = [sys.executable, __file__, "--worker", kind, "--threads", str(threads), "--timed", str(timed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load_before = os.getloadavg()[0]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "loadavg_1min": load_before}


def _busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _summary(rows: list[dict]) -> dict:
    """Median and range of each measured quantity over the rounds."""
    keys = ("per_s", "cpu_s_per_item", "user_s_per_item", "system_s_per_item", "loadavg_1min")
    out = {}
    for k in keys:
        v = [r[k] for r in rows]
        out[k] = {"median": round(statistics.median(v), 4), "min": round(min(v), 4), "max": round(max(v), 4)}
    return out


def measure_all(args: argparse.Namespace, save) -> dict:
    """Every setting in every round; ``save(results)`` after each measurement (a cut-short run keeps them)."""
    threads = [int(t) for t in args.threads.split(",")]
    raw: dict[str, list] = {}
    results = lambda: {name: {"summary": _summary(rows), "rounds": rows} for name, rows in raw.items()}  # noqa: E731
    for r in range(args.rounds):
        for load in (False, True):
            busy = _busy_loop() if load else None
            try:
                time.sleep(2 if load else 0)
                for kind in args.kinds.split(","):
                    for t in threads:
                        row = _measure(kind, t, args)
                        name = f"{kind}_{'load' if load else 'idle'}_threads{t}"
                        raw.setdefault(name, []).append(row)
                        print(f"round {r + 1} {name}: {row['per_s']:.2f}/s, {row['cpu_s_per_item']:.4f} CPU-s each "
                              f"(load avg {row['loadavg_1min']:.2f})", file=sys.stderr, flush=True)  # fmt: skip
                        save(results())
            finally:
                if busy is not None:
                    busy.terminate()
                    busy.wait()
    return results()


def _environment() -> dict:
    import platform

    import torch

    from undiffuse.bench.report import device_name
    from undiffuse.speed import default_train_options

    return {
        "device": device_name(torch.device("cpu")),
        "cores": os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
        "train_precision": default_train_options(torch.device("cpu")).precision,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default="sample,train", help="what to time: sample, train (default both)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    p.add_argument("--sample-steps", type=int, default=5, help="DDIM steps timed per setting, scaled to 50")
    p.add_argument("--train-steps", type=int, default=20, help="optimizer steps timed per setting")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all settings (median and range)")
    p.add_argument("--out", default="benchmarks/results/threads.json", help="JSON results")
    p.add_argument("--worker", choices=tuple(BATCH), default=None, help=argparse.SUPPRESS)
    p.add_argument("--timed", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, int(args.threads), BATCH[args.worker], args.timed)))
        return
    t0 = time.time()
    doc = {
        **_environment(),
        "date": time.strftime("%Y-%m-%d"),
        "protocol": {"network": "default run (preset fmnist, UNet fmnist-small, 1.6 M parameters, 28×28×1), "
                                "random weights",
                     "sample": f"DDIM η = 0, batch {BATCH['sample']}, {args.sample_steps} steps timed and scaled to "
                               f"{STEPS}; per_s = samples/s",
                     "train": f"optimizer step of `undiffuse bench` at batch {BATCH['train']}, trainer's default "
                              f"precision; {args.train_steps} steps timed; per_s = img/s",
                     "rounds": args.rounds,
                     "load": "one extra process running a Python busy loop (one core) during the 'load' settings"},
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(results: dict) -> None:
        doc["protocol"]["seconds"] = round(time.time() - t0)
        out.write_text(json.dumps({**doc, "results": results}, indent=2) + "\n")

    for name, r in measure_all(args, save).items():
        s = r["summary"]
        print(f"{name}: {s['per_s']['median']:.2f}/s ({s['per_s']['min']:.2f}–{s['per_s']['max']:.2f}), "
              f"{s['cpu_s_per_item']['median']:.4f} CPU-s each (load avg {s['loadavg_1min']['median']:.2f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
