# Vibration features of one window of raw ADXL345 entries (little-endian int16 x, y, z).
#
# Per axis: RMS and peak of the signal with its mean (gravity, offset) removed,
# crest factor = peak / RMS, and the dominant frequency from a small FFT of the
# first _FFT_N samples. Computed once per window (not per sample): integer partial
# sums keep the squares in small-int range (|v| <= 4096 counts, 32 squares < 2^30),
# so the floats allocated here are a few per 32 samples; the FFT works in two float
# arrays allocated once (2 x 256 x 4 bytes).
#
# Written twice: edge_agent/features.py computes the same features with numpy, which
# MicroPython lacks. The two still differ in the dominant frequency (here the first
# _FFT_N samples without a window, there the whole window with a Hann window) until
# issue 12 pins both to one definition with shared golden vectors.

import math
from array import array

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_FFT_N = const(256)
_CHUNK = const(32)


def _zeros(n):
    # n float32 zeros without a temporary list of n items (2 KB for 256 on a 64-bit
    # port, the allocation that failed first in a 100 KB heap): MicroPython builds an
    # array from a buffer's raw bytes, CPython from its items (then the length is 4 n).
    a = array("f", bytearray(4 * n))
    return a if len(a) == n else array("f", [0.0] * n)


def _axis_value(buf, i):
    v = buf[i] | (buf[i + 1] << 8)
    return v - 65536 if v & 0x8000 else v


class Features:
    """features(buf, n, rate_hz, scale_g) -> {'x': {...}, 'y': {...}, 'z': {...}}."""

    def __init__(self, fft_n=_FFT_N):
        self.fft_n = fft_n
        self._re = _zeros(fft_n)
        self._im = _zeros(fft_n)

    def axis(self, buf, n, axis, rate_hz, scale_g):
        """Features of one axis (0 x, 1 y, 2 z) over n entries; values in g and Hz."""
        off = 2 * axis
        total = 0
        for k in range(n):
            total += _axis_value(buf, 6 * k + off)
        mean = total // n if n else 0
        sq = 0.0
        part = 0
        peak = 0
        for k in range(n):
            d = _axis_value(buf, 6 * k + off) - mean
            part += d * d
            if d > peak:
                peak = d
            elif -d > peak:
                peak = -d
            if k % _CHUNK == _CHUNK - 1:
                sq += part
                part = 0
        sq += part
        rms = math.sqrt(sq / n) * scale_g if n else 0.0
        pk = peak * scale_g
        return {"rms": rms, "peak": pk, "crest": pk / rms if rms > 0 else 0.0,
                "dom_hz": self._dominant(buf, n, off, mean, rate_hz)}

    def _dominant(self, buf, n, off, mean, rate_hz):
        m = self.fft_n
        if n < m:
            return 0.0
        re = self._re
        im = self._im
        for k in range(m):
            re[k] = _axis_value(buf, 6 * k + off) - mean
            im[k] = 0.0
        _fft(re, im, m)
        best = 1
        bestp = -1.0
        for k in range(1, m // 2):
            p = re[k] * re[k] + im[k] * im[k]
            if p > bestp:
                bestp = p
                best = k
        return best * rate_hz / m

    def window(self, buf, n, rate_hz, scale_g):
        """Features of all three axes."""
        return {"x": self.axis(buf, n, 0, rate_hz, scale_g),
                "y": self.axis(buf, n, 1, rate_hz, scale_g),
                "z": self.axis(buf, n, 2, rate_hz, scale_g)}


def _fft(re, im, n):
    # In-place iterative radix-2 FFT (n a power of two)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            re[i], re[j] = re[j], re[i]
            im[i], im[j] = im[j], im[i]
    size = 2
    while size <= n:
        ang = -2 * math.pi / size
        wr = math.cos(ang)
        wi = math.sin(ang)
        half = size // 2
        for start in range(0, n, size):
            cr = 1.0
            ci = 0.0
            for k in range(start, start + half):
                a = k + half
                tr = re[a] * cr - im[a] * ci
                ti = re[a] * ci + im[a] * cr
                re[a] = re[k] - tr
                im[a] = im[k] - ti
                re[k] += tr
                im[k] += ti
                cr, ci = cr * wr - ci * wi, cr * wi + ci * wr
        size <<= 1
