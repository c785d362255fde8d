"""Waveform capture (edge_agent/capture.py): contiguous blocks of raw counts, as wave records."""

import numpy as np

from edge_agent.capture import WaveCapture
from fieldwatch.wire import codec, topics


def counts(first, n):
    i = np.arange(first, first + n, dtype=np.int16)
    return np.stack([i, -i, np.full(n, 256, dtype=np.int16)], axis=1)


def test_capture_takes_n_samples_across_chunks_and_encodes_a_wave_record():
    c = WaveCapture(20, "cap-1", 800.0, 1 / 256, 4)
    assert not c.feed(counts(0, 16), 5.0)
    assert c.feed(counts(16, 16), 5.02)             # 4 of these complete it; the rest are not taken
    assert c.t0 == 5.0
    payload = c.encoder("pump-07", 1751327990000, "ntp")(3, 41)
    d = codec.decode(topics.topic("pump-07", "wave"), payload)
    assert (d["boot"], d["seq"], d["n"], d["axes"], d["range_g"], d["rate_hz"]) == (3, 41, 20, 3, 4, 800)
    samples = np.frombuffer(d["samples"], dtype="<i2").reshape(20, 3)
    assert samples.tolist() == counts(0, 20).tolist()


def test_capture_restart_after_lost_samples_keeps_the_block_contiguous():
    c = WaveCapture(8, None, 100.0, 1 / 256, 16)
    c.feed(counts(0, 5), 1.0)
    c.restart()
    assert not c.feed(counts(50, 5), 2.0)
    assert c.feed(counts(55, 5), 2.05) and c.t0 == 2.0
    d = codec.decode(topics.topic("pump-07", "wave"), c.encoder("pump-07", 1751327990000, "ntp")(1, 0))
    assert np.frombuffer(d["samples"], dtype="<i2").reshape(8, 3)[:, 0].tolist() == list(range(50, 58))


def test_capture_unknown_range_goes_on_the_wire_as_zero():
    assert WaveCapture(16, None, 100.0, 1 / 256, 3).range_g == 0
