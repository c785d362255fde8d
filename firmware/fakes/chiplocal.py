# The simulated ADXL345 inside the device process (tests and boards without a chip
# host): sim.adxl345.ADXL345Model on the smallest bus that serves it. NEVER flashed.
#
# Costs ~25 KB of the MicroPython heap (the model's code and its FIFO), which a real
# ESP32 does not spend: the real chip keeps its FIFO in its own silicon. Boards that
# run the whole application therefore use a chip host instead (FW_I2C, see
# machine.py and tools/sim_board.py); module-level tests use this in-process model.

import os
import time


class Vibration:
    """A light signal source (sim.signals costs ~7 KB): 1 g on z plus a 0.2 g 50 Hz
    tone on x and 0.1 g 120 Hz on y. FW_SIGNAL=synthetic uses sim.signals instead."""

    def __call__(self, t):
        import math
        return (0.2 * math.sin(314.159 * t), 0.1 * math.sin(753.98 * t), 1.0)


class ChipBus:
    """The smallest bus that serves the register model (sim.i2c.FakeI2C costs ~6 KB)."""

    def __init__(self, chip, address=0x53):
        self.chip = chip
        self.address = address

    def _check(self, addr):
        if addr != self.address:
            raise OSError(19)  # ENODEV: nobody ACKs

    def scan(self):
        return [self.address]

    def readfrom_mem_into(self, addr, memaddr, buf):
        self._check(addr)
        self.chip.read_into(memaddr, buf)

    def writeto_mem(self, addr, memaddr, buf):
        self._check(addr)
        self.chip.write_register(memaddr, bytes(buf))


def bus():
    """A ChipBus holding a fresh model, clocked by time.ticks_ms()."""
    from fieldwatch.sim.adxl345 import ADXL345Model
    if os.getenv("FW_SIGNAL") == "synthetic":
        from fieldwatch.sim import signals
        source = signals.synthetic()
    else:
        source = Vibration()
    return ChipBus(ADXL345Model(source, clock=lambda: time.ticks_ms() / 1000))
