"""Windowing: FIFO chunks of counts in, feature windows of a fixed length out (pure, no I/O).

The sampler delivers counts in chunks of whatever the FIFO held (about 16 samples);
a feature window is `features.window_ms` of samples (800 at 800 Hz and 1000 ms).
Windowing joins the chunks and cuts them into windows, each stamped with the
monotonic time of its first sample:

* Sample clock. A chunk read at t_read holding n samples began (n - 1) / rate
  earlier. Consecutive chunks continue the previous one's sample clock (the read
  times jitter by milliseconds, the chip's clock does not) unless the two disagree
  by more than `snap_s`: then the clock is re-anchored on the read time.
* Overruns. A chunk marked overrun (or a failed read, counts None) follows lost
  samples. The window under way then cannot be completed without spanning the
  gap: it is handed out cut short, as it is, with `overrun` set, and the next
  window starts at the chunk after the gap with a fresh sample clock. Whether a
  marked window is used is the caller's policy (the agent discards it).

Counts stay int16 counts here; the scale to g is the accelerometer's (accel.py).
"""

import collections

import numpy as np

# A window: t0 (time.monotonic() of its first sample), counts ((n, 3) int16) and
# overrun (True: cut short by lost samples, n below the window length).
Window = collections.namedtuple("Window", "t0 counts overrun")


def window_length(rate_hz, window_ms):
    """Samples in a window of window_ms at rate_hz (at least 1)."""
    return max(1, int(round(rate_hz * window_ms / 1000.0)))


class Windowing:
    """Cuts a stream of counts at rate_hz into windows of window_length(rate_hz, window_ms) samples."""

    def __init__(self, rate_hz, window_ms, snap_s):
        """snap_s: largest disagreement (s) between sample clock and read time that is still jitter."""
        self.rate_hz = float(rate_hz)
        self.window_n = window_length(self.rate_hz, window_ms)
        self.snap_s = snap_s
        self._period = 1.0 / self.rate_hz
        self._buf = []          # chunks of counts toward the next window
        self._n = 0             # samples in _buf
        self._t0 = None         # monotonic time of the first sample in _buf (carried on across windows)
        self._next_t = None     # monotonic time expected for the next chunk's first sample

    @property
    def pending(self):
        """Samples held toward the next window (a partial window)."""
        return self._n

    def add(self, counts, t_read, overrun=False):
        """Take one chunk: (monotonic time of its first sample, or None if it has none; [Window]).

        counts: (n, 3) counts, or None for a failed read (samples lost); t_read: when it
        was read (time.monotonic()); overrun: samples were lost before these.
        """
        windows = []
        if counts is None or overrun:
            # A window must not straddle the gap: the one under way is handed out marked.
            if self._n:
                windows.append(Window(self._t0, self._joined(), True))
            self._buf, self._n, self._t0, self._next_t = [], 0, None, None
            if counts is None or not len(counts):
                return None, windows
        n = len(counts)
        first_t = t_read - (n - 1) * self._period
        if self._next_t is not None and abs(self._next_t - first_t) < self.snap_s:
            first_t = self._next_t      # keep the sample clock continuous; re-anchor on drift
        self._next_t = first_t + n * self._period
        counts = np.asarray(counts, dtype=np.int16).reshape(n, 3)
        if self._t0 is None:
            self._t0 = first_t
        self._buf.append(counts)
        self._n += n
        while self._n >= self.window_n:
            block = self._joined()
            win, rest = block[:self.window_n], block[self.window_n:]
            windows.append(Window(self._t0, win, False))
            self._t0 += self.window_n * self._period
            self._buf = [rest] if len(rest) else []
            self._n = len(rest)
        return first_t, windows

    def _joined(self):
        return np.concatenate(self._buf) if len(self._buf) > 1 else self._buf[0]
