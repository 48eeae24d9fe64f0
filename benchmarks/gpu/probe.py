"""Which layout is faster on this GPU, eager: bf16 NCHW vs channels_last, for both libraries' CIFAR-10 UNet
(DDIM sampling at batch 256 and one training step at batch 128). Prints a JSON line per measurement and writes
OUT/probe.json. Usage: python benchmarks/gpu/probe.py OUT_DIR [STEPS [DEVICE [PRESET]]]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from undiffuse.bench.report import device_name, versions
from undiffuse.bench.throughput import Setup, interleaved, median, sampler_fn, trainer_fn
from undiffuse.speed import TrainOptions


def main(out_dir: str, steps: int = 20, dev: str = "cuda", preset: str = "ddpm-cifar10") -> None:
    rows = []
    for kind, batch in (("sample", 256), ("train", 128)):
        fns = {}
        for lib in ("undiffuse", "diffusers"):
            for cl in (False, True):
                opts = TrainOptions(precision="bf16", channels_last=cl, fused_adamw=kind == "train")
                setup = Setup(lib, preset, batch, dev, opts, torch_default_adamw=lib == "diffusers")
                key = f"{kind}:{lib}:{'channels_last' if cl else 'nchw'}"
                fns[key] = sampler_fn(setup, 50, steps)[0] if kind == "sample" else trainer_fn(setup)
        times = interleaved(fns, 5, 2, dev)
        for key, ts in times.items():
            per = steps / 50 if key.startswith("sample") else 1.0
            r = {"name": key, "img_per_s": batch / (median(ts) / per), "batch": batch}
            rows.append(r)
            print(json.dumps(r), flush=True)
        del fns
        if dev == "cuda":
            torch.cuda.empty_cache()
    out = {"device": device_name(dev), "versions": versions(), "steps_timed_of_50": steps, "rows": rows}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "probe.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) if i == 0 else a for i, a in enumerate(sys.argv[2:])))  # [STEPS [DEVICE [PRESET]]]
