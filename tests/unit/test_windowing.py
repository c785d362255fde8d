"""Windowing (edge_agent/windowing.py): chunks of counts in, windows out, overruns marked.

A counter signal (sample i has x = i) makes every sample identifiable, so the tests
see exactly which samples each window holds and where the sample clock puts it.
"""

import numpy as np
import pytest

from edge_agent.windowing import Windowing, window_length

RATE = 100.0                  # Hz: a sample every 10 ms
PERIOD = 1.0 / RATE


def counts(first, n):
    """n samples numbered from first: x = index, y = -index, z = 256."""
    i = np.arange(first, first + n, dtype=np.int16)
    return np.stack([i, -i, np.full(n, 256, dtype=np.int16)], axis=1)


def feed(w, sizes, t_start=10.0, first=0):
    """Feed chunks of the given sizes, each read just after its last sample; returns every window."""
    out = []
    for n in sizes:
        t_read = t_start + (first + n - 1) * PERIOD
        _, windows = w.add(counts(first, n), t_read)
        out += windows
        first += n
    return out


def test_windowing_window_length_rounds_and_is_never_zero():
    assert window_length(800, 1000) == 800
    assert window_length(800, 50) == 40
    assert window_length(12.5, 1000) == 12 and window_length(6.25, 10) == 1


def test_windowing_windows_span_chunk_boundaries_without_losing_a_sample():
    w = Windowing(RATE, 100, snap_s=0.05)           # 10 samples per window
    windows = feed(w, [7, 7, 7, 7, 7, 7])           # 42 samples: 4 windows, 2 left over
    assert [len(x.counts) for x in windows] == [10, 10, 10, 10]
    assert [list(x.counts[:, 0]) for x in windows] == [list(range(k, k + 10)) for k in (0, 10, 20, 30)]
    assert not any(x.overrun for x in windows)
    assert w.pending == 2
    # Each window starts where the previous one ended on the sample clock.
    assert [x.t0 for x in windows] == pytest.approx([10.0 + k * PERIOD for k in (0, 10, 20, 30)])
    more = feed(w, [8], first=42)                    # completes the fifth: samples 40..49
    assert list(more[0].counts[:, 0]) == list(range(40, 50)) and more[0].t0 == pytest.approx(10.4)


def test_windowing_chunk_larger_than_a_window_gives_several():
    w = Windowing(RATE, 50, snap_s=0.05)            # 5 samples per window
    first_t, windows = w.add(counts(0, 16), 10.15)
    assert first_t == pytest.approx(10.0)
    assert [list(x.counts[:, 0]) for x in windows] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    assert w.pending == 1


def test_windowing_overrun_marks_the_window_under_way_and_starts_afresh():
    w = Windowing(RATE, 100, snap_s=0.05)
    assert feed(w, [6]) == []
    # Samples 6..19 are lost; the chunk after the gap holds 20..27, read at its last sample.
    first_t, windows = w.add(counts(20, 8), 10.0 + 27 * PERIOD, overrun=True)
    assert len(windows) == 1
    cut = windows[0]
    assert cut.overrun and list(cut.counts[:, 0]) == list(range(6)) and cut.t0 == pytest.approx(10.0)
    assert first_t == pytest.approx(10.2) and w.pending == 8
    # The next window starts at the first sample after the gap, on a fresh sample clock.
    _, windows = w.add(counts(28, 4), 10.0 + 31 * PERIOD)
    assert [(list(x.counts[:, 0]), x.overrun) for x in windows] == [(list(range(20, 30)), False)]
    assert windows[0].t0 == pytest.approx(10.2)


def test_windowing_overrun_with_nothing_pending_marks_nothing():
    w = Windowing(RATE, 100, snap_s=0.05)
    feed(w, [10])                                    # exactly one window, nothing pending
    _, windows = w.add(counts(30, 4), 11.0, overrun=True)
    assert windows == [] and w.pending == 4


def test_windowing_failed_read_marks_the_window_and_holds_no_time():
    w = Windowing(RATE, 100, snap_s=0.05)
    feed(w, [4])
    first_t, windows = w.add(None, 10.5, overrun=True)
    assert first_t is None and len(windows) == 1 and windows[0].overrun and len(windows[0].counts) == 4
    assert w.pending == 0
    first_t, windows = w.add(counts(60, 3), 12.0)   # re-anchored on the read time
    assert first_t == pytest.approx(12.0 - 2 * PERIOD) and windows == []


def test_windowing_sample_clock_ignores_read_jitter_and_reanchors_on_drift():
    w = Windowing(RATE, 1000, snap_s=0.05)
    t1, _ = w.add(counts(0, 10), 10.09)
    t2, _ = w.add(counts(10, 10), 10.19 + 0.03)      # read 30 ms late: still the chip's clock
    assert (t1, t2) == pytest.approx((10.0, 10.1))
    t3, _ = w.add(counts(20, 10), 10.29 + 0.2)       # 200 ms off: believe the read time
    assert t3 == pytest.approx(10.29 + 0.2 - 9 * PERIOD)


def test_windowing_accepts_plain_lists_of_counts():
    w = Windowing(RATE, 20, snap_s=0.05)             # 2 samples per window
    _, windows = w.add([[1, 2, 3], [4, 5, 6]], 1.0)
    assert windows[0].counts.dtype == np.int16 and windows[0].counts.tolist() == [[1, 2, 3], [4, 5, 6]]
