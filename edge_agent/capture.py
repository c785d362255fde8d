"""Waveform capture: n raw samples per axis, contiguous, as one `wave` record (docs/wire.md, "wave").

A capture starts on a schedule (wave.every_s), on a button press or on the `capture`
command, and takes the next n samples of the stream from the chunks the main loop
feeds it. Lost samples (an overrun) start it over: a block is always contiguous.
The block keeps the raw int16 counts with their scale, like the chip delivers them.
"""

import numpy as np

from fieldwatch.wire import codec


class WaveCapture:
    """One waveform block under way: feed() it chunks until it is complete."""

    def __init__(self, n, cmd, rate_hz, scale_g, range_g):
        """n samples per axis; cmd: the id of the capture command to answer (None: none); rate Hz, g/count, +/- g."""
        self.n = n
        self.cmd = cmd
        self.rate_hz = rate_hz
        self.scale_g = scale_g
        self.range_g = range_g if range_g in codec.ADXL_RANGES_G else 0   # 0: unknown (wire contract)
        self.t0 = None            # time.monotonic() of the first sample
        self._chunks = []
        self._have = 0

    def restart(self):
        """Samples were lost: start the block over with the next chunk."""
        self._chunks, self._have, self.t0 = [], 0, None

    def feed(self, counts, first_t):
        """Take the samples still needed from (n, 3) counts whose first sample is at first_t; True when complete."""
        if self.t0 is None:
            self.t0 = first_t
        take = counts[:self.n - self._have]
        self._chunks.append(take)
        self._have += len(take)
        return self._have >= self.n

    def encoder(self, dev, ms, tq):
        """The complete block as encode(boot, seq) -> wave message bytes, for Outbox.enqueue."""
        block = np.ascontiguousarray(np.concatenate(self._chunks), dtype="<i2")
        rate, scale, range_g, n = self.rate_hz, self.scale_g, self.range_g, self.n

        def encode(boot, seq):
            return codec.encode_wave(dev, boot, seq, ms, tq, rate, scale, range_g, 3, n, block.tobytes())
        return encode
