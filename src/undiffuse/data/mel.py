"""Spectrograms with torch alone: the STFT magnitude, an HTK mel filterbank, log-mel features, Griffin-Lim.

Mel scale (HTK; O'Shaughnessy 1987, as in the HTK Book §5.4): m(f) = 2595·log10(1 + f/700), f(m) = 700·(10^(m/2595) − 1).
The filterbank has ``n_mels`` triangles whose corners are n_mels + 2 points equally spaced in m between
``fmin`` and ``fmax``; filter k rises linearly from corner k to 1 at corner k+1 and falls to 0 at corner k+2
(in Hz, on the FFT bins f_j = j·rate/n_fft), unnormalised (peak 1).

Griffin-Lim (Griffin & Lim 1984): from a magnitude |X|, iterate x ← ISTFT(|X|·e^{i∠STFT(x)}), here with the
"fast" momentum of Perraudin et al. (2013): c_n = t_n + α(t_n − t_{n−1}), t_n = STFT(ISTFT(|X|·∠c_{n−1})), α = 0.99. A mel magnitude is first mapped back to linear
frequency by the filterbank's least-squares (non-negative) pseudo-inverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["hz_to_mel", "mel_to_hz", "mel_filterbank", "stft_magnitude", "MelSpec", "griffin_lim"]


def hz_to_mel(f):
    """HTK mel: 2595·log10(1 + f/700) (floats or tensors)."""
    return 2595.0 * (torch.log10(1 + f / 700.0) if torch.is_tensor(f) else math.log10(1 + f / 700.0))


def mel_to_hz(m):
    """The inverse of :func:`hz_to_mel`: 700·(10^(m/2595) − 1)."""
    return 700.0 * ((10 ** (m / 2595.0)) - 1)


def mel_filterbank(n_mels: int, n_fft: int, rate: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """The HTK triangular filterbank [n_mels, n_fft//2 + 1] (see the module docstring)."""
    fmax = rate / 2 if fmax is None else fmax
    corners = mel_to_hz(torch.linspace(hz_to_mel(float(fmin)), hz_to_mel(float(fmax)), n_mels + 2, dtype=torch.float64))
    f = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * rate / n_fft
    lo, mid, hi = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    rise, fall = (f - lo) / (mid - lo), (hi - f) / (hi - mid)
    return torch.clamp(torch.minimum(rise, fall), min=0).float()


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT| of waveforms [..., L] with a periodic Hann window, centred frames: [..., n_fft//2 + 1, 1 + L//hop]."""
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    shape = x.shape[:-1]
    X = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, window=window, center=True, return_complex=True)
    return X.abs().reshape(*shape, *X.shape[-2:])


@dataclass(frozen=True)
class MelSpec:
    """Log-mel features of a fixed layout: ``n_mels`` bands, ``n_fft``, ``hop``, at ``rate``; ``frames`` keeps the
    first frames (None: all 1 + L//hop). ``log(x)`` = ln(mel power + 1e-5) [..., n_mels, frames]."""

    rate: int = 16000
    n_mels: int = 32
    n_fft: int = 1024
    hop: int = 500
    fmin: float = 0.0
    frames: int | None = None

    def filterbank(self, device=None) -> torch.Tensor:
        return mel_filterbank(self.n_mels, self.n_fft, self.rate, self.fmin).to(device)

    def power(self, x: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram [..., n_mels, frames] of waveforms [..., L]."""
        S = stft_magnitude(x.float(), self.n_fft, self.hop) ** 2
        M = torch.einsum("mf,...ft->...mt", self.filterbank(x.device), S)
        return M[..., : self.frames] if self.frames else M

    def log(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.power(x) + 1e-5)

    def invert(self, log_mel: torch.Tensor, length: int, iters: int = 64) -> torch.Tensor:
        """A waveform [..., length] whose log-mel is close to ``log_mel``: pseudo-inverse of the filterbank,
        then :func:`griffin_lim`."""
        fb = self.filterbank(log_mel.device)
        power = (log_mel.float().exp() - 1e-5).clamp_min(0)
        mag = (torch.linalg.pinv(fb) @ power).clamp_min(0).sqrt()  # [..., F, frames]
        frames = 1 + length // self.hop
        if mag.shape[-1] < frames:
            mag = torch.nn.functional.pad(mag, (0, frames - mag.shape[-1]))
        return griffin_lim(mag, self.n_fft, self.hop, length, iters)


def griffin_lim(mag: torch.Tensor, n_fft: int, hop: int, length: int, iters: int = 64, momentum: float = 0.99,
                seed: int = 0) -> torch.Tensor:  # fmt: skip
    """Fast Griffin-Lim (see the module docstring): magnitudes [..., F, T] → waveforms [..., length]."""
    shape = mag.shape[:-2]
    mag = mag.reshape(-1, *mag.shape[-2:]).float()
    window = torch.hann_window(n_fft, device=mag.device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    phase = torch.exp(2j * math.pi * torch.rand(mag.shape, generator=g)).to(mag.device)
    prev = torch.zeros_like(phase)
    for _ in range(iters):
        x = torch.istft(mag * phase, n_fft, hop, window=window, center=True, length=length)
        X = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)
        accel = X + momentum * (X - prev)  # c_n = t_n + α(t_n − t_{n−1})
        prev = X
        phase = accel / accel.abs().clamp_min(1e-8)
    x = torch.istft(mag * phase, n_fft, hop, window=window, center=True, length=length)
    return x.reshape(*shape, length)
