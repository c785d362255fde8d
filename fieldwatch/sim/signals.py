"""Acceleration signal sources (in g) for the simulated ADXL345.

A source is a callable returning ``(x, y, z)`` in g. By default it is called with the
sample time in seconds; a source with a true ``by_index`` attribute is called with the
running sample index instead (see ``sim.adxl345``).

- ``synthetic(...)``: pump-bearing-like vibration, a sum of sines plus Gaussian noise,
  deterministic for a given seed and call sequence. Common subset of CPython and MicroPython.
- ``recording(path, rate_hz, ...)``: a real CWRU bearing recording (``tests/data/vibration``)
  resampled, anti-aliased, to the chip's output data rate and looped. Needs numpy, so it
  is CPython only.
- ``counter(...)``: every sample carries its own index, so tests can prove that no sample
  is lost or read twice. ``constant(x, y, z)``: a fixed acceleration.
"""

import math

# Pump bearing defaults: drive-end shaft of the CWRU rig at 1797 rpm, SKF 6205 BPFI.
SHAFT_HZ = 29.95  # 1797 rpm / 60
BPFI_HZ = 162.19  # ball pass frequency, inner race: 5.4152 x shaft
G_TO_COUNTS_FULL_RES = 256  # ADXL345 full resolution: 256 LSB/g (3.9 mg/LSB)


class _Gaussian:
    """Standard normal deviates from a 31-bit LCG and Box-Muller (same on every interpreter)."""

    def __init__(self, seed):
        self._state = (seed & 0x7FFFFFFF) or 1
        self._spare = None

    def _uniform(self):
        """Uniform deviate in (0, 1)."""
        self._state = (self._state * 1103515245 + 12345) & 0x7FFFFFFF
        return (self._state + 1) / 2147483649.0

    def normal(self):
        """One standard normal deviate."""
        if self._spare is not None:
            value = self._spare
            self._spare = None
            return value
        radius = math.sqrt(-2.0 * math.log(self._uniform()))
        angle = 2.0 * math.pi * self._uniform()
        self._spare = radius * math.sin(angle)
        return radius * math.cos(angle)


class Synthetic:
    """Sum of sines on one axis (and a fraction on the next), gravity, Gaussian noise."""

    by_index = False

    def __init__(self, tones, noise_g, axis, cross_axis, gravity_g, gravity_axis, seed):
        self.tones = tones  # list of (frequency Hz, amplitude g, phase rad)
        self.noise_g = noise_g
        self.axis = axis
        self.cross_axis = cross_axis
        self.gravity_g = gravity_g
        self.gravity_axis = gravity_axis
        self._noise = _Gaussian(seed)

    def vibration(self, t):
        """The noiseless vibration in g at time t (seconds), before axis placement."""
        total = 0.0
        two_pi_t = 2.0 * math.pi * t
        for freq, amplitude, phase in self.tones:
            total += amplitude * math.sin(two_pi_t * freq + phase)
        return total

    def __call__(self, t):
        """Acceleration (x, y, z) in g at time t (seconds)."""
        v = self.vibration(t)
        out = [0.0, 0.0, 0.0]
        out[self.axis] += v
        out[(self.axis + 1) % 3] += self.cross_axis * v
        out[self.gravity_axis] += self.gravity_g
        if self.noise_g:
            for i in range(3):
                out[i] += self.noise_g * self._noise.normal()
        return out[0], out[1], out[2]


def synthetic(shaft_hz=SHAFT_HZ, harmonics_g=(0.05, 0.02, 0.01), bearing_hz=BPFI_HZ,
              bearing_g=0.03, noise_g=0.005, axis=0, cross_axis=0.3, gravity_g=1.0,
              gravity_axis=2, seed=1, tones=None):
    """Pump-bearing-like source: shaft harmonics + bearing tone + noise, in g, for time t.

    harmonics_g[i] is the amplitude of (i + 1) x shaft_hz; bearing_g is the amplitude at
    bearing_hz; tones, if given, replaces both with a list of (Hz, g) pairs. The vibration
    is on `axis` with `cross_axis` of it on the next axis; gravity_g is on gravity_axis;
    noise_g is the standard deviation of white noise on every axis. Phases and noise are
    fixed by `seed`.
    """
    phase_source = _Gaussian(seed + 7919)
    if tones is None:
        tones = []
        for i in range(len(harmonics_g)):
            tones.append(((i + 1) * shaft_hz, harmonics_g[i]))
        if bearing_g:
            tones.append((bearing_hz, bearing_g))
    with_phase = []
    for freq, amplitude in tones:
        with_phase.append((freq, amplitude, 2.0 * math.pi * phase_source._uniform()))
    return Synthetic(with_phase, noise_g, axis, cross_axis, gravity_g, gravity_axis, seed)


class Constant:
    """A fixed acceleration in g."""

    by_index = False

    def __init__(self, x, y, z):
        self.value = (x, y, z)

    def __call__(self, t):
        """The fixed (x, y, z) in g, whatever t."""
        return self.value


def constant(x=0.0, y=0.0, z=1.0):
    """Source that always returns (x, y, z) g (default: at rest, z up)."""
    return Constant(x, y, z)


class Counter:
    """Sample n reads as counts (n % m - m/2, n // m % m - m/2, 1 g): each sample identifiable."""

    by_index = True

    def __init__(self, modulus, z_g):
        self.modulus = modulus
        self.half = modulus // 2
        self.z_g = z_g

    def __call__(self, n):
        """Acceleration in g for sample index n; exact multiples of 1/256 g (one count)."""
        m = self.modulus
        x = (n % m - self.half) / G_TO_COUNTS_FULL_RES
        y = ((n // m) % m - self.half) / G_TO_COUNTS_FULL_RES
        return x, y, self.z_g

    def index_of(self, x_counts, y_counts):
        """Sample index encoded by full-resolution counts (valid for n < modulus**2)."""
        return (int(y_counts) + self.half) * self.modulus + (int(x_counts) + self.half)


def counter(modulus=1000, z_g=1.0):
    """Source whose x, y counts (full resolution, 256 LSB/g) encode the sample index.

    With the default modulus 1000 the counts stay within +/-500, inside even the
    +/-2 g full-resolution range, and indices up to 999,999 are unique.
    """
    return Counter(modulus, z_g)


# --------------------------------------------------------------------------
# Real recordings (CPython + numpy only)
# --------------------------------------------------------------------------
_CSV_CACHE = {}


def load_csv(path):
    """The samples of a one-column CSV recording (header line, then g values) as float64."""
    import numpy as np

    key = str(path)
    if key not in _CSV_CACHE:
        # float32 as written, then float64 arithmetic (how the README figures were computed)
        _CSV_CACHE[key] = np.loadtxt(key, skiprows=1, dtype=np.float32).astype(np.float64)
    return _CSV_CACHE[key]


def resample_periodic(x, rate_in_hz, rate_out_hz):
    """Resample one loop of a periodic signal by FFT: band-limited, no aliasing.

    Output length is round(len(x) * rate_out / rate_in). Bins at or above the lower
    Nyquist frequency are dropped, so downsampling keeps exactly the content below
    rate_out / 2 and nothing folds back. Because the recording is played as a loop,
    treating it as periodic is exactly right (no edge effects at the loop point).
    """
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    n_in = len(x)
    n_out = max(1, int(round(n_in * rate_out_hz / rate_in_hz)))
    if n_out == n_in:
        return x.copy()
    spectrum = np.fft.rfft(x)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    n_min = min(n_in, n_out)
    keep = min(len(spectrum), len(out))
    out[:keep] = spectrum[:keep]
    if n_min % 2 == 0:
        out[n_min // 2] = 0.0  # the Nyquist bin of the shorter signal is ambiguous: drop it
    return np.fft.irfft(out, n_out) * (n_out / n_in)


class Recording:
    """A recording resampled to rate_hz and looped, on one axis, gravity on another."""

    def __init__(self, samples, rate_hz, axis, gravity_g, gravity_axis, by_index):
        self.samples = samples  # one loop at rate_hz, in g
        self.rate_hz = rate_hz
        self.axis = axis
        self.gravity_g = gravity_g
        self.gravity_axis = gravity_axis
        self.by_index = by_index

    def value(self, position):
        """Recording value in g at a fractional sample position (linear, looped)."""
        n = len(self.samples)
        nearest = round(position)
        if abs(position - nearest) < 1e-6:
            return float(self.samples[int(nearest) % n])
        low = math.floor(position)
        frac = position - low
        a = self.samples[int(low) % n]
        b = self.samples[(int(low) + 1) % n]
        return float(a + (b - a) * frac)

    def __call__(self, t_or_index):
        """Acceleration (x, y, z) in g at time t in seconds (or at a sample index if by_index)."""
        position = t_or_index if self.by_index else t_or_index * self.rate_hz
        out = [0.0, 0.0, 0.0]
        out[self.axis] += self.value(position)
        out[self.gravity_axis] += self.gravity_g
        return out[0], out[1], out[2]


def recording(path, rate_hz, axis=0, gravity_g=1.0, gravity_axis=2, source_rate_hz=12000.0,
              by_index=False):
    """Real recording (CSV in g at source_rate_hz) resampled to rate_hz and looped.

    Set rate_hz to the chip's output data rate: the chip then sees sample k of the loop
    at its k-th sample time. At other times the value is linearly interpolated.
    If rate_hz does not divide the loop into a whole number of samples the loop length
    is rounded, which changes the time scale by less than one sample per loop.
    """
    raw = load_csv(path)
    samples = resample_periodic(raw, source_rate_hz, rate_hz)
    return Recording(samples, float(rate_hz), axis, gravity_g, gravity_axis, by_index)
