"""Vibration features of one window of accelerometer samples (pure numpy, no I/O).

Per axis, over a window of n samples at rate_hz (values in g):

* rms    sqrt(mean(x^2)), DC (gravity) included
* peak   max |x|
* crest  peak / rms (0 for an all-zero window)
* dom_hz frequency of the largest spectral peak above 0 Hz: mean removed, Hann
         window, |rfft|, the largest bin with f > 0 (optionally only f < max_hz)
* bands  mean-square acceleration per band, g^2: the one-sided power spectrum of
         the samples as they are (rectangular window, DC in the first band) summed
         over the bins of each band [lo, hi); the last band also takes its upper edge
         (the Nyquist bin). By Parseval the bands of a set of edges from 0 to rate/2
         sum to rms^2 exactly.

The wire contract (docs/wire.md, "features") carries these per axis in a feature
window; window_record() builds that dict.

DC. The wire contract (docs/wire.md, "features") defines rms and peak with the
mean (gravity) removed; the reference figures in tests/data/vibration/README.md
are computed with DC included. The functions here take remove_dc as a required
keyword, so there is one default only: the agent's setting features.remove_dc
(edge_agent/config.py), True as the contract defines it, because every device in
the fleet must mean the same by x_rms.

Written twice: firmware/features.py computes them in pure Python, because MicroPython
has no numpy. The two still differ in dom_hz (the firmware looks at the first 256
samples without a window) until issue 12 pins both to one definition with shared
golden vectors.
"""

import numpy as np

DEFAULT_EDGES_HZ = (0, 10, 50, 100, 200, 400)


def band_edges(rate_hz, edges=DEFAULT_EDGES_HZ):
    """Band edges for a sample rate: the given edges below rate/2, then rate/2 (the Nyquist frequency)."""
    nyquist = rate_hz / 2.0
    out = [float(e) for e in edges if 0 <= e < nyquist]
    if not out or out[0] != 0.0:
        out.insert(0, 0.0)
    out.append(nyquist)
    return out


def rms(x):
    """Root mean square of x (DC included)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.mean(x * x)))


def dominant_hz(x, rate_hz, max_hz=None):
    """Frequency (Hz) of the largest Hann-windowed spectral bin above 0 Hz (and below max_hz)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        return 0.0
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(n)))
    freqs = np.fft.rfftfreq(n, 1.0 / rate_hz)
    usable = freqs > 0
    if max_hz is not None:
        usable &= freqs < max_hz
    if not usable.any():
        return 0.0
    idx = np.flatnonzero(usable)
    best = idx[np.argmax(spectrum[idx])]
    if spectrum[best] == 0.0:
        return 0.0
    return float(freqs[best])


def band_energies(x, rate_hz, edges):
    """Mean-square acceleration (g^2) in each band [edges[j], edges[j+1]); the last band includes its top."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    X = np.fft.rfft(x)
    power = (np.abs(X) ** 2) / (n * n)
    power[1:] *= 2.0
    if n % 2 == 0:
        power[-1] /= 2.0  # the Nyquist bin has no mirror image
    freqs = np.fft.rfftfreq(n, 1.0 / rate_hz)
    out = []
    last = len(edges) - 2
    for j in range(len(edges) - 1):
        lo, hi = edges[j], edges[j + 1]
        sel = (freqs >= lo) & ((freqs <= hi) if j == last else (freqs < hi))
        out.append(float(power[sel].sum()))
    return out


def axis_features(x, rate_hz, edges=None, *, remove_dc):
    """{rms, peak, crest, dom_hz[, bands]} of one axis (g, Hz, g^2); remove_dc: subtract the mean first."""
    x = np.asarray(x, dtype=np.float64)
    if remove_dc:
        x = x - x.mean()
    r = rms(x)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    f = {"rms": r, "peak": peak, "crest": peak / r if r > 0 else 0.0, "dom_hz": dominant_hz(x, rate_hz)}
    if edges is not None:
        f["bands"] = band_energies(x, rate_hz, edges)
    return f


def window_record(samples_g, rate_hz, edges=None, axes=("x", "y", "z"), *, remove_dc):
    """A feature-window record body (wire contract, without dt) for an (n, k) array of samples in g.

    edges: band edges in Hz (None: no bands; use band_edges() for the defaults);
    remove_dc: subtract each axis's mean first (the agent passes features.remove_dc).
    """
    a = np.asarray(samples_g, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    n = a.shape[0]
    if n < 1:
        raise ValueError("a window needs at least one sample")
    rec = {"len_ms": max(1, int(round(n * 1000.0 / rate_hz))), "rate_hz": _plain(rate_hz), "n": int(n)}
    if edges is not None:
        rec["band_hz"] = [_plain(e) for e in edges]
    for i, ax in enumerate(axes[:a.shape[1]]):
        f = axis_features(a[:, i], rate_hz, edges, remove_dc=remove_dc)
        rec[ax] = {k: (_round(v) if k != "bands" else [_round(b) for b in v]) for k, v in f.items()}
    return rec


def _plain(v):
    # 800.0 -> 800, 6.25 -> 6.25: integers where exact, for compact JSON.
    v = float(v)
    return int(v) if v.is_integer() else v


def _round(v):
    # Seven significant digits: far below the sensor's resolution, a third of the JSON.
    return float("%.7g" % v)
