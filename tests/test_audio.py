"""Audio (issue 11): data builders, WAV round trips, mel/STFT math, the DiffWave-style network, writers, and a
short real training run through the command line."""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from undiffuse.data import load_dataset
from undiffuse.data.audio import (
    DIGITS,
    audio_folder,
    build_spoken_digits,
    prepare,
    read_audio,
    voice_split,
    write_wav,
)
from undiffuse.data.errors import DataError
from undiffuse.data.mel import MelSpec, griffin_lim, hz_to_mel, mel_filterbank, mel_to_hz, stft_magnitude
from undiffuse.nn.wavenet import WaveNet, WaveNetConfig

soundfile = pytest.importorskip("soundfile", reason="audio files need soundfile (pip install 'undiffuse[audio]')")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")


def _sine(path: Path, f: float, rate: int = 8000, seconds: float = 0.5, channels: int = 1) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * f * t)
    soundfile.write(str(path), np.stack([x] * channels, 1) if channels > 1 else x, rate, subtype="PCM_16")
    return path


# --- audio I/O --------------------------------------------------------------------------------------------


def test_wav_round_trip_is_exact_to_16_bit_quantisation(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, 4000)
    write_wav(tmp_path / "a.wav", x, 8000)
    y, rate = read_audio(tmp_path / "a.wav")
    assert rate == 8000 and y.shape == x.shape
    assert np.abs(y * 32768 - np.round(x * 32767)).max() == 0  # soundfile reads int16 k as k/32768
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)


def test_stereo_is_downmixed_and_resampled(tmp_path):
    _sine(tmp_path / "s.flac", 440.0, rate=16000, channels=2)
    clips = audio_folder(str(tmp_path), "train", rate=8000)
    assert clips.shape == (1, 8000) and clips.dtype == np.float32
    assert abs(np.abs(clips).max() - 0.95) < 1e-6  # peak-normalised
    spec = np.abs(np.fft.rfft(clips[0]))
    assert abs(np.argmax(spec) * 8000 / 8000 - 440) <= 1  # the tone survives resampling (1 Hz bins)


def test_prepare_trims_centres_and_crops():
    x = np.zeros(3000)
    x[1000:1400] = 1.0  # 400 loud samples amid silence
    y = prepare(x, 8000, 8000, 1000)
    loud = np.flatnonzero(y)
    assert len(loud) == 400 and loud[0] == 300  # centred in 1000 samples
    long = prepare(np.ones(5000), 8000, 8000, 1000)
    assert np.allclose(long, 0.95)  # centre-cropped to the length


def test_bad_audio_files_give_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"audio:folder:{tmp_path / 'nope'}", "train")
    with pytest.raises(DataError, match="holds no .wav/.flac"):
        load_dataset(f"audio:folder:{tmp_path}", "train")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    with pytest.raises(DataError) as e:
        load_dataset(f"audio:folder:{tmp_path}", "train")
    assert "broken.wav" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="unknown audio data"):
        load_dataset("audio:speech", "train")
    with pytest.raises(DataError, match="sample_rate"):
        load_dataset("audio:folder:x", "train", sample_rate=100)


# --- spectrograms --------------------------------------------------------------------------------------------


def test_htk_mel_scale_and_filterbank_match_the_formula():
    assert abs(hz_to_mel(1000.0) - 2595 * np.log10(1 + 1000 / 700)) < 1e-9
    assert abs(mel_to_hz(hz_to_mel(3210.0)) - 3210.0) < 1e-9
    rate, n_fft, M = 16000, 512, 20
    fb = mel_filterbank(M, n_fft, rate).double()
    assert fb.shape == (M, n_fft // 2 + 1)
    corners = [mel_to_hz(m) for m in np.linspace(0, hz_to_mel(8000.0), M + 2)]
    f = np.arange(n_fft // 2 + 1) * rate / n_fft
    for k in (0, 7, 19):  # a triangle from corner k to k+2, peak at k+1, by the formula
        lo, mid, hi = corners[k : k + 3]
        want = np.clip(np.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)), 0, None)
        assert np.allclose(fb[k].numpy(), want, atol=1e-6)
    inside = (f >= corners[1]) & (f <= corners[-2])  # between the first and last peaks the triangles sum to 1
    assert np.allclose(fb.sum(0).numpy()[inside], 1.0, atol=1e-6)


def test_stft_and_mel_shapes_and_a_sine_peaks_in_its_bin():
    rate, n_fft, hop = 8000, 256, 64
    t = torch.arange(8000) / rate
    x = torch.sin(2 * np.pi * 1000 * t).repeat(3, 1)
    S = stft_magnitude(x, n_fft, hop)
    assert S.shape == (3, n_fft // 2 + 1, 1 + 8000 // hop)
    assert int(S[0, :, 10].argmax()) == 1000 * n_fft // rate
    spec = MelSpec(rate=rate, n_mels=24, n_fft=n_fft, hop=hop, frames=100)
    assert spec.log(x).shape == (3, 24, 100)


def test_griffin_lim_recovers_a_consistent_magnitude():
    rate, n_fft, hop = 8000, 256, 64
    t = torch.arange(4000) / rate
    x = torch.sin(2 * np.pi * 440 * t) * torch.exp(-3 * t) + 0.3 * torch.sin(2 * np.pi * 1300 * t)
    mag = stft_magnitude(x, n_fft, hop)
    y = griffin_lim(mag, n_fft, hop, len(x), iters=60)
    err = (stft_magnitude(y, n_fft, hop) - mag).norm() / mag.norm()  # spectral convergence
    assert y.shape == x.shape and err < 0.1


# --- the network ----------------------------------------------------------------------------------------


def test_wavenet_shapes_conditioning_and_receptive_field():
    torch.manual_seed(0)
    cfg = WaveNetConfig(channels=8, layers=4, cycle=3, emb_dim=16)
    net = WaveNet(cfg, num_classes=10)
    torch.nn.init.normal_(net.final.weight)  # the output layer starts at zero; open it to see the field
    assert net.receptive_field == 1 + 2 * (1 + 2 + 4 + 1)
    x = torch.randn(2, 200, requires_grad=True)
    out = net(x, torch.tensor([3.0, 5.0]), class_labels=torch.tensor([1, 10]))
    assert out.shape == (2, 200)
    out[0, 100].backward()
    support = torch.nonzero(x.grad[0].abs() > 0)[:, 0]
    assert (support.min().item(), support.max().item()) == (100 - 8, 100 + 8)  # ± (field − 1)/2 samples
    assert x.grad[1].abs().max() == 0  # samples do not mix
    a = net(x.detach()[:1], torch.tensor([3.0]), class_labels=torch.tensor([1]))
    b = net(x.detach()[:1], torch.tensor([3.0]), class_labels=torch.tensor([2]))
    assert not torch.allclose(a, b)  # the class label reaches the output


def test_wavenet_vocoder_takes_a_mel_of_the_clip_length():
    net = WaveNet(WaveNetConfig(channels=8, layers=2, emb_dim=16, n_mels=16, hop=40))
    out = net(torch.randn(2, 400), torch.tensor(1.0), mel=torch.randn(2, 16, 11))
    assert out.shape == (2, 400)
    with pytest.raises(ValueError, match="mel"):
        net(torch.randn(2, 400), torch.tensor(1.0))


# --- the spoken digits and drums ------------------------------------------------------------------------


@needs_espeak
def test_spoken_digits_build_is_deterministic_and_split_by_voice(tmp_path):
    variants = ("m1", "f1", "m3", "croak", "whisper")
    kw = dict(accents=("en-us",), variants=variants, renditions=1)
    a = build_spoken_digits(tmp_path / "a", seed=3, **kw)
    b = build_spoken_digits(tmp_path / "b", seed=3, **kw)
    assert np.array_equal(np.load(a / "clips.npy"), np.load(b / "clips.npy"))
    clips = json.loads((a / "manifest.json").read_text())["clips"]
    assert len(clips) == 10 * len(variants) and {c["digit"] for c in clips} == set(range(10))
    train = {c["variant"] for c in clips if c["split"] == "train"}
    test = {c["variant"] for c in clips if c["split"] == "test"}
    assert test == {"whisper"} and not train & test and voice_split("whisper", variants) == "test"
    pcm = np.load(a / "clips.npy")
    assert pcm.shape == (50, 16000) and pcm.dtype == np.int16 and np.abs(pcm).max() > 30000


@pytest.mark.skipif(not Path("/usr/share/sonic-pi/samples").is_dir(), reason="sonic-pi-samples is not installed")
def test_drums_test_split_is_the_held_out_files():
    ds = load_dataset("audio:drums", "test", sample_rate=4000)
    assert ds.kind == "audio" and ds.shape == (4000,) and ds.extra["audio"]["rate"] == 4000
    assert ds.y is None and torch.allclose(ds.x.abs().amax(1), torch.tensor(0.95))


# --- writers and a short real run -----------------------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "tones"
    root.mkdir()
    for k, f in enumerate((300, 450, 600, 750)):
        _sine(root / f"{k}.wav", f, rate=4000)
    return root


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """``undiffuse ARGS`` in this process (the same parser and error handling as the console script)."""
    from undiffuse.cli.main import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_sample_and_nll_of_a_waveform_run_through_the_cli(tmp_path, capsys):
    root, run = _folder(tmp_path), str(tmp_path / "run")
    sets = ["data.sample_rate=2000", "model.hidden=8", "model.depth=3", "train.batch_size=4", "train.val_every=0",
            "train.ckpt_every=3"]
    code, _, err = _cli(capsys, "train", "--data", f"audio:folder:{root}", "--out", run, "--steps", "3",
                        *[a for s in sets for a in ("--set", s)])  # fmt: skip
    assert code == 0, err
    sample = ("sample", run, "--seed", "5", "--steps", "4", "--out")
    assert _cli(capsys, *sample[:-1], "--n", "3", "--out", str(tmp_path / "x.wav"))[0] == 0
    with wave.open(str(tmp_path / "x.wav")) as w:  # 3 clips with 0.25 s of silence between
        assert w.getframerate() == 2000 and w.getnframes() == 3 * 2000 + 2 * 500
    assert _cli(capsys, *sample[:-1], "--n", "3", "--out", str(tmp_path / "a.npy"))[0] == 0
    assert _cli(capsys, *sample[:-1], "--n", "2", "--out", str(tmp_path / "b.npy"))[0] == 0
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (3, 2000) and a.dtype == np.float32 and np.abs(a).max() <= 1
    assert np.array_equal(a[:2], b)  # sample i depends only on (seed, i)
    with wave.open(str(tmp_path / "x.wav")) as w:  # the .wav holds the same clips (16-bit)
        first = np.frombuffer(w.readframes(2000), "<i2")
    assert np.abs(first - a[0].astype(np.float64) * 32767).max() <= 0.5 + 1e-3  # one quantisation step
    assert _cli(capsys, *sample[:-1], "--n", "2", "--out", str(tmp_path / "d") + "/")[0] == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["000000.wav", "000001.wav"]
    assert _cli(capsys, *sample[:-1], "--n", "2", "--out", str(tmp_path / "g.png"))[0] == 0
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    code, out, err = _cli(capsys, "nll", run, "--n", "4", "--n-t", "4")
    assert code == 0 and "bits/dim" in out, err
    code, _, err = _cli(capsys, "sample", run, "--n", "2", "--out", str(tmp_path / "x.csv"))
    assert code == 2 and "use .wav" in err and err.count("\n") == 1


def test_mel_route_writes_vocoded_audio(tmp_path):
    from undiffuse.build import DataInfo
    from undiffuse.data.kinds import save_samples

    ds = load_dataset(f"mel:folder:{_folder(tmp_path)}", "train", sample_rate=4000)
    assert ds.kind == "mel" and ds.shape == (1, 32, 32) and ds.x.abs().max() <= 1
    info = DataInfo.from_dataset(ds)
    save_samples(ds.x[:2], tmp_path / "m.npy", info)
    w = np.load(tmp_path / "m.npy")
    assert w.shape == (2, 4000) and np.abs(w).max() <= 0.95 + 1e-6
    spec = np.abs(np.fft.rfft(w[0]))  # the first tone (300 Hz) comes back from its log-mel image
    assert abs(np.argmax(spec) * 4000 / 4000 - 300) < 40


def test_digit_names_are_the_ten_words():
    assert DIGITS[7] == "seven" and len(DIGITS) == 10


def test_vocoder_distances_are_zero_for_identical_clips_and_grow_with_noise():
    from undiffuse.evaluation.audio import log_spectral_distance, mrstft_distance

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4000, generator=g) * torch.linspace(0, 1, 4000)
    assert mrstft_distance(x, x) == 0 and log_spectral_distance(x, x) == 0
    small, big = x + 0.01 * torch.randn(2, 4000, generator=g), x + 0.3 * torch.randn(2, 4000, generator=g)
    assert 0 < mrstft_distance(x, small) < mrstft_distance(x, big)
    assert 0 < log_spectral_distance(x, small) < log_spectral_distance(x, big)
    assert abs(log_spectral_distance(x, 10 ** 0.5 * x) - 10.0) < 1e-3  # a 10 dB gain is 10 dB everywhere


def test_diffusion_vocoder_trains_on_its_clips_mel_and_vocodes_a_given_clip(tmp_path, capsys):
    root, run = _folder(tmp_path), str(tmp_path / "voc")
    sets = ["data.sample_rate=2000", "model.arch=wavenet", "model.mel_cond=true", "model.hidden=8", "model.depth=2",
            "train.batch_size=4", "train.val_every=0", "train.ckpt_every=2"]
    code, _, err = _cli(capsys, "train", "--data", f"audio:folder:{root}", "--preset", "audio", "--out", run,
                        "--steps", "2", *[a for s in sets for a in ("--set", s)])  # fmt: skip
    assert code == 0, err
    code, _, err = _cli(capsys, "sample", run, "--n", "2", "--steps", "3", "--lowres", str(root / "1.wav"),
                        "--out", str(tmp_path / "v.npy"))  # fmt: skip
    assert code == 0, err
    assert np.load(tmp_path / "v.npy").shape == (2, 2000)
    code, _, err = _cli(capsys, "sample", run, "--n", "2", "--out", str(tmp_path / "w.npy"))
    assert code == 2 and "--lowres CLIP.wav" in err


def test_wavenet_with_a_label_table_of_one_null_row_runs():
    """num_classes = 0 (only the null label): the per-layer label projections exist whenever the embedding does."""
    net = WaveNet(WaveNetConfig(channels=8, layers=2, emb_dim=16), num_classes=0)
    out = net(torch.randn(2, 64), torch.rand(2), class_labels=torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, 64) and torch.isfinite(out).all()
