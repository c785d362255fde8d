# ADXL345 accelerometer over machine.I2C: FIFO stream mode with a watermark.
#
# The chip samples on its own clock at the output data rate (ODR) into a 32-entry
# FIFO; in stream mode the oldest entry is discarded when a new one arrives on a
# full FIFO. We drain it before it fills: at 800 Hz 32 entries last 40 ms, so the
# main loop must call drain() at least every ~30 ms (the watermark interrupt on
# INT1 fires at `watermark` entries: 16 entries = 20 ms at 800 Hz). On I2C at
# 400 kHz one entry costs a 6-byte burst read (~0.25 ms on the bus), so 800 Hz is
# the practical ceiling (3200/1600 Hz need SPI). When the FIFO did fill, the
# OVERRUN bit in INT_SOURCE is set: we count it (samples were lost).
#
# Memory: every buffer is allocated in __init__; drain() allocates nothing (tested
# with gc.mem_alloc() under the MicroPython Unix port), so sampling never triggers
# a garbage collection that could make us miss the FIFO.

from fieldwatch.wire.contract import ADXL_RANGES_G as RANGES_G, ADXL_RATES_HZ as RATES_HZ

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# Register map (datasheet Rev. G, Table 19)
_DEVID = const(0x00)        # DEVID: reads 0xE5
_BW_RATE = const(0x2C)      # BW_RATE: LOW_POWER bit 4, rate code bits 3:0
_POWER_CTL = const(0x2D)    # POWER_CTL: Measure bit 3
_INT_ENABLE = const(0x2E)   # INT_ENABLE
_INT_MAP = const(0x2F)      # INT_MAP: 0 routes to INT1
_INT_SOURCE = const(0x30)   # INT_SOURCE: DATA_READY 7, WATERMARK 1, OVERRUN 0
_DATA_FORMAT = const(0x31)  # DATA_FORMAT: FULL_RES bit 3, range bits 1:0
_DATAX0 = const(0x32)       # DATAX0..DATAZ1: 6 bytes, little-endian int16 x, y, z
_FIFO_CTL = const(0x38)     # FIFO_CTL: mode 7:6, samples (watermark) 4:0
_FIFO_STATUS = const(0x39)  # FIFO_STATUS: entries 5:0

_DEVID_VALUE = const(0xE5)
_MEASURE = const(0x08)
_FULL_RES = const(0x08)
_INT_WATERMARK = const(0x02)
_INT_OVERRUN = const(0x01)
_FIFO_STREAM = const(0x80)  # mode 2 << 6
_ENTRY = const(6)           # bytes per FIFO entry

_ADDRESS = const(0x53)      # SDO/ALT ADDRESS low; 0x1D with SDO high
SCALE_G = 1.0 / 256         # g per count (FULL_RES: 256 LSB/g, 3.9 mg/LSB at every range)
# RATES_HZ (codes 6..15 in that order) and RANGES_G (codes 0..3) come from the wire
# contract, imported above: one copy in the heap, not two (the firmware loads it anyway).


class ADXL345Error(Exception):
    """The chip did not answer as an ADXL345 (wrong DEVID)."""


class ADXL345:
    """FIFO-streaming driver: drain() copies raw entries into a caller's bytearray."""

    def __init__(self, i2c, address=_ADDRESS, rate_hz=800, range_g=16, watermark=16):
        self._i2c = i2c
        self._address = address
        self._reg = bytearray(1)       # single-register reads and writes
        self._entry = bytearray(_ENTRY)  # one x,y,z burst
        self.overruns = 0               # times the FIFO filled before we drained it
        self.samples = 0                # entries read since init
        self.rate_hz = rate_hz
        self.range_g = range_g
        self.watermark = watermark
        try:
            self._read_reg(_DEVID)
        except OSError as e:  # nobody ACKs: not wired, or wired to the other address
            raise ADXL345Error("no answer at I2C 0x%02x (OSError %s)" % (address, e.args[0]))
        if self._reg[0] != _DEVID_VALUE:
            raise ADXL345Error("DEVID 0x%02x, expected 0xe5 at I2C 0x%02x" % (self._reg[0], address))
        self.configure(rate_hz, range_g, watermark)

    # ---- the only two methods that touch the bus ---------------------------
    def _read_reg(self, reg):
        self._i2c.readfrom_mem_into(self._address, reg, self._reg)
        return self._reg[0]

    def _write_reg(self, reg, value):
        self._reg[0] = value
        self._i2c.writeto_mem(self._address, reg, self._reg)

    # ---- settings -------------------------------------------------------------
    def configure(self, rate_hz, range_g, watermark=16):
        """Standby, set rate/range/FIFO stream with watermark, enable INT1, measure."""
        if rate_hz not in RATES_HZ:
            raise ValueError("rate_hz %r; one of %r" % (rate_hz, RATES_HZ))
        if range_g not in RANGES_G:
            raise ValueError("range_g %r; one of 2, 4, 8, 16" % (range_g,))
        if not 1 <= watermark <= 31:
            raise ValueError("watermark %r; 1..31 entries" % (watermark,))
        self._write_reg(_POWER_CTL, 0)  # standby while changing settings
        self._write_reg(_BW_RATE, 6 + RATES_HZ.index(rate_hz))
        self._write_reg(_DATA_FORMAT, _FULL_RES | RANGES_G.index(range_g))
        # Bypass first: switching modes clears the FIFO (datasheet, FIFO section)
        self._write_reg(_FIFO_CTL, 0)
        self._write_reg(_FIFO_CTL, _FIFO_STREAM | watermark)
        self._write_reg(_INT_MAP, 0)  # everything on INT1
        self._write_reg(_INT_ENABLE, _INT_WATERMARK | _INT_OVERRUN)
        self._write_reg(_POWER_CTL, _MEASURE)
        self.rate_hz = rate_hz
        self.range_g = range_g
        self.watermark = watermark

    def standby(self):
        """Stop measuring (about 0.1 uA); configure() or wake() resumes."""
        self._write_reg(_POWER_CTL, 0)

    def wake(self):
        """Resume measuring with the current settings."""
        self._write_reg(_POWER_CTL, _MEASURE)

    # ---- the hot path ---------------------------------------------------------------
    def fifo_entries(self):
        """Entries waiting in the FIFO (0..32)."""
        return self._read_reg(_FIFO_STATUS) & 0x3F

    def drain(self, out, start, limit):
        """Read up to `limit` entries into out[start*6:]; return how many were read.

        out is a bytearray of little-endian int16 x, y, z entries (the waveform block
        layout of the wire contract). No allocation: fixed buffers and small ints only.
        """
        # INT_SOURCE first: OVERRUN is cleared by the reads that follow
        if self._read_reg(_INT_SOURCE) & _INT_OVERRUN:
            self.overruns += 1
        n = self._read_reg(_FIFO_STATUS) & 0x3F
        if n > limit:
            n = limit
        i2c = self._i2c
        addr = self._address
        e = self._entry
        o = start * _ENTRY
        for _ in range(n):
            # One 6-byte burst per entry: a read of DATAX0..DATAZ1 pops one FIFO
            # level, so x, y and z always come from the same sample.
            i2c.readfrom_mem_into(addr, _DATAX0, e)
            out[o] = e[0]
            out[o + 1] = e[1]
            out[o + 2] = e[2]
            out[o + 3] = e[3]
            out[o + 4] = e[4]
            out[o + 5] = e[5]
            o += _ENTRY
        # wrap below 2**30: a small int on a 32-bit port, so no big-int allocation
        self.samples = (self.samples + n) & 0x3FFFFFFF
        return n
