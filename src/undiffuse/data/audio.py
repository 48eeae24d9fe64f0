"""Audio data: ``audio:spoken-digits`` (synthesised with espeak-ng), ``audio:drums`` (Debian's sonic-pi-samples)
and ``audio:folder:PATH`` (the user's WAV/FLAC files). A clip is a mono waveform x [L] in [-1, 1] (kind
"audio"); ``mel:spoken-digits`` etc. give its log-mel spectrogram as a [1, n_mels, frames] image in [-1, 1]
(kind "mel", :func:`to_mel_image`), written back as audio through Griffin-Lim.

Every clip is prepared the same way (:func:`prepare`): downmixed, resampled (polyphase, scipy), silence trimmed
at −40 dB below the peak, centred in ``length`` samples (padded with zeros or centre-cropped), peak-normalised
to 0.95. ``data.sample_rate`` (default 16 kHz) is the rate of the model; clips are 1 s long.

spoken digits: the words "zero" … "nine" in ``ACCENTS`` × ``VARIANTS`` (espeak-ng's English voices × its
voice variants: male, female, whisper, croak, klatt …), ``RENDITIONS`` renditions each with speed (wpm) and
pitch drawn from (seed, accent, variant, digit, k). A *voice* is a variant: every fifth variant in
``VARIANTS`` order is held out, so the test split holds only voices the model never heard. Built once into
``$UNDIFFUSE_CACHE/spoken-digits-v1`` (default ``~/.cache/undiffuse``) with a manifest of every clip; ``undiffuse
data build audio:spoken-digits`` or the first use builds it (≈ 1 minute).

drums: the drum/percussion one-shots of sonic-pi-samples (CC0): every fifth file (sorted) is held out for
test. Training clips are augmented, each file ``DRUM_COPIES`` times: gain U(0.5, 1) before normalising is a
no-op, so the augmentation is a pitch/time shift by resampling with a factor U(0.9, 1.1) and an onset delay of
U(0, 20) ms, drawn from (seed, file, k); test clips are the files as they are.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from undiffuse.data.errors import DataError
from undiffuse.io import atomic_path, cache_root, write_json, write_npy
from undiffuse.rng import derive_seed

__all__ = ["DIGITS", "ACCENTS", "VARIANTS", "SAMPLE_RATE", "cache_dir", "read_audio", "write_wav", "resample",
           "prepare", "voice_split", "build_spoken_digits", "spoken_digits", "drums", "audio_folder", "load_audio",
           "to_mel_image", "from_mel_image", "MEL", "waveforms", "write_audio_wav", "write_audio_dir",
           "write_audio_npy", "write_audio_png"]  # fmt: skip

SAMPLE_RATE = 16000
SECONDS = 1.0
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "croak", "whisper",
            "whisperf", "klatt", "klatt2", "klatt3", "klatt4", "adam", "Andy", "boris", "david", "ed", "john",
            "max", "paul", "robert", "steph")  # fmt: skip
RENDITIONS = 2
SPEED = (130, 200)  # words per minute
PITCH = (30, 70)  # espeak's 0..99 pitch
DRUM_PREFIXES = ("bd_", "drum_", "elec_", "perc_", "sn_", "tabla_")
DRUM_COPIES = 8
SONIC_PI = Path("/usr/share/sonic-pi/samples")
VERSION = "spoken-digits-v1"
AUDIO_EXTENSIONS = (".wav", ".flac")
SILENCE_DB = -40.0


def cache_dir() -> Path:
    """Where built datasets live: ``$UNDIFFUSE_CACHE`` or ``~/.cache/undiffuse``."""
    return cache_root()


# --- audio I/O and preparation ---------------------------------------------------------------------------


def read_audio(path: os.PathLike | str) -> tuple[np.ndarray, int]:
    """(float64 mono samples, rate) of a WAV/FLAC file (channels averaged); DataError for a missing, unreadable
    or empty file."""
    try:
        import soundfile
    except ImportError:
        raise DataError("reading audio files needs soundfile — pip install 'undiffuse[audio]'") from None
    p = Path(path)
    if not p.is_file():
        raise DataError(f"audio file {p} does not exist — check the path")
    try:
        data, rate = soundfile.read(str(p), dtype="float64", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as e:
        raise DataError(f"cannot read {p} as audio ({' '.join(str(e).split())[:120]}) — pass a WAV or FLAC file") from None
    if data.size == 0:
        raise DataError(f"audio file {p} holds no samples — remove it")
    return data.mean(axis=1), int(rate)


def write_wav(path: os.PathLike | str, x: np.ndarray | torch.Tensor, rate: int) -> Path:
    """Write samples in [-1, 1] as a 16-bit PCM mono WAV (round(32767·x), clipped), atomically."""
    a = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    pcm = np.clip(np.round(a * 32767), -32768, 32767).astype("<i2")
    with atomic_path(path) as tmp:
        with wave.open(tmp, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(rate))
            w.writeframes(pcm.tobytes())
    return Path(path)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling by the reduced ratio rate_out/rate_in (scipy.signal.resample_poly, Kaiser window)."""
    if rate_in == rate_out:
        return x
    from scipy.signal import resample_poly

    r = Fraction(rate_out, rate_in).limit_denominator(1000)
    return resample_poly(x, r.numerator, r.denominator)


def prepare(x: np.ndarray, rate_in: int, rate: int, length: int, delay: int = 0) -> np.ndarray:
    """Resample, trim silence (below ``SILENCE_DB`` of the peak), centre in ``length`` samples (then shift by
    ``delay``), peak-normalise to 0.95: float32 [length]."""
    y = resample(np.asarray(x, dtype=np.float64), rate_in, rate)
    peak = np.abs(y).max() if y.size else 0.0
    if peak <= 0:
        return np.zeros(length, np.float32)
    loud = np.flatnonzero(np.abs(y) >= peak * 10 ** (SILENCE_DB / 20))
    y = y[loud[0] : loud[-1] + 1]
    if len(y) > length:
        start = (len(y) - length) // 2
        y = y[start : start + length]
    out = np.zeros(length)
    start = min((length - len(y)) // 2 + delay, length - len(y))
    out[start : start + len(y)] = y
    return (0.95 * out / np.abs(out).max()).astype(np.float32)


# --- spoken digits -----------------------------------------------------------------------------------------


def voice_split(variant: str, variants: tuple[str, ...] = VARIANTS) -> str:
    """"test" for every fifth variant (a held-out voice), else "train"."""
    return "test" if variants.index(variant) % 5 == 4 else "train"


def _espeak(text: str, voice: str, speed: int, pitch: int, path: str) -> tuple[np.ndarray, int]:
    """espeak-ng's 22,050 Hz mono WAV (written with -w: its --stdout header is wrong) as float64 samples."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, text],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    with wave.open(path, "rb") as w:
        rate, raw = w.getframerate(), w.readframes(w.getnframes())
    os.unlink(path)
    return np.frombuffer(raw, "<i2").astype(np.float64) / 32768, rate


def build_spoken_digits(root: os.PathLike | str, seed: int = 0, accents: tuple[str, ...] = ACCENTS,
                        variants: tuple[str, ...] = VARIANTS, renditions: int = RENDITIONS) -> Path:  # fmt: skip
    """Synthesise the spoken digits into ``root`` (``clips.npy`` int16 [N, 16000] at 16 kHz, ``manifest.json``:
    each clip's accent, variant, digit, speed, pitch and split). The manifest is written last, so a folder
    with one is complete. Deterministic given the arguments and the espeak-ng version."""
    if shutil.which("espeak-ng") is None:
        raise DataError("audio:spoken-digits needs espeak-ng to build — apt-get install espeak-ng")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    jobs = []
    for a in accents:
        for v in variants:
            for d, word in enumerate(DIGITS):
                for k in range(renditions):
                    rng = np.random.default_rng(derive_seed(seed, "spoken-digits", a, v, word, k))
                    jobs.append({"accent": a, "variant": v, "digit": d, "speed": int(rng.integers(*SPEED)),
                                 "pitch": int(rng.integers(*PITCH)), "split": voice_split(v, variants)})  # fmt: skip
    L = int(SAMPLE_RATE * SECONDS)
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory() as tmp:
        def one(i: int) -> np.ndarray:
            j = jobs[i]
            x, r = _espeak(DIGITS[j["digit"]], f"{j['accent']}+{j['variant']}", j["speed"], j["pitch"],
                           os.path.join(tmp, f"{i}.wav"))  # fmt: skip
            return prepare(x, r, SAMPLE_RATE, L)

        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            clips = list(pool.map(one, range(len(jobs))))
    pcm = np.clip(np.round(np.stack(clips) * 32767), -32768, 32767).astype(np.int16)
    write_npy(pcm, root / "clips.npy")
    write_json(root / "manifest.json", {"version": VERSION, "seed": seed, "espeak": version, "rate": SAMPLE_RATE,
                                        "length": L, "accents": list(accents), "variants": list(variants),
                                        "renditions": renditions, "clips": jobs})  # fmt: skip
    return root


def spoken_digits(split: str, rate: int = SAMPLE_RATE, root: Optional[Path] = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(clips float32 [N, rate·1 s], digits int64 [N], manifest) of one split, building the set on first use."""
    root = Path(root) if root is not None else cache_dir() / VERSION
    if not (root / "manifest.json").is_file():
        build_spoken_digits(root)
    manifest = json.loads((root / "manifest.json").read_text())
    pcm = np.load(root / "clips.npy", allow_pickle=False)
    keep = np.array([c["split"] == split for c in manifest["clips"]])
    x = pcm[keep].astype(np.float32) / 32767
    y = np.array([c["digit"] for c in manifest["clips"]], dtype=np.int64)[keep]
    if rate != manifest["rate"]:
        x = np.stack([resample(c, manifest["rate"], rate) for c in x]).astype(np.float32)
    return x, y, manifest


# --- drums and folders ----------------------------------------------------------------------------------


def drums(split: str, rate: int = SAMPLE_RATE, seed: int = 0, root: Path = SONIC_PI) -> np.ndarray:
    """Drum and percussion one-shots of sonic-pi-samples as float32 [N, rate·1 s] (see the module docstring)."""
    files = sorted(p for p in root.glob("*.flac") if p.name.startswith(DRUM_PREFIXES)) if root.is_dir() else []
    if not files:
        raise DataError(f"no drum samples under {root} — apt-get install sonic-pi-samples")
    L = int(rate * SECONDS)
    out = []
    for i, p in enumerate(files):
        if (i % 5 == 4) != (split == "test"):
            continue
        x, r = read_audio(p)
        if split == "test":
            out.append(prepare(x, r, rate, L))
            continue
        for k in range(DRUM_COPIES):
            g = np.random.default_rng(derive_seed(seed, "drums", p.name, k))
            factor = 1.0 if k == 0 else g.uniform(0.9, 1.1)
            delay = 0 if k == 0 else int(g.uniform(0, 0.02) * rate)
            out.append(prepare(x, round(r * factor), rate, L, delay=delay))
    return np.stack(out)


def audio_folder(path: str, split: str, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The WAV/FLAC files under ``path`` (or ``path/train``, ``path/test``) as float32 [N, rate·1 s]."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"audio folder {root} does not exist — pass a folder of .wav/.flac files")
    if (root / "train").is_dir() and (root / "test").is_dir():
        root = root / split
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"audio folder {root} holds no {'/'.join(AUDIO_EXTENSIONS)} files — add some or fix the path")
    L = int(rate * SECONDS)
    clips = []
    for p in files:
        x, r = read_audio(p)
        clips.append(prepare(x, r, rate, L))
    return np.stack(clips)


def load_audio(arg: str, split: str, sample_rate: Optional[int] = None, mel: bool = False):
    """The :class:`~undiffuse.data.Dataset` of ``audio:ARG`` (waveforms) or, with ``mel``, of ``mel:ARG``."""
    from undiffuse.data import Dataset

    rate = int(sample_rate or SAMPLE_RATE)
    if rate < 2000 or rate > 48000:
        raise DataError(f"data.sample_rate = {rate} Hz is out of range — use 2000…48000 (e.g. 16000)")
    y, classes = None, None
    if arg == "spoken-digits":
        x, labels, _ = spoken_digits(split, rate)
        y, classes = torch.from_numpy(labels), list(DIGITS)
    elif arg == "drums":
        x = drums(split, rate)
    elif arg.startswith("folder:") and len(arg) > 7:
        x = audio_folder(arg[7:], split, rate)
    else:
        raise DataError(f"unknown audio data {arg!r} — use spoken-digits, drums or folder:PATH")
    wav = torch.from_numpy(np.ascontiguousarray(x))
    prefix = "mel" if mel else "audio"
    extra = {"audio": {"rate": rate, "length": wav.shape[1]}}
    if mel:
        spec = MEL(rate)
        extra["audio"]["mel"] = {"n_mels": spec.n_mels, "n_fft": spec.n_fft, "hop": spec.hop}
        return Dataset(to_mel_image(wav, rate), y, "mel", f"{prefix}:{arg}", 10 if y is not None else None, classes,
                       extra=extra)  # fmt: skip
    return Dataset(wav, y, "audio", f"{prefix}:{arg}", 10 if y is not None else None, classes, extra=extra)


# --- the mel route: log-mel spectrograms as images ------------------------------------------------------------

#: log-mel values (ln power) mapped linearly from [LOG_LO, LOG_HI] to [-1, 1] (clipped)
LOG_LO, LOG_HI = math.log(1e-5), 6.0


def MEL(rate: int):
    """The mel layout of the mel route at ``rate``: 32 bands, 32 frames per second (hop rate/32), n_fft 2·hop
    rounded up to a power of two."""
    from undiffuse.data.mel import MelSpec

    hop = rate // 32
    return MelSpec(rate=rate, n_mels=32, n_fft=1 << math.ceil(math.log2(2 * hop)), hop=hop, frames=32)


def to_mel_image(wav: torch.Tensor, rate: int) -> torch.Tensor:
    """Waveforms [N, L] → log-mel images [N, 1, 32, 32] in [-1, 1]."""
    lm = MEL(rate).log(wav)
    return ((lm - LOG_LO) / (LOG_HI - LOG_LO) * 2 - 1).clamp(-1, 1)[:, None].contiguous()


def from_mel_image(img: torch.Tensor, rate: int, length: int, iters: int = 64) -> torch.Tensor:
    """Log-mel images [N, 1, 32, 32] → waveforms [N, length] by Griffin-Lim (peak-normalised to 0.95)."""
    lm = (img[:, 0].float().clamp(-1, 1) + 1) / 2 * (LOG_HI - LOG_LO) + LOG_LO
    x = MEL(rate).invert(lm, length, iters)
    return 0.95 * x / x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)


def VOCODER_MEL(rate: int):
    """The diffusion vocoder's condition at ``rate``: 80 HTK bands, hop 16 ms (256 at 16 kHz), n_fft 4·hop."""
    from undiffuse.data.mel import MelSpec

    hop = 256 * rate // 16000
    return MelSpec(rate=rate, n_mels=80, n_fft=4 * hop, hop=hop)


def vocoder_condition(wav: torch.Tensor, rate: int) -> torch.Tensor:
    """The log-mel [N, 80, 1 + L//hop] of waveforms [N, L] that a diffusion vocoder is conditioned on."""
    return VOCODER_MEL(rate).log(wav.float())


# --- writers (the "audio" and "mel" kinds of undiffuse.data.kinds) ------------------------------------------


def waveforms(x: torch.Tensor, info: Any) -> torch.Tensor:
    """Model samples → waveforms [N, L] in [-1, 1]: as they are for "audio", vocoded by Griffin-Lim for "mel"."""
    a = info.extra["audio"]
    if info.kind == "mel":
        return from_mel_image(x.detach().cpu(), a["rate"], a["length"])
    return x.detach().cpu().float().clamp(-1, 1)


def write_audio_wav(x: torch.Tensor, path: Path, info: Any, **_: Any) -> Path:
    """The samples one after another with 0.25 s of silence between, one 16-bit PCM WAV."""
    rate = info.extra["audio"]["rate"]
    gap = torch.zeros(len(x), rate // 4)
    return write_wav(path, torch.cat([waveforms(x, info), gap], dim=1).reshape(-1)[: -(rate // 4)], rate)


def write_audio_dir(x: torch.Tensor, path: Path, info: Any, start: int = 0, total: Optional[int] = None,
                    **_: Any) -> Path:  # fmt: skip
    """One 16-bit PCM WAV per sample, named by its index."""
    path.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str((total or start + len(x)) - 1)))
    for k, w in enumerate(waveforms(x, info)):
        write_wav(path / f"{start + k:0{width}d}.wav", w, info.extra["audio"]["rate"])
    return path


def write_audio_npy(x: torch.Tensor, path: Path, info: Any, **_: Any) -> Path:
    """float32 [N, L] in [-1, 1] at the data's sample rate."""
    return write_npy(waveforms(x, info).numpy().astype(np.float32), path)


def write_audio_png(x: torch.Tensor, path: Path, info: Any, nrow: Optional[int] = None, **_: Any) -> Path:
    """A grid of log-mel spectrograms (of the waveforms, so a mel sample shows what is heard)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rate = info.extra["audio"]["rate"]
    from undiffuse.data.mel import MelSpec

    mel = MEL(rate)
    lm = MelSpec(rate=rate, n_mels=48, n_fft=mel.n_fft, hop=mel.hop // 2).log(waveforms(x, info)).numpy()
    n = len(lm)
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.2 * cols, 0.9 * rows))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(lm[i], origin="lower", aspect="auto", vmin=LOG_LO, vmax=LOG_HI, cmap="magma")
        ax.set_axis_off()
    fig.subplots_adjust(0.01, 0.01, 0.99, 0.99, 0.05, 0.05)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path
