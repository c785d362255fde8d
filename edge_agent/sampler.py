"""The sampler thread: reads the accelerometer's FIFO every poll interval and queues the counts.

A FIFO of 32 samples lasts 40 ms at 800 Hz (20 ms at 1600 Hz), and the main loop may
block longer than that in an fsync, so reading has a thread of its own. It does as
little as it can: under the accelerometer lock it reads the FIFO and notes the time;
outside it, it copies the counts (the driver reuses its buffer) and queues a Chunk.
Everything else (windows, features, waveform blocks) is the main thread's.

The lock is the sensor's: commands reconfigure the chip through reconfigure(),
between two reads. Each reconfiguration bumps `epoch`, so chunks read before a
rate or range change are recognised and never mixed with later ones.
"""

import collections
import logging
import queue
import threading
import time

import numpy as np

log = logging.getLogger("edge_agent.sampler")

# One FIFO read: t_read (time.monotonic() just after it), counts ((n, 3) int16, or None
# when the read failed: samples may be lost), overrun (samples were lost before these),
# epoch (the sensor configuration they were read under).
Chunk = collections.namedtuple("Chunk", "t_read counts overrun epoch")


FIFO_DEPTH = 32   # samples the ADXL345's FIFO holds


def poll_interval_s(rate_hz, poll_ms):
    """Seconds between FIFO reads at rate_hz: when the FIFO is half full, and at most poll_ms."""
    # The other half (10 ms at 1600 Hz) is the room for a late wake-up. At 60 % (12 ms at
    # 1600 Hz) a loaded 2-core machine overran 3-29 times in 20 s, at 50 % twice (docs/agent.md).
    return min(poll_ms / 1000.0, 0.5 * FIFO_DEPTH / float(rate_hz))


class Sampler(threading.Thread):
    """Reads the FIFO every poll_s seconds; queues Chunks in `chunks` (a queue.SimpleQueue)."""

    def __init__(self, accel, lock, poll_s):
        """accel: an accel.AccelerometerInterface, opened; lock: held for each read; poll_s: s between reads."""
        super().__init__(name="sampler", daemon=True)
        self.accel = accel
        self.lock = lock
        self.poll_s = poll_s
        self.chunks = queue.SimpleQueue()
        self.paused = threading.Event()
        self.read_errors = 0
        self.epoch = 0
        self._halt = threading.Event()

    def stop(self):
        """End the thread (after its current read)."""
        self._halt.set()
        self.join(5)

    def reconfigure(self, change, *args):
        """Call change(*args) (e.g. accel.set_rate) between two reads; what was read before is stale."""
        with self.lock:
            try:
                return change(*args)
            finally:
                self.epoch += 1

    def close_sensor(self):
        """Close the accelerometer (after stop(); no read is under way)."""
        with self.lock:
            self.accel.close()

    def run(self):
        # Start with an empty FIFO: what queued up since open() (the agent's start-up takes longer
        # than a FIFO lasts at high rates) would show as an overrun that loses nothing of ours.
        try:
            with self.lock:
                self.accel.flush()
        except Exception as e:  # I2C trouble: the first read will say so
            log.warning("could not empty the FIFO before sampling: %s", e)
        next_t = time.monotonic()
        while not self._halt.is_set():
            if not self.paused.is_set():
                self._read()
            next_t += self.poll_s
            delay = next_t - time.monotonic()
            if delay < -self.poll_s:   # fell behind (a long stall): do not try to catch up
                next_t = time.monotonic()
                delay = 0
            self._halt.wait(max(0.0, delay))

    def _read(self):
        # One poll: the lock covers the FIFO read only.
        try:
            with self.lock:
                counts, overrun = self.accel.read_fifo()
                t = time.monotonic()
                epoch = self.epoch
            # read_fifo returns a view of a buffer the next read reuses: copy it (only this
            # thread reads, so the buffer is unchanged until then).
            counts = np.array(counts, dtype=np.int16).reshape(-1, 3)
            if len(counts) or overrun:
                self.chunks.put(Chunk(t, counts, bool(overrun), epoch))
        except Exception as e:  # I2C trouble: counted by the driver; keep sampling
            self.read_errors += 1
            if self.read_errors in (1, 10, 100) or self.read_errors % 1000 == 0:
                log.warning("FIFO read failed (%d so far): %s", self.read_errors, e)
            self.chunks.put(Chunk(time.monotonic(), None, True, self.epoch))
