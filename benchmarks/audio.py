"""Audio measurements for docs/audio.md: the spoken-digit set's size, Griffin-Lim vocoder distances on held-out
clips (and what the digit classifier hears after vocoding), and the eval reports of trained runs.

    OMP_NUM_THREADS=1 python benchmarks/audio.py --n 100 [--runs RUN_DIR ...] --out benchmarks/results/audio.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
from pathlib import Path

import torch


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100, help="held-out clips for the vocoder distances")
    p.add_argument("--runs", nargs="*", default=[], help="run directories whose eval.json to collect")
    p.add_argument("--vocoder", default=None, help="a diffusion-vocoder run (model.mel_cond) to score beside Griffin-Lim")
    p.add_argument("--vocoder-n", type=int, default=20, help="held-out clips for the diffusion vocoder")
    p.add_argument("--out", default="benchmarks/results/audio.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    from undiffuse.data import load_dataset
    from undiffuse.data.audio import from_mel_image, spoken_digits, to_mel_image
    from undiffuse.data.mel import MelSpec
    from undiffuse.evaluation.audio import (
        classifier_input,
        digit_classifier,
        log_spectral_distance,
        mrstft_distance,
    )

    _, _, manifest = spoken_digits("train")
    clips = manifest["clips"]
    size = {split: sum(c["split"] == split for c in clips) for split in ("train", "test")}
    voices = {split: sorted({c["variant"] for c in clips if c["split"] == split}) for split in ("train", "test")}
    out = {"device": "2-core AMD EPYC, torch 2.13.0+cpu", "torch": torch.__version__, "python": platform.python_version(),
           "load_1min": os.getloadavg()[0], "espeak": manifest["espeak"], "size": size, "voices": voices,
           "accents": manifest["accents"]}  # fmt: skip
    rate = 16000
    test = load_dataset("audio:spoken-digits", "test")
    import numpy as np

    pick = torch.from_numpy(np.random.default_rng(0).permutation(len(test.x))[: args.n])  # as vocoder_scores (seed 0)
    x, y = test.x[pick], test.y[pick]
    net = digit_classifier(rate)
    voc = {}
    t0 = cpu_s()
    gl32 = from_mel_image(to_mel_image(x, rate), rate, x.shape[1])
    voc["griffin-lim, mel route (32 bands, hop 500)"] = gl32
    t1 = cpu_s()
    fine = MelSpec(rate=rate, n_mels=80, n_fft=1024, hop=256)
    gl80 = fine.invert(fine.log(x), x.shape[1], iters=64)
    voc["griffin-lim, 80 bands, hop 256"] = 0.95 * gl80 / gl80.abs().amax(1, keepdim=True)
    t2 = cpu_s()
    rows = []
    for name, v in voc.items():
        acc = float((net.predict(classifier_input(v, rate)) == y).double().mean())
        rows.append({"vocoder": name, "mrstft": mrstft_distance(x, v), "lsd_db": log_spectral_distance(x, v),
                     "digit_accuracy": acc})  # fmt: skip
    rows.append({"vocoder": "none (the real clips)", "mrstft": 0.0, "lsd_db": 0.0,
                 "digit_accuracy": float((net.predict(classifier_input(x, rate)) == y).double().mean())})
    out["vocoder"] = {"n": args.n, "rows": rows, "cpu_s_per_audio_s": {"griffin-lim 32": (t1 - t0) / args.n,
                                                                       "griffin-lim 80": (t2 - t1) / args.n}}
    if args.vocoder:
        from undiffuse.evaluation.audio import vocoder_scores

        k = args.vocoder_n
        out["vocoder"]["diffusion"] = vocoder_scores(args.vocoder, k)
        out["vocoder"]["same_clips"] = {name: {"mrstft": mrstft_distance(x[:k], v[:k]), "lsd_db": log_spectral_distance(x[:k], v[:k])}
                                        for name, v in voc.items()}  # fmt: skip
    out["runs"] = {}
    for r in args.runs:
        f = Path(r) / "eval.json"
        if f.is_file():
            out["runs"][r] = json.loads(f.read_text())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
