"""The GAN baseline on the mel route (issue 11's GAN row, SpecGAN-like): a few steps on a tiny spoken-digits set
through the command line, its samples written as audio and scored by the audio evaluation."""

from __future__ import annotations

import json
import shutil
import wave

import numpy as np
import pytest

pytest.importorskip("soundfile", reason="audio files need soundfile (pip install 'undiffuse[audio]')")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_gan_on_mel_digits_trains_writes_audio_and_is_scored(tmp_path, monkeypatch, capsys):
    from undiffuse.cli.main import main
    from undiffuse.data.audio import VERSION, build_spoken_digits

    monkeypatch.setenv("UNDIFFUSE_CACHE", str(tmp_path / "cache"))  # a tiny set: 4 training voices, 1 held out
    build_spoken_digits(tmp_path / "cache" / VERSION, accents=("en-us",), variants=("m1", "f1", "m3", "croak", "m5"),
                        renditions=1)  # fmt: skip
    run = str(tmp_path / "gan")
    assert main(["train", "--data", "mel:spoken-digits", "--baseline", "gan", "--steps", "2", "--out", run]) == 0
    assert json.loads((tmp_path / "gan" / "config.json").read_text())["config"]["data_kind"] == "mel"

    assert main(["sample", run, "--n", "3", "--seed", "1", "--out", str(tmp_path / "x.wav")]) == 0
    with wave.open(str(tmp_path / "x.wav")) as w:  # Griffin-Lim waveforms, 0.25 s of silence between
        assert w.getframerate() == 16000 and w.getnframes() == 3 * 16000 + 2 * 4000
    assert main(["sample", run, "--n", "2", "--seed", "1", "--out", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (2, 16000)

    capsys.readouterr()
    assert main(["eval", run, "--n", "10", "--out", str(tmp_path / "e")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    (row,) = report["rows"]  # unconditional: one row, no guidance, no intended digit
    assert report["model"] == "gan" and report["kind"] == "mel" and report["step"] == 2 and not report["conditional"]
    assert row["guidance"] is None and "accuracy" not in row and sum(row["coverage"]) == 10
    assert np.isfinite(row["fd"]) and row["cpu_s_per_audio_s"] > 0
    assert "| gan | – |" in capsys.readouterr().out
    for extra, named in ((["--steps", "4"], "--steps"), (["--guidance", "2"], "--guidance")):  # options that
        capsys.readouterr()  # cannot apply to an unconditional GAN are refused, not silently ignored
        assert main(["eval", run, "--n", "10", *extra, "--out", str(tmp_path / "e2")]) == 2
        assert named in capsys.readouterr().err and not (tmp_path / "e2.json").exists()
