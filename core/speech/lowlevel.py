"""Low-level speech features, numpy/scipy only (no librosa: it is slow to import and not needed).

Everything is first computed on a 10 ms grid (internal frame i covers [i/100, (i+1)/100) s, its analysis
window centred there), then averaged onto the feature frame rate's grid (frame t covers [t/fps, (t+1)/fps)).
Output frames are produced block by block from just the audio they need, so memory stays flat in the
audio's length and the result does not depend on the block size.

Raw (un-normalised) values per output frame; `builtin.py` normalises them per utterance:
  mel_db (80) : log mel power in dB; filters average the power spectrum, so a flat spectrum at R dBFS RMS
                reads ~R dB in every band
  onset       : spectral flux (mean positive 20 ms rise of the log mel bands, dB), log-compressed
  rms_db      : RMS energy in dBFS
  log2_f0     : YIN pitch, log2(Hz), averaged over the frame weighted by voicing (0 where unvoiced)
  voicing     : 0..1 periodicity from YIN's minimum cumulative-mean-normalised difference
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
HOP = 160                  # 10 ms internal grid
INTERNAL_FPS = SAMPLE_RATE / HOP


@dataclass(frozen=True)
class LowLevelConfig:
    n_mels: int = 80
    win: int = 400         # 25 ms analysis window for the spectrum
    n_fft: int = 512
    fmin: float = 40.0
    fmax: float = 7600.0
    flux_lag: int = 2      # onset: rise over 20 ms
    f0_min: float = 55.0
    f0_max: float = 500.0
    yin_win: int = 400     # YIN integration window (25 ms)
    yin_threshold: float = 0.15
    block_s: float = 5.0   # output made in blocks this long: bounds the working memory (~20 MB)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: LowLevelConfig) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular filters on the HTK mel scale, each row summing to 1 (a weighted
    average of the power spectrum, so band levels are comparable to RMS levels)."""
    freqs = np.fft.rfftfreq(cfg.n_fft, 1.0 / SAMPLE_RATE)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    # Low bands can be narrower than one FFT bin: give them the nearest bin rather than nothing.
    empty = bank.sum(axis=1) == 0
    bank[empty, np.argmin(np.abs(freqs[None] - centre[empty]), axis=1)] = 1.0
    return (bank / bank.sum(axis=1, keepdims=True)).astype(np.float32)


def _frames(audio: np.ndarray, first: int, count: int, length: int, offset: int) -> np.ndarray:
    """(count, length) windows; window j starts at sample (first + j) * HOP + offset; zeros outside."""
    start = first * HOP + offset
    stop = (first + count - 1) * HOP + offset + length
    lo, hi = max(start, 0), min(stop, len(audio))
    span = np.zeros(stop - start, dtype=np.float32)
    if hi > lo:
        span[lo - start:hi - start] = audio[lo:hi]
    return np.lib.stride_tricks.sliding_window_view(span, length)[::HOP][:count]


class LowLevelExtractor:
    def __init__(self, cfg: LowLevelConfig = LowLevelConfig()):
        import scipy.fft  # float32 FFTs: half the memory traffic of numpy's float64 ones

        self._fft = scipy.fft
        self.cfg = cfg
        self.mel = mel_filterbank(cfg)
        self.window = np.hanning(cfg.win + 2)[1:-1].astype(np.float32)
        # |X|^2 / sum(w^2): for white noise each rfft bin then reads ~ mean(x^2)
        self.power_scale = np.float32(1.0 / np.sum(self.window.astype(np.float64) ** 2))
        self.tau_min = int(np.floor(SAMPLE_RATE / cfg.f0_max))
        self.tau_max = int(np.ceil(SAMPLE_RATE / cfg.f0_min))
        self.yin_len = cfg.yin_win + self.tau_max
        self.yin_fft = int(2 ** np.ceil(np.log2(self.yin_len)))

    # --- internal 10 ms grid -------------------------------------------------------------------------
    def mel_db(self, audio, first, count):
        cfg = self.cfg
        frames = _frames(audio, first, count, cfg.win, HOP // 2 - cfg.win // 2) * self.window
        spec = self._fft.rfft(frames, n=cfg.n_fft, axis=1)
        power = (spec.real ** 2 + spec.imag ** 2) * self.power_scale
        return 10.0 * np.log10(power @ self.mel.T + 1e-10)

    def rms_power(self, audio, first, count):
        frames = _frames(audio, first, count, HOP, 0).astype(np.float64)
        return np.mean(frames * frames, axis=1)

    def yin(self, audio, first, count):
        """-> (f0_hz, voicing) on the internal grid. YIN (de Cheveigné & Kawahara 2002): difference
        function from FFT correlation, cumulative-mean normalisation, first dip under the threshold."""
        cfg, w = self.cfg, self.cfg.yin_win
        frames = _frames(audio, first, count, self.yin_len, HOP // 2 - w // 2).astype(np.float64)
        head = self._fft.rfft(frames[:, :w], n=self.yin_fft, axis=1)
        full = self._fft.rfft(frames, n=self.yin_fft, axis=1)
        corr = self._fft.irfft(np.conj(head) * full, n=self.yin_fft, axis=1)[:, :self.tau_max + 1]
        energy = np.concatenate([np.zeros((count, 1)), np.cumsum(frames ** 2, axis=1)], axis=1)
        taus = np.arange(self.tau_max + 1)
        lagged = energy[:, taus + w] - energy[:, taus]           # sum of x^2 over [tau, tau + w)
        diff = np.maximum(energy[:, w:w + 1] + lagged - 2.0 * corr, 0.0)
        cum = np.cumsum(diff[:, 1:], axis=1)
        silent = cum[:, -1] <= 1e-9 * w                           # no signal: no pitch, no NaNs
        cmnd = np.ones_like(diff)
        cmnd[:, 1:] = diff[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
        cmnd[silent] = 1.0
        search = cmnd[:, self.tau_min:self.tau_max]
        below = search < cfg.yin_threshold
        has_dip = below.any(axis=1)
        first_dip = np.argmax(below, axis=1)
        # the dip is the minimum of the run of values under the threshold that starts at the first crossing
        positions = np.arange(search.shape[1])[None]
        after = ~below & (positions > first_dip[:, None])
        run_end = np.where(after.any(axis=1), np.argmax(after, axis=1), search.shape[1])
        in_run = (positions >= first_dip[:, None]) & (positions < run_end[:, None])
        dip = np.argmin(np.where(in_run, search, np.inf), axis=1)
        best = np.where(has_dip, dip, np.argmin(search, axis=1))
        tau = best + self.tau_min
        # parabolic refinement of the minimum
        left = cmnd[np.arange(count), np.maximum(tau - 1, 1)]
        mid = cmnd[np.arange(count), tau]
        right = cmnd[np.arange(count), np.minimum(tau + 1, self.tau_max)]
        denom = left - 2 * mid + right
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
        f0 = SAMPLE_RATE / (tau + np.clip(shift, -0.5, 0.5))
        voicing = np.clip((0.45 - mid) / 0.35, 0.0, 1.0)
        voicing[silent] = 0.0
        return f0, voicing

    # --- output grid ---------------------------------------------------------------------------------
    def compute(self, audio: np.ndarray, n_frames: int, fps: float) -> dict[str, np.ndarray]:
        """Raw features on the output grid: mel_db (T, n_mels), onset, rms_db, log2_f0, voicing (T,)."""
        cfg = self.cfg
        out = {"mel_db": np.zeros((n_frames, cfg.n_mels), np.float32)}
        for key in ("onset", "rms_db", "log2_f0", "voicing"):
            out[key] = np.zeros(n_frames, np.float32)
        block = max(1, int(cfg.block_s * fps))
        for t0 in range(0, n_frames, block):
            t1 = min(n_frames, t0 + block)
            self._block(audio, t0, t1, fps, out)
        return out

    def _block(self, audio, t0, t1, fps, out):
        cfg = self.cfg
        first = int(np.floor(t0 / fps * INTERNAL_FPS))
        last = int(np.ceil(t1 / fps * INTERNAL_FPS))           # exclusive
        lag = cfg.flux_lag
        mel = self.mel_db(audio, first - lag, last - first + lag)
        flux = np.maximum(mel[lag:] - mel[:-lag], 0.0).mean(axis=1)
        mel = mel[lag:]
        power = self.rms_power(audio, first, last - first)
        f0, voicing = self.yin(audio, first, last - first)
        values = np.concatenate([
            mel, flux[:, None], power[:, None], (np.log2(f0) * voicing)[:, None], voicing[:, None]], axis=1)
        pooled = _box_average(values, first, t0, t1, fps)
        n_mels = cfg.n_mels
        out["mel_db"][t0:t1] = pooled[:, :n_mels]
        out["onset"][t0:t1] = np.log1p(pooled[:, n_mels] / ONSET_DB_UNIT)
        out["rms_db"][t0:t1] = 10.0 * np.log10(pooled[:, n_mels + 1] + 1e-10)
        weight = pooled[:, n_mels + 3]
        out["log2_f0"][t0:t1] = np.where(weight > 1e-3, pooled[:, n_mels + 2] / np.maximum(weight, 1e-3), 0.0)
        out["voicing"][t0:t1] = weight


ONSET_DB_UNIT = 1.0  # onset = log1p(flux / 1 dB): speech onsets give ~1.5-3, steady sounds ~0.3-0.8


def _box_average(values: np.ndarray, first: int, t0: int, t1: int, fps: float) -> np.ndarray:
    """Average of the piecewise-constant internal-grid signal (row i on [(first+i)/100, (first+i+1)/100))
    over each output interval [t/fps, (t+1)/fps), t in [t0, t1)."""
    cumulative = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0, dtype=np.float64)])
    grid = (first + np.arange(len(values) + 1)) / INTERNAL_FPS
    edges = np.arange(t0, t1 + 1) / fps
    position = np.clip((edges - grid[0]) * INTERNAL_FPS, 0, len(values))
    lower = np.floor(position).astype(np.int64)
    frac = (position - lower)[:, None]
    upper = np.minimum(lower + 1, len(values))
    at_edges = cumulative[lower] + frac * (cumulative[upper] - cumulative[lower])
    return ((at_edges[1:] - at_edges[:-1]) * (fps / INTERNAL_FPS)).astype(np.float32)
