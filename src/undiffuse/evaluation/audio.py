"""``undiffuse eval`` of an audio run (waveform or mel route): the SC09 protocol of WaveGAN (Donahue et al.
2019, Sec. 5) and DiffWave (Kong et al. 2021, Sec. 5.2) on the spoken digits.

A digit classifier (:class:`~undiffuse.evaluation.classifier.SmallClassifier` with 32 features) is trained on
the *training voices'* clips, on log-mel features of the waveform (:data:`FEATURES`: 40 HTK bands, 20 ms hop,
a layout the mel route's model does not use). For class-conditional samples it reports, per guidance scale w,
the share of samples classified as their intended digit and the Fréchet distance (Heusel et al. 2017, Eq. 6)
between the classifier's features of the samples and of the held-out voices' clips; beside them the real
held-out clips' own accuracy and the FD of as many real training clips (the floor: the same protocol on real
speech by other voices). Unconditional runs get the share of samples per predicted digit (coverage). The cost
of sampling is CPU seconds per second of audio (process time, every thread counted).
"""

from __future__ import annotations

import math
import os
import time
from typing import Optional, Sequence, Union

import numpy as np
import torch

from undiffuse.data import load_dataset
from undiffuse.data.audio import DIGITS, waveforms
from undiffuse.data.mel import MelSpec, stft_magnitude
from undiffuse.evaluation.classifier import (
    ClassifierConfig,
    SmallClassifier,
    classifier_frechet,
    train_classifier,
)
from undiffuse.model import load
from undiffuse.sampling import sample

__all__ = ["FEATURES", "classifier_input", "digit_classifier", "evaluate_audio_run", "audio_markdown", "mrstft_distance",
           "log_spectral_distance", "vocoder_scores"]


def FEATURES(rate: int) -> MelSpec:
    """The classifier's log-mel layout at ``rate``: 40 bands, hop 20 ms, a 32 ms-or-longer window, 50 frames."""
    hop = rate // 50
    return MelSpec(rate=rate, n_mels=40, n_fft=1 << math.ceil(math.log2(1.6 * hop)), hop=hop, frames=50)


def classifier_input(wav: torch.Tensor, rate: int) -> torch.Tensor:
    """Waveforms [N, L] → standardised log-mel images [N, 1, 40, 50] (ln power, shifted by 5 and scaled by 1/5)."""
    return ((FEATURES(rate).log(wav.float()) + 5.0) / 5.0)[:, None]


def digit_classifier(rate: int, seed: int = 0, epochs: int = 8) -> SmallClassifier:
    """The spoken-digit classifier at ``rate``, trained on the training voices once and cached (safetensors)."""
    from undiffuse.evaluation.report import classifier_cache_dir

    path = classifier_cache_dir() / f"spoken-digits-{rate}hz-s{seed}.safetensors"
    if path.is_file():
        return SmallClassifier.load(path)
    ds = load_dataset("audio:spoken-digits", "train", sample_rate=rate)
    x = classifier_input(ds.x, rate)
    net = train_classifier(x, ds.y, epochs=epochs, seed=seed, lr=3e-3,
                           config=ClassifierConfig(in_channels=1, num_classes=10, feature_dim=32))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save(path, {"data": "audio:spoken-digits", "rate": str(rate)})
    return net


def _scores(net: SmallClassifier, wav: torch.Tensor, rate: int, labels: Optional[torch.Tensor], ref: torch.Tensor) -> dict:
    x = classifier_input(wav, rate)
    pred = net.predict(x)
    out = {"fd": classifier_frechet(net.features(x), ref),
           "coverage": np.bincount(pred.numpy(), minlength=10).tolist()}  # fmt: skip
    if labels is not None:
        ok = pred == labels.cpu()
        out["accuracy"] = float(ok.double().mean())
        out["per_class"] = [float(ok[labels == k].double().mean()) if (labels == k).any() else None for k in range(10)]
    return out


#: (n_fft, hop) of the multi-resolution STFT distance: Parallel WaveGAN's three resolutions, scaled to 16 kHz
RESOLUTIONS = ((512, 128), (1024, 256), (256, 64))


def mrstft_distance(x: torch.Tensor, y: torch.Tensor, resolutions=RESOLUTIONS) -> float:
    """Multi-resolution STFT distance (Yamamoto et al. 2020, Eqs. 5–7) of waveforms y to x [N, L]: per resolution
    the spectral convergence ‖|X| − |Y|‖_F / ‖|X|‖_F plus the mean |log|X| − log|Y||, averaged over resolutions
    and clips."""
    total = 0.0
    for n_fft, hop in resolutions:
        X, Y = stft_magnitude(x.float(), n_fft, hop), stft_magnitude(y.float(), n_fft, hop)
        sc = (X - Y).flatten(1).norm(dim=1) / X.flatten(1).norm(dim=1).clamp_min(1e-8)
        mag = (torch.log(X.clamp_min(1e-5)) - torch.log(Y.clamp_min(1e-5))).abs().flatten(1).mean(1)
        total += float((sc + mag).mean())
    return total / len(resolutions)


def log_spectral_distance(x: torch.Tensor, y: torch.Tensor, n_fft: int = 512, hop: int = 128) -> float:
    """Log-spectral distance in dB: per frame sqrt(mean_f (10·log10 |X|² − 10·log10 |Y|²)²), averaged over frames
    and clips (power floored at 1e-10)."""
    X, Y = stft_magnitude(x.float(), n_fft, hop) ** 2, stft_magnitude(y.float(), n_fft, hop) ** 2
    d = 10 * torch.log10(X.clamp_min(1e-10)) - 10 * torch.log10(Y.clamp_min(1e-10))
    return float(d.pow(2).mean(dim=-2).sqrt().mean())


def vocoder_scores(run_dir: Union[str, os.PathLike], n: int = 20, seed: int = 0, steps: Optional[int] = None,
                   device: Optional[str] = None) -> dict:  # fmt: skip
    """A diffusion vocoder (``model.mel_cond``) on ``n`` held-out clips: their log-mel in, waveforms out; the
    multi-resolution STFT and log-spectral distances to the clips, the digit accuracy of the result, CPU s per s."""
    from undiffuse.data.audio import vocoder_condition

    model = load(run_dir, device=device)
    rate = int(model.data.extra["audio"]["rate"])
    test = load_dataset(model.config.data.name, "test", sample_rate=rate)
    pick = torch.from_numpy(np.random.default_rng(seed).permutation(len(test.x))[:n])
    x, y = test.x[pick], test.y[pick]
    t0 = time.process_time()
    out = sample(model, n, seed, steps=steps, cond={"mel": vocoder_condition(x, rate).to(model.device)}).cpu()
    cpu = time.process_time() - t0
    out = out.clamp(-1, 1)
    acc = float((digit_classifier(rate).predict(classifier_input(out, rate)) == y).double().mean())
    return {"run": str(run_dir), "step": model.step, "n": n, "rate": rate, "mrstft": mrstft_distance(x, out),
            "lsd_db": log_spectral_distance(x, out), "digit_accuracy": acc,
            "cpu_s_per_audio_s": cpu / (n * x.shape[1] / rate)}  # fmt: skip


def _open_audio_run(run_dir: Union[str, os.PathLike], sampler: Optional[str], steps: Optional[int],
                    device: Optional[str]) -> tuple:  # fmt: skip
    """(data info, data name, step, kind of model, sampler, steps, conditional, draw) of a diffusion run or a GAN/VAE
    baseline run; ``draw(n, seed, labels, w)`` returns n samples in model units (a baseline is unconditional: one
    generator/decoder pass per sample, :func:`undiffuse.baselines.sample_indices`)."""
    from undiffuse.baselines import is_baseline_run

    if is_baseline_run(run_dir):
        from pathlib import Path

        from undiffuse.baselines import load_baseline, sample_indices
        from undiffuse.baselines.run import open_baseline
        from undiffuse.build import DataInfo
        from undiffuse.errors import UserError

        given = [o for o, v in (("--sampler", sampler), ("--steps", steps)) if v is not None]
        if given:  # refused before any weights are read
            raise UserError(f"a GAN/VAE baseline has no sampler or steps — drop {' and '.join(given)}")
        net, cfg = load_baseline(run_dir, device or "cpu")
        info = DataInfo.from_dataset(load_dataset(cfg.data, "train", cfg.image_size))
        step = open_baseline(Path(run_dir), ())[1].step
        draw = lambda n, seed, labels, w: sample_indices(net, cfg, range(n), seed)
        how = "one generator pass" if cfg.kind == "gan" else "one decoder pass"
        return info, cfg.data, step, cfg.kind, how, 1, False, draw
    from undiffuse.sampling import resolve_sampling

    model = load(run_dir, device=device)
    sampler, steps, spacing = resolve_sampling(model, sampler, steps, None)

    def draw(n: int, seed: int, labels: Optional[torch.Tensor], w: Optional[float]) -> torch.Tensor:
        kw = {"cond": {"class_labels": labels.to(model.device)}, "guidance": w} if labels is not None else {}
        return sample(model, n, seed, sampler=sampler, steps=steps, spacing=spacing, **kw)

    return (model.data, model.config.data.name, model.step, "diffusion", sampler, steps,
            bool(model.config.model.class_cond), draw)  # fmt: skip


def evaluate_audio_run(run_dir: Union[str, os.PathLike], n: int = 200, seed: int = 0,
                       guidance: Optional[Sequence[float]] = None, sampler: Optional[str] = None,
                       steps: Optional[int] = None, device: Optional[str] = None) -> dict:  # fmt: skip
    """Accuracy, FD and coverage of ``n`` samples per guidance scale (None: 1, 2, 4; see the module docstring). ``run_dir`` is a
    diffusion run or a GAN/VAE baseline run on audio data (unconditional: one row, its coverage)."""
    from undiffuse.errors import UserError

    info, name, step, model_kind, sampler, steps, conditional, draw = _open_audio_run(run_dir, sampler, steps, device)
    if not conditional and guidance is not None:
        raise UserError(f"{run_dir} is unconditional, so guidance does not apply — drop --guidance (or train with "
                        "--cond class)")  # fmt: skip
    guidance = (1.0, 2.0, 4.0) if guidance is None else tuple(guidance)
    rate = int(info.extra["audio"]["rate"])
    if not name.endswith(":spoken-digits"):
        raise ValueError(f"audio evaluation needs the spoken digits (a digit classifier); {name} has no digits")
    net = digit_classifier(rate)
    test = load_dataset("audio:spoken-digits", "test", sample_rate=rate)
    train = load_dataset("audio:spoken-digits", "train", sample_rate=rate)
    ref = net.features(classifier_input(test.x, rate))
    pick = torch.from_numpy(np.random.default_rng(seed).permutation(len(train.x))[:n])
    real = {"test": _scores(net, test.x, rate, test.y, ref), "train_subset": _scores(net, train.x[pick], rate, train.y[pick], ref)}
    rows = []
    for w in guidance if conditional else (None,):
        labels = torch.arange(n) % 10 if conditional else None
        t0 = time.process_time()
        wav = waveforms(draw(n, seed, labels, w), info)
        cpu = time.process_time() - t0
        row = {"guidance": w, "sample_cpu_s": cpu, "cpu_s_per_audio_s": cpu / (n * wav.shape[1] / rate)}
        row.update(_scores(net, wav, rate, labels, ref))
        rows.append(row)
    return {"run": str(run_dir), "data": name, "kind": info.kind, "model": model_kind, "rate": rate, "step": step,
            "n": n, "n_test": len(test.x), "n_train": len(train.x), "sampler": sampler, "steps": steps,
            "conditional": conditional, "real": real, "rows": rows, "threads": torch.get_num_threads()}  # fmt: skip


def audio_markdown(r: dict) -> str:
    """The report as markdown."""
    lines = [f"# Audio evaluation of {r['run']}", "",
             f"{r['data']} ({r['kind']} route, {r['rate']} Hz), {r.get('model', 'diffusion')} run, step {r['step']}, {r['n']} samples per row, sampler "
             f"{r['sampler']} ({r['steps']} steps); digit classifier trained on {r['n_train']} training-voice clips, "
             f"reference: {r['n_test']} held-out-voice clips.", "",
             "| samples | guidance w | digit accuracy | FD (classifier features) | CPU s per s of audio |",
             "|---|---|---|---|---|"]  # fmt: skip
    t, s = r["real"]["test"], r["real"]["train_subset"]
    lines.append(f"| real held-out voices (all {r['n_test']}) | – | {t['accuracy']:.3f} | {t['fd']:.3f} (self) | – |")
    lines.append(f"| real training voices ({r['n']}) | – | {s['accuracy']:.3f} | {s['fd']:.3f} (floor) | – |")
    for row in r["rows"]:
        acc = f"{row['accuracy']:.3f}" if "accuracy" in row else "–"
        w = "–" if row["guidance"] is None else f"{row['guidance']:g}"
        lines.append(f"| {r.get('model', 'diffusion')} | {w} | {acc} | {row['fd']:.3f} | {row['cpu_s_per_audio_s']:.2f} |")
    lines += ["", "Predicted digits (coverage) per row: " + "; ".join(
        f"w={row['guidance']}: {dict(zip(DIGITS, row['coverage']))}" for row in r["rows"]), ""]
    return "\n".join(lines)
