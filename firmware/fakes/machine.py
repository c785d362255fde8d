# Fake `machine` for the MicroPython Unix port: tests and the demo's simulated boards.
# NEVER flashed (tools/flash.py skips firmware/fakes/). Put this directory first on
# MICROPYPATH and `import machine` finds it instead of the port's partial module.
#
# I2C  -> the ADXL345 register model (sim.adxl345): in a chip host process when
#         FW_I2C=host:port is set (tools/sim_board.py; keeps the model out of the
#         device's heap), else in this process (chiplocal.py).
# UART -> replays a real NMEA log (FW_NMEA_LOG) at the baud rate.
# WDT, RTC, Pin, reset_cause, reset: small stand-ins with the same API.
#
# Memory: on a board `machine` is built in and costs no heap; this stand-in does
# (~5 KB on the 64-bit Unix port), so it holds only what the firmware calls.

import os
import sys
import time

_i2c_bus = None
_nmea_path = os.getenv("FW_NMEA_LOG")


class _ChipLink:
    """The I2C bus as a TCP link to a chip host (tools/sim_board.py, ChipHost) that
    holds the ADXL345 register model outside this process, as the real chip keeps
    its registers and FIFO in its own silicon, not in the ESP32's heap.

    One transaction: request op ('R'/'W'), 7-bit address, register, byte count
    (+ the bytes of a write); answer one status byte (0, or an errno such as 19
    ENODEV) and, for a good read, the bytes. Buffers are allocated once, so a read
    allocates nothing (the hot sampling loop stays allocation-free).
    """

    def __init__(self, addr):
        import socket
        host, port = addr.rsplit(":", 1)  # FW_I2C, "host:port"
        s = socket.socket()
        s.connect(socket.getaddrinfo(host, int(port))[0][-1])
        s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: one small packet per transaction
        self._s = s
        self._req = bytearray(4)
        self._st = bytearray(1)

    def _recv(self, buf):
        got = self._s.readinto(buf) or 0
        while got < len(buf):  # a short read (rare on loopback): finish it
            k = self._s.readinto(memoryview(buf)[got:])
            if not k:
                raise OSError(5)  # EIO: the chip host went away
            got += k

    def readfrom_mem_into(self, addr, memaddr, buf):
        r = self._req
        r[0] = 0x52  # 'R'
        r[1] = addr
        r[2] = memaddr
        r[3] = len(buf)
        self._s.write(r)
        self._recv(self._st)
        if self._st[0]:
            raise OSError(self._st[0])
        self._recv(buf)

    def writeto_mem(self, addr, memaddr, buf):
        r = self._req
        r[0] = 0x57  # 'W'
        r[1] = addr
        r[2] = memaddr
        r[3] = len(buf)
        self._s.write(r)
        self._s.write(buf)
        self._recv(self._st)
        if self._st[0]:
            raise OSError(self._st[0])


def I2C(id=0, scl=None, sda=None, freq=400000, timeout=50000):
    """machine.I2C: the simulated bus (readfrom_mem_into/writeto_mem), one per process."""
    global _i2c_bus
    if _i2c_bus is None:
        where = os.getenv("FW_I2C")
        if where:
            _i2c_bus = _ChipLink(where)
        else:
            import chiplocal
            _i2c_bus = chiplocal.bus()
    return _i2c_bus


class UART:
    """machine.UART replaying an NMEA log at baudrate/10 bytes per second, looping."""

    def __init__(self, id=2, baudrate=9600, tx=None, rx=None, rxbuf=512, timeout=0):
        self._f = open(_nmea_path, "rb") if _nmea_path else None
        self._bps = baudrate // 10
        self._t0 = time.ticks_ms()
        self._sent = 0
        self.rxbuf = rxbuf

    def any(self):
        due = time.ticks_diff(time.ticks_ms(), self._t0) * self._bps // 1000 - self._sent
        return min(due, self.rxbuf) if self._f else 0

    def read(self, n=-1):
        due = self.any()
        if 0 <= n < due:
            due = n
        if due <= 0:
            return None
        data = self._f.read(due)
        if len(data) < due:  # end of log: start again
            self._f.seek(0)
            data += self._f.read(due - len(data))
        self._sent += len(data)
        return data


class Pin:
    """machine.Pin: only a number (the firmware hands pins to I2C and UART)."""

    def __init__(self, id, *args):
        self.id = id


class WDT:
    """machine.WDT: cannot be stopped (tools/sim_board.py restarts a crashed board as
    the watchdog would)."""

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout

    def feed(self):
        pass


class RTC:
    """machine.RTC: setting it is accepted (the Unix port's time.time() is the host's)."""

    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        return time.gmtime() if dt is None else None


def reset_cause():
    """FW_RESET_CAUSE (an int: 1 power on, 3 watchdog, 5 soft) or 1."""
    v = os.getenv("FW_RESET_CAUSE")
    return int(v) if v else 1


def reset():
    """The board resets: the simulated process exits with status 75 (a runner restarts it)."""
    print("machine.reset()")
    sys.exit(75)
