"""Signal sources for the simulated ADXL345 (fieldwatch/sim/signals.py): spectra, determinism, the
real CWRU recordings against the reference figures in tests/data/vibration/README.md."""

import math
from pathlib import Path

import numpy as np
import pytest

from fieldwatch.sim import signals

VIBRATION = Path(__file__).resolve().parents[1] / "data" / "vibration"
CWRU_97 = VIBRATION / "cwru_97_normal_de_12k.csv"


def _amplitude_spectrum(x, rate_hz):
    """Single-sided Hann-corrected amplitude spectrum (g) and its frequencies."""
    x = np.asarray(x, dtype=float)
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * window)) * 2 / window.sum()
    return np.fft.rfftfreq(len(x), 1 / rate_hz), spectrum


def test_synthetic_spectrum_has_peaks_where_configured():
    rate = 3200.0
    n = 12800  # 4 s: 0.25 Hz bins
    source = signals.synthetic(noise_g=0.002, seed=3)
    xyz = np.array([source(k / rate) for k in range(n)])
    freqs, spec = _amplitude_spectrum(xyz[:, 0], rate)
    expected = {29.95: 0.05, 59.9: 0.02, 89.85: 0.01, 162.19: 0.03}
    # the four largest local maxima are the four tones, at the right amplitude
    peaks = [k for k in range(1, len(spec) - 1) if spec[k] >= spec[k - 1] and spec[k] >= spec[k + 1]]
    top = sorted(peaks, key=lambda k: spec[k], reverse=True)[:4]
    found = sorted(freqs[k] for k in top)
    assert found == pytest.approx(sorted(expected), abs=0.25)
    for f, amp in expected.items():
        k = int(np.argmin(np.abs(freqs - f)))
        local = spec[k - 2:k + 3].max()
        assert local == pytest.approx(amp, rel=0.2), (f, local)
    # gravity on z, 30 % cross-axis on y, noise at the configured level
    assert xyz[:, 2].mean() == pytest.approx(1.0, abs=1e-3)
    assert np.std(xyz[:, 2]) == pytest.approx(0.002, rel=0.05)
    assert np.std(xyz[:, 1]) == pytest.approx(0.3 * np.std(xyz[:, 0]), rel=0.05)


def test_synthetic_is_deterministic_for_a_seed():
    a = signals.synthetic(seed=42)
    b = signals.synthetic(seed=42)
    c = signals.synthetic(seed=43)
    ts = [k / 800 for k in range(200)]
    va = [a(t) for t in ts]
    assert va == [b(t) for t in ts]
    assert va != [c(t) for t in ts]


def test_synthetic_custom_tones_and_axis():
    source = signals.synthetic(tones=[(50.0, 0.5)], noise_g=0.0, axis=1, cross_axis=0.0,
                               gravity_g=1.0, gravity_axis=0)
    rate = 1000.0
    xyz = np.array([source(k / rate) for k in range(1000)])
    assert np.allclose(xyz[:, 0], 1.0) and np.allclose(xyz[:, 2], 0.0)
    assert np.max(np.abs(xyz[:, 1])) == pytest.approx(0.5, rel=1e-3)
    freqs, spec = _amplitude_spectrum(xyz[:, 1], rate)
    assert freqs[np.argmax(spec)] == pytest.approx(50.0)


def test_counter_source_encodes_the_sample_index():
    source = signals.counter()
    assert source.by_index
    for n in (0, 1, 499, 500, 999, 1000, 123456, 999999):
        x, y, z = source(n)
        assert z == 1.0
        # exact multiples of one full-resolution count (1/256 g), within +/-500 counts
        xc, yc = x * 256, y * 256
        assert xc == int(xc) and yc == int(yc) and abs(xc) <= 500 and abs(yc) <= 500
        assert source.index_of(xc, yc) == n


def test_recording_at_12khz_reproduces_the_reference_figures():
    source = signals.recording(CWRU_97, 12000)
    x = np.array([source(k / 12000)[0] for k in range(24000)])
    # README: mean +0.01221 g, RMS 0.07115 g, peak abs 0.2821 g (float64 on the float32 values)
    rms = math.sqrt(float(np.mean(x ** 2)))
    assert rms == pytest.approx(0.07115, rel=1e-4)
    assert float(np.max(np.abs(x))) == pytest.approx(0.2821, abs=5e-5)
    assert float(np.mean(x)) == pytest.approx(0.01221, abs=5e-6)
    # the recording is on x, gravity on z, and it loops every 2 s
    assert source(0.25) == (pytest.approx(x[3000]), 0.0, 1.0)
    assert source(2.0 + 0.25) == source(0.25)
    freqs, spec = _amplitude_spectrum(x, 12000)
    band = freqs < 1600
    k = int(np.argmax(np.where(band & (freqs > 0), spec, 0)))
    assert freqs[k] == 360.0 and spec[k] == pytest.approx(0.01703, abs=5e-6)


def test_recording_resampled_to_800hz_keeps_the_content_below_400hz():
    raw = signals.load_csv(CWRU_97)
    source = signals.recording(CWRU_97, 800)
    y = np.array([source(k / 800)[0] for k in range(1600)])
    assert len(source.samples) == 1600 and np.array_equal(y, source.samples)
    # every 0.5 Hz bin below 400 Hz is the original one (same bin spacing: 2 s loops)
    original = np.fft.rfft(raw)
    resampled = np.fft.rfft(y) * (24000 / 1600)
    assert np.allclose(resampled[:800], original[:800], atol=1e-9 * np.abs(original).max())
    # the 360 Hz line (README: 0.01703 g) is kept
    freqs, spec = _amplitude_spectrum(y, 800)
    k = int(np.argmax(spec[1:])) + 1
    assert freqs[k] == 360.0 and spec[k] == pytest.approx(0.01703, abs=5e-5)
    # nothing folded back: the power is exactly the original's power below 400 Hz ...
    band_limited = original.copy()
    band_limited[800:] = 0
    band_rms = math.sqrt(float(np.mean(np.fft.irfft(band_limited, 24000) ** 2)))
    rms = math.sqrt(float(np.mean(y ** 2)))
    assert rms == pytest.approx(band_rms, rel=1e-9)
    # ... whereas taking every 15th sample (no anti-alias filter) folds 6 kHz of content into it
    naive_rms = math.sqrt(float(np.mean(raw[::15] ** 2)))
    assert naive_rms > 3 * rms


@pytest.mark.parametrize("rate", [100, 400, 1600, 3200])
def test_recording_loop_length_follows_the_rate(rate):
    source = signals.recording(CWRU_97, rate)
    assert len(source.samples) == 2 * rate
    assert source(0.5)[0] == pytest.approx(source(2.5)[0])


def test_resample_periodic_is_exact_for_a_band_limited_tone():
    n = 1200
    t = np.arange(n) / 12000
    x = np.sin(2 * np.pi * 250 * t) + 0.3 * np.sin(2 * np.pi * 5000 * t)  # 5 kHz must vanish at 800 Hz
    y = signals.resample_periodic(x, 12000, 800)
    ty = np.arange(len(y)) / 800
    assert np.allclose(y, np.sin(2 * np.pi * 250 * ty), atol=1e-9)
