# Fake `machine` for the MicroPython Unix port: tests and the demo's simulated boards.
# NEVER flashed (tools/flash.py skips firmware/fakes/). Put this directory first on
# MICROPYPATH and `import machine` finds it instead of the port's partial module.
#
# I2C  -> sim.adxl345.ADXL345Model (the chip model) on a minimal bus, driven by the
#         ticks clock; tests may pass a sim.i2c.FakeI2C with use_i2c(bus).
# UART -> replays a real NMEA log (FW_NMEA_LOG, or use_nmea(path)) at the baud rate.
# WDT, RTC, Pin, reset_cause, unique_id, reset: small stand-ins with the same API.

import os
import sys
import time

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_i2c_bus = None
_nmea_path = os.getenv("FW_NMEA_LOG") if hasattr(os, "getenv") else None


def _ticks_s():
    return time.ticks_ms() / 1000


def use_i2c(bus):
    """Make every machine.I2C/SoftI2C created from now on talk to `bus`."""
    global _i2c_bus
    _i2c_bus = bus


def use_nmea(path):
    """Make machine.UART replay this NMEA log."""
    global _nmea_path
    _nmea_path = path


class _Vibration:
    """A light signal source (sim.signals costs ~7 KB of a 100 KB heap): 1 g on z plus
    a 0.2 g 50 Hz tone on x and 0.1 g 120 Hz on y. FW_SIGNAL=synthetic uses
    sim.signals.synthetic() instead."""

    def __call__(self, t):
        import math
        return (0.2 * math.sin(314.159 * t), 0.1 * math.sin(753.98 * t), 1.0)


class _ChipBus:
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

    def readfrom_mem(self, addr, memaddr, n):
        b = bytearray(n)
        self.readfrom_mem_into(addr, memaddr, b)
        return bytes(b)

    def writeto_mem(self, addr, memaddr, buf):
        self._check(addr)
        self.chip.write_register(memaddr, bytes(buf))


def _default_bus():
    from sim.adxl345 import ADXL345Model
    if (os.getenv("FW_SIGNAL") if hasattr(os, "getenv") else None) == "synthetic":
        from sim import signals
        source = signals.synthetic()
    else:
        source = _Vibration()
    return _ChipBus(ADXL345Model(source, clock=_ticks_s))


class I2C:
    """machine.I2C over the simulated bus (readfrom_mem_into/writeto_mem/scan)."""

    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        global _i2c_bus
        if _i2c_bus is None:
            _i2c_bus = _default_bus()
        self._bus = _i2c_bus
        self.freq = freq

    def scan(self):
        return self._bus.scan()

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self._bus.readfrom_mem_into(addr, memaddr, buf)

    def readfrom_mem(self, addr, memaddr, n, addrsize=8):
        return self._bus.readfrom_mem(addr, memaddr, n)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._bus.writeto_mem(addr, memaddr, buf)


SoftI2C = I2C


class UART:
    """machine.UART replaying an NMEA log at baudrate/10 bytes per second, looping."""

    def __init__(self, id=2, baudrate=9600, tx=None, rx=None, rxbuf=512, timeout=0):
        self._f = open(_nmea_path, "rb") if _nmea_path else None
        self._bps = baudrate // 10
        self._t0 = time.ticks_ms()
        self._sent = 0
        self.rxbuf = rxbuf

    def _due(self):
        due = time.ticks_diff(time.ticks_ms(), self._t0) * self._bps // 1000 - self._sent
        return min(due, self.rxbuf) if self._f else 0

    def any(self):
        return self._due()

    def read(self, n=-1):
        due = self._due()
        if n is not None and n >= 0:
            due = min(due, n)
        if due <= 0:
            return None
        data = self._f.read(due)
        if len(data) < due:  # end of log: start again
            self._f.seek(0)
            data += self._f.read(due - len(data))
        self._sent += len(data)
        return data

    def write(self, buf):
        return len(buf)


class Pin:
    """machine.Pin: stores its value; irq() handlers can be fired with _fire()."""
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=IN, pull=None, value=None):
        self.id = id
        self._value = value or 0
        self._handler = None

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = 1 if v else 0

    def on(self):
        self._value = 1

    def off(self):
        self._value = 0

    def irq(self, handler=None, trigger=IRQ_RISING):
        self._handler = handler

    def _fire(self):
        if self._handler:
            self._handler(self)


class WDT:
    """machine.WDT: cannot be stopped; the fake records feeds and can check expiry."""
    last = None

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        self._last = time.ticks_ms()
        WDT.last = self

    def feed(self):
        self.feeds += 1
        self._last = time.ticks_ms()

    def expired(self):
        return time.ticks_diff(time.ticks_ms(), self._last) > self.timeout


class RTC:
    """machine.RTC: datetime() get/set as (y, m, d, wd, h, mi, s, us), kept in a class attribute."""
    _offset_ms = None  # wall clock ms at ticks 0, once set

    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is None:
            t = time.time() if RTC._offset_ms is None else (RTC._offset_ms + time.ticks_ms()) // 1000
            y, m, d, hh, mm, ss, wd, yd = time.gmtime(t)[:8]
            return (y, m, d, wd, hh, mm, ss, 0)
        y, m, d, wd, hh, mm, ss, us = dt
        secs = time.mktime((y, m, d, hh, mm, ss, 0, 0))
        RTC._offset_ms = secs * 1000 + us // 1000 - time.ticks_ms()


def reset_cause():
    """FW_RESET_CAUSE (an int) or PWRON_RESET."""
    v = os.getenv("FW_RESET_CAUSE") if hasattr(os, "getenv") else None
    return int(v) if v else PWRON_RESET


def unique_id():
    return b"\x24\x6f\x28\x00\x00\x01"


def freq(hz=None):
    return 240000000


def reset():
    """The board resets: the simulated process exits with status 75 (a runner restarts it)."""
    print("machine.reset()")
    sys.exit(75)


soft_reset = reset


def idle():
    time.sleep_ms(1)


def lightsleep(ms=0):
    time.sleep_ms(ms)
